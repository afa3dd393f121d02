"""The one-shot evaluation protocol and the paper's analyses (paper §5.2, §5.3, §6.4, §6.5).

Protocol (spec §5) for a set of categories (a split's one-shot or background categories):

1. for every query image and every category of the set with a non-crowd instance in it,
   draw ``shots`` reference instances of that category from **other** randomly chosen
   images (never the query itself, never a crowd annotation) — :func:`build_eval_pairs`;
2. predict boxes and masks for every (query, references) pair — :func:`run_predictions`;
3. give every prediction the reference's category;
4. AP50 per category with pycocotools, boxes and masks; mAP50 = the mean over the
   categories — :func:`coco_ap50`, :func:`evaluate`.

Repeated with several seeds, :func:`evaluate_runs` reports the mean and a 95% interval.
Baselines (:func:`ground_truth_predictor`, :func:`random_boxes_predictor`), the confusion
matrix (§6.4, :func:`confusion_matrix`), the clutter analysis (§6.5,
:func:`clutter_analysis`) and a false-positive test with absent categories
(:func:`absent_category_test`) use the same prediction interface:

``predict_fn(image, references) -> detections``
    ``image``: ``uint8 [H, W, 3]`` query; ``references``: ``{class_id: [uint8 crop, ...]}``
    (k crops per category); returns ``{class_id: {"rois": [N, 4] (y1, x1, y2, x2) image
    pixels, "scores": [N], "masks": [H, W, N] bool}}``. One call per query image.

Ids are the dataset's internal ids (``OneShotDataset.coco_gt`` uses the same ids).
AP values are fractions in [0, 1]; tables print percentages. Same seed → same numbers.
No TensorFlow is imported here.
"""
import contextlib
import csv
import io
import json
import logging
import math
import pathlib
import warnings
from collections import OrderedDict, namedtuple

import numpy as np

from siamese_mask_rcnn.mrcnn.fileio import safe_filename

logger = logging.getLogger(__name__)

#: Instance-count bins of the clutter analysis (inclusive bounds; ``None`` = no upper bound).
DEFAULT_CLUTTER_BINS = ((1, 1), (2, 2), (3, 3), (4, 5), (6, 10), (11, None))

#: Row order of :func:`format_table` (other row labels follow in insertion order).
TABLE_ROW_ORDER = ("background", "one-shot", "random boxes")

IOU_TYPES = ("bbox", "segm")

#: One evaluation pair: a query image, the category searched and its references.
#: ``references`` is a list of ``uint8`` crops, or ``None`` when they are loaded lazily
#: from ``reference_info`` (dicts with ``image_id``, ``annotation_index``, ``bbox``...).
EvalPair = namedtuple("EvalPair", ["image_id", "class_id", "references", "reference_info"])


############################################################
#  Pairs
############################################################

def _other_reference_images(dataset, class_id, image_id):
    """Images other than ``image_id`` holding a usable reference instance of ``class_id``."""
    return [img for img in dataset.category_index.get(int(class_id), []) if img != int(image_id)]


def _query_images(dataset, class_ids, limit):
    """Sorted image ids with a non-crowd instance of ``class_ids``, the first ``limit`` of them."""
    wanted = set(int(c) for c in class_ids)
    images = [int(img) for img in sorted(dataset.image_ids)
              if wanted.intersection(dataset.image_categories.get(int(img), []))]
    if limit is not None:
        if int(limit) < 1:
            raise ValueError(f"limit must be a positive number of query images, got {limit}")
        images = images[:int(limit)]
    return images


def _check_class_ids(dataset, class_ids):
    """Sorted unique class ids; raises ``ValueError`` naming ids the dataset does not have."""
    class_ids = sorted(set(int(c) for c in class_ids))
    unknown = [c for c in class_ids if not 0 < c < dataset.num_classes]
    if unknown:
        raise ValueError(f"unknown class ids {unknown} (valid: 1..{dataset.num_classes - 1})")
    return class_ids


def _draw_pairs(dataset, class_ids, seed, shots, limit, load_crops):
    """Draw the evaluation pairs; returns ``(pairs, skipped)``.

    ``skipped`` lists the ``(image_id, class_id)`` combinations for which no other image
    holds a usable reference instance (they are left out of the evaluation).
    """
    if int(shots) < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    class_ids = _check_class_ids(dataset, class_ids)
    rng = np.random.default_rng(seed)
    pairs, skipped = [], []
    for image_id in _query_images(dataset, class_ids, limit):
        present = [c for c in dataset.image_categories.get(image_id, []) if c in class_ids]
        for class_id in present:
            if not _other_reference_images(dataset, class_id, image_id):
                skipped.append((image_id, class_id))
                continue
            crops, infos = dataset.sample_references(class_id, int(shots), rng,
                                                     exclude_image_id=image_id,
                                                     return_info=True)
            # Rendered references (procedural data) have no source box to re-cut: keep them.
            rendered = any(info.get("bbox") is None for info in infos)
            pairs.append(EvalPair(image_id, class_id, crops if (load_crops or rendered) else None, infos))
    if skipped:
        logger.info("%d (image, category) combinations have no reference in another image "
                    "and are left out of the evaluation", len(skipped))
    return pairs, skipped


def build_eval_pairs(dataset, class_ids, seed, shots=1, limit=None, load_crops=True):
    """The evaluation pairs of the one-shot protocol (paper §5.2 step 1).

    For every image (sorted by id; the first ``limit`` query images only, if given) and
    every category of ``class_ids`` with a non-crowd instance in it, ``shots`` reference
    instances of the category are drawn from **other** images (never crowd, never the
    query; random, from ``numpy.random.default_rng(seed)``). Combinations without any
    usable reference in another image are skipped (logged).

    Returns a list of :data:`EvalPair` ``(image_id, class_id, references, reference_info)``.
    With ``load_crops=False`` the crops are not kept (``references`` is None) and are
    re-cut from ``reference_info`` when predicting, which keeps memory flat on large sets.
    """
    pairs, _ = _draw_pairs(dataset, class_ids, seed, shots, limit, load_crops)
    return pairs


class _ImageCache:
    """A tiny LRU cache of loaded images (reference images are often reused)."""

    def __init__(self, dataset, size=16):
        self.dataset = dataset
        self.size = size
        self.images = OrderedDict()

    def get(self, image_id):
        """The ``uint8`` image ``image_id``, loaded once while it stays in the cache."""
        image_id = int(image_id)
        if image_id in self.images:
            self.images.move_to_end(image_id)
            return self.images[image_id]
        image = self.dataset.load_image(image_id)
        self.images[image_id] = image
        if len(self.images) > self.size:
            self.images.popitem(last=False)
        return image


def _pair_crops(pair, cache):
    """The reference crops of a pair (cut from ``reference_info`` when not stored)."""
    if pair.references is not None:
        return list(pair.references)
    crops = []
    for info in pair.reference_info:
        y1, x1, y2, x2 = (int(v) for v in info["bbox"])
        crops.append(np.ascontiguousarray(cache.get(info["image_id"])[y1:y2, x1:x2]))
    return crops


############################################################
#  Predictions → COCO results
############################################################

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


def _encode_mask(mask):
    """COCO RLE of a bool mask with ``counts`` as ``str`` (JSON-ready)."""
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _check_detections(detections, image_shape, image_id, class_id):
    """Validate one category's detections and return ``(rois, scores, masks)`` arrays."""
    where = f"predict_fn output for image {image_id}, category {class_id}"
    if not isinstance(detections, dict) or not {"rois", "scores", "masks"} <= set(detections):
        raise ValueError(f"{where}: expected a dict with rois, scores and masks, "
                         f"got {type(detections).__name__}")
    rois = np.asarray(detections["rois"], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(detections["scores"], dtype=np.float64).reshape(-1)
    masks = np.asarray(detections["masks"])
    n = rois.shape[0]
    if masks.size == 0 and n == 0:
        masks = np.zeros(tuple(image_shape) + (0,), dtype=bool)
    if scores.shape[0] != n:
        raise ValueError(f"{where}: {n} rois but {scores.shape[0]} scores")
    if masks.ndim != 3 or masks.shape[:2] != tuple(image_shape) or masks.shape[2] != n:
        raise ValueError(f"{where}: masks must have shape {tuple(image_shape) + (n,)}, "
                         f"got {masks.shape}")
    return rois, scores, masks.astype(bool, copy=False)


def detections_to_coco(image_id, class_id, rois, scores, masks):
    """COCO result dicts of one category's detections in one image.

    Boxes ``(y1, x1, y2, x2)`` become ``[x, y, w, h]``; masks become RLE (``counts`` str).
    """
    results = []
    for i in range(rois.shape[0]):
        y1, x1, y2, x2 = (float(v) for v in rois[i])
        results.append({"image_id": int(image_id), "category_id": int(class_id),
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(scores[i]),
                        "segmentation": _encode_mask(masks[:, :, i])})
    return results


def run_predictions(dataset, predict_fn, pairs, progress=True):
    """Run ``predict_fn`` on every pair and collect COCO results (paper §5.2 steps 2-3).

    Pairs are grouped by query image so ``predict_fn`` is called once per image with all
    of its categories. Every detection gets the reference's category. Returns a list of
    dicts ``image_id, category_id, bbox [x, y, w, h], score, segmentation (RLE)``.
    """
    from tqdm import tqdm
    groups = _group_by_image(pairs)
    cache = _ImageCache(dataset)
    results = []
    for image_id, group in tqdm(groups.items(), total=len(groups), desc="predicting",
                                unit="image", disable=not progress):
        image = dataset.load_image(image_id)
        references = {class_id: _pair_crops(pair, cache) for class_id, pair in group.items()}
        output = _call_predictor(predict_fn, image, references, image_id)
        if not isinstance(output, dict):
            raise ValueError(f"predict_fn must return a dict class_id -> detections, got "
                             f"{type(output).__name__} for image {image_id}")
        for class_id in group:
            if class_id not in output:
                raise ValueError(f"predict_fn returned no entry for category {class_id} "
                                 f"of image {image_id}")
            rois, scores, masks = _check_detections(output[class_id], image.shape[:2],
                                                    image_id, class_id)
            results.extend(detections_to_coco(image_id, class_id, rois, scores, masks))
    return results


############################################################
#  pycocotools AP50
############################################################

@contextlib.contextmanager
def _quiet(verbose):
    """Silence pycocotools' prints unless ``verbose``."""
    if verbose:
        yield
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def _coco_from_dict(data, verbose=False):
    """A ``pycocotools.coco.COCO`` built in memory."""
    from pycocotools.coco import COCO
    coco = COCO()
    coco.dataset = data
    with _quiet(verbose):
        coco.createIndex()
    return coco


def _load_results(coco_gt, results, iou_type, verbose=False):
    """``coco_gt.loadRes`` on copies of ``results`` (pycocotools edits them in place).

    An empty list gives an empty detection set instead of pycocotools' IndexError;
    image ids unknown to ``coco_gt`` raise a ``ValueError`` naming them.
    """
    unknown = sorted({int(r["image_id"]) for r in results} - set(coco_gt.getImgIds()))
    if unknown:
        raise ValueError(f"results refer to image ids missing from the ground truth: "
                         f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''}")
    if not results:
        return _coco_from_dict({"images": list(coco_gt.dataset["images"]),
                                "categories": list(coco_gt.dataset.get("categories", [])),
                                "annotations": []}, verbose)
    if iou_type == "segm":
        missing = sum("segmentation" not in r for r in results)
        if missing:
            raise ValueError(f"{missing} results have no segmentation; cannot evaluate masks")
        copies = [dict(r) for r in results]
    else:
        # boxes only: drop masks so pycocotools does not carry them around
        copies = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    with _quiet(verbose):
        return coco_gt.loadRes(copies)


def coco_ap50(coco_gt, results, class_ids, iou_type="bbox", img_ids=None, verbose=False):
    """AP at IoU 0.5 per category and their mean, with pycocotools' ``COCOeval``.

    ``params.catIds`` is restricted to ``class_ids`` (and ``params.imgIds`` to ``img_ids``
    if given); the IoU thresholds are pycocotools' defaults and AP50 is read at IoU .50,
    area "all", 100 detections. Categories without (non-crowd) ground truth are excluded
    from the mean and reported under ``no_gt``.

    Returns ``{"ap50": {class_id: AP}, "map50": mean (nan if no category), "no_gt": [...]}``.
    """
    from pycocotools.cocoeval import COCOeval
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    class_ids = sorted(set(int(c) for c in class_ids))
    if not class_ids:
        raise ValueError("coco_ap50 needs at least one category id")
    coco_dt = _load_results(coco_gt, results, iou_type, verbose)
    evaluator = COCOeval(coco_gt, coco_dt, iou_type)
    evaluator.params.catIds = class_ids
    if img_ids is not None:
        evaluator.params.imgIds = sorted(set(int(i) for i in img_ids))
        if not evaluator.params.imgIds:
            return {"ap50": {}, "map50": float("nan"), "no_gt": class_ids}
    with _quiet(verbose):
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
    """
    data = dataset.to_coco_dict(class_ids=sorted(set(int(c) for c in class_ids)))
    evaluated = {(int(p.image_id), int(p.class_id)) for p in pairs}
    data["annotations"] = [ann for ann in data["annotations"]
                           if (int(ann["image_id"]), int(ann["category_id"])) in evaluated]
    return _coco_from_dict(data, verbose)


############################################################
#  Baseline predictors
############################################################

def _gt_instances(coco, image_id, class_id):
    """Non-crowd GT annotations of one category in one image (from a COCO object)."""
    ann_ids = coco.getAnnIds(imgIds=[int(image_id)], catIds=[int(class_id)], iscrowd=False)
    return [ann for ann in coco.loadAnns(ann_ids) if not ann.get("iscrowd", 0)]


def _empty_detections(image_shape):
    """Detections dict with no instance."""
    return {"rois": np.zeros((0, 4), dtype=np.float64), "scores": np.zeros((0,)),
            "masks": np.zeros(tuple(image_shape) + (0,), dtype=bool)}


def _accepts_image_id(predict_fn):
    """True when ``predict_fn`` takes an ``image_id`` keyword (the dataset baselines do)."""
    import inspect
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


class _GroundTruthLookup:
    """Finds the dataset image id of a query and its ground-truth instances.

    The baselines are plain predict_fns: :func:`run_predictions` passes them the query's
    ``image_id``; when called with pixels only they identify the image by its content
    (each dataset image is loaded and hashed at most once).
    """

    def __init__(self, dataset):
        self.dataset = dataset
        self.coco = dataset.coco_gt()
        self._by_hash = {}
        self._unscanned = iter([int(i) for i in dataset.image_ids])

    @staticmethod
    def _key(image):
        """Shape and SHA-1 of an image's pixels."""
        import hashlib
        image = np.ascontiguousarray(image)
        return tuple(image.shape), hashlib.sha1(image.tobytes()).hexdigest()

    def image_id(self, image):
        """The id of the dataset image whose pixels equal ``image``."""
        key = self._key(image)
        while key not in self._by_hash:
            candidate = next(self._unscanned, None)
            if candidate is None:
                raise ValueError("the query image is not an image of the dataset: the "
                                 "ground-truth baselines only work on dataset images")
            self._by_hash[self._key(self.dataset.load_image(candidate))] = candidate
        return self._by_hash[key]

    def instances(self, image_id, class_id):
        """Float boxes ``(y1, x1, y2, x2)`` and bool masks ``[H, W, n]`` of the non-crowd
        GT instances of one category in one image."""
        image_info = self.coco.imgs[int(image_id)]
        height, width = int(image_info["height"]), int(image_info["width"])
        anns = _gt_instances(self.coco, image_id, class_id)
        rois = np.array([[a["bbox"][1], a["bbox"][0], a["bbox"][1] + a["bbox"][3],
                          a["bbox"][0] + a["bbox"][2]] for a in anns],
                        dtype=np.float64).reshape(-1, 4)
        masks = np.zeros((height, width, len(anns)), dtype=bool)
        with warnings.catch_warnings():
            # pycocotools' decode triggers a numpy 2 DeprecationWarning about __array__
            warnings.simplefilter("ignore", DeprecationWarning)
            for k, ann in enumerate(anns):
                masks[:, :, k] = self.coco.annToMask(ann).astype(bool)
        return rois, masks


def ground_truth_predictor(dataset):
    """A predict_fn returning the ground-truth instances of each requested category.

    Boxes are the annotations' exact (float) boxes, masks the annotations' masks,
    scores 1. Run through :func:`evaluate` it must give AP50 = 1 for every category with
    ground truth: a check of the whole evaluation path.
    """
    lookup = _GroundTruthLookup(dataset)

    def predict(image, references, image_id=None):
        """Ground truth of every category in ``references`` (the crops are ignored)."""
        image_id = lookup.image_id(image) if image_id is None else int(image_id)
        output = {}
        for class_id in references:
            rois, masks = lookup.instances(image_id, class_id)
            output[class_id] = {"rois": rois, "scores": np.ones((rois.shape[0],)),
                                "masks": masks}
        return output

    return predict


def _shift_instance(box, mask, rng):
    """Move one instance (float box and its mask) to a uniformly random place inside the
    image, by a whole number of pixels; returns the new box and mask."""
    height, width = mask.shape
    y1, x1, y2, x2 = (float(v) for v in box)
    top, left = max(0, int(math.floor(y1))), max(0, int(math.floor(x1)))
    bottom, right = min(height, int(math.ceil(y2))), min(width, int(math.ceil(x2)))
    box_h, box_w = max(bottom - top, 0), max(right - left, 0)
    new_top = int(rng.integers(0, height - box_h + 1))
    new_left = int(rng.integers(0, width - box_w + 1))
    dy, dx = new_top - top, new_left - left
    moved = np.zeros_like(mask)
    moved[new_top:new_top + box_h, new_left:new_left + box_w] = mask[top:bottom, left:right]
    return np.array([y1 + dy, x1 + dx, y2 + dy, x2 + dx]), moved


def random_boxes_predictor(dataset, seed=0):
    """The random-boxes baseline (paper §5.3) as a predict_fn.

    For the requested category: its ground-truth boxes and masks, each box shifted to a
    uniformly random position inside the image with its mask moved along, scores uniform
    in [0.8, 1]. The draws depend only on ``(seed, image_id, class_id)``, so results do not
    depend on the order of the calls.
    """
    lookup = _GroundTruthLookup(dataset)

    def predict(image, references, image_id=None):
        """Randomly placed ground truth of every category in ``references``."""
        image_id = lookup.image_id(image) if image_id is None else int(image_id)
        output = {}
        for class_id in references:
            rng = np.random.default_rng([int(seed), int(image_id), int(class_id)])
            rois, masks = lookup.instances(image_id, class_id)
            scores = np.zeros((rois.shape[0],))
            for k in range(rois.shape[0]):
                rois[k], masks[:, :, k] = _shift_instance(rois[k], masks[:, :, k], rng)
                scores[k] = rng.uniform(0.8, 1.0)
            output[class_id] = {"rois": rois, "scores": scores, "masks": masks}
        return output

    return predict


############################################################
#  Evaluation
############################################################

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
    ground truth, a pycocotools object), ``seed``, ``shots``, ``limit``.
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
              "results": results}
    if not evaluated:
        logger.warning("no evaluation pair for categories %s", class_ids)
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
    """``1.96 · std(values) / sqrt(len(values))`` (numpy's std, ddof=0), as in spec §5."""
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        return float("nan")
    return float(1.96 * np.std(values) / math.sqrt(values.size))


def evaluate_runs(dataset, predict_fn, class_ids, runs=5, seed=0, shots=1, limit=None,
                  progress=True, predict_fn_for_seed=None, verbose=False):
    """Repeat :func:`evaluate` with seeds ``seed, seed+1, ...`` (new reference draws each run).

    ``predict_fn_for_seed(run_seed)``, if given, builds each run's predictor (e.g. the
    random-boxes baseline with fresh shifts); otherwise ``predict_fn`` is used for all.
    Returns ``runs`` (per-run seed, n_pairs, mAP50 and per-category AP50), the means
    ``map50_bbox`` / ``map50_segm``, their 95% intervals ``ci95_bbox`` / ``ci95_segm``
    (1.96·std(run values)/√runs), the mean per-category ``ap50_bbox`` / ``ap50_segm``, and
    ``evaluations`` (the full :func:`evaluate` dicts).
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
    return summary


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


def plot_confusion(confusion, path=None, title=None):
    """Fig.-7 style plot: the AP50 matrix and, below it, the column sums (false positives).

    Returns the Figure; writes a PNG to ``path`` when given.
    """
    import matplotlib.pyplot as plt
    from siamese_mask_rcnn.mrcnn.visualize import save_figure
    names = confusion["class_names"]
    size = len(names)
    side = max(6.0, 0.35 * size + 3)
    fig, (ax_matrix, ax_sums) = plt.subplots(2, 1, figsize=(side, side * 1.35),
                                             gridspec_kw={"height_ratios": [4, 1]})
    image = ax_matrix.imshow(np.ma.masked_invalid(confusion["matrix"]), vmin=0, vmax=1,
                             cmap="viridis")
    ax_matrix.set_xticks(range(size))
    ax_matrix.set_xticklabels(names, rotation=90, fontsize=8)
    ax_matrix.set_yticks(range(size))
    ax_matrix.set_yticklabels(names, fontsize=8)
    ax_matrix.set_xlabel("evaluated as category j")
    ax_matrix.set_ylabel("reference category i")
    fig.colorbar(image, ax=ax_matrix, label="AP50")
    sums = np.nan_to_num(np.asarray(confusion["column_sums_off_diagonal"], dtype=float))
    ax_sums.bar(range(size), sums)
    ax_sums.set_xticks(range(size))
    ax_sums.set_xticklabels(names, rotation=90, fontsize=8)
    ax_sums.set_ylabel("off-diagonal column sum")
    ax_matrix.set_title(title or f"confusion matrix ({confusion['iou_type']} AP50)")
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def write_confusion_csv(confusion, path):
    """Write the matrix as CSV: a header of category names, one row per reference category,
    then the column sums (all, and off-diagonal)."""
    path = _prepare_path(path)
    names = confusion["class_names"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["reference \\ evaluated as"] + names)
        for name, row in zip(names, confusion["matrix"]):
            writer.writerow([name] + [_csv_number(v) for v in row])
        writer.writerow(["column sum"] + [_csv_number(v) for v in confusion["column_sums"]])
        writer.writerow(["column sum (off-diagonal)"] +
                        [_csv_number(v) for v in confusion["column_sums_off_diagonal"]])
    return path


def write_confusion_json(confusion, path):
    """Write the confusion matrix as JSON (nan → null)."""
    return write_json(confusion, path)


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


def plot_clutter(clutter, path=None, title="effect of clutter"):
    """Fig.-8 style plot of mAP50 (%) against the number of instances; returns the Figure."""
    import matplotlib.pyplot as plt
    from siamese_mask_rcnn.mrcnn.visualize import save_figure
    labels = [b["label"] for b in clutter["bins"]]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for iou_type, name in (("bbox", "detection"), ("segm", "segmentation")):
        values = [100 * b[f"map50_{iou_type}"] for b in clutter["bins"]]
        ax.plot(x, values, marker="o", label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    ax.set_xlabel("number of instances in the query image")
    ax.set_ylabel("mAP50 (%)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def write_clutter_csv(clutter, path):
    """Write one CSV row per bin: label, min, max, images, detection and segmentation mAP50."""
    path = _prepare_path(path)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["instances", "min", "max", "n_images", "map50_bbox", "map50_segm"])
        for b in clutter["bins"]:
            writer.writerow([b["label"], b["min"], "" if b["max"] is None else b["max"],
                             b["n_images"], _csv_number(b["map50_bbox"]),
                             _csv_number(b["map50_segm"])])
    return path


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
    """
    from tqdm import tqdm
    class_ids = _check_class_ids(dataset, class_ids)
    rng = np.random.default_rng(seed)
    image_ids = [int(i) for i in sorted(dataset.image_ids)]
    if limit is not None:
        image_ids = image_ids[:int(limit)]
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
        for class_id in absent:
            _, scores, _ = _check_detections(output.get(class_id, _empty_detections(image.shape[:2])),
                                             image.shape[:2], image_id, class_id)
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


def write_absent_csv(absent, path):
    """Write the per-category false-positive statistics of :func:`absent_category_test`."""
    path = _prepare_path(path)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class_id", "name", "n_queries", "false_positives", "mean_per_query",
                         "fraction_queries_with_false_positive"])
        for class_id, s in absent["per_category"].items():
            writer.writerow([class_id, s["name"], s["n_queries"], s["false_positives"],
                             _csv_number(s["mean_per_query"]),
                             _csv_number(s["fraction_queries_with_false_positive"])])
    return path


############################################################
#  Tables and files
############################################################

def _row_numbers(entry):
    """``(bbox, bbox_ci, segm, segm_ci)`` of an :func:`evaluate` / :func:`evaluate_runs` dict."""
    return (entry.get("map50_bbox", float("nan")), entry.get("ci95_bbox"),
            entry.get("map50_segm", float("nan")), entry.get("ci95_segm"))


def _percent(value, ci=None):
    """``'37.6'`` or ``'37.6 ± 0.3'`` from fractions; ``'n/a'`` for nan/None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{100 * value:.1f}"
    if ci is not None and not (isinstance(ci, float) and math.isnan(ci)):
        text += f" ± {100 * ci:.1f}"
    return text


def _ordered_rows(summary):
    """Row labels: the paper's order first, then the others as given."""
    known = [label for label in TABLE_ROW_ORDER if label in summary]
    return known + [label for label in summary if label not in TABLE_ROW_ORDER]


def format_table(summary, title=None):
    """Text table in the paper's layout (Table 2): one row per evaluated setting (background,
    one-shot, random boxes, ...), columns detection and segmentation mAP50 in % (± the 95%
    interval when several runs were made).

    ``summary`` maps a row label to an :func:`evaluate` or :func:`evaluate_runs` dict (or any
    dict with ``map50_bbox``/``map50_segm`` and optional ``ci95_bbox``/``ci95_segm``).
    """
    header = ("", "detection mAP50 (%)", "segmentation mAP50 (%)")
    rows = []
    for label in _ordered_rows(summary):
        bbox, bbox_ci, segm, segm_ci = _row_numbers(summary[label])
        rows.append((label, _percent(bbox, bbox_ci), _percent(segm, segm_ci)))
    widths = [max(len(r[k]) for r in rows + [header]) for k in range(3)]
    lines = []
    if title:
        lines.append(title)
    lines.append(f"{header[0]:<{widths[0]}}  {header[1]:>{widths[1]}}  {header[2]:>{widths[2]}}")
    lines.append("-" * (widths[0] + widths[1] + widths[2] + 4))
    for label, bbox, segm in rows:
        lines.append(f"{label:<{widths[0]}}  {bbox:>{widths[1]}}  {segm:>{widths[2]}}")
    return "\n".join(lines) + "\n"


def _jsonable(value):
    """Convert numpy values, tuples and nan to JSON-ready Python values (nan → None)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, (pathlib.Path,)):
        return str(value)
    return value


def _prepare_path(path):
    """Create the parent folder of ``path``; return it as a ``pathlib.Path``."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _csv_number(value):
    """A float for CSV ('' for nan/None)."""
    if value is None:
        return ""
    value = float(value)
    return "" if math.isnan(value) else f"{value:.6f}"


def write_json(data, path):
    """Write ``data`` as JSON (numpy → Python, nan → null); returns the path."""
    path = _prepare_path(path)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(_jsonable(data), handle, indent=1)
    return path


def _slug(label):
    """A file-name-safe version of a row label."""
    return safe_filename(str(label).lower(), keep="a-z0-9", default="row")


def _evaluations_of(entry):
    """The :func:`evaluate` dicts inside an entry (one, or one per run)."""
    return entry["evaluations"] if "evaluations" in entry else [entry]


def summarize(entry):
    """The JSON-ready numbers of an :func:`evaluate` / :func:`evaluate_runs` dict (no
    results, no pycocotools objects, no per-pair reference info)."""
    skip = {"results", "coco_gt", "pairs", "evaluations"}
    numbers = {k: v for k, v in entry.items() if k not in skip}
    if "evaluations" in entry:
        numbers["skipped"] = entry["evaluations"][0].get("skipped", [])
    return _jsonable(numbers)


def plot_per_category(entry, path=None, title="AP50 per category"):
    """Bar plot of per-category AP50 (%), detection and segmentation; returns the Figure."""
    import matplotlib.pyplot as plt
    from siamese_mask_rcnn.mrcnn.visualize import save_figure
    names = entry["class_names"]
    ids = sorted(set(entry["ap50_bbox"]) | set(entry["ap50_segm"]))
    x = np.arange(len(ids))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.4 * len(ids) + 2), 4.5))
    ax.bar(x - 0.2, [100 * entry["ap50_bbox"].get(c, np.nan) for c in ids], 0.4,
           label="detection")
    ax.bar(x + 0.2, [100 * entry["ap50_segm"].get(c, np.nan) for c in ids], 0.4,
           label="segmentation")
    ax.set_xticks(x)
    ax.set_xticklabels([names.get(c, str(c)) for c in ids], rotation=90, fontsize=8)
    ax.set_ylabel("AP50 (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def write_outputs(out_dir, summary, confusion=None, clutter=None, absent=None, config=None,
                  title=None):
    """Write everything an evaluation produced to ``out_dir``; returns ``{name: path}``.

    * ``results_<row>_seed<S>.json``: the COCO results (RLE masks) of every run of every row;
    * ``summary.json``: the numbers of every row (+ ``config``), ``table.txt``: the table;
    * ``ap50_<row>.png``: per-category AP50;
    * optional ``confusion.{png,csv,json}``, ``clutter.{png,csv,json}``, ``absent.{json,csv}``.
    """
    import matplotlib.pyplot as plt
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for label in _ordered_rows(summary):
        entry = summary[label]
        for evaluation in _evaluations_of(entry):
            name = f"results_{_slug(label)}_seed{evaluation['seed']}"
            written[name] = write_json(evaluation["results"], out_dir / f"{name}.json")
        fig = plot_per_category(entry, out_dir / f"ap50_{_slug(label)}.png",
                                title=f"AP50 per category: {label}")
        plt.close(fig)
        written[f"ap50_{_slug(label)}"] = out_dir / f"ap50_{_slug(label)}.png"
    numbers = {"config": _jsonable(config or {}),
               "rows": {label: summarize(summary[label]) for label in _ordered_rows(summary)}}
    written["summary"] = write_json(numbers, out_dir / "summary.json")
    table_path = out_dir / "table.txt"
    table_path.write_text(format_table(summary, title=title), encoding="utf-8")
    written["table"] = table_path
    if confusion is not None:
        fig = plot_confusion(confusion, out_dir / "confusion.png")
        plt.close(fig)
        written["confusion_png"] = out_dir / "confusion.png"
        written["confusion_csv"] = write_confusion_csv(confusion, out_dir / "confusion.csv")
        written["confusion_json"] = write_confusion_json(confusion, out_dir / "confusion.json")
    if clutter is not None:
        fig = plot_clutter(clutter, out_dir / "clutter.png")
        plt.close(fig)
        written["clutter_png"] = out_dir / "clutter.png"
        written["clutter_csv"] = write_clutter_csv(clutter, out_dir / "clutter.csv")
        written["clutter_json"] = write_json(clutter, out_dir / "clutter.json")
    if absent is not None:
        written["absent_json"] = write_json(absent, out_dir / "absent.json")
        written["absent_csv"] = write_absent_csv(absent, out_dir / "absent.csv")
    return {k: pathlib.Path(v) for k, v in written.items()}
