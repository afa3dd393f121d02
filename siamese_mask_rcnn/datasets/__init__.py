"""One-shot datasets: the common base, COCO, the embedded procedural data and Omniglot."""
