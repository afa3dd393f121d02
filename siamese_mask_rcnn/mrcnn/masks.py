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


def _linear_weights(n_in, n_out, start, stop):
    """Rows ``start .. stop`` of the ``[n_out, n_in]`` matrix of a 1-D linear resize from
    ``n_in`` to ``n_out`` samples with pixel-centre alignment and zeros outside, i.e. the
    interpolation of :func:`.resizing.resize` (order 1, mode "constant") along one axis."""
    x = (np.arange(start, stop) + 0.5) * (n_in / n_out) - 0.5
    x0 = np.floor(x).astype(np.int64)
    frac = x - x0
    weights = np.zeros((stop - start, n_in))
    rows = np.arange(stop - start)
    for index, weight in ((x0, 1 - frac), (x0 + 1, frac)):
        inside = (index >= 0) & (index < n_in)
        np.add.at(weights, (rows[inside], index[inside]), weight[inside])
    return weights


def _paste(full_mask, mask, bbox, threshold):
    """Resize ``mask`` to ``bbox`` (y1, x1, y2, x2 pixels), threshold it and write it into
    the 2-D view ``full_mask`` (the part of the box outside it is dropped).

    A box mostly outside the view (more than 4× the visible area, e.g. a 20000² box on a
    1024² image) resizes only its visible window, as two small matrix products with the
    same linear interpolation, instead of the whole box."""
    y1, x1, y2, x2 = [int(v) for v in np.asarray(bbox)[:4]]
    if y2 <= y1 or x2 <= x1:
        return
    height, width = full_mask.shape
    cy1, cx1 = max(y1, 0), max(x1, 0)
    cy2, cx2 = min(y2, height), min(x2, width)
    if cy2 <= cy1 or cx2 <= cx1:
        return
    mask = np.asarray(mask, dtype=np.float32)
    if (y2 - y1) * (x2 - x1) > 4 * (cy2 - cy1) * (cx2 - cx1):
        rows = _linear_weights(mask.shape[0], y2 - y1, cy1 - y1, cy2 - y1)
        cols = _linear_weights(mask.shape[1], x2 - x1, cx1 - x1, cx2 - x1)
        window = np.clip(rows @ mask @ cols.T, mask.min(), mask.max())  # resize's clip=True
        full_mask[cy1:cy2, cx1:cx2] = window >= threshold
        return
    m = resize(mask, (y2 - y1, x2 - x1)) >= threshold
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
    masks cost about 8 ms a mask at 1024²).

    Raises ``ValueError`` when ``masks`` is not ``[N, h, w]`` (h, w ≥ 1), ``boxes`` not
    ``[N, 4]`` with the same ``N``, a box is not finite, or ``image_shape`` does not start
    with two integers ≥ 0.
    """
    masks = np.asarray(masks)
    boxes = np.asarray(boxes)
    if masks.ndim != 3 or (len(masks) and min(masks.shape[1:]) < 1):
        raise ValueError(f"unmold_masks: masks must be [N, h, w] (one small mask per box, "
                         f"h, w >= 1), got shape {masks.shape}")
    try:
        corner = tuple(image_shape)[:2]
        height, width = (int(v) for v in corner)  # ValueError for fewer than two
        if (height, width) != corner or height < 0 or width < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"unmold_masks: image_shape must start with (H, W), two integers >= 0, "
                         f"got {image_shape!r}") from None
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"unmold_masks: boxes must be [N, 4] (y1, x1, y2, x2 pixels), got shape {boxes.shape}")
    if len(masks) != len(boxes):
        raise ValueError(f"unmold_masks: {len(masks)} masks for {len(boxes)} boxes")
    if not np.all(np.isfinite(boxes)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(boxes), axis=1))[0])
        raise ValueError(f"unmold_masks: box {bad} is not finite: {boxes[bad].tolist()}")
    full = np.zeros((height, width, len(boxes)), dtype=bool)
    for i in range(len(boxes)):
        _paste(full[:, :, i], masks[i], boxes[i], threshold)
    return full
