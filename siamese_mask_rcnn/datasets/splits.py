"""The paper's rule for one-shot class splits, shared by every data source.

Paper Section 3 (splits S1–S4, Table 3 of the appendix): in a list of categories, split
``S_i`` holds out every 4th category starting at the ``i``-th as one-shot (evaluation)
categories; the others are the background (training) categories. The COCO, procedural
and Omniglot datasets all apply this rule to their own category (or alphabet) lists.

This module does not import TensorFlow.
"""
import numpy as np

#: The number of one-shot splits (S1..S4) and the stride of the held-out positions.
NUM_SPLITS = 4
#: Categories in MS-COCO, the default list length of :func:`split_positions`.
NUM_COCO_CATEGORIES = 80


def check_split(split):
    """Return ``split`` as an int in 1..4 or raise ``ValueError`` naming the value."""
    if isinstance(split, bool) or not isinstance(split, (int, np.integer)) \
            or not 1 <= int(split) <= NUM_SPLITS:
        raise ValueError(f"unknown one-shot split {split!r}: expected 1, 2, 3 or 4 (S1..S4)")
    return int(split)


def split_positions(split, num_categories=NUM_COCO_CATEGORIES):
    """1-based category positions held out by split ``S_split``: split, split+4, ....

    ``num_categories`` (default 80, as in COCO) bounds the positions, so the rule extends
    to category lists of other lengths. Raises ``ValueError`` for a split outside 1..4.
    """
    split = check_split(split)
    return list(range(split, int(num_categories) + 1, NUM_SPLITS))
