"""Instance masks in numpy: mask IoU, mini-masks and pasting predicted masks (no TensorFlow).

Instance masks are ``[H, W, N]`` arrays; a mini-mask is a mask cropped to its box and
resized to ``MINI_MASK_SHAPE`` (matterport's memory saving).
"""
import numpy as np

from .boxes import _safe_divide
from .resizing import resize


def compute_overlaps_masks(masks1, masks2):
    """IoU matrix ``[N1, N2]`` between two sets of ``[H, W, N]`` masks (> 0.5 is on)."""
    masks1 = np.asarray(masks1)
    masks2 = np.asarray(masks2)
    n1, n2 = masks1.shape[-1], masks2.shape[-1]
    if n1 == 0 or n2 == 0:
        return np.zeros((n1, n2))
    m1 = np.reshape(masks1 > .5, (-1, n1)).astype(np.float32)
    m2 = np.reshape(masks2 > .5, (-1, n2)).astype(np.float32)
    area1 = np.sum(m1, axis=0, dtype=np.float64)
    area2 = np.sum(m2, axis=0, dtype=np.float64)
    intersections = (m1.T @ m2).astype(np.float64)
    union = area1[:, None] + area2[None, :] - intersections
    return _safe_divide(intersections, union)


def minimize_mask(bbox, mask, mini_shape):
    """Crop each mask of ``[H, W, N]`` to its box and resize it to ``mini_shape``.

    Returns a bool ``[mini_h, mini_w, N]`` array (see :func:`expand_mask`).

    Raises:
        ValueError: a box has zero area.
    """
    mini_mask = np.zeros(tuple(mini_shape) + (mask.shape[-1],), dtype=bool)
    for i in range(mask.shape[-1]):
        y1, x1, y2, x2 = np.asarray(bbox[i])[:4].astype(np.int64)
        m = mask[y1:y2, x1:x2, i].astype(np.float32)
        if m.size == 0:
            raise ValueError(f"minimize_mask: instance {i} has a box of zero area: {bbox[i]}")
        m = resize(m, tuple(mini_shape))
        mini_mask[:, :, i] = np.around(m).astype(bool)
    return mini_mask


def expand_mask(bbox, mini_mask, image_shape):
    """Paste mini-masks back into full-size ``[H, W, N]`` bool masks (inverse of :func:`minimize_mask`)."""
    mask = np.zeros(tuple(image_shape[:2]) + (mini_mask.shape[-1],), dtype=bool)
    for i in range(mask.shape[-1]):
        y1, x1, y2, x2 = np.asarray(bbox[i])[:4].astype(np.int64)
        if y2 <= y1 or x2 <= x1:
            continue
        m = resize(mini_mask[:, :, i].astype(np.float32), (y2 - y1, x2 - x1))
        mask[y1:y2, x1:x2, i] = np.around(m).astype(bool)
    return mask


def _paste(full_mask, mask, bbox, threshold):
    """Resize ``mask`` to ``bbox`` (y1, x1, y2, x2 pixels), threshold it and write it into
    the 2-D view ``full_mask`` (the part of the box outside it is dropped)."""
    y1, x1, y2, x2 = [int(v) for v in np.asarray(bbox)[:4]]
    if y2 <= y1 or x2 <= x1:
        return
    height, width = full_mask.shape
    cy1, cx1 = max(y1, 0), max(x1, 0)
    cy2, cx2 = min(y2, height), min(x2, width)
    if cy2 > cy1 and cx2 > cx1:
        m = resize(np.asarray(mask, dtype=np.float32), (y2 - y1, x2 - x1)) >= threshold
        full_mask[cy1:cy2, cx1:cx2] = m[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]


def unmold_mask(mask, bbox, image_shape, threshold=0.5):
    """Turn a small float mask predicted for ``bbox`` into a full-size bool mask.

    The mask is resized to the box, thresholded at ``threshold`` and pasted into
    an ``image_shape[:2]`` array (the part of the box outside the image is dropped).
    """
    full_mask = np.zeros(tuple(image_shape[:2]), dtype=bool)
    _paste(full_mask, mask, bbox, threshold)
    return full_mask


def unmold_masks(masks, boxes, image_shape, threshold=0.5):
    """:func:`unmold_mask` for ``N`` masks ``[N, h, w]`` and boxes ``[N, 4]`` (image pixels)
    at once: a bool ``[H, W, N]`` array, equal to stacking the single masks on the last axis
    but written in place, so each mask costs only its box's pixels (stacking ``N`` full-size
    masks cost about 8 ms a mask at 1024²)."""
    full = np.zeros(tuple(image_shape[:2]) + (len(boxes),), dtype=bool)
    for i in range(len(boxes)):
        _paste(full[:, :, i], masks[i], boxes[i], threshold)
    return full
