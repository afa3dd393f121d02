"""Box operations in numpy (no TensorFlow).

Boxes are ``(y1, x1, y2, x2)`` in pixels with ``y2``/``x2`` exclusive (one past the last
pixel) unless a function says "normalised"; box deltas are ``(dy, dx, log(dh), log(dw))``.
The graph versions used inside the model live in :mod:`.layers`.
"""
import numpy as np


def extract_bboxes(mask):
    """Boxes ``[N, (y1, x1, y2, x2)]`` int32 around each mask of ``[H, W, N]``.

    ``y2``/``x2`` are exclusive. Empty masks give an all-zero box.
    """
    mask = np.asarray(mask)
    boxes = np.zeros([mask.shape[-1], 4], dtype=np.int32)
    for i in range(mask.shape[-1]):
        m = mask[:, :, i]
        rows = np.where(np.any(m, axis=1))[0]
        cols = np.where(np.any(m, axis=0))[0]
        if rows.size:
            boxes[i] = [rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]
    return boxes


def _box_areas(boxes):
    """Areas of ``[N, (y1, x1, y2, x2)]`` boxes."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _safe_divide(numerator, denominator):
    """numerator / denominator with 0 where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def compute_iou(box, boxes, box_area, boxes_area):
    """IoU of one ``box`` ``(y1, x1, y2, x2)`` with each of ``boxes`` ``[N, 4]``.

    ``box_area`` and ``boxes_area`` are passed in so callers can compute them once.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    y1 = np.maximum(box[0], boxes[:, 0])
    y2 = np.minimum(box[2], boxes[:, 2])
    x1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[3], boxes[:, 3])
    intersection = np.maximum(y2 - y1, 0) * np.maximum(x2 - x1, 0)
    union = box_area + boxes_area - intersection
    return _safe_divide(intersection, union)


def compute_overlaps(boxes1, boxes2):
    """IoU matrix ``[N1, N2]`` between two sets of ``(y1, x1, y2, x2)`` boxes."""
    boxes1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    boxes2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    area1 = _box_areas(boxes1)
    area2 = _box_areas(boxes2)
    overlaps = np.zeros((boxes1.shape[0], boxes2.shape[0]))
    # Loop over the shorter side, vectorise over the longer one (memory friendly
    # for anchors x ground truth).
    if boxes2.shape[0] <= boxes1.shape[0]:
        for j in range(boxes2.shape[0]):
            overlaps[:, j] = compute_iou(boxes2[j], boxes1, area2[j], area1)
    else:
        for i in range(boxes1.shape[0]):
            overlaps[i, :] = compute_iou(boxes1[i], boxes2, area1[i], area2)
    return overlaps


def non_max_suppression(boxes, scores, threshold):
    """Greedy NMS: indices (int32, best first) of the boxes kept.

    A box is dropped when its IoU with an already kept, higher-scoring box is
    greater than ``threshold``.

    Raises:
        ValueError: ``boxes`` and ``scores`` differ in length.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores)
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"non_max_suppression: {boxes.shape[0]} boxes but {scores.shape[0]} scores")
    areas = _box_areas(boxes)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        iou = compute_iou(boxes[i], boxes[order[1:]], areas[i], areas[order[1:]])
        order = order[1:][iou <= threshold]
    return np.array(keep, dtype=np.int32)


def apply_box_deltas(boxes, deltas):
    """Apply ``[N, (dy, dx, log(dh), log(dw))]`` deltas to ``[N, (y1, x1, y2, x2)]`` boxes."""
    boxes = np.asarray(boxes, dtype=np.float32)
    deltas = np.asarray(deltas, dtype=np.float32)
    height = boxes[:, 2] - boxes[:, 0]
    width = boxes[:, 3] - boxes[:, 1]
    center_y = boxes[:, 0] + 0.5 * height + deltas[:, 0] * height
    center_x = boxes[:, 1] + 0.5 * width + deltas[:, 1] * width
    height = height * np.exp(deltas[:, 2])
    width = width * np.exp(deltas[:, 3])
    y1 = center_y - 0.5 * height
    x1 = center_x - 0.5 * width
    return np.stack([y1, x1, y1 + height, x1 + width], axis=1)


def box_refinement(box, gt_box):
    """Deltas ``[N, (dy, dx, log(dh), log(dw))]`` that turn ``box`` into ``gt_box``.

    The inverse of :func:`apply_box_deltas`.
    """
    box = np.asarray(box, dtype=np.float32)
    gt_box = np.asarray(gt_box, dtype=np.float32)
    height = box[:, 2] - box[:, 0]
    width = box[:, 3] - box[:, 1]
    center_y = box[:, 0] + 0.5 * height
    center_x = box[:, 1] + 0.5 * width
    gt_height = gt_box[:, 2] - gt_box[:, 0]
    gt_width = gt_box[:, 3] - gt_box[:, 1]
    gt_center_y = gt_box[:, 0] + 0.5 * gt_height
    gt_center_x = gt_box[:, 1] + 0.5 * gt_width
    dy = (gt_center_y - center_y) / height
    dx = (gt_center_x - center_x) / width
    dh = np.log(gt_height / height)
    dw = np.log(gt_width / width)
    return np.stack([dy, dx, dh, dw], axis=1)


def norm_boxes(boxes, shape):
    """Pixel boxes to normalised coordinates (matterport convention).

    ``(y1, x1, y2, x2)`` with exclusive ``y2``/``x2`` maps to
    ``((y1)/(h-1), (x1)/(w-1), (y2-1)/(h-1), (x2-1)/(w-1))``, float32.
    """
    h, w = shape[:2]
    scale = np.array([h - 1, w - 1, h - 1, w - 1], dtype=np.float64)
    shift = np.array([0, 0, 1, 1], dtype=np.float64)
    return ((np.asarray(boxes, dtype=np.float64) - shift) / scale).astype(np.float32)


def denorm_boxes(boxes, shape):
    """Normalised boxes back to int32 pixel boxes (inverse of :func:`norm_boxes`)."""
    h, w = shape[:2]
    scale = np.array([h - 1, w - 1, h - 1, w - 1], dtype=np.float64)
    shift = np.array([0, 0, 1, 1], dtype=np.float64)
    return np.around(np.asarray(boxes, dtype=np.float64) * scale + shift).astype(np.int32)


def trim_zeros(x):
    """Remove the rows of ``x`` that are all zeros (padding).

    Raises:
        ValueError: ``x`` is not 2-D.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"trim_zeros expects a 2-D array, got shape {x.shape}")
    return x[~np.all(x == 0, axis=1)]
