"""The paper's analyses of false positives and clutter, and a test with absent categories.

* :func:`confusion_matrix`: AP50 of category-i detections evaluated as category j (paper
  §6.4, Fig. 7);
* :func:`clutter_analysis`: mAP50 against the number of instances in the query (paper
  §6.5, Fig. 8);
* :func:`absent_category_test`: detections when the searched category is absent from the
  query (beyond the paper; every one is a false positive);
* :func:`error_breakdown`: what each detection of a present category hit — the target, a
  duplicate, an instance of another category, a near miss or background (beyond the paper;
  a detector error analysis in the manner of Hoiem et al., ECCV 2012), with recall by box
  size, crowding and overlap (:func:`instance_factors`);
* :func:`proposal_recall`: how many instances the region proposals frame before the heads
  (beyond the paper).
"""
import numpy as np
from tqdm import tqdm

from ..cocoformat import IOU_TYPES
from ..mrcnn.boxes import compute_overlaps
from .pairs import _check_class_ids, _check_shots, _first_images, _other_reference_images, build_eval_pairs
from .predictions import (_call_predictor, _check_detections, as_boxes, check_boxes, check_entries,
                          check_finite_scores, predict_by_image)
from .protocol import coco_ap50, evaluate

#: Instance-count bins of the clutter analysis (inclusive bounds; ``None`` = no upper bound).
DEFAULT_CLUTTER_BINS = ((1, 1), (2, 2), (3, 3), (4, 5), (6, 10), (11, None))


############################################################
#  Confusion matrix (paper §6.4, Fig. 7)
############################################################


def confusion_matrix(dataset, predict_fn, class_ids, seed=0, shots=1, limit=None,
                     iou_type="bbox", evaluation=None, progress=True, verbose=False):
    """``M[i, j]`` = AP50 of the detections made with references of category ``i``,
    relabelled as category ``j`` and evaluated against category ``j``'s ground truth.

    Rows and columns are the evaluated categories (those with at least one pair). Without
    false positives the off-diagonal elements are 0. ``M[i, j]`` is nan when ``j`` has no
    ground truth. Pass ``evaluation`` (an :func:`evaluate` output) to reuse its
    predictions; otherwise they are computed with ``seed``/``shots``/``limit``.

    Returns ``class_ids``, ``class_names`` (list, in order), ``matrix`` (numpy [K, K]),
    ``column_sums`` (nan-ignoring sums over rows), ``column_sums_off_diagonal``,
    ``iou_type``.

    Raises:
        ValueError: any error of :func:`evaluate` (when ``evaluation`` is not given) or
            of :func:`coco_ap50`.
    """
    if evaluation is None:
        evaluation = evaluate(dataset, predict_fn, class_ids, seed=seed, shots=shots,
                              limit=limit, progress=progress, verbose=verbose)
    categories = list(evaluation["class_ids"])
    size = len(categories)
    matrix = np.full((size, size), np.nan)
    by_category = {c: [] for c in categories}
    for result in evaluation["results"]:
        if int(result["category_id"]) in by_category:
            by_category[int(result["category_id"])].append(result)
    for i, row_category in enumerate(categories):
        relabelled = [dict(r, category_id=column) for column in categories
                      for r in by_category[row_category]]
        scores = coco_ap50(evaluation["coco_gt"], relabelled, categories, iou_type,
                           verbose=verbose)
        for j, column in enumerate(categories):
            if column in scores["ap50"]:
                matrix[i, j] = scores["ap50"][column]
    off_diagonal = matrix.copy()
    np.fill_diagonal(off_diagonal, np.nan)
    return {"class_ids": categories,
            "class_names": [str(dataset.class_names[c]) for c in categories],
            "matrix": matrix, "iou_type": iou_type,
            "column_sums": _nansum_columns(matrix),
            "column_sums_off_diagonal": _nansum_columns(off_diagonal)}


def _nansum_columns(matrix):
    """Column sums ignoring nan (a column of nan only sums to nan)."""
    sums = np.nansum(matrix, axis=0) if matrix.size else np.zeros((0,))
    all_nan = np.all(np.isnan(matrix), axis=0) if matrix.size else np.zeros((0,), bool)
    return np.where(all_nan, np.nan, sums)


############################################################
#  Clutter (paper §6.5, Fig. 8)
############################################################


def _bin_label(low, high):
    """``'1'``, ``'4-5'`` or ``'>10'``."""
    if high is None:
        return f">{low - 1}"
    return str(low) if low == high else f"{low}-{high}"


def instance_counts(dataset, image_ids):
    """Number of non-crowd instances (all categories) in each image."""
    return {int(i): sum(1 for ann in dataset.instance_annotations(int(i)) if not ann["iscrowd"])
            for i in image_ids}


def clutter_analysis(dataset, results, coco_gt, class_ids, bins=DEFAULT_CLUTTER_BINS,
                     verbose=False):
    """mAP50 (boxes and masks) as a function of the number of instances in the query.

    The query images (images of ``coco_gt`` with non-crowd ground truth of ``class_ids``)
    are binned by their total number of non-crowd instances of *all* categories; each bin
    is evaluated with ``params.imgIds`` restricted to its images. Returns ``{"bins": [{label,
    min, max, n_images, map50_bbox, map50_segm, ap50_bbox, ap50_segm}], "instance_counts":
    {image_id: count}}``; empty bins have nan mAP.

    Raises:
        ValueError: ``results`` name images missing from ``coco_gt``.
    """
    class_ids = sorted(set(int(c) for c in class_ids))
    ann_ids = coco_gt.getAnnIds(catIds=class_ids, iscrowd=False)
    queries = sorted({int(a["image_id"]) for a in coco_gt.loadAnns(ann_ids)})
    counts = instance_counts(dataset, queries)
    output_bins = []
    for low, high in bins:
        members = [i for i, n in counts.items() if n >= low and (high is None or n <= high)]
        entry = {"label": _bin_label(low, high), "min": int(low),
                 "max": None if high is None else int(high), "n_images": len(members)}
        for iou_type in IOU_TYPES:
            if members:
                scores = coco_ap50(coco_gt, results, class_ids, iou_type, img_ids=members,
                                   verbose=verbose)
            else:
                scores = {"ap50": {}, "map50": float("nan")}
            entry[f"map50_{iou_type}"] = scores["map50"]
            entry[f"ap50_{iou_type}"] = scores["ap50"]
        output_bins.append(entry)
    return {"bins": output_bins, "instance_counts": counts}


############################################################
#  Absent categories (false positives; beyond the paper)
############################################################


def absent_category_test(dataset, predict_fn, class_ids, seed=0, score_threshold=0.7,
                         limit=None, shots=1, max_categories_per_image=None, progress=True):
    """Search every query image for categories that are **not** in it; count detections.

    For each image (sorted; the first ``limit``), every category of ``class_ids`` without
    any annotation in the image (crowd included) and with a usable reference elsewhere is
    searched with ``shots`` references drawn with ``numpy.random.default_rng(seed)`` (at
    most ``max_categories_per_image`` random ones, if given). Every detection scoring at
    least ``score_threshold`` is a false positive.

    Returns ``score_threshold``, ``n_images``, ``n_pairs``, ``mean_false_positives_per_image``,
    ``fraction_images_with_false_positive``, ``mean_false_positives_per_pair``,
    ``fraction_pairs_with_false_positive``, ``per_category`` ({class_id: name, n_queries,
    false_positives, mean_per_query, fraction_queries_with_false_positive}) and
    ``per_image`` (image_id, n_categories, false_positives, max_score).

    Raises:
        ValueError: unknown class ids, a ``score_threshold`` that is not a finite number,
            ``shots`` or ``limit`` < 1 or not a whole number, ``max_categories_per_image`` not None or an integer
            ≥ 1, or ``predict_fn`` returns malformed detections or no entry for one of the
            image's absent categories (image and category named; an empty result must still be
            given).
    """
    class_ids = _check_class_ids(dataset, class_ids)
    if isinstance(score_threshold, (bool, str)) or not isinstance(score_threshold, (int, float, np.integer, np.floating)) \
            or not np.isfinite(score_threshold):
        raise ValueError(f"score_threshold must be a finite number, got {score_threshold!r}")
    _check_shots(shots)
    if max_categories_per_image is not None and (
            isinstance(max_categories_per_image, bool) or not isinstance(max_categories_per_image, (int, np.integer))
            or max_categories_per_image < 1):
        raise ValueError(f"max_categories_per_image must be None or an integer >= 1, got {max_categories_per_image!r}")
    rng = np.random.default_rng(seed)
    image_ids = _first_images([int(i) for i in sorted(dataset.image_ids)], limit)
    per_image, per_category = [], {}
    for image_id in tqdm(image_ids, desc="absent categories", unit="image",
                         disable=not progress):
        annotated = {int(a["class_id"]) for a in dataset.instance_annotations(image_id)}
        absent = [c for c in class_ids
                  if c not in annotated and _other_reference_images(dataset, c, image_id)]
        if max_categories_per_image is not None and len(absent) > max_categories_per_image:
            picked = rng.choice(len(absent), size=int(max_categories_per_image), replace=False)
            absent = [absent[k] for k in sorted(picked)]
        if not absent:
            continue
        references = {c: dataset.sample_references(c, int(shots), rng, exclude_image_id=image_id)
                      for c in absent}
        image = dataset.load_image(image_id)
        output = _call_predictor(predict_fn, image, references, image_id)
        total, max_score = 0, 0.0
        check_entries(output, absent, image_id)
        for class_id in absent:
            _, scores, _ = _check_detections(output[class_id], image.shape[:2], image_id, class_id)
            false_positives = int(np.sum(scores >= score_threshold))
            total += false_positives
            max_score = max([max_score] + [float(s) for s in scores])
            stats = per_category.setdefault(class_id, {"name": str(dataset.class_names[class_id]),
                                                       "n_queries": 0, "false_positives": 0,
                                                       "queries_with_false_positive": 0})
            stats["n_queries"] += 1
            stats["false_positives"] += false_positives
            stats["queries_with_false_positive"] += int(false_positives > 0)
        per_image.append({"image_id": image_id, "n_categories": len(absent),
                          "false_positives": total, "max_score": max_score})
    for stats in per_category.values():
        stats["mean_per_query"] = stats["false_positives"] / stats["n_queries"]
        stats["fraction_queries_with_false_positive"] = (stats["queries_with_false_positive"]
                                                         / stats["n_queries"])
    n_pairs = sum(s["n_queries"] for s in per_category.values())
    fp_total = sum(s["false_positives"] for s in per_category.values())
    pairs_with_fp = sum(s["queries_with_false_positive"] for s in per_category.values())
    n_images = len(per_image)
    return {"score_threshold": float(score_threshold), "seed": seed, "shots": int(shots),
            "n_images": n_images, "n_pairs": n_pairs,
            "mean_false_positives_per_image": fp_total / n_images if n_images else float("nan"),
            "fraction_images_with_false_positive":
                (sum(p["false_positives"] > 0 for p in per_image) / n_images
                 if n_images else float("nan")),
            "mean_false_positives_per_pair": fp_total / n_pairs if n_pairs else float("nan"),
            "fraction_pairs_with_false_positive":
                pairs_with_fp / n_pairs if n_pairs else float("nan"),
            "per_category": dict(sorted(per_category.items())), "per_image": per_image}


############################################################
#  Error breakdown (beyond the paper)
############################################################

#: What a detection of :func:`classify_detections` can be, in the order the cases are tried.
DETECTION_OUTCOMES = ("target", "duplicate", "other_category", "near_miss", "background")

#: The instance properties of :func:`instance_factors` and the bins ``[low, high)`` in which
#: :func:`error_breakdown` reports recall: ``size`` the longer side of the instance's box ÷
#: the longer side of the query image (normalised); ``crowding`` the number of (non-crowd)
#: instances in the query; ``overlap`` the instance's largest box IoU with another instance
#: of the query (below 0.01: practically none).
RECALL_FACTORS = {
    "size": ((0.0, 0.15), (0.15, 0.22), (0.22, 0.3), (0.3, float("inf"))),
    "crowding": ((1, 5), (5, 8), (8, 11), (11, float("inf"))),
    "overlap": ((0.0, 0.01), (0.01, 0.1), (0.1, 0.25), (0.25, float("inf"))),
}


def instance_factors(gt_boxes, image_shape):
    """The properties of each instance that :func:`error_breakdown` bins recall by.

    ``gt_boxes [G, 4]``: ``(y1, x1, y2, x2)`` pixels of the query's instances;
    ``image_shape``: ``(height, width, ...)`` of the query in pixels. Returns a dict of
    float arrays ``[G]`` keyed as :data:`RECALL_FACTORS`: ``size`` (the box's longer side ÷
    the image's longer side), ``crowding`` (``G`` for every instance) and ``overlap`` (the
    largest IoU with another instance's box, 0 for a lone instance).

    Raises:
        ValueError: ``gt_boxes`` is not ``[G, 4]`` finite boxes with ``y2 >= y1`` and ``x2 >= x1``
            (:func:`check_boxes`), or ``image_shape`` has no positive height and width.
    """
    boxes = as_boxes(gt_boxes, "gt_boxes", rows="G")
    check_boxes(boxes, "ground-truth box")
    try:
        height, width = (float(v) for v in tuple(image_shape)[:2])
    except (TypeError, ValueError):
        height = width = float("nan")
    if not (height > 0 and width > 0 and np.isfinite(height) and np.isfinite(width)):
        raise ValueError(f"image_shape must start with a positive height and width, got {image_shape!r}")
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    overlap = np.zeros(len(boxes))
    if len(boxes) > 1:
        iou = compute_overlaps(boxes, boxes)
        np.fill_diagonal(iou, 0.0)
        overlap = iou.max(axis=1)
    return {"size": sides / max(height, width),
            "crowding": np.full(len(boxes), float(len(boxes))),
            "overlap": overlap}


def _recall_by(records):
    """``{factor: [{"low", "high", "instances", "recall"}, ...]}`` from ``records[factor]``: lists
    of ``(value, found)`` per instance and pair (recall nan in an empty bin)."""
    table = {}
    for factor, bins in RECALL_FACTORS.items():
        values = np.array([v for v, _ in records[factor]], dtype=np.float64)
        found = np.array([f for _, f in records[factor]], dtype=bool)
        rows = []
        for low, high in bins:
            inside = (values >= low) & (values < high)
            n = int(inside.sum())
            rows.append({"low": float(low), "high": float(high), "instances": n,
                         "recall": float(found[inside].mean()) if n else float("nan")})
        table[factor] = rows
    return table


def classify_detections(rois, scores, gt_boxes, gt_is_target, iou_threshold=0.5, near_miss_iou=0.3):
    """Sort the detections of one (query, category) pair by what they hit.

    ``rois [N, 4]`` and ``gt_boxes [G, 4]`` are ``(y1, x1, y2, x2)`` pixels, ``gt_is_target
    bool [G]`` marks the instances of the searched category. Taken by decreasing score, a
    detection is ``"target"`` when it overlaps a not yet found target instance with IoU ≥
    ``iou_threshold`` (the best such one is found), ``"duplicate"`` when it only overlaps
    target instances found before, ``"other_category"`` when it overlaps an instance of another
    category that well, ``"near_miss"`` when its best IoU with any instance is in
    ``[near_miss_iou, iou_threshold)`` (a box too loose, too tight or straddling objects) and
    ``"background"`` otherwise. The ``"target"`` detections are the true positives of AP50.

    Returns ``(outcomes, target_found, object_found)``: a list of :data:`DETECTION_OUTCOMES`
    names in the order of ``rois``, ``bool [G]`` target instances found, and ``bool [G]``
    instances of any category overlapped by some detection with IoU ≥ ``iou_threshold``.

    Raises:
        ValueError: ``rois`` or ``gt_boxes`` is not ``[N, 4]``, ``scores`` or ``gt_is_target``
            does not have one entry per box, a box or
            score is not finite or a box has ``y2 < y1`` or ``x2 < x1``, ``iou_threshold`` is not
            in (0, 1], or ``near_miss_iou`` is not in ``[0, iou_threshold]``.
    """
    check_iou_band(iou_threshold, near_miss_iou)
    rois = as_boxes(rois, "rois")
    gt_boxes = as_boxes(gt_boxes, "gt_boxes")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    is_target = np.asarray(gt_is_target, dtype=bool).reshape(-1)
    if scores.shape[0] != rois.shape[0]:
        raise ValueError(f"{scores.shape[0]} scores for {rois.shape[0]} detections")
    if is_target.shape[0] != gt_boxes.shape[0]:
        raise ValueError(f"gt_is_target has {is_target.shape[0]} entries for {gt_boxes.shape[0]} boxes")
    check_boxes(rois, "detection box")
    check_boxes(gt_boxes, "ground-truth box")
    check_finite_scores(scores)
    outcomes = [None] * len(rois)
    target_found = np.zeros(len(gt_boxes), dtype=bool)
    object_found = np.zeros(len(gt_boxes), dtype=bool)
    if len(rois) and len(gt_boxes):
        overlaps = compute_overlaps(rois, gt_boxes)
    else:
        overlaps = np.zeros((len(rois), len(gt_boxes)))
    for k in np.argsort(-scores, kind="stable"):
        hits = overlaps[k] >= iou_threshold
        object_found |= hits
        free = hits & is_target & ~target_found
        if free.any():
            best = int(np.argmax(np.where(free, overlaps[k], -1.0)))
            target_found[best] = True
            outcomes[k] = "target"
        elif (hits & is_target).any():
            outcomes[k] = "duplicate"
        elif hits.any():
            outcomes[k] = "other_category"
        elif len(gt_boxes) and overlaps[k].max() >= near_miss_iou:
            outcomes[k] = "near_miss"
        else:
            outcomes[k] = "background"
    return outcomes, target_found, object_found


def check_iou_band(iou_threshold, near_miss_iou):
    """``ValueError`` unless ``0 < iou_threshold <= 1`` and ``0 <= near_miss_iou <= iou_threshold``
    (nan, None and non-numbers fail both)."""
    for name, value in (("iou_threshold", iou_threshold), ("near_miss_iou", near_miss_iou)):
        if isinstance(value, (bool, str)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name} must be a number, got {value!r}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if not 0.0 <= near_miss_iou <= iou_threshold:
        raise ValueError(f"near_miss_iou must be in [0, iou_threshold={iou_threshold}], got {near_miss_iou}")


def _query_instances(dataset, image_id):
    """``(gt_boxes float64 [G, 4] (y1, x1, y2, x2) pixels, class ids int64 [G])`` of the
    query's non-crowd instances (crowd regions count as no instance)."""
    annotations = [a for a in dataset.instance_annotations(image_id) if not a.get("iscrowd")]
    return (np.array([a["bbox"] for a in annotations], dtype=np.float64).reshape(-1, 4),
            np.array([int(a["class_id"]) for a in annotations], dtype=np.int64))


def error_breakdown(dataset, predict_fn, class_ids, seed=0, shots=1, limit=None, iou_threshold=0.5,
                    near_miss_iou=0.3, progress=True):
    """Where the detections of the one-shot protocol's pairs go (beyond the paper).

    The pairs (query image, present category, ``shots`` references) are those of
    :func:`evaluate` with the same ``seed``, ``shots`` and ``limit``; every detection is
    sorted by :func:`classify_detections` against the query's non-crowd instances (crowd
    regions count as no instance). It tells a detector that misses or mis-draws boxes
    (``near_miss``, ``background``, low ``instance_recall``) from one that finds objects but
    picks the wrong ones (``other_category``; ``target_recall`` no higher than
    ``instance_recall``; low ``top1_target``).

    Returns a dict: ``n_pairs``, ``n_detections``, ``detections_per_pair``, ``counts`` and
    ``fractions`` (per outcome of :data:`DETECTION_OUTCOMES`, fractions of all detections;
    nan without detections), ``target_recall`` (target instances found ÷ target instances),
    ``instance_recall`` (instances of any category overlapped by a detection ÷ instances, over
    the pairs' queries, each counted once per pair), ``top1_target`` (fraction of pairs whose
    highest-scoring detection is a ``"target"``), ``recall_by`` (that any-instance recall in the
    bins of :data:`RECALL_FACTORS`: per factor a list of ``{"low", "high", "instances",
    "recall"}``, ``instances`` counting instance-pairs as ``instance_recall`` does (an instance
    once per pair of its query), ``recall`` nan in an empty bin, the instance properties of
    :func:`instance_factors`; it tells, e.g., crowded
    scenes or overlapping instances from small ones as the cause of a low recall),
    ``iou_threshold``, ``near_miss_iou``, ``seed``, ``shots`` and ``limit``.

    Raises:
        ValueError: unknown class ids, a bad ``iou_threshold`` or ``near_miss_iou``
            (:func:`check_iou_band`), ``shots`` or ``limit`` < 1, or ``predict_fn`` returns
            malformed detections (not a dict, no entry for one of the image's categories,
            mismatched shapes, non-finite or inverted boxes; image and category named).
    """
    check_iou_band(iou_threshold, near_miss_iou)
    pairs = build_eval_pairs(dataset, class_ids, seed, shots=shots, limit=limit, load_crops=False)
    counts = dict.fromkeys(DETECTION_OUTCOMES, 0)
    targets = targets_found = objects = objects_found = top1 = 0
    records = {factor: [] for factor in RECALL_FACTORS}
    for image_id, group, image, output in predict_by_image(dataset, predict_fn, pairs, "error breakdown",
                                                            progress):
        gt_boxes, gt_classes = _query_instances(dataset, image_id)
        factors = instance_factors(gt_boxes, image.shape)
        for class_id in group:
            rois, scores, _ = _check_detections(output[class_id], image.shape[:2], image_id, class_id)
            try:
                outcomes, found, hit = classify_detections(rois, scores, gt_boxes, gt_classes == class_id,
                                                           iou_threshold, near_miss_iou)
            except ValueError as err:
                raise ValueError(f"predict_fn output for image {image_id}, category {class_id}: {err}") from None
            for outcome in outcomes:
                counts[outcome] += 1
            targets += int(np.sum(gt_classes == class_id))
            targets_found += int(found.sum())
            objects += len(gt_classes)
            objects_found += int(hit.sum())
            top1 += int(len(scores) > 0 and outcomes[int(np.argmax(scores))] == "target")
            for factor, values in factors.items():
                records[factor].extend(zip(values.tolist(), hit.tolist()))
    n_detections = sum(counts.values())
    n_pairs = len(pairs)
    return {"n_pairs": n_pairs, "n_detections": n_detections,
            "detections_per_pair": n_detections / n_pairs if n_pairs else float("nan"),
            "counts": counts,
            "fractions": {k: (v / n_detections if n_detections else float("nan")) for k, v in counts.items()},
            "target_recall": targets_found / targets if targets else float("nan"),
            "instance_recall": objects_found / objects if objects else float("nan"),
            "top1_target": top1 / n_pairs if n_pairs else float("nan"),
            "recall_by": _recall_by(records),
            "iou_threshold": float(iou_threshold), "near_miss_iou": float(near_miss_iou), "seed": seed,
            "shots": int(shots), "limit": limit}


def format_error_breakdown(breakdown, label=""):
    """One line of an :func:`error_breakdown` result (percentages)."""
    if not breakdown["n_pairs"]:
        return f"{label}no evaluation pair (no query holds a searched category with a reference elsewhere)"
    f = breakdown["fractions"]
    shares = (", ".join(f"{k.replace('_', ' ')} {100 * f[k]:.0f}%" for k in DETECTION_OUTCOMES)
              if breakdown.get("n_detections", 1) else "no detection")
    return (f"{label}{breakdown['n_pairs']} pairs, {breakdown['detections_per_pair']:.1f} detections per pair: "
            + shares
            + f" | target recall {100 * breakdown['target_recall']:.0f}%, any-instance recall "
            f"{100 * breakdown['instance_recall']:.0f}%, top detection is a target {100 * breakdown['top1_target']:.0f}%")


def proposal_recall(dataset, proposal_fn, class_ids, seed=0, shots=1, limit=None, iou_thresholds=(0.5, 0.7),
                    progress=True):
    """How many instances the region proposals frame, before the heads (beyond the paper).

    The pairs are those of :func:`evaluate` with the same ``seed``, ``shots`` and ``limit``;
    ``proposal_fn(image, {class_id: [crops]}) → {class_id: boxes [N, 4]}`` (``(y1, x1, y2,
    x2)`` query pixels; e.g. ``SiameseMaskRCNN.proposal_fn()``). An instance is framed when some
    proposal of its pair overlaps it with IoU ≥ the threshold. Beside :func:`error_breakdown`
    it separates the two stages of a low recall: instances the RPN never proposes, and
    proposed instances the heads drop or mis-draw.

    Returns a dict: ``n_pairs``, ``proposals_per_pair``, ``target_recall`` and
    ``instance_recall`` (``{threshold: fraction}``; targets of the pair's category, and
    instances of any category counted once per pair), ``iou_thresholds``, ``seed``, ``shots``,
    ``limit``.

    ``iou_thresholds``: a number or a sequence of distinct numbers in (0, 1].

    Raises:
        ValueError: unknown class ids, a bad ``iou_thresholds`` (not numbers in (0, 1], empty,
            repeated), or ``proposal_fn`` returns something other than a dict, a dict without
            one of the image's categories, or boxes that are not finite ``[N, 4]`` with
            ``y2 >= y1`` and ``x2 >= x1`` (image and category named).
    """
    thresholds = _check_thresholds(iou_thresholds)
    pairs = build_eval_pairs(dataset, class_ids, seed, shots=shots, limit=limit, load_crops=False)
    found_targets = dict.fromkeys(thresholds, 0)
    found_objects = dict.fromkeys(thresholds, 0)
    targets = objects = n_proposals = 0
    for image_id, group, image, output in predict_by_image(dataset, proposal_fn, pairs, "proposal recall",
                                                            progress):
        gt_boxes, gt_classes = _query_instances(dataset, image_id)
        for class_id in group:
            try:
                boxes = as_boxes(output[class_id], "proposals")
                check_boxes(boxes, "proposal")
            except ValueError as err:
                raise ValueError(f"proposal_fn output for image {image_id}, category {class_id}: {err}") from None
            n_proposals += len(boxes)
            best = (compute_overlaps(gt_boxes, boxes).max(axis=1) if len(boxes) and len(gt_boxes)
                    else np.zeros(len(gt_boxes)))
            is_target = gt_classes == class_id
            targets += int(is_target.sum())
            objects += len(gt_boxes)
            for threshold in thresholds:
                found_targets[threshold] += int(np.sum(best[is_target] >= threshold))
                found_objects[threshold] += int(np.sum(best >= threshold))
    n_pairs = len(pairs)
    return {"n_pairs": n_pairs,
            "proposals_per_pair": n_proposals / n_pairs if n_pairs else float("nan"),
            "target_recall": {t: (found_targets[t] / targets if targets else float("nan")) for t in thresholds},
            "instance_recall": {t: (found_objects[t] / objects if objects else float("nan")) for t in thresholds},
            "iou_thresholds": [float(t) for t in thresholds], "seed": seed, "shots": int(shots), "limit": limit}


def _check_thresholds(iou_thresholds):
    """``iou_thresholds`` (a number or a sequence of distinct numbers in (0, 1]) as a tuple, or
    ``ValueError`` naming what is wrong."""
    if isinstance(iou_thresholds, np.ndarray) and iou_thresholds.ndim == 0:
        iou_thresholds = iou_thresholds.item()
    if isinstance(iou_thresholds, (int, float, np.integer, np.floating)) and not isinstance(iou_thresholds, bool):
        iou_thresholds = (iou_thresholds,)
    if isinstance(iou_thresholds, (str, bytes)) or not hasattr(iou_thresholds, "__iter__"):
        raise ValueError(f"iou_thresholds must be a number or a sequence of numbers in (0, 1], "
                         f"got {iou_thresholds!r}")
    thresholds = tuple(iou_thresholds)
    if not thresholds:
        raise ValueError("iou_thresholds must name at least one threshold")
    for threshold in thresholds:
        try:
            check_iou_band(threshold, 0.0)
        except ValueError:
            raise ValueError(f"iou_thresholds must be numbers in (0, 1], got {threshold!r} "
                             f"in {iou_thresholds!r}") from None
    thresholds = tuple(float(t) for t in thresholds)  # plain floats: JSON keys, one value per threshold
    if len({round(t, 6) for t in thresholds}) != len(thresholds):  # float32 0.7 repeats 0.7
        raise ValueError(f"iou_thresholds repeats a threshold: {thresholds}")
    return thresholds


def format_proposal_recall(result, label=""):
    """One line of a :func:`proposal_recall` result (percentages)."""
    if not result["n_pairs"]:
        return f"{label}no evaluation pair (no query holds a searched category with a reference elsewhere)"
    cells = [f"IoU ≥ {float(t):g}: target {_percent(result['target_recall'][t])}, any instance "
             f"{_percent(result['instance_recall'][t])}" for t in result["target_recall"]]
    return f"{label}{result['proposals_per_pair']:.0f} proposals per pair framing " + "; ".join(cells)


def _percent(fraction):
    """A fraction as ``"42%"``; ``"-"`` for None or nan (as a JSON copy of a result holds them)."""
    if fraction is None or not np.isfinite(fraction):
        return "-"
    return f"{100 * fraction:.0f}%"


#: How :func:`format_recall_by` names the factors of :data:`RECALL_FACTORS`.
FACTOR_LABELS = {"size": "box side ÷ image side", "crowding": "instances in the query",
                 "overlap": "largest IoU with another instance"}


def format_recall_by(breakdown, indent=""):
    """The ``recall_by`` table of an :func:`error_breakdown` result, one line per factor:
    ``[low, high) recall% (instance-pairs)`` per bin ("-" for an empty bin). Reads a result
    or its JSON copy (``errors.json``, where an unbounded ``high`` is null).

    Raises:
        KeyError: ``breakdown`` has no ``recall_by`` (not a result of :func:`error_breakdown`).
    """
    lines = []
    for factor, rows in breakdown["recall_by"].items():
        cells = []
        for row in rows:  # a JSON copy (errors.json) holds null for an unbounded high and an empty bin's recall
            high = row["high"]
            low, high = f"{row['low']:g}", ("∞" if high is None or high == float("inf") else f"{high:g}")
            recall = "-" if not row["instances"] else _percent(row["recall"])
            cells.append(f"[{low}, {high}) {recall} ({row['instances']})")
        lines.append(f"{indent}any-instance recall by {FACTOR_LABELS.get(factor, factor)}: " + "; ".join(cells))
    return "\n".join(lines)
