"""Matching detections to ground truth and average precision (no TensorFlow).

VOC-style interpolated AP on mask IoU, with matterport's names and semantics
(:func:`compute_ap` is the AP50 of every matterport notebook with the default threshold).
"""
import numpy as np

from .boxes import compute_overlaps, trim_zeros
from .masks import compute_overlaps_masks


def compute_matches(gt_boxes, gt_class_ids, gt_masks,
                    pred_boxes, pred_class_ids, pred_scores, pred_masks,
                    iou_threshold=0.5, score_threshold=0.0):
    """Match predictions to ground truth by mask IoU, best-scoring prediction first.

    All-zero (padding) box rows are removed first. Each prediction takes the
    unmatched GT instance of the same class with the highest mask IoU, if that
    IoU is at least ``iou_threshold``. GT candidates whose IoU is below
    ``score_threshold`` are not considered (matterport semantics).

    Returns:
        gt_match: ``[N_gt]`` index of the matched prediction or -1.
        pred_match: ``[N_pred]`` index of the matched GT or -1 (predictions
            sorted by descending score).
        overlaps: ``[N_pred, N_gt]`` mask IoUs (predictions sorted by score).
    """
    gt_boxes = trim_zeros(np.asarray(gt_boxes).reshape(-1, 4))
    gt_masks = np.asarray(gt_masks)[..., :gt_boxes.shape[0]]
    gt_class_ids = np.asarray(gt_class_ids)[:gt_boxes.shape[0]]
    pred_boxes = trim_zeros(np.asarray(pred_boxes).reshape(-1, 4))
    n_pred = pred_boxes.shape[0]
    pred_scores = np.asarray(pred_scores)[:n_pred]
    order = np.argsort(-pred_scores, kind="stable")
    pred_class_ids = np.asarray(pred_class_ids)[:n_pred][order]
    pred_masks = np.asarray(pred_masks)[..., :n_pred][..., order]

    overlaps = compute_overlaps_masks(pred_masks, gt_masks)
    pred_match = -1 * np.ones([n_pred])
    gt_match = -1 * np.ones([gt_boxes.shape[0]])
    for i in range(n_pred):
        candidates = np.argsort(-overlaps[i], kind="stable")
        low = np.where(overlaps[i, candidates] < score_threshold)[0]
        if low.size > 0:
            candidates = candidates[:low[0]]
        for j in candidates:
            if gt_match[j] > -1:
                continue
            if overlaps[i, j] < iou_threshold:
                break
            if pred_class_ids[i] == gt_class_ids[j]:
                gt_match[j] = i
                pred_match[i] = j
                break
    return gt_match, pred_match, overlaps


def compute_ap(gt_boxes, gt_class_ids, gt_masks,
               pred_boxes, pred_class_ids, pred_scores, pred_masks,
               iou_threshold=0.5):
    """Average precision at one mask-IoU threshold (VOC-style interpolated AP).

    Returns:
        mAP, precisions, recalls (both padded with a leading 0 and trailing 0/1),
        overlaps ``[N_pred, N_gt]``.
    """
    gt_match, pred_match, overlaps = compute_matches(
        gt_boxes, gt_class_ids, gt_masks, pred_boxes, pred_class_ids, pred_scores, pred_masks,
        iou_threshold)
    hits = np.cumsum(pred_match > -1)
    precisions = hits / (np.arange(len(pred_match)) + 1)
    if len(gt_match):
        recalls = hits.astype(np.float32) / len(gt_match)
    else:
        recalls = np.zeros(len(pred_match), dtype=np.float32)
    precisions = np.concatenate([[0], precisions, [0]])
    recalls = np.concatenate([[0], recalls, [1]])
    # precision envelope: each precision is the best precision at any higher recall
    for i in range(len(precisions) - 2, -1, -1):
        precisions[i] = max(precisions[i], precisions[i + 1])
    steps = np.where(recalls[:-1] != recalls[1:])[0] + 1
    mAP = float(np.sum((recalls[steps] - recalls[steps - 1]) * precisions[steps]))
    return mAP, precisions, recalls, overlaps


def compute_ap_range(gt_box, gt_class_id, gt_mask,
                     pred_box, pred_class_id, pred_score, pred_mask,
                     iou_thresholds=None, verbose=1):
    """Mean AP over ``iou_thresholds`` (default 0.5, 0.55, ..., 0.95)."""
    if iou_thresholds is None:
        iou_thresholds = np.arange(0.5, 1.0, 0.05)
    aps = []
    for threshold in iou_thresholds:
        ap, _, _, _ = compute_ap(gt_box, gt_class_id, gt_mask,
                                 pred_box, pred_class_id, pred_score, pred_mask,
                                 iou_threshold=threshold)
        if verbose:
            print(f"AP @{threshold:.2f}:\t {ap:.3f}")
        aps.append(ap)
    mean_ap = float(np.mean(aps))
    if verbose:
        print(f"AP @{iou_thresholds[0]:.2f}-{iou_thresholds[-1]:.2f}:\t {mean_ap:.3f}")
    return mean_ap


def compute_recall(pred_boxes, gt_boxes, iou):
    """Fraction of GT boxes covered (IoU >= ``iou``) by some predicted box.

    Returns:
        recall, and the indices of the predicted boxes with IoU >= ``iou``.
    """
    overlaps = compute_overlaps(pred_boxes, gt_boxes)
    if overlaps.size == 0:
        return 0.0, np.zeros([0], dtype=np.int64)
    iou_max = np.max(overlaps, axis=1)
    iou_argmax = np.argmax(overlaps, axis=1)
    positive_ids = np.where(iou_max >= iou)[0]
    matched_gt = iou_argmax[positive_ids]
    recall = len(set(matched_gt.tolist())) / overlaps.shape[1]
    return recall, positive_ids
