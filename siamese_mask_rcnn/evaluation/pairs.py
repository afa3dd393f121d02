"""Step 1 of the one-shot protocol (paper §5.2): drawing (query, references) pairs.

For every query image and every evaluated category with a non-crowd instance in it,
``shots`` reference instances of the category are drawn from **other** images (never the
query itself, never a crowd annotation). Ids are the dataset's internal ids.
"""
import logging
import math
import numbers
from collections import OrderedDict, namedtuple

import numpy as np

logger = logging.getLogger(__name__)


#: One evaluation pair: a query image, the category searched and its references.
#: ``references`` is a list of ``uint8`` crops, or ``None`` when they are loaded lazily
#: from ``reference_info`` (dicts with ``image_id``, ``annotation_index``, ``bbox``...).
EvalPair = namedtuple("EvalPair", ["image_id", "class_id", "references", "reference_info"])


def _other_reference_images(dataset, class_id, image_id):
    """Images other than ``image_id`` holding a usable reference instance of ``class_id``."""
    return [img for img in dataset.category_index.get(int(class_id), []) if img != int(image_id)]


def _query_images(dataset, class_ids, limit):
    """Sorted image ids with a non-crowd instance of ``class_ids``, the first ``limit`` of them."""
    wanted = set(int(c) for c in class_ids)
    images = [int(img) for img in sorted(dataset.image_ids)
              if wanted.intersection(dataset.image_categories.get(int(img), []))]
    return _first_images(images, limit)


def _first_images(image_ids, limit):
    """The first ``limit`` of ``image_ids`` (all of them for None), or ``ValueError`` for a
    ``limit`` that is not a whole number >= 1."""
    if limit is None:
        return image_ids
    if _whole(limit, "limit must be a positive number of query images (a whole number)") < 1:
        raise ValueError(f"limit must be a positive number of query images, got {limit}")
    return image_ids[:int(limit)]


def _check_shots(shots):
    """``shots`` as an int, or ``ValueError`` unless it is a whole number >= 1."""
    if _whole(shots, "shots must be >= 1 (a whole number)") < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    return int(shots)


def _whole(value, what):
    """``value`` as an int, or ``ValueError`` "<what>, got <value>" for 1.7, nan, a bool or a
    string (``int`` would truncate 1.7 to 1)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or (
            not isinstance(value, numbers.Integral)
            and (not math.isfinite(float(value)) or float(value) != int(value))):
        raise ValueError(f"{what}, got {value!r}")
    return int(value)


def _whole_class_id(value):
    """``value`` as an int class id (see :func:`_whole`)."""
    return _whole(value, "class ids must be whole numbers")


def _check_class_ids(dataset, class_ids):
    """Sorted unique class ids; raises ``ValueError`` naming ids the dataset does not have,
    or an id that is not a whole number."""
    class_ids = sorted(set(_whole_class_id(c) for c in class_ids))
    unknown = [c for c in class_ids if not 0 < c < dataset.num_classes]
    if unknown:
        raise ValueError(f"unknown class ids {unknown} (valid: 1..{dataset.num_classes - 1})")
    return class_ids


def _draw_pairs(dataset, class_ids, seed, shots, limit, load_crops):
    """Draw the evaluation pairs; returns ``(pairs, skipped)``.

    ``skipped`` lists the ``(image_id, class_id)`` combinations for which no other image
    holds a usable reference instance (they are left out of the evaluation).
    """
    _check_shots(shots)
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

    Raises:
        ValueError: ``shots`` or ``limit`` < 1 or not a whole number, class ids the dataset does not have
            (named) or a class id that is not a whole number (1.7, nan, a bool, a string).
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
