"""Steps 2-3 of the one-shot protocol (paper §5.2): predictions as COCO results.

``predict_fn(image, references) -> detections`` is called once per query image with all of
its categories; every detection gets the reference's category and becomes a COCO result
(box ``[x, y, w, h]`` in pixels, RLE mask).
"""
import inspect
from collections import OrderedDict

import numpy as np
from tqdm import tqdm

from ..cocoformat import box_yxyx_to_xywh, encode_mask
from .pairs import _ImageCache, _pair_crops


def _group_by_image(pairs):
    """Pairs grouped by query image, in order of first appearance; rejects duplicates."""
    groups = OrderedDict()
    for pair in pairs:
        group = groups.setdefault(int(pair.image_id), OrderedDict())
        if int(pair.class_id) in group:
            raise ValueError(f"duplicate pair: image {pair.image_id} and category "
                             f"{pair.class_id} occur twice")
        group[int(pair.class_id)] = pair
    return groups


def _check_detections(detections, image_shape, image_id, class_id):
    """Validate one category's detections and return ``(rois, scores, masks)`` arrays."""
    where = f"predict_fn output for image {image_id}, category {class_id}"
    if not isinstance(detections, dict) or not {"rois", "scores", "masks"} <= set(detections):
        raise ValueError(f"{where}: expected a dict with rois, scores and masks, "
                         f"got {type(detections).__name__}")
    try:
        rois = np.asarray(detections["rois"], dtype=np.float64)
        scores = np.asarray(detections["scores"], dtype=np.float64).reshape(-1)
        masks = np.asarray(detections["masks"])
    except (TypeError, ValueError) as err:  # None, ragged lists, strings
        raise ValueError(f"{where}: rois, scores and masks must be arrays of numbers ({err})") from None
    try:
        rois = as_boxes(rois, "rois")
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    n = rois.shape[0]
    if masks.size == 0 and n == 0:
        masks = np.zeros(tuple(image_shape) + (0,), dtype=bool)
    if scores.shape[0] != n:
        raise ValueError(f"{where}: {n} rois but {scores.shape[0]} scores")
    if masks.ndim != 3 or masks.shape[:2] != tuple(image_shape) or masks.shape[2] != n:
        raise ValueError(f"{where}: masks must have shape {tuple(image_shape) + (n,)}, "
                         f"got {masks.shape}")
    check_finite_scores(scores, f"{where}: ")
    check_boxes(rois, "roi", f"{where}: ")
    return rois, scores, masks.astype(bool, copy=False)


def check_finite_scores(scores, prefix=""):
    """``ValueError`` (``prefix`` + which score) unless every score of ``scores [N]`` is finite."""
    bad = ~np.isfinite(scores)
    if bad.any():
        raise ValueError(f"{prefix}score {int(np.argmax(bad))} is not finite")


def as_boxes(boxes, name, rows="N"):
    """``boxes`` as float64 ``[N, 4]`` ``(y1, x1, y2, x2)`` (an empty input gives ``[0, 4]``).

    Raises:
        ValueError: ``boxes`` is not numbers (ragged lists, None, strings) or not ``[N, 4]``
            (the message names ``name`` and, as ``[rows, 4]``, the expected shape).
    """
    try:
        array = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be an array of numbers ({err})") from None
    if array.size and (array.ndim != 2 or array.shape[1] != 4):
        raise ValueError(f"{name} must have shape [{rows}, 4] (y1, x1, y2, x2), got {array.shape}")
    return array.reshape(-1, 4)


def check_entries(output, class_ids, image_id):
    """``ValueError`` unless a predictor's ``output`` for query ``image_id`` is a dict with an
    entry for every one of ``class_ids`` (an empty result must still be given)."""
    if not isinstance(output, dict):
        raise ValueError(f"predict_fn must return a dict class_id -> detections, got "
                         f"{type(output).__name__} for image {image_id}")
    for class_id in class_ids:
        if class_id not in output:
            raise ValueError(f"predict_fn returned no entry for category {class_id} "
                             f"of image {image_id} (its keys: {sorted(map(repr, output))[:5]})")


def check_boxes(boxes, name, prefix=""):
    """``ValueError`` (``prefix`` + ``name`` + which box) unless every row of ``boxes [N, 4]``
    is ``(y1, x1, y2, x2)`` with finite ``y1 <= y2`` and ``x1 <= x2``."""
    bad = ~np.isfinite(boxes).all(axis=1) | (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(f"{prefix}{name} {k} is not (y1, x1, y2, x2) with finite y1 <= y2, x1 <= x2: "
                         f"{boxes[k].tolist()}")


def detections_to_coco(image_id, class_id, rois, scores, masks):
    """COCO result dicts of one category's detections in one image.

    Boxes ``(y1, x1, y2, x2)`` become ``[x, y, w, h]``; masks become RLE (``counts`` str).

    Raises:
        ValueError: a mask is not two-dimensional.
    """
    results = []
    for i in range(rois.shape[0]):
        y1, x1, y2, x2 = (float(v) for v in rois[i])
        results.append({"image_id": int(image_id), "category_id": int(class_id),
                        "bbox": box_yxyx_to_xywh((y1, x1, y2, x2)), "score": float(scores[i]),
                        "segmentation": encode_mask(masks[:, :, i])})
    return results


def run_predictions(dataset, predict_fn, pairs, progress=True):
    """Run ``predict_fn`` on every pair and collect COCO results (paper §5.2 steps 2-3).

    Pairs are grouped by query image so ``predict_fn`` is called once per image with all
    of its categories. Every detection gets the reference's category. Returns a list of
    dicts ``image_id, category_id, bbox [x, y, w, h], score, segmentation (RLE)``.

    Raises:
        ValueError: a pair occurs twice, or ``predict_fn`` returns something other
            than a dict, misses a category or gives rois / scores / masks of mismatched
            shapes (image and category named).
    """
    results = []
    for image_id, group, image, output in predict_by_image(dataset, predict_fn, pairs, "predicting", progress):
        for class_id in group:
            rois, scores, masks = _check_detections(output[class_id], image.shape[:2],
                                                    image_id, class_id)
            results.extend(detections_to_coco(image_id, class_id, rois, scores, masks))
    return results


def predict_by_image(dataset, predict_fn, pairs, desc, progress=True):
    """Yield ``(image_id, pairs of that image by class id, image, predict_fn output)``, one
    ``predict_fn`` call per query image with all of its pairs' references (a progress bar
    labelled ``desc``).

    Raises:
        ValueError: a pair occurs twice, or ``predict_fn`` returns something other than a dict
            or a dict without an entry for one of the image's categories (image and category
            named; an empty result must still be given, e.g. ``rois`` of shape ``[0, 4]``).
    """
    groups = _group_by_image(pairs)
    cache = _ImageCache(dataset)
    for image_id, group in tqdm(groups.items(), total=len(groups), desc=desc, unit="image",
                                disable=not progress):
        image = dataset.load_image(image_id)
        references = {class_id: _pair_crops(pair, cache) for class_id, pair in group.items()}
        output = _call_predictor(predict_fn, image, references, image_id)
        check_entries(output, group, image_id)
        yield image_id, group, image, output


def _empty_detections(image_shape):
    """Detections dict with no instance."""
    return {"rois": np.zeros((0, 4), dtype=np.float64), "scores": np.zeros((0,)),
            "masks": np.zeros(tuple(image_shape) + (0,), dtype=bool)}


def _accepts_image_id(predict_fn):
    """True when ``predict_fn`` takes an ``image_id`` keyword (the dataset baselines do)."""
    try:
        parameters = inspect.signature(predict_fn).parameters
    except (TypeError, ValueError):
        return False
    return "image_id" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _call_predictor(predict_fn, image, references, image_id):
    """``predict_fn(image, references)``, passing ``image_id`` when it accepts one."""
    if _accepts_image_id(predict_fn):
        return predict_fn(image, references, image_id=image_id)
    return predict_fn(image, references)
