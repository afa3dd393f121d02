"""matterport's ``mrcnn.utils``: the numpy helpers under their matterport names.

This module is a façade; each job has its own module (no TensorFlow in any of them):

* :mod:`.dataset`   — the ``Dataset`` base class;
* :mod:`.image_io`  — reading images (``read_image``, ``to_uint8_rgb``, ``ImageLoadError``);
* :mod:`.resizing`  — ``resize``, ``resize_image``, ``resize_mask``;
* :mod:`.boxes`     — IoU, NMS, box deltas, normalised boxes;
* :mod:`.masks`     — mask IoU, mini-masks, ``unmold_mask``;
* :mod:`.anchors`   — ``generate_anchors``, ``generate_pyramid_anchors``;
* :mod:`.metrics`   — matching and average precision (``compute_ap`` ...).

Conventions: boxes are ``(y1, x1, y2, x2)`` in pixels with ``y2``/``x2`` exclusive;
instance masks are ``[height, width, instances]``; box deltas are
``(dy, dx, log(dh), log(dw))``.
"""
from .anchors import generate_anchors, generate_pyramid_anchors
from .boxes import (apply_box_deltas, box_refinement, compute_iou, compute_overlaps, denorm_boxes,
                    extract_bboxes, non_max_suppression, norm_boxes, trim_zeros)
from .dataset import Dataset
from .image_io import ImageLoadError, read_image, to_uint8_rgb
from .masks import compute_overlaps_masks, expand_mask, minimize_mask, unmold_mask
from .metrics import compute_ap, compute_ap_range, compute_matches, compute_recall
from .resizing import resize, resize_image, resize_mask

__all__ = [
    "Dataset", "ImageLoadError", "read_image", "to_uint8_rgb",
    "extract_bboxes", "compute_iou", "compute_overlaps", "compute_overlaps_masks",
    "non_max_suppression", "apply_box_deltas", "box_refinement", "norm_boxes", "denorm_boxes",
    "trim_zeros", "resize", "resize_image", "resize_mask", "minimize_mask", "expand_mask",
    "unmold_mask", "generate_anchors", "generate_pyramid_anchors",
    "compute_matches", "compute_ap", "compute_ap_range", "compute_recall",
]
