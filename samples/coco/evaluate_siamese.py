"""Evaluate Siamese Mask R-CNN (or a baseline) on COCO with the one-shot protocol.

Paper §5.2: for every image and every category of the chosen set present in it,
references are drawn from other images; predictions get the reference's category;
pycocotools gives AP50 per category and mAP50 (boxes and masks). Optional analyses: the
confusion matrix (§6.4), the effect of clutter (§6.5) and a false-positive test with
categories absent from the query.

Examples::

    # the paper's one-shot numbers for split S1, 5 runs, trained weights
    python samples/coco/evaluate_siamese.py --dataset /data/coco --subset val --year 2017 \\
        --split 1 --weights logs/siamese_coco.h5 --runs 5 --classes both

    # the random-boxes baseline and a ground-truth sanity check need no weights
    python samples/coco/evaluate_siamese.py --dataset /data/coco --split 2 --model random
    python samples/coco/evaluate_siamese.py --annotations ann.json --images imgs/ --model gt

Outputs go to ``--out`` (default ``logs/eval_<timestamp>/``): COCO results JSON (RLE
masks), ``summary.json``, ``table.txt``, per-category AP50 plots and, if requested,
confusion / clutter / absent-category files. The table is printed. The logic lives in
``siamese_mask_rcnn.evaluation.cli`` (also ``siamese-mrcnn evaluate``); this script only runs it.
"""
import os
import sys

if __package__ in (None, ""):
    # allow `python samples/coco/evaluate_siamese.py` from a source checkout
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

os.environ.setdefault("MPLBACKEND", "Agg")

from siamese_mask_rcnn.evaluation.cli import main, run  # noqa: E402,F401

if __name__ == "__main__":
    run()
