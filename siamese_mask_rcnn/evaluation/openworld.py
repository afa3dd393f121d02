"""Open-world one-shot evaluation: every category is searched in every query image.

The paper's protocol (§5.2) only searches a query for categories that are present in it, so
a model that fires on every reference is never penalised. Real use is the opposite: a user
shows one example and asks "where are these?" in images that mostly do not contain any.

Protocol (:func:`evaluate_open_world`):

1. for every query image (sorted; the first ``limit``) and every category of ``class_ids``
   with a usable reference instance in **another** image, draw ``shots`` references of the
   category from other images — whether or not the category is in the query. Categories
   present in the query (a non-crowd instance) are always searched; with
   ``max_absent_per_image`` only that many absent ones, drawn at random, are searched
   (quick runs);
2. predict with one ``predict_fn`` call per query image (the query is encoded once for all
   of its categories);
3. every detection keeps the reference's category;
4. COCO AP50 per category over **all** evaluated images, boxes and masks, so detections on
   images without the category are false positives; mAP50 is the mean over categories.

Besides mAP50 it reports, over a grid of score thresholds, the recall on present pairs
(ground-truth instances found at IoU ≥ 0.5, greedy by score) against the false positives
per absent pair, the threshold at which absent pairs get at most ``max_fp_per_absent_pair``
(0.1) false positives, and the numbers at the model's own threshold.

Results are appended to a JSON-lines file per query image as they come
(``results_path``): an interrupted evaluation started again with the same arguments skips
the images already done. Reference draws use ``numpy.random.default_rng([seed, image_id,
class_id])``, so they do not depend on the order, the cap or a resume.
"""
import json
import logging
import os
import pathlib

import numpy as np
from tqdm import tqdm

from ..cocoformat import IOU_TYPES, box_xywh_to_yxyx, coco_from_dict
from ..mrcnn.boxes import compute_overlaps
from .pairs import _check_class_ids, _check_shots, _first_images, _other_reference_images
from .predictions import _call_predictor, _check_detections, _empty_detections, detections_to_coco
from .protocol import coco_ap50
from .report import _csv_number, _finish_figure, _write_csv, write_json

logger = logging.getLogger(__name__)

#: Score thresholds of the recall / false-positive curve.
DEFAULT_THRESHOLDS = tuple(round(0.01 * k, 2) for k in range(101))
#: False positives per absent pair that the reported operating threshold allows.
MAX_FP_PER_ABSENT_PAIR = 0.1
RESULTS_FILE = "open_world_results.jsonl"


############################################################
#  Pairs
############################################################


def open_world_categories(dataset, image_id, class_ids, max_absent_per_image=None, seed=0):
    """The categories searched in one query image: ``(present, absent)`` sorted lists.

    ``present``: categories of ``class_ids`` with a non-crowd instance in the image;
    ``absent``: categories with no annotation at all in the image (crowd included). Both
    only with a usable reference in another image. With ``max_absent_per_image`` a random
    subset (``default_rng([seed, image_id])``) of the absent ones is kept.

    Raises:
        ValueError: ``max_absent_per_image`` is negative.
    """
    image_id = int(image_id)
    present_all = set(dataset.image_categories.get(image_id, []))
    annotated = {abs(int(a["class_id"])) for a in dataset.instance_annotations(image_id)}
    present, absent = [], []
    for class_id in class_ids:
        if not _other_reference_images(dataset, class_id, image_id):
            continue
        if class_id in present_all:
            present.append(class_id)
        elif class_id not in annotated:
            absent.append(class_id)
    if max_absent_per_image is not None:
        cap = int(max_absent_per_image)
        if cap < 0:
            raise ValueError(f"max_absent_per_image must be >= 0, got {max_absent_per_image}")
        if len(absent) > cap:
            rng = np.random.default_rng([int(seed), image_id])
            absent = sorted(absent[k] for k in rng.choice(len(absent), size=cap, replace=False))
    return present, absent


def _pair_references(dataset, image_id, class_id, shots, seed):
    """``shots`` reference crops of ``class_id`` from images other than ``image_id``."""
    rng = np.random.default_rng([int(seed), int(image_id), int(class_id)])
    return dataset.sample_references(class_id, int(shots), rng, exclude_image_id=int(image_id))


############################################################
#  Matching for the curve
############################################################


def match_detections(rois, scores, gt_boxes, iou_threshold=0.5):
    """Greedy matching by decreasing score: which detections find a ground-truth instance.

    ``rois [N, 4]`` and ``gt_boxes [G, 4]`` are ``(y1, x1, y2, x2)`` pixels; every
    ground-truth box is matched at most once, to the highest-scoring detection with IoU ≥
    ``iou_threshold`` among those not yet used. Returns ``bool [N]`` (true positives), in
    the order of ``rois``.
    """
    rois = np.asarray(rois, dtype=np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    matched = np.zeros(len(rois), dtype=bool)
    free = np.ones(len(gt_boxes), dtype=bool)
    overlaps = compute_overlaps(rois, gt_boxes)  # [N, G], once for the whole greedy pass
    for k in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
        if not free.any():
            break
        ious = np.where(free, overlaps[k], -1.0)
        best = int(np.argmax(ious))
        if ious[best] >= iou_threshold:
            matched[k] = True
            free[best] = False
    return matched


def recall_fp_curve(present_pairs, absent_pairs, thresholds=DEFAULT_THRESHOLDS):
    """Recall on present pairs and false positives per absent pair at each threshold.

    ``present_pairs``: dicts with ``scores`` (list) , ``matched`` (bool list, same order) and
    ``n_gt`` (non-crowd instances); ``absent_pairs``: dicts with ``scores``. A detection
    counts at threshold ``t`` when its score ≥ ``t``.

    Returns rows ``{threshold, recall, fp_per_absent_pair, fraction_absent_pairs_with_fp,
    precision_present}`` (nan where undefined).
    """
    n_gt = sum(int(p["n_gt"]) for p in present_pairs)
    tp_scores = np.asarray([s for p in present_pairs for s, m in zip(p["scores"], p["matched"]) if m])
    present_scores = np.asarray([s for p in present_pairs for s in p["scores"]])
    absent_max = np.asarray([max(p["scores"]) if len(p["scores"]) else -np.inf for p in absent_pairs])
    absent_scores = np.asarray([s for p in absent_pairs for s in p["scores"]])
    rows = []
    for t in thresholds:
        tp = int(np.sum(tp_scores >= t))
        kept_present = int(np.sum(present_scores >= t))
        fp = int(np.sum(absent_scores >= t))
        rows.append({
            "threshold": float(t),
            "recall": tp / n_gt if n_gt else float("nan"),
            "fp_per_absent_pair": fp / len(absent_pairs) if absent_pairs else float("nan"),
            "fraction_absent_pairs_with_fp": (float(np.mean(absent_max >= t))
                                              if absent_pairs else float("nan")),
            "precision_present": tp / kept_present if kept_present else float("nan"),
        })
    return rows


def operating_point(curve, max_fp_per_absent_pair=MAX_FP_PER_ABSENT_PAIR):
    """The lowest threshold of ``curve`` whose false positives per absent pair are at most
    ``max_fp_per_absent_pair`` (the curve row), or ``None`` if no threshold reaches it."""
    for row in sorted(curve, key=lambda r: r["threshold"]):
        if not np.isnan(row["fp_per_absent_pair"]) and row["fp_per_absent_pair"] <= max_fp_per_absent_pair:
            return dict(row)
    return None


def curve_at(curve, threshold):
    """The curve row of the highest grid threshold ≤ ``threshold`` (the grid's first row if none)."""
    rows = sorted(curve, key=lambda r: r["threshold"])
    chosen = rows[0]
    for row in rows:
        if row["threshold"] <= float(threshold) + 1e-9:
            chosen = row
    return dict(chosen)


############################################################
#  Streaming results (resume)
############################################################


def _read_results_file(path, header):
    """Image records already written to ``path`` under the same ``header``.

    A last line cut by an interruption is dropped (and the file truncated to the last full
    line). Raises ``ValueError`` naming the file and the setting when the file was written
    with other settings.
    """
    path = pathlib.Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return {}
    records, good_bytes = {}, 0
    with open(path, "rb") as handle:
        lines = handle.readlines()
    for number, raw in enumerate(lines):
        try:
            item = json.loads(raw)
        except ValueError:
            if number == len(lines) - 1:
                break  # a line cut by an interruption: drop it
            raise ValueError(f"{path}: line {number + 1} is not JSON; delete the file to start over")
        if number == 0:
            if item.get("kind") != "header":
                raise ValueError(f"{path}: not an open-world results file (no header line)")
            for key, value in header.items():
                if item.get(key) != value:
                    raise ValueError(f"{path} was written with {key}={item.get(key)!r}, this run has "
                                     f"{key}={value!r}: use another output folder or delete the file")
        else:
            records[int(item["image_id"])] = item
        good_bytes += len(raw)
    if good_bytes < path.stat().st_size:
        with open(path, "r+b") as handle:
            handle.truncate(good_bytes)
    return records


def _append_line(handle, item):
    handle.write(json.dumps(item, separators=(",", ":")) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


############################################################
#  The protocol
############################################################


def _gt_boxes(coco_data_by_pair, image_id, class_id):
    anns = coco_data_by_pair.get((int(image_id), int(class_id)), [])
    return np.asarray([box_xywh_to_yxyx(a["bbox"]) for a in anns if not a.get("iscrowd")],
                      dtype=np.float64).reshape(-1, 4)


def evaluate_open_world(dataset, predict_fn, class_ids, seed=0, shots=1, limit=None,
                        max_absent_per_image=None, score_threshold=0.5, results_path=None,
                        thresholds=DEFAULT_THRESHOLDS, max_fp_per_absent_pair=MAX_FP_PER_ABSENT_PAIR,
                        progress=True, verbose=False):
    """Open-world one-shot evaluation of ``class_ids`` (see the module docstring).

    ``predict_fn(image, {class_id: [crops]}) -> {class_id: {"rois", "scores", "masks"}}`` as
    for :func:`evaluate`. ``score_threshold`` is the model's own threshold (its
    ``DETECTION_MIN_CONFIDENCE``) at which false positives per absent pair are reported.
    ``results_path``: JSON-lines file written per query image as results come (resumed when
    it exists with the same settings); ``None`` keeps everything in memory.

    Returns a dict: ``map50_bbox`` / ``map50_segm`` and per-category ``ap50_bbox`` /
    ``ap50_segm`` (COCO AP50 over all evaluated images), ``n_images``, ``n_present_pairs``,
    ``n_absent_pairs``, ``curve`` (rows of :func:`recall_fp_curve`), ``at_threshold`` (the
    curve at ``score_threshold``), ``operating_point`` (lowest threshold with at most
    ``max_fp_per_absent_pair`` false positives per absent pair, or None), ``results`` (COCO
    results) and the settings.

    Raises:
        ValueError: unknown class ids, ``shots`` or ``limit`` < 1 or not a whole number, a results file written
            with other settings (named), or malformed detections (image and category named).
    """
    class_ids = _check_class_ids(dataset, class_ids)
    _check_shots(shots)
    image_ids = _first_images([int(i) for i in sorted(dataset.image_ids)], limit)
    header = {"kind": "header", "protocol": "open-world", "seed": int(seed), "shots": int(shots),
              "class_ids": class_ids, "max_absent_per_image": max_absent_per_image,
              "limit": None if limit is None else int(limit)}
    done = _read_results_file(results_path, header) if results_path else {}
    handle = None
    if results_path:
        path = pathlib.Path(results_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.exists() or path.stat().st_size == 0
        handle = open(path, "a", encoding="utf-8")
        if fresh:
            _append_line(handle, header)
    gt_data = dataset.to_coco_dict(class_ids=class_ids, image_ids=image_ids)
    by_pair = {}
    for ann in gt_data["annotations"]:
        by_pair.setdefault((int(ann["image_id"]), int(ann["category_id"])), []).append(ann)
    if done:
        logger.info("resuming: %d of %d query images already in %s", len(done), len(image_ids), results_path)
    try:
        for image_id in tqdm(image_ids, desc="open-world search", unit="image", disable=not progress,
                             initial=0):
            if image_id in done:
                continue
            present, absent = open_world_categories(dataset, image_id, class_ids,
                                                    max_absent_per_image, seed)
            searched = present + absent
            record = {"image_id": image_id, "pairs": [], "results": []}
            if searched:
                references = {c: _pair_references(dataset, image_id, c, shots, seed) for c in searched}
                image = dataset.load_image(image_id)
                output = _call_predictor(predict_fn, image, references, image_id)
                if not isinstance(output, dict):
                    raise ValueError(f"predict_fn must return a dict class_id -> detections, got "
                                     f"{type(output).__name__} for image {image_id}")
                for class_id in searched:
                    detections = output.get(class_id, _empty_detections(image.shape[:2]))
                    rois, scores, masks = _check_detections(detections, image.shape[:2], image_id, class_id)
                    is_present = class_id in present
                    gt = _gt_boxes(by_pair, image_id, class_id) if is_present else np.zeros((0, 4))
                    matched = match_detections(rois, scores, gt) if is_present else np.zeros(len(rois), bool)
                    record["pairs"].append({"class_id": int(class_id), "present": bool(is_present),
                                            "n_gt": int(len(gt)), "scores": [float(s) for s in scores],
                                            "matched": [bool(m) for m in matched],
                                            "presence": _presence_of(detections)})
                    record["results"].extend(detections_to_coco(image_id, class_id, rois, scores, masks))
            done[image_id] = record
            if handle is not None:
                _append_line(handle, record)
    finally:
        if handle is not None:
            handle.close()
    return summarize_open_world(dataset, [done[i] for i in image_ids], class_ids, gt_data,
                                score_threshold, thresholds, max_fp_per_absent_pair, header, verbose)


def _presence_of(detections):
    """The pair's presence score (a model with the presence head, ``siamese_mask_rcnn.presence``)
    as a float, else None."""
    value = detections.get("presence") if isinstance(detections, dict) else None
    return None if value is None else float(value)


def presence_auc(present_pairs, absent_pairs):
    """The probability that a present pair's presence score exceeds an absent pair's (ties
    count one half): the area under the ROC curve of the presence score as a "category
    here?" classifier. None when a pair has no presence score or a side is empty."""
    pos = [p.get("presence") for p in present_pairs]
    neg = [p.get("presence") for p in absent_pairs]
    if any(v is None for v in pos + neg):
        return None
    return roc_auc(pos, neg)


def roc_auc(positive, negative):
    """The probability that a value of ``positive`` exceeds one of ``negative`` (ties count
    one half): the area under the ROC curve of the value as a classifier. None when a side
    is empty."""
    if len(positive) == 0 or len(negative) == 0:
        return None
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    order = np.sort(neg)
    below = np.searchsorted(order, pos, side="left")
    ties = np.searchsorted(order, pos, side="right") - below
    return float(np.sum(below + 0.5 * ties) / (len(pos) * len(neg)))


def summarize_open_world(dataset, records, class_ids, gt_data, score_threshold, thresholds,
                         max_fp_per_absent_pair, settings, verbose=False):
    """Score the per-image ``records`` of :func:`evaluate_open_world` (COCO AP50 and curve)."""
    searched = {(r["image_id"], p["class_id"]) for r in records for p in r["pairs"]}
    image_ids = [int(r["image_id"]) for r in records]
    data = dict(gt_data)
    # Present (image, category) combinations that could not be searched (no reference in
    # another image) are left out, as in the paper's protocol.
    data["annotations"] = [a for a in gt_data["annotations"]
                           if (int(a["image_id"]), int(a["category_id"])) in searched]
    results = [det for r in records for det in r["results"]]
    present_pairs = [p for r in records for p in r["pairs"] if p["present"]]
    absent_pairs = [p for r in records for p in r["pairs"] if not p["present"]]
    output = {key: settings[key] for key in ("seed", "shots", "max_absent_per_image", "limit")}
    output.update({"protocol": "open-world", "class_ids": class_ids,
                   "class_names": {int(c): str(dataset.class_names[int(c)]) for c in class_ids},
                   "n_images": len(image_ids), "n_present_pairs": len(present_pairs),
                   "n_absent_pairs": len(absent_pairs), "score_threshold": float(score_threshold),
                   "results": results})
    coco_gt = coco_from_dict(data, verbose)
    for iou_type in IOU_TYPES:
        scores = coco_ap50(coco_gt, results, class_ids, iou_type, img_ids=image_ids, verbose=verbose)
        output[f"ap50_{iou_type}"] = scores["ap50"]
        output[f"map50_{iou_type}"] = scores["map50"]
        output[f"no_gt_{iou_type}"] = scores["no_gt"]
    curve = recall_fp_curve(present_pairs, absent_pairs, thresholds)
    output["curve"] = curve
    output["at_threshold"] = curve_at(curve, score_threshold)
    output["operating_point"] = operating_point(curve, max_fp_per_absent_pair)
    output["max_fp_per_absent_pair"] = float(max_fp_per_absent_pair)
    output["presence_auc"] = presence_auc(present_pairs, absent_pairs)
    return output


############################################################
#  Report
############################################################


def write_curve_csv(open_world, path):
    """The recall / false-positive curve as CSV; returns the path.

    Raises:
        OSError: the file cannot be written.
    """
    keys = ["threshold", "recall", "fp_per_absent_pair", "fraction_absent_pairs_with_fp",
            "precision_present"]
    rows = [keys] + [[_csv_number(row[k]) for k in keys] for row in open_world["curve"]]
    return _write_csv(path, rows)


def plot_curve(open_world, path=None, title="open-world search", threshold_label="model threshold"):
    """Recall on present pairs against false positives per absent pair (one point per
    threshold), the evaluated threshold (legend ``threshold_label``, e.g. "--score-threshold"
    when it is a command-line value) and the operating point marked. Returns the Figure.

    Raises:
        OSError: ``path`` cannot be written.
    """
    import matplotlib.pyplot as plt
    curve = open_world["curve"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    fp = [row["fp_per_absent_pair"] for row in curve]
    recall = [row["recall"] for row in curve]
    ax.plot(fp, recall, "-", color="tab:blue", label="score thresholds 0…1")
    at = open_world["at_threshold"]
    ax.plot([at["fp_per_absent_pair"]], [at["recall"]], "o", color="tab:red",
            label=f"{threshold_label} {open_world['score_threshold']:.2f}")
    op = open_world.get("operating_point")
    if op is not None:
        ax.plot([op["fp_per_absent_pair"]], [op["recall"]], "s", color="tab:green",
                label=f"≤ {open_world['max_fp_per_absent_pair']:g} FP/absent pair: t = {op['threshold']:.2f}")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("false positives per absent pair")
    ax.set_ylabel("recall on present pairs (IoU ≥ 0.5)")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    return _finish_figure(fig, path)


def open_world_summary(open_world):
    """The headline numbers of an open-world evaluation as a flat dict (for JSON and tables)."""
    at = open_world["at_threshold"]
    op = open_world.get("operating_point")
    return {
        "map50_bbox": open_world["map50_bbox"], "map50_segm": open_world["map50_segm"],
        "n_images": open_world["n_images"], "n_present_pairs": open_world["n_present_pairs"],
        "n_absent_pairs": open_world["n_absent_pairs"],
        "score_threshold": open_world["score_threshold"],
        "fp_per_absent_pair": at["fp_per_absent_pair"],
        "fraction_absent_pairs_with_fp": at["fraction_absent_pairs_with_fp"],
        "recall_at_threshold": at["recall"],
        "operating_threshold": None if op is None else op["threshold"],
        "recall_at_operating_threshold": None if op is None else op["recall"],
        "presence_auc": open_world.get("presence_auc"),
    }


def format_open_world(open_world, threshold_origin="the model's threshold"):
    """A few lines of text with the headline numbers (of :func:`evaluate_open_world`).
    ``threshold_origin`` says where ``score_threshold`` came from: the default fits a
    threshold that is the model's ``DETECTION_MIN_CONFIDENCE`` (``at the model's threshold
    0.50: ...``); ``evaluate_siamese.py`` passes ``"--score-threshold"``."""
    s = open_world_summary(open_world)
    lines = [f"open-world search: {s['n_images']} query images, {s['n_present_pairs']} present and "
             f"{s['n_absent_pairs']} absent (image, category) pairs",
             f"  open-world mAP50 (%): detection {100 * s['map50_bbox']:.1f}, segmentation "
             f"{100 * s['map50_segm']:.1f}",
             f"  at {threshold_origin} {s['score_threshold']:.2f}: {s['fp_per_absent_pair']:.2f} false "
             f"positives per absent pair ({100 * s['fraction_absent_pairs_with_fp']:.1f}% of absent pairs "
             f"with any), recall {100 * s['recall_at_threshold']:.1f}% on present pairs"]
    if s["operating_threshold"] is None:
        lines.append(f"  no threshold gives ≤ {open_world['max_fp_per_absent_pair']:g} false positives per absent pair")
    else:
        lines.append(f"  ≤ {open_world['max_fp_per_absent_pair']:g} false positives per absent pair from threshold "
                     f"{s['operating_threshold']:.2f} (recall {100 * s['recall_at_operating_threshold']:.1f}%)")
    if s["presence_auc"] is not None:
        lines.append(f"  presence score: AUC {s['presence_auc']:.3f} between present and absent pairs "
                     "(1 = always ranks a present pair above an absent one, 0.5 = chance)")
    return "\n".join(lines)


def write_open_world(open_world, out_dir, prefix="open_world", threshold_label="model threshold"):
    """Write ``<prefix>.json`` (summary + curve), ``<prefix>_curve.csv`` and
    ``<prefix>_curve.png`` (``threshold_label``: see :func:`plot_curve`) to ``out_dir``;
    returns ``{name: path}``.

    Raises:
        OSError: a file cannot be written.
    """
    out_dir = pathlib.Path(out_dir)
    data = {k: v for k, v in open_world.items() if k != "results"}
    data["summary"] = open_world_summary(open_world)
    paths = {"open_world_json": write_json(data, out_dir / f"{prefix}.json"),
             "open_world_curve_csv": write_curve_csv(open_world, out_dir / f"{prefix}_curve.csv")}
    import matplotlib.pyplot as plt
    fig = plot_curve(open_world, out_dir / f"{prefix}_curve.png", threshold_label=threshold_label)
    plt.close(fig)
    paths["open_world_curve_png"] = out_dir / f"{prefix}_curve.png"
    return paths
