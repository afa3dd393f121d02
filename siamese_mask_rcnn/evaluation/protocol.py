"""Step 4 of the one-shot protocol (paper §5.2) and the full runs: AP50 with pycocotools.

:func:`evaluate` runs steps 1-4 once (pairs, predictions, COCO AP50 per category and their
mean, boxes and masks); :func:`evaluate_runs` repeats it with several seeds and reports the
mean and a 95% interval.
"""
import logging
import math

import numpy as np
from pycocotools.cocoeval import COCOeval

from ..cocoformat import IOU_TYPES, coco_from_dict, load_results, quiet
from .pairs import _check_class_ids, _draw_pairs
from .predictions import run_predictions

logger = logging.getLogger(__name__)


def coco_ap50(coco_gt, results, class_ids, iou_type="bbox", img_ids=None, verbose=False):
    """AP at IoU 0.5 per category and their mean, with pycocotools' ``COCOeval``.

    ``params.catIds`` is restricted to ``class_ids`` (and ``params.imgIds`` to ``img_ids``
    if given); the IoU thresholds are pycocotools' defaults and AP50 is read at IoU .50,
    area "all", 100 detections. Categories without (non-crowd) ground truth are excluded
    from the mean and reported under ``no_gt``.

    Returns ``{"ap50": {class_id: AP}, "map50": mean (nan if no category), "no_gt": [...]}``.

    Raises:
        ValueError: ``iou_type`` is not ``"bbox"``/``"segm"``, ``class_ids`` is empty,
            results name images missing from ``coco_gt`` or lack masks for ``"segm"``.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    class_ids = sorted(set(int(c) for c in class_ids))
    if not class_ids:
        raise ValueError("coco_ap50 needs at least one category id")
    coco_dt = load_results(coco_gt, results, iou_type, verbose)
    evaluator = COCOeval(coco_gt, coco_dt, iou_type)
    evaluator.params.catIds = class_ids
    if img_ids is not None:
        evaluator.params.imgIds = sorted(set(int(i) for i in img_ids))
        if not evaluator.params.imgIds:
            return {"ap50": {}, "map50": float("nan"), "no_gt": class_ids}
    with quiet(verbose):
        evaluator.evaluate()
        evaluator.accumulate()
    params = evaluator.params
    t = int(np.argmin(np.abs(np.asarray(params.iouThrs) - 0.5)))
    a = list(params.areaRngLbl).index("all")
    m = list(params.maxDets).index(100)
    precision = evaluator.eval["precision"]
    ap50, no_gt = {}, []
    for k, class_id in enumerate(params.catIds):
        values = precision[t, :, k, a, m]
        values = values[values > -1]
        if values.size == 0:
            no_gt.append(int(class_id))
        else:
            ap50[int(class_id)] = float(np.mean(values))
    map50 = float(np.mean(list(ap50.values()))) if ap50 else float("nan")
    return {"ap50": ap50, "map50": map50, "no_gt": no_gt}


def evaluation_ground_truth(dataset, pairs, class_ids, verbose=False):
    """COCO ground truth restricted to the evaluated ``(image, category)`` pairs.

    All images stay (so any result image id is valid), but only the annotations of the
    pairs that were actually run are kept: with ``limit`` or skipped combinations (no
    reference in another image) the unseen instances are not counted as misses.

    Raises:
        RuntimeError: the dataset is not prepared (from ``to_coco_dict``).
    """
    data = dataset.to_coco_dict(class_ids=sorted(set(int(c) for c in class_ids)))
    evaluated = {(int(p.image_id), int(p.class_id)) for p in pairs}
    data["annotations"] = [ann for ann in data["annotations"]
                           if (int(ann["image_id"]), int(ann["category_id"])) in evaluated]
    return coco_from_dict(data, verbose)


def _class_names(dataset, class_ids):
    """``{class_id: name}`` for the given ids."""
    return {int(c): str(dataset.class_names[int(c)]) for c in class_ids}


def evaluate(dataset, predict_fn, class_ids, seed=0, shots=1, limit=None, progress=True,
             verbose=False):
    """One run of the one-shot protocol (paper §5.2) for the categories ``class_ids``.

    Returns a dict with ``ap50_bbox`` / ``ap50_segm`` (per category), ``map50_bbox`` /
    ``map50_segm``, ``n_pairs``, ``n_images``, ``class_ids`` (the categories that had at
    least one pair), ``class_names``, ``no_gt_bbox`` / ``no_gt_segm``, ``skipped`` (image,
    category combinations without a reference elsewhere), ``pairs`` (image id, class id and
    reference info of every pair), ``results`` (COCO results), ``coco_gt`` (the restricted
    ground truth, a pycocotools object), ``seed``, ``shots``, ``limit`` — all in internal
    ids — and, in the ids of the data's own annotation file (for COCO the file's image and
    category ids; :meth:`~siamese_mask_rcnn.datasets.base.OneShotDataset.to_source_results`):
    ``source_results`` (the results, as :func:`~.report.write_outputs` writes them),
    ``source_category_ids`` (``class_ids``) and ``source_image_ids`` (the query images).
    Scoring ``source_results`` with plain pycocotools ``COCOeval`` against that file,
    ``params.catIds = source_category_ids`` and ``params.imgIds = source_image_ids``, gives
    this function's AP50 values whenever every instance can be a reference
    (``REFERENCE_MIN_SIZE`` 0, the default) and the file has no annotation the loader dropped.

    Raises:
        ValueError: unknown class ids, ``shots`` < 1 or ``limit`` < 1 (the value is
            named), or ``predict_fn`` returns malformed detections (image and category named).
    """
    class_ids = _check_class_ids(dataset, class_ids)
    pairs, skipped = _draw_pairs(dataset, class_ids, seed, shots, limit, load_crops=False)
    results = run_predictions(dataset, predict_fn, pairs, progress=progress)
    evaluated = sorted({int(p.class_id) for p in pairs})
    output = {"seed": seed, "shots": int(shots), "limit": limit, "n_pairs": len(pairs),
              "n_images": len({int(p.image_id) for p in pairs}), "class_ids": evaluated,
              "requested_class_ids": class_ids,
              "class_names": _class_names(dataset, class_ids),
              "skipped": [list(s) for s in skipped],
              "pairs": [{"image_id": int(p.image_id), "class_id": int(p.class_id),
                         "references": [dict(info, bbox=None if info.get("bbox") is None
                                             else [int(v) for v in info["bbox"]])
                                        for info in p.reference_info]} for p in pairs],
              "results": results,
              "source_results": dataset.to_source_results(results),
              "source_category_ids": [dataset.source_class_id(c) for c in evaluated],
              "source_image_ids": [dataset.source_image_id(i)
                                   for i in sorted({int(p.image_id) for p in pairs})]}
    if not evaluated:
        shown = ", ".join(str(c) for c in class_ids[:10]) + (" ..." if len(class_ids) > 10 else "")
        logger.warning("no evaluation pair for any of %d categories (%s): no scene holds one "
                       "of them with a reference available", len(class_ids), shown)
        for iou_type in IOU_TYPES:
            output.update({f"ap50_{iou_type}": {}, f"map50_{iou_type}": float("nan"),
                           f"no_gt_{iou_type}": class_ids})
        output["coco_gt"] = None
        return output
    coco_gt = evaluation_ground_truth(dataset, pairs, evaluated, verbose)
    for iou_type in IOU_TYPES:
        scores = coco_ap50(coco_gt, results, evaluated, iou_type, verbose=verbose)
        output[f"ap50_{iou_type}"] = scores["ap50"]
        output[f"map50_{iou_type}"] = scores["map50"]
        output[f"no_gt_{iou_type}"] = scores["no_gt"]
    output["coco_gt"] = coco_gt
    return output


def confidence_interval95(values):
    """``1.96 · std(values) / sqrt(len(values))`` (numpy's std, ddof=0): the 95% interval
    of the mean of repeated evaluation runs (not in the paper; the official release reported
    5 runs)."""
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        return float("nan")
    return float(1.96 * np.std(values) / math.sqrt(values.size))


def evaluate_runs(dataset, predict_fn, class_ids, runs=5, seed=0, shots=1, limit=None,
                  progress=True, predict_fn_for_seed=None, verbose=False):
    """Repeat :func:`evaluate` with seeds ``seed, seed+1, ...`` (new reference draws each run).

    ``predict_fn_for_seed(run_seed)``, if given, builds each run's predictor (e.g. the
    random-boxes baseline with fresh shifts); otherwise ``predict_fn`` is used for all.
    The default of 5 runs is the official release's protocol (the mean over 5 reference
    draws); the paper text (§5.2) describes a single run per split.
    Returns ``runs`` (per-run seed, n_pairs, mAP50 and per-category AP50), the means
    ``map50_bbox`` / ``map50_segm``, their 95% intervals ``ci95_bbox`` / ``ci95_segm``
    (1.96·std(run values)/√runs), the mean per-category ``ap50_bbox`` / ``ap50_segm``, and
    ``evaluations`` (the full :func:`evaluate` dicts), and ``source_category_ids`` /
    ``source_image_ids`` (every run's evaluated categories / query images in the annotation
    file's own ids, see :func:`evaluate`).

    Raises:
        ValueError: ``runs`` < 1, neither ``predict_fn`` nor ``predict_fn_for_seed``,
            or any error of :func:`evaluate`.
    """
    if int(runs) < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    evaluations = []
    for run in range(int(runs)):
        run_seed = int(seed) + run
        fn = predict_fn_for_seed(run_seed) if predict_fn_for_seed is not None else predict_fn
        if fn is None:
            raise ValueError("evaluate_runs needs predict_fn or predict_fn_for_seed")
        evaluations.append(evaluate(dataset, fn, class_ids, seed=run_seed, shots=shots,
                                    limit=limit, progress=progress, verbose=verbose))
    summary = {"seeds": [e["seed"] for e in evaluations], "shots": int(shots),
               "limit": limit, "class_names": evaluations[0]["class_names"],
               "class_ids": sorted(set().union(*(e["class_ids"] for e in evaluations))),
               "runs": [{key: e[key] for key in ("seed", "n_pairs", "n_images", "map50_bbox",
                                                 "map50_segm", "ap50_bbox", "ap50_segm")}
                        for e in evaluations],
               "evaluations": evaluations}
    for iou_type in IOU_TYPES:
        values = [e[f"map50_{iou_type}"] for e in evaluations]
        summary[f"map50_{iou_type}"] = float(np.mean(values))
        summary[f"ci95_{iou_type}"] = confidence_interval95(values)
        per_category = {}
        for e in evaluations:
            for class_id, ap in e[f"ap50_{iou_type}"].items():
                per_category.setdefault(class_id, []).append(ap)
        summary[f"ap50_{iou_type}"] = {c: float(np.mean(v)) for c, v in sorted(per_category.items())}
    summary["n_pairs"] = int(np.mean([e["n_pairs"] for e in evaluations]))
    for key in ("source_category_ids", "source_image_ids"):
        summary[key] = sorted(set().union(*(e[key] for e in evaluations)))
    return summary
