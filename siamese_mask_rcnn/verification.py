"""Verification of detections against the reference (open-world search, beyond the paper; issue #10).

The detector's score says "this is an object that the matched features point to"; it does
not compare the object with the reference as a whole. Verification takes a second look:
every detection is cropped from the query by its box, as references are cropped, embedded
by the same reference encoder (pooled P2..P6, paper Section 4.3) and compared with the
category's embedding by :func:`level_cosine`; detections less similar than
``VERIFY_MIN_SIMILARITY`` are dropped (:meth:`.siamese.SiameseMaskRCNN.detect_embeddings`), so
an absent category whose detections do not look like the reference gives an empty result.

**Known-category rejection** (``VERIFY_KNOWN_MARGIN``): a model trained with the reference
classification loss (:mod:`.reference_loss`) carries one learned prototype per category id,
the columns of its cosine classifier ``reference_class_logits``, built from the training
(background) categories. Most false positives of an absent category are objects of *other*
categories, many of them categories the model knows. :func:`known_category_margins` measures,
per detection, how much closer its embedding is to the nearest known prototype than to the
reference (flattened P2..P6 vectors, cosine), leaving out the prototype nearest to the
reference itself (so a reference of a known category is not rejected against its own
category); detections with a margin above ``VERIFY_KNOWN_MARGIN`` are dropped: "this is a
<known category>, not what you showed me". It uses no threshold calibrated on training
categories, which is why it keeps the one-shot categories' true detections where a similarity
cut does not (README "Open-world search").

The similarity is only as good as the encoder's embedding: trained with the paper's losses
alone, two objects of one category are hardly closer than two of different categories; the
reference classification loss (:mod:`.reference_loss`) makes them so
(``benchmarks/open_world_verification.py``). The threshold is the model's own:
:func:`calibrate_min_similarity` picks the one that keeps a given share of the *training*
categories' objects, compared with references of their category, on training scenes.
"""
import numpy as np

from .config import check_known_margin, check_min_similarity  # noqa: F401  (re-exported: checked at use)
from .datasets.base import crop_box


def level_cosine(embeddings, reference):
    """``embeddings [N, L, C]``, ``reference [L, C]`` → ``[N]`` float64: the cosine of each
    level's C-vectors, averaged over the L levels (a zero vector has cosine 0)."""
    a = np.asarray(embeddings, np.float64)
    b = np.asarray(reference, np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return (a * b[None]).sum(axis=-1).mean(axis=-1)


#: The layer whose weights (``kernel [L * C, classes]``) are the known categories' prototypes.
PROTOTYPES_LAYER = "reference_class_logits"


def known_category_margins(embeddings, reference, prototypes):
    """Known-category rejection's margin of each detection (see the module docstring).

    Args:
        embeddings: ``[N, L, C]`` the detections' crops embedded by the reference encoder.
        reference: ``[L, C]`` the category's embedding.
        prototypes: ``[L * C, K]`` the known categories' prototypes (the reference
            classifier's kernel; K ≥ 2).

    Returns ``[N]`` float64: ``max_{j ≠ j_r} cos(e, w_j) − cos(e, r)`` over the flattened
    vectors, ``j_r`` the prototype nearest to the reference (positive: the detection is
    closer to a known category than to the reference).

    Raises:
        ValueError: shapes that do not fit (``L * C`` rows) or fewer than two prototypes.
    """
    e = np.asarray(embeddings, np.float64)
    r = np.asarray(reference, np.float64).reshape(-1)
    w = np.asarray(prototypes, np.float64)
    if w.ndim != 2 or w.shape[0] != r.size or w.shape[1] < 2:
        raise ValueError(f"prototypes must be [{r.size}, K >= 2] for a reference of {r.size} values, "
                         f"got shape {w.shape}")
    e = e.reshape(len(e), -1) if e.size else e.reshape(0, r.size)
    if e.shape[1] != r.size:
        raise ValueError(f"embeddings of {e.shape[1]} values do not fit a reference of {r.size}")

    def unit(x, axis):
        return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)

    e, r, w = unit(e, 1), unit(r, 0), unit(w, 0)
    to_prototypes = e @ w  # [N, K]
    to_prototypes[:, int(np.argmax(r @ w))] = -np.inf  # the reference's own category
    return to_prototypes.max(axis=1) - e @ r


def keep_detections(result, keep, similarities):
    """One pair's result with only the detections where ``keep`` (bool ``[N]``) holds, and
    ``"similarity"`` (float32 ``[kept]``) from ``similarities [N]``. ``result``: ``{"rois"
    [N, 4], "class_ids" [N], "scores" [N], "masks" [H, W, N]}`` (extra keys are kept). The
    input is not changed."""
    keep = np.flatnonzero(np.asarray(keep, bool))
    kept = select_detections(result, keep)
    kept["similarity"] = np.asarray(similarities, np.float32)[keep]
    return kept


def select_detections(result, indices, scores=None):
    """A copy of one pair's result with only the detections ``indices`` (in that order):
    ``rois``, ``class_ids``, ``scores`` (taken from ``scores [N]`` when given) and ``masks``
    (last axis); any extra keys are kept as they are. The input is not changed."""
    selected = dict(result)
    selected["rois"] = np.asarray(result["rois"])[indices]
    selected["class_ids"] = np.asarray(result["class_ids"])[indices]
    selected["scores"] = np.asarray(result["scores"] if scores is None else scores)[indices]
    selected["masks"] = np.asarray(result["masks"])[..., indices]
    return selected


def detection_crops(image, results):
    """The crops of every detection of ``results`` (``{key: result}``, boxes ``(y1, x1, y2,
    x2)`` in ``image`` pixels) and, per crop, its ``(key, index)``."""
    crops, owners = [], []
    for key, result in results.items():
        for index, box in enumerate(np.asarray(result["rois"]).reshape(-1, 4)):
            crops.append(crop_box(image, box)[0])
            owners.append((key, index))
    return crops, owners


def calibrate_min_similarity(model, dataset, class_ids, keep=0.8, scenes=100, seed=0):
    """The similarity threshold that keeps a share ``keep`` (0 < keep ≤ 1) of true matches.

    On the first ``scenes`` query images of ``dataset`` (sorted ids; training scenes: the
    evaluation never sees them), every non-crowd object of a category in ``class_ids`` is
    cropped by its box and compared (:func:`level_cosine`) with one reference of its
    category from another image (drawn from ``default_rng([seed, 11, class_id])``, as a user
    gives one example). Returns ``(threshold, count)``: the ``1 - keep`` quantile of those
    similarities and how many there were (``keep`` = 1 gives -1, keeping all).

    Raises:
        ValueError: ``keep`` outside (0, 1], ``scenes`` < 1, or no object of ``class_ids``
            with a reference in the scenes.
    """
    keep = float(keep)
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1] (the share of true matches kept), got {keep}")
    if int(scenes) < 1:
        raise ValueError(f"scenes must be >= 1, got {scenes}")
    wanted = {int(c) for c in class_ids}
    embeddings, sims = {}, []
    for image_id in sorted(dataset.image_ids)[:int(scenes)]:
        anns = [a for a in dataset.instance_annotations(image_id)
                if not a.get("iscrowd") and abs(int(a["class_id"])) in wanted]
        if not anns:
            continue
        image = dataset.load_image(image_id)
        crops, classes = [], []
        for a in anns:
            c = abs(int(a["class_id"]))
            if c not in embeddings:
                try:
                    reference = dataset.sample_reference(c, np.random.default_rng([int(seed), 11, c]),
                                                         exclude_image_id=image_id)
                except (ValueError, LookupError):
                    embeddings[c] = None
                else:
                    embeddings[c] = model.embed_category([reference])
            if embeddings[c] is not None:
                crops.append(crop_box(image, a["bbox"])[0])
                classes.append(c)
        if crops:
            found = model.encode_references(crops)
            sims += [float(level_cosine(e[None], embeddings[c])[0]) for e, c in zip(found, classes)]
    if not sims:
        raise ValueError(f"no object of the {len(wanted)} categories with a reference in {int(scenes)} scenes: "
                         "nothing to calibrate the verification on")
    if keep >= 1.0:
        return -1.0, len(sims)
    return float(np.quantile(np.asarray(sims), 1.0 - keep)), len(sims)
