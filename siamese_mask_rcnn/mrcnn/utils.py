"""matterport's ``mrcnn.utils``: the numpy helpers under their matterport names.

This module is a façade; each job has its own module (no TensorFlow in any of them):

* :mod:`.dataset`   — the ``Dataset`` base class;
* :mod:`.image_io`  — reading images (``read_image``, ``to_uint8_rgb``, ``ImageLoadError``);
* :mod:`.resizing`  — ``resize``, ``resize_image``, ``resize_mask``;
* :mod:`.boxes`     — IoU, NMS, box deltas, normalised boxes;
* :mod:`.masks`     — mask IoU, mini-masks, ``unmold_mask`` / ``unmold_masks``;
* :mod:`.anchors`   — ``generate_anchors``, ``generate_pyramid_anchors``;
* :mod:`.metrics`   — matching and average precision (``compute_ap`` ...).

Two matterport graph helpers are reachable here without making this module import
TensorFlow: ``batch_slice`` imports it when called, and ``box_refinement_graph`` (whose home
is :mod:`.layers`) is loaded on first access.

Conventions: boxes are ``(y1, x1, y2, x2)`` in pixels with ``y2``/``x2`` exclusive;
instance masks are ``[height, width, instances]``; box deltas are
``(dy, dx, log(dh), log(dw))``.
"""
import numpy as np

from .anchors import generate_anchors, generate_pyramid_anchors
from .boxes import (apply_box_deltas, box_refinement, compute_iou, compute_overlaps, denorm_boxes,
                    extract_bboxes, non_max_suppression, norm_boxes, trim_zeros)
from .dataset import Dataset
from .image_io import ImageLoadError, read_image, to_uint8_rgb
from .masks import compute_overlaps_masks, expand_mask, minimize_mask, unmold_mask, unmold_masks
from .metrics import compute_ap, compute_ap_range, compute_matches, compute_recall
from .resizing import resize, resize_image, resize_mask

__all__ = [
    "Dataset", "ImageLoadError", "read_image", "to_uint8_rgb",
    "extract_bboxes", "compute_iou", "compute_overlaps", "compute_overlaps_masks",
    "non_max_suppression", "apply_box_deltas", "box_refinement", "norm_boxes", "denorm_boxes",
    "trim_zeros", "resize", "resize_image", "resize_mask", "minimize_mask", "expand_mask",
    "unmold_mask", "unmold_masks", "generate_anchors", "generate_pyramid_anchors",
    "compute_matches", "compute_ap", "compute_ap_range", "compute_recall",
    "batch_slice",  # box_refinement_graph is left out: a star import must not load TensorFlow
]


def __getattr__(name):
    """``box_refinement_graph`` (home: :mod:`.layers`, which imports TensorFlow) is loaded on
    first access (PEP 562), so importing this module does not import TensorFlow.

    Raises:
        AttributeError: ``name`` is not an attribute of this module.
    """
    if name == "box_refinement_graph":
        from .layers import box_refinement_graph
        globals()[name] = box_refinement_graph
        return box_refinement_graph
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def batch_slice(inputs, graph_fn, batch_size, names=None):
    """Run ``graph_fn`` on each of the first ``batch_size`` items of ``inputs`` and stack the
    results along a new batch axis (matterport's helper for graph code that works on one
    image at a time; use it inside a Keras ``Layer.call``).

    inputs: a tensor or a list of tensors with the batch as first axis; item ``i`` of each
    is passed to ``graph_fn`` as one positional argument. ``graph_fn`` returns one tensor or
    a tuple/list of tensors, of the same shapes for every item. ``names``: optional op names
    of the stacked outputs. Returns one stacked tensor ``[batch_size, ...]``, or a list of
    them when ``graph_fn`` returns several. TensorFlow is imported when this is called.

    Raises:
        ValueError: ``batch_size`` is not a positive integer, an input's static batch is
            smaller than ``batch_size``, ``graph_fn`` returns different numbers of outputs
            for different items, or ``names`` does not name every output.
    """
    import tensorflow as tf
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_slice: batch_size must be a positive integer, got {batch_size!r}")
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    for k, x in enumerate(inputs):
        static = getattr(x, "shape", None)
        if static is not None and len(static) and static[0] is not None and static[0] < batch_size:
            raise ValueError(f"batch_slice: input {k} has a batch of {static[0]} < batch_size {batch_size}")
    per_item = []
    for i in range(int(batch_size)):
        out = graph_fn(*[x[i] for x in inputs])
        per_item.append(list(out) if isinstance(out, (tuple, list)) else [out])
    n_out = len(per_item[0])
    if any(len(out) != n_out for out in per_item):
        raise ValueError(f"batch_slice: graph_fn returned {sorted({len(o) for o in per_item})} outputs "
                         "for different items; it must always return the same number")
    names = [None] * n_out if names is None else list(names)
    if len(names) != n_out:
        raise ValueError(f"batch_slice: {len(names)} names for {n_out} outputs")
    stacked = [tf.stack([out[j] for out in per_item], axis=0, name=names[j]) for j in range(n_out)]
    return stacked[0] if n_out == 1 else stacked
