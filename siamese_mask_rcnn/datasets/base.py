"""The common base of every one-shot data source (paper Sections 3 and 5.1).

A one-shot training or evaluation example is a pair: a *query* image (a whole scene) and a
*reference* crop of one object. The ground truth is only the query's instances of the
reference's category; everything else is background (paper Section 5.1, "Labels").
:class:`OneShotDataset` adds to matterport's ``Dataset`` API what such pairs need: a
category → images index, a class split (training / background categories vs. held-out
one-shot categories), samplers for the reference category and for reference crops, ground
truth restricted to one category, and export to COCO format (for pycocotools evaluation or
to write an in-memory dataset to disk).

This module does not import TensorFlow.
"""
import bisect
import json
import logging
import os
import pathlib

import numpy as np

from siamese_mask_rcnn.cocoformat import coco_from_dict, encode_mask_with_box
from siamese_mask_rcnn.mrcnn import utils
from siamese_mask_rcnn.mrcnn.fileio import atomic_write

logger = logging.getLogger(__name__)


def crop_box(image, bbox):
    """Crop ``image`` ``[H, W, ...]`` by a ``(y1, x1, y2, x2)`` box in pixels (truncated to
    integers), clipped to the image and at least 1 px on each side, as references are cropped.
    Returns ``(crop, (y1, x1, y2, x2))``, the crop contiguous and the box as clipped."""
    height, width = image.shape[:2]
    y1, x1, y2, x2 = (int(v) for v in bbox)
    y1 = min(max(y1, 0), height - 1)
    x1 = min(max(x1, 0), width - 1)
    y2 = min(max(y2, y1 + 1), height)
    x2 = min(max(x2, x1 + 1), width)
    return np.ascontiguousarray(image[y1:y2, x1:x2]), (y1, x1, y2, x2)

class OneShotDataset(utils.Dataset):
    """Base class of one-shot datasets (COCO, procedural shapes, Omniglot, ...).

    Contract for subclasses
    -----------------------
    A subclass registers classes and images with matterport's ``add_class`` /
    ``add_image`` and implements:

    * ``instance_annotations(image_id) -> list[dict]``: cheap per-instance metadata of one
      image, **without decoding masks**. Each dict has the keys

      - ``class_id``: the *internal* class id (as after ``prepare()``), always positive,
      - ``bbox``: ``(y1, x1, y2, x2)`` integer pixels, ``y2``/``x2`` exclusive,
      - ``iscrowd``: ``bool``,
      - ``area``: the instance's area in pixels (float or int).

      Extra keys are allowed. The list must be in the same order as the instances returned
      by ``load_mask`` (instance ``k`` of both describes the same object).
    * ``load_image(image_id)`` -> ``uint8`` array ``[H, W, 3]`` (the inherited version
      reads ``image_info[image_id]["path"]`` and raises ``utils.ImageLoadError``).
    * ``load_mask(image_id)`` -> ``(masks [H, W, N] bool, class_ids [N] int32)`` with
      matterport's crowd convention: a crowd instance has the *negative* class id.

    Optionally a subclass may override :meth:`_coco_image_entry` and
    :meth:`_coco_annotations_for_image` to give :meth:`to_coco_dict` a fast path that does
    not decode masks.

    What the base provides
    ----------------------
    * ``prepare(class_map=None)`` runs matterport's ``prepare`` and then
      :meth:`build_index`, which fills

      - ``category_index``: class id → sorted image ids holding at least one *usable
        reference instance* of the class (non-crowd and, if ``REFERENCE_MIN_SIZE`` is set,
        shorter box side ≥ ``REFERENCE_MIN_SIZE``),
      - ``image_categories``: image id → sorted class ids with a non-crowd instance in the
        image (small instances count: they are still ground truth),
      - ``reference_instances``: class id → list of ``(image_id, annotation_index)``,
      - ``skipped_small``: class id → number of non-crowd instances too small to be a
        reference, ``num_crowd``: number of crowd instances,
      - ``unreferenceable_class_ids``: the classes without any usable reference instance
        (they can never be sampled as a reference category; logged at INFO level).
    * Minimum-crop policy: ``REFERENCE_MIN_SIZE`` (class attribute, pixels, default 0 = off:
      every non-crowd instance can be a reference, as in the paper §5.1-§5.2 and the official
      release) applies to the shorter side of an instance's bounding box. Smaller instances
      are then never used as references, but they remain ground truth in the query. Set it on
      a subclass or an instance **before** ``prepare()`` (or call ``build_index()`` again
      afterwards).
    * Class split: :meth:`set_class_split` sets ``train_class_ids`` (background categories,
      used for training) and ``oneshot_class_ids`` (held out). By default every class is a
      training class. Classes in neither list are simply never sampled by default.
    * Samplers: :meth:`sample_reference_class`, :meth:`sample_reference`,
      :meth:`sample_references` (k-shot) — all take a ``numpy.random.Generator``;
      :meth:`query_image_ids` and :meth:`query_class_pairs` list the usable queries /
      (query, category) pairs.
    * Ground truth: :meth:`load_class_gt` returns only one category's instances (crowd
      ones labelled ``-1``).
    * COCO export: :meth:`to_coco_dict`, :meth:`coco_gt`, :meth:`export_coco`.
    * Source ids: :meth:`source_image_id`, :meth:`source_class_id` and
      :meth:`to_source_results` give the ids of the data's own annotation file (for COCO the
      file's image and category ids; for generated data the ids of its :meth:`export_coco`
      file), so written results score with plain pycocotools against that file.

    Ids: all class ids and image ids in this API are the internal (matterport) ids, except
    where a method says "source ids".
    """

    #: Shorter side (pixels) of the bounding box below which an instance is never a
    #: reference; 0 (the default) uses every non-crowd instance, as the paper and the release.
    REFERENCE_MIN_SIZE = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._prepared = False
        self._split_explicit = False
        self.train_class_ids = []
        self.oneshot_class_ids = []
        self._reset_index()

    # ------------------------------------------------------------------ contract
    def instance_annotations(self, image_id):
        """Per-instance metadata of one image (see the class docstring); subclasses implement
        it (``NotImplementedError`` here)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement instance_annotations(image_id)")

    # ------------------------------------------------------------------ preparation
    def prepare(self, class_map=None):
        """Run matterport's ``prepare`` and then build the one-shot index."""
        super().prepare(class_map=class_map)
        self._prepared = True
        if self._split_explicit:
            self._validate_split(self.train_class_ids, self.oneshot_class_ids)
        else:
            self.train_class_ids = self._all_class_ids()
            self.oneshot_class_ids = []
        self.build_index()

    def _reset_index(self):
        """Empty all index attributes."""
        self.category_index = {}
        self.image_categories = {}
        self.reference_instances = {}
        self._reference_by_image = {}
        self.skipped_small = {}
        self.num_crowd = 0
        self.unreferenceable_class_ids = []

    def _all_class_ids(self):
        """Every class id except the background class 0."""
        return [int(c) for c in range(1, self.num_classes)]

    def _require_prepared(self, what):
        """Raise a clear error when ``prepare()`` has not been called yet."""
        if not self._prepared:
            raise RuntimeError(f"{type(self).__name__}.{what} needs prepare() to be called first")

    @staticmethod
    def _is_usable_reference(ann, min_size):
        """True when an annotation is a non-crowd instance with box sides ≥ ``min_size``."""
        if ann["iscrowd"]:
            return False
        y1, x1, y2, x2 = ann["bbox"]
        return min(y2 - y1, x2 - x1) >= min_size

    def build_index(self):
        """(Re)build ``category_index``, ``image_categories`` and the reference statistics."""
        self._require_prepared("build_index()")
        self._reset_index()
        min_size = self.REFERENCE_MIN_SIZE
        for image_id in self.image_ids:
            image_id = int(image_id)
            present = set()
            for index, ann in enumerate(self.instance_annotations(image_id)):
                class_id = int(ann["class_id"])
                if ann["iscrowd"]:
                    self.num_crowd += 1
                    continue
                present.add(class_id)
                if not self._is_usable_reference(ann, min_size):
                    self.skipped_small[class_id] = self.skipped_small.get(class_id, 0) + 1
                    continue
                self.reference_instances.setdefault(class_id, []).append((image_id, index))
                self._reference_by_image.setdefault(class_id, {}).setdefault(
                    image_id, []).append(index)
            self.image_categories[image_id] = sorted(present)
        for class_id, instances in self.reference_instances.items():
            self.category_index[class_id] = sorted({img for img, _ in instances})
        self.unreferenceable_class_ids = [c for c in self._all_class_ids()
                                          if c not in self.category_index]
        self._log_index_summary()

    def _log_index_summary(self):
        """Report skipped tiny instances and categories that can never be a reference."""
        skipped = sum(self.skipped_small.values())
        logger.info("%s index: %d reference-able classes, %d instances below %d px skipped "
                    "as references, %d crowd instances", type(self).__name__,
                    len(self.category_index), skipped, self.REFERENCE_MIN_SIZE, self.num_crowd)
        if self.unreferenceable_class_ids:
            names = [self.class_names[c] for c in self.unreferenceable_class_ids]
            logger.info("classes without a usable reference instance (never sampled): %s",
                        ", ".join(names))
        same = self.same_image_reference_pairs(self._all_class_ids())
        if same:
            logger.info("%d (query, category) pairs have their category's only usable reference "
                        "instances in the query itself: the reference is then cropped from the "
                        "query image (e.g. %s)", len(same),
                        ", ".join(f"image {i} / {self.class_names[c]}" for i, c in same[:5]))

    def same_image_reference_pairs(self, class_ids=None):
        """``(image_id, class_id)`` pairs (of :meth:`query_class_pairs`) whose category has usable
        reference instances in that image only: the sampler then crops the reference from
        the query itself (``info["same_image"]``), e.g. a category with one instance."""
        self._require_prepared("same_image_reference_pairs()")
        return [(i, c) for i, c in self.query_class_pairs(class_ids) if self.category_index[c] == [i]]

    def index_summary(self, class_ids=None):
        """Counts of the one-shot index for ``class_ids`` (default: training classes):
        images, reference-able classes, pairs, same-image pairs, crowd and small instances,
        and annotations dropped on load (``dropped_annotations``, when the source checks)."""
        self._require_prepared("index_summary()")
        pairs = self.query_class_pairs(class_ids)
        return {"images": len(self.image_ids), "referenceable_classes": len(self.category_index),
                "pairs": len(pairs),
                "same_image_reference_pairs": len(self.same_image_reference_pairs(class_ids)),
                "crowd_instances": self.num_crowd,
                "small_instances": sum(self.skipped_small.values()),
                "dropped_annotations": dict(getattr(self, "dropped_annotations", {}))}

    # ------------------------------------------------------------------ class split
    def _validate_split(self, train_class_ids, oneshot_class_ids):
        """Check both lists hold known, non-background, mutually disjoint class ids."""
        known = set(self._all_class_ids())
        for label, ids in (("train_class_ids", train_class_ids),
                           ("oneshot_class_ids", oneshot_class_ids)):
            unknown = [c for c in ids if c not in known]
            if unknown:
                raise ValueError(f"{label} contains unknown class ids {unknown} "
                                 f"(valid: 1..{self.num_classes - 1})")
            if len(set(ids)) != len(ids):
                dup = sorted({c for c in ids if list(ids).count(c) > 1})
                raise ValueError(f"{label} contains duplicate class ids {dup}")
        overlap = sorted(set(train_class_ids) & set(oneshot_class_ids))
        if overlap:
            names = [self.class_names[c] for c in overlap]
            raise ValueError(f"train and one-shot classes must be disjoint; in both: "
                             f"{overlap} ({', '.join(names)})")

    def set_class_split(self, train_class_ids, oneshot_class_ids):
        """Set the training (background) and held-out (one-shot) class ids.

        Both are lists of internal class ids; they must be disjoint. Classes in neither list
        are never sampled by default. Requires ``prepare()``.
        """
        self._require_prepared("set_class_split()")
        train = [int(c) for c in train_class_ids]
        oneshot = [int(c) for c in oneshot_class_ids]
        self._validate_split(train, oneshot)
        self.train_class_ids = sorted(train)
        self.oneshot_class_ids = sorted(oneshot)
        self._split_explicit = True

    # ------------------------------------------------------------------ sampling
    def sample_reference_class(self, image_id, rng, class_ids=None):
        """Draw the reference category for a query image, or ``None`` if there is none.

        Uniform over the classes of ``class_ids`` (default ``train_class_ids``) that have a
        non-crowd instance in the image and at least one usable reference instance anywhere
        (paper Section 5.1: "draw a random category among all categories of the background
        set present in the image"). Raises ``RuntimeError`` before ``prepare()``.
        """
        self._require_prepared("sample_reference_class()")
        candidates = self._eligible_classes(image_id, class_ids)
        if not candidates:
            return None
        return int(candidates[int(rng.integers(len(candidates)))])

    def sample_absent_reference_class(self, image_id, rng, class_ids=None):
        """Draw a category ABSENT from query ``image_id`` for a negative training pair, or
        ``None`` if there is none.

        Uniform over the classes of ``class_ids`` (default ``train_class_ids``) without any
        annotation in the image (crowd included) and with a usable reference instance in
        some (necessarily other) image.

        Raises:
            RuntimeError: the dataset is not prepared.
        """
        self._require_prepared("sample_absent_reference_class()")
        annotated = {abs(int(a["class_id"])) for a in self.instance_annotations(image_id)}
        allowed = self.train_class_ids if class_ids is None else [int(c) for c in class_ids]
        candidates = [c for c in allowed if c not in annotated and self.category_index.get(c)]
        if not candidates:
            return None
        return int(candidates[int(rng.integers(len(candidates)))])

    def _eligible_classes(self, image_id, class_ids):
        """Classes of ``class_ids`` (default: training classes) present (non-crowd) in the
        image and reference-able, sorted."""
        allowed = set(self.train_class_ids if class_ids is None else (int(c) for c in class_ids))
        return [c for c in self.image_categories.get(int(image_id), [])
                if c in allowed and c in self.category_index]

    def query_image_ids(self, class_ids=None):
        """Image ids for which :meth:`sample_reference_class` can return a class (sorted)."""
        self._require_prepared("query_image_ids()")
        return [int(i) for i in self.image_ids if self._eligible_classes(i, class_ids)]

    def query_class_pairs(self, class_ids=None):
        """Every ``(image_id, class_id)`` with the class present (non-crowd) in the image and
        reference-able, for ``class_ids`` (default: training classes) — the evaluation
        protocol's "every image and every category present in it" (paper Section 5.2)."""
        self._require_prepared("query_class_pairs()")
        return [(int(i), c) for i in self.image_ids for c in self._eligible_classes(i, class_ids)]

    def _class_label(self, class_id):
        """``'id (name)'`` for error messages."""
        if 0 <= class_id < len(self.class_names):
            return f"{class_id} ({self.class_names[class_id]})"
        return str(class_id)

    def _choose_instances(self, class_id, k, rng, exclude_image_id):
        """Pick ``k`` reference instances ``(image_id, ann_index)`` and whether they are in
        the excluded image.

        ``min(k, #images)`` distinct images are drawn uniformly (without replacement), one
        random instance each; if ``k`` exceeds the number of images, the images are visited
        round robin for further distinct instances, and if the class has fewer than ``k``
        instances some are repeated. The excluded image is only used when no other image has
        a usable instance. Cost is O(k) per call plus the number of images when k > #images.
        """
        class_id = int(class_id)
        by_image = self._reference_by_image.get(class_id)
        if not by_image:
            if not 0 < class_id < self.num_classes:
                raise ValueError(f"unknown class id {class_id} (valid: 1..{self.num_classes - 1})")
            raise ValueError(
                f"class {self._class_label(class_id)} has no usable reference instance "
                + ("(no non-crowd instance)" if not self.REFERENCE_MIN_SIZE else
                   f"(all are crowd or smaller than REFERENCE_MIN_SIZE={self.REFERENCE_MIN_SIZE} px)"))
        images = self.category_index[class_id]
        skip = bisect.bisect_left(images, exclude_image_id) if exclude_image_id in by_image \
            else None
        count = len(images) - (skip is not None)
        same_image = count == 0
        if same_image:
            skip, count = None, len(images)
        if k < count:
            positions = rng.choice(count, size=k, replace=False)
        else:
            positions = rng.permutation(count)
        order = [images[int(p) + (1 if skip is not None and p >= skip else 0)]
                 for p in positions]
        remaining = {img: [by_image[img][i] for i in rng.permutation(len(by_image[img]))]
                     for img in order}
        chosen = []
        while len(chosen) < k and any(remaining.values()):
            for img in order:
                if remaining[img] and len(chosen) < k:
                    chosen.append((img, remaining[img].pop()))
        distinct = len(chosen)
        while len(chosen) < k:
            chosen.append(chosen[int(rng.integers(distinct))])
        return chosen, same_image

    def _crop_instance(self, image, bbox):
        """:func:`crop_box` (the crop and the clipped box)."""
        return crop_box(image, bbox)

    def sample_references(self, class_id, k, rng, exclude_image_id=None, return_info=False):
        """Crop ``k`` reference instances of ``class_id`` (k-shot).

        Instances are non-crowd (and at least ``REFERENCE_MIN_SIZE`` px on the shorter box
        side when it is set), distinct where possible and spread over different images; images other than
        ``exclude_image_id`` are preferred (that image is used only when no other has one).
        Returns a list of ``uint8`` crops (and, with ``return_info``, a list of info dicts
        as in :meth:`sample_reference`). Raises ``ValueError`` if the class has no usable
        instance or ``k < 1``.
        """
        self._require_prepared("sample_references()")
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        exclude = None if exclude_image_id is None else int(exclude_image_id)
        chosen, same_image = self._choose_instances(class_id, int(k), rng, exclude)
        crops, infos, images = [], [], {}
        for image_id, index in chosen:
            if image_id not in images:
                images[image_id] = self.load_image(image_id)
            ann = self.instance_annotations(image_id)[index]
            crop, bbox = self._crop_instance(images[image_id], ann["bbox"])
            crops.append(crop.astype(np.uint8, copy=False))
            infos.append({"image_id": int(image_id), "annotation_index": int(index),
                          "bbox": bbox, "class_id": int(class_id),
                          "same_image": bool(same_image)})
        return (crops, infos) if return_info else crops

    def sample_reference(self, class_id, rng, exclude_image_id=None, return_info=False):
        """Crop one random reference instance of ``class_id``.

        A random image holding a usable instance (non-crowd; shorter box side ≥
        ``REFERENCE_MIN_SIZE`` when it is set) other than ``exclude_image_id`` is drawn, then a random
        instance in it; the crop is the instance's bounding box (``uint8 [h, w, 3]``).
        Only when no other image has one is ``exclude_image_id`` itself used
        (``info["same_image"]`` is then True). With ``return_info`` returns
        ``(crop, info)``, info = {image_id, annotation_index, bbox (y1, x1, y2, x2),
        class_id, same_image}. Raises ``ValueError`` if the class has no usable instance.
        """
        crops, infos = self.sample_references(class_id, 1, rng, exclude_image_id,
                                              return_info=True)
        return (crops[0], infos[0]) if return_info else crops[0]

    # ------------------------------------------------------------------ ground truth
    def _image_shape(self, image_id):
        """``(height, width)`` from ``image_info`` or, failing that, from the image."""
        info = self.image_info[image_id]
        if info.get("height") and info.get("width"):
            return int(info["height"]), int(info["width"])
        return tuple(int(v) for v in self.load_image(image_id).shape[:2])

    def _masks_or_empty(self, image_id):
        """``load_mask`` with an empty result normalised to shape ``[H, W, 0]``."""
        masks, class_ids = self.load_mask(image_id)
        class_ids = np.asarray(class_ids, dtype=np.int32).reshape(-1)
        if class_ids.size == 0:
            height, width = self._image_shape(image_id)
            return np.zeros((height, width, 0), dtype=bool), class_ids
        return np.asarray(masks).astype(bool, copy=False), class_ids

    def load_class_gt(self, image_id, class_id):
        """Ground-truth masks and labels of the query's instances of one category.

        Returns ``(masks [H, W, n] bool, labels [n] int32)``: label 1 for a normal instance,
        -1 for a crowd instance of the category (matterport's crowd convention). Instances
        of every other category are omitted, i.e. they are background. ``n`` may be 0.
        """
        masks, class_ids = self._masks_or_empty(image_id)
        keep = np.abs(class_ids) == int(class_id)
        labels = np.where(class_ids[keep] < 0, -1, 1).astype(np.int32)
        return masks[:, :, keep], labels

    # ------------------------------------------------------------------ source ids
    def source_image_id(self, image_id):
        """The id of internal image ``image_id`` in the data's own annotation file
        (``image_info[image_id]["id"]``: a COCO file's image id; for generated data the id
        :meth:`export_coco` writes, equal to the internal id).

        Raises:
            ValueError: ``image_id`` is not an image of the dataset.
        """
        image_id = int(image_id)
        if not 0 <= image_id < len(self.image_info):
            raise ValueError(f"unknown image id {image_id} (valid: 0..{len(self.image_info) - 1})")
        return _plain_id(self.image_info[image_id]["id"])

    def source_class_id(self, class_id):
        """The id of internal class ``class_id`` in the data's own annotation file
        (``class_info[class_id]["id"]``: a COCO file's category id, e.g. 90 for toothbrush
        whose internal id is 80).

        Raises:
            ValueError: ``class_id`` is not a category of the dataset (0 is the background).
        """
        class_id = int(class_id)
        if not 0 < class_id < len(self.class_info):
            raise ValueError(f"unknown class id {class_id} (valid: 1..{len(self.class_info) - 1})")
        return _plain_id(self.class_info[class_id]["id"])

    def _source_id_maps(self):
        """``({internal image id: source id}, {internal class id: source id})``.

        Raises:
            ValueError: two images (or two categories) share a source id, e.g. when two
                sources are mixed in one dataset (the ids are named).
        """
        maps = []
        for kind, ids, lookup in (("image", self.image_ids, self.source_image_id),
                                  ("category", self._all_class_ids(), self.source_class_id)):
            mapping, owner = {}, {}
            for internal in ids:
                source = lookup(internal)
                if source in owner:
                    raise ValueError(
                        f"{type(self).__name__}: {kind}s {owner[source]} and {int(internal)} share "
                        f"the source id {source!r}; results cannot be written in source ids")
                owner[source] = int(internal)
                mapping[int(internal)] = source
            maps.append(mapping)
        return tuple(maps)

    def to_source_results(self, results):
        """COCO results (dicts with ``image_id`` and ``category_id``) with the internal ids
        replaced by the source ids of :meth:`source_image_id` / :meth:`source_class_id`
        (new dicts; the other fields are shared). Scored against the data's own annotation
        file with plain pycocotools they give the evaluation's AP50 (paper §5.2).

        Raises:
            ValueError: a result names an image or category the dataset does not have, or
                the dataset's source ids are not unique (named).
        """
        images, classes = self._source_id_maps()
        converted = []
        for result in results:
            image_id, class_id = int(result["image_id"]), int(result["category_id"])
            if image_id not in images or class_id not in classes:
                raise ValueError(f"result for image {image_id}, category {class_id}: not an "
                                 f"image / category of {type(self).__name__}")
            converted.append(dict(result, image_id=images[image_id], category_id=classes[class_id]))
        return converted

    # ------------------------------------------------------------------ COCO export
    def _coco_image_entry(self, image_id):
        """The COCO ``images`` entry of one image (``id`` = internal image id)."""
        height, width = self._image_shape(image_id)
        path = self.image_info[image_id].get("path")
        file_name = os.path.basename(str(path)) if path else f"{image_id:012d}.png"
        return {"id": int(image_id), "width": width, "height": height, "file_name": file_name}

    def _coco_annotations_for_image(self, image_id, class_ids):
        """COCO annotations (without ``id``) of one image, from ``load_mask`` (slow path).

        Segmentations are RLE; bbox/area come from the mask. Empty masks are skipped.
        """
        masks, ids = self._masks_or_empty(image_id)
        anns = []
        for k, raw_id in enumerate(ids):
            class_id = abs(int(raw_id))
            if class_id not in class_ids:
                continue
            rle, area, bbox = encode_mask_with_box(masks[:, :, k])
            if area == 0:
                continue
            anns.append({"image_id": int(image_id), "category_id": class_id,
                         "segmentation": rle, "bbox": bbox, "area": float(area),
                         "iscrowd": int(raw_id < 0)})
        return anns

    def to_coco_dict(self, class_ids=None, image_ids=None, source_ids=False):
        """The dataset as a COCO-format dict.

        ``class_ids`` (default: all classes) restricts categories and annotations;
        ``image_ids`` (default: all images) restricts images (both internal ids). Annotation
        ids run from 1. Image and category ids are the internal ones, or with ``source_ids``
        those of the data's own annotation file (:meth:`source_image_id`,
        :meth:`source_class_id`), which the evaluation's results files use.

        Raises:
            RuntimeError: the dataset is not prepared.
            ValueError: ``source_ids`` and two images / categories share a source id.
        """
        self._require_prepared("to_coco_dict()")
        class_ids = self._all_class_ids() if class_ids is None else [int(c) for c in class_ids]
        image_ids = self.image_ids if image_ids is None else image_ids
        wanted = set(class_ids)
        images, annotations = [], []
        for image_id in image_ids:
            image_id = int(image_id)
            images.append(self._coco_image_entry(image_id))
            for ann in self._coco_annotations_for_image(image_id, wanted):
                ann["id"] = len(annotations) + 1
                annotations.append(ann)
        categories = [{"id": c, "name": self.class_names[c],
                       "supercategory": self.class_info[c].get("source", "")}
                      for c in class_ids]
        if source_ids:
            image_map, class_map = self._source_id_maps()
            for entry in images:
                entry["id"] = image_map[entry["id"]]
            for entry in categories:
                entry["id"] = class_map[entry["id"]]
            for ann in annotations:
                ann["image_id"] = image_map[ann["image_id"]]
                ann["category_id"] = class_map[ann["category_id"]]
        return {"info": {"description": f"exported from {type(self).__name__}"},
                "licenses": [], "images": images, "categories": categories,
                "annotations": annotations}

    def coco_gt(self, class_ids=None, image_ids=None):
        """A ``pycocotools.coco.COCO`` ground truth built in memory from :meth:`to_coco_dict`."""
        return coco_from_dict(self.to_coco_dict(class_ids=class_ids, image_ids=image_ids))

    def export_coco(self, json_path, image_dir=None, class_ids=None, image_ids=None):
        """Write the dataset as a COCO JSON file (atomically) and optionally its images.

        Image and category ids are the source ids (:meth:`source_image_id`,
        :meth:`source_class_id`; equal to the internal ids for generated data), the ids of
        the evaluation's results files, so those score against this file with plain
        pycocotools. ``class_ids`` / ``image_ids`` select internal ids. With ``image_dir``
        every image is written there as ``{internal image_id:012d}.png`` and the JSON's
        ``file_name`` entries point to those files, so the result loads like any COCO-format
        dataset (e.g. ``OneShotCocoDataset.load_coco(annotation_file=..., image_dir=...)``).
        Returns the JSON path.

        Raises:
            ValueError: two images / categories share a source id (named).
            OSError: a file cannot be written.
        """
        data = self.to_coco_dict(class_ids=class_ids, image_ids=image_ids)
        image_map, class_map = self._source_id_maps()
        if image_dir is not None:
            image_dir = pathlib.Path(image_dir)
            image_dir.mkdir(parents=True, exist_ok=True)
            for entry in data["images"]:
                entry["file_name"] = f"{entry['id']:012d}.png"
                _write_png_atomic(self.load_image(entry["id"]), image_dir / entry["file_name"])
        for entry in data["images"]:
            entry["id"] = image_map[entry["id"]]
        for entry in data["categories"]:
            entry["id"] = class_map[entry["id"]]
        for ann in data["annotations"]:
            ann["image_id"] = image_map[ann["image_id"]]
            ann["category_id"] = class_map[ann["category_id"]]
        json_path = pathlib.Path(json_path)
        _write_text_atomic(json.dumps(data), json_path)
        return json_path


def _plain_id(value):
    """A source id as JSON writes it: a Python ``int`` for integer-like ids (numpy
    included), anything else unchanged."""
    if isinstance(value, (bool, np.bool_)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    return value


def _write_text_atomic(text, path):
    """Write ``text`` to ``path`` atomically (temporary file + rename)."""
    with atomic_write(path) as tmp:
        pathlib.Path(tmp).write_text(text, encoding="utf-8")


def _write_png_atomic(image, path):
    """Save a ``uint8`` image as PNG atomically (temporary file + rename)."""
    from PIL import Image
    with atomic_write(path) as tmp:
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, format="PNG")
