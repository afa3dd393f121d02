"""Generic machinery of one-shot datasets whose scenes are generated in memory.

Shared by the procedural dataset (:mod:`siamese_mask_rcnn.datasets.synthetic`) and the
Omniglot scenes (:mod:`siamese_mask_rcnn.datasets.omniglot`):

* :class:`Scene` — one rendered query image with its instance label map;
* compositing helpers — :func:`place_instances` (draw an object without hiding earlier
  ones too much), :func:`scene_plan` (which categories a scene shows),
  :func:`resolve_present_class_ids` (the pool of "present" categories),
  :func:`bilinear_upsample` (smooth colour fields) and :func:`finish_image` (noise,
  uint8);
* :class:`GeneratedSceneDataset` — a :class:`~siamese_mask_rcnn.datasets.base.OneShotDataset`
  whose images, masks and annotations are derived from a deterministic
  ``generate_scene(image_id)`` and whose references can be freshly rendered instances
  instead of crops of other scenes.

A query/reference pair follows the paper's training examples (Section 5.1): the
references show one category present in the query; the ground truth is the query's
instances of that category.

This module does not import TensorFlow.
"""
import dataclasses
from collections import OrderedDict

import numpy as np

from siamese_mask_rcnn.datasets.base import OneShotDataset
from siamese_mask_rcnn.mrcnn import utils


@dataclasses.dataclass
class Scene:
    """A rendered scene: ``image`` uint8 [H, W, 3]; ``labels`` int16 [H, W] with 0 for
    background and k+1 for the k-th annotated instance; ``class_ids`` int32 [N];
    ``info``: source-specific extras (e.g. Omniglot drawers per instance)."""

    image: np.ndarray
    labels: np.ndarray
    class_ids: np.ndarray
    info: dict = dataclasses.field(default_factory=dict)

    def masks(self):
        """Visible-pixel instance masks, bool [H, W, N] (never overlapping)."""
        n = len(self.class_ids)
        if n == 0:
            return np.zeros(self.labels.shape + (0,), dtype=bool)
        return self.labels[:, :, None] == np.arange(1, n + 1, dtype=self.labels.dtype)


# ---------------------------------------------------------------------------
# Compositing
# ---------------------------------------------------------------------------

def bilinear_upsample(coarse, height, width):
    """Bilinear interpolation of a [g, g, C] grid to [height, width, C]."""
    gy, gx = coarse.shape[:2]
    ys = np.linspace(0, gy - 1, height, dtype=np.float32)
    xs = np.linspace(0, gx - 1, width, dtype=np.float32)
    iy = np.minimum(ys.astype(np.int32), gy - 2)
    ix = np.minimum(xs.astype(np.int32), gx - 2)
    wy = (ys - iy)[:, None, None]
    wx = (xs - ix)[None, :, None]
    top = coarse[iy][:, ix] * (1 - wx) + coarse[iy][:, ix + 1] * wx
    bottom = coarse[iy + 1][:, ix] * (1 - wx) + coarse[iy + 1][:, ix + 1] * wx
    return top * (1 - wy) + bottom * wy


def finish_image(image, rng, noise_std):
    """Add pixel noise and convert a float image to uint8."""
    if noise_std > 0:
        image = image + rng.standard_normal(image.shape, dtype=np.float32) * noise_std
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def place_instances(canvas, labels, areas, full_areas, patch_fn, rng, tries,
                    min_visible_area, min_visible_fraction, accept=None):
    """Try to draw one object on ``canvas`` without hiding earlier ones too much.

    ``patch_fn(rng)`` returns ``(y0, x0, mask, colours)`` for a random placement.
    ``labels`` holds 0 or k+1 for the k-th placed instance, ``areas``/``full_areas``
    their current visible and original pixel counts (updated in place).  Returns
    True when the object was drawn (as instance ``len(areas)``), False when no
    placement in ``tries`` attempts kept every instance visible enough.  An optional
    ``accept(y0, x0, mask)`` predicate can veto a placement (e.g. by box overlap).
    """
    new_label = len(areas) + 1
    for _ in range(tries):
        y0, x0, mask, colours = patch_fn(rng)
        area = int(mask.sum())
        if area < max(min_visible_area, 1):
            continue
        window = labels[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
        hidden = np.bincount(window[mask], minlength=new_label)[1:]
        remaining = np.asarray(areas, dtype=np.int64) - hidden
        limit = np.maximum(min_visible_area, min_visible_fraction * np.asarray(full_areas, dtype=np.float64))
        if remaining.size and np.any(remaining < limit):
            continue
        if accept is not None and not accept(y0, x0, mask):
            continue
        window[mask] = new_label
        canvas[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]][mask] = colours[mask]
        for k in np.nonzero(hidden)[0]:
            areas[k] -= int(hidden[k])
        areas.append(area)
        full_areas.append(area)
        return True
    return False


def scene_plan(rng, class_pool, distractor_pool, present_range=(1, 2), instances_range=(1, 3),
               distractor_range=(2, 5)):
    """Which categories to draw, in drawing order (a list of class ids).

    ``present_range`` categories are drawn from ``class_pool`` with
    ``instances_range`` instances each; ``distractor_range`` single instances of
    other categories come from ``distractor_pool``.
    """
    class_pool = np.asarray(class_pool)
    n_present = int(rng.integers(present_range[0], present_range[1] + 1))
    present = rng.choice(class_pool, size=min(n_present, class_pool.size), replace=False)
    plan = []
    for class_id in present:
        plan += [int(class_id)] * int(rng.integers(instances_range[0], instances_range[1] + 1))
    others = np.setdiff1d(np.asarray(distractor_pool), present)
    n_distract = int(rng.integers(distractor_range[0], distractor_range[1] + 1))
    if others.size:
        plan += [int(c) for c in rng.choice(others, size=min(n_distract, others.size), replace=False)]
    rng.shuffle(plan)
    return plan


def resolve_present_class_ids(present, train, oneshot, num_categories):
    """The class pool of a scene's "present" categories (1-3 instances each).

    ``present``: None (every category, returns None), ``"train"`` / ``"oneshot"`` (the
    given ``train`` / ``oneshot`` class ids) or a list of class ids in
    ``1..num_categories``. Returns a sorted list (None for None). Raises ``ValueError``
    naming the value for any other string, an empty list or an id out of range.
    """
    if present is None:
        return None
    if isinstance(present, str):
        if present not in ("train", "oneshot"):
            raise ValueError(f"present_class_ids must be None, 'train', 'oneshot' or a "
                             f"list of class ids, got {present!r}")
        ids = list(train if present == "train" else oneshot)
    else:
        ids = sorted(int(c) for c in present)
    bad = [c for c in ids if not 0 < c <= num_categories]
    if bad or not ids:
        raise ValueError(f"present_class_ids {ids} must be a non-empty list of class ids "
                         f"in 1..{num_categories}")
    return ids


# ---------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------

class GeneratedSceneDataset(OneShotDataset):
    """Common machinery of one-shot datasets whose scenes are generated in memory.

    Subclasses implement :meth:`generate_scene` (``image_id`` → :class:`Scene`, a pure
    function of the image id) and :meth:`render_reference_image` (a fresh reference of
    a category). This class derives ``load_image``, ``load_mask`` and
    ``instance_annotations`` from the scene (annotations are cached, the last
    ``cache_size`` scenes too) and, when ``render_references`` is True, replaces the
    base class's crops from other images by freshly rendered references.
    """

    def __init__(self, render_references=True, cache_size=16):
        super().__init__()
        self.render_references = bool(render_references)
        self._cache_size = int(cache_size)
        self._scene_cache = OrderedDict()
        self._annotation_cache = {}

    # ------------------------------------------------------------------ to implement
    def generate_scene(self, image_id):
        """Render scene ``image_id`` (deterministic); subclasses implement it
        (``NotImplementedError`` here)."""
        raise NotImplementedError(f"{type(self).__name__} must implement generate_scene(image_id)")

    def render_reference_image(self, class_id, rng, exclude_image_id=None):
        """A fresh reference of ``class_id``: ``(uint8 [h, w, 3], info_extras dict)``;
        subclasses implement it (``NotImplementedError`` here; ``exclude_image_id`` is the
        query the reference is for)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement render_reference_image(class_id, rng)")

    # ------------------------------------------------------------------ scenes
    def _check_image_id(self, image_id):
        image_id = int(image_id)
        if not 0 <= image_id < len(self.image_info):
            raise IndexError(f"image id {image_id} out of range: {type(self).__name__} "
                             f"has {len(self.image_info)} images")
        return image_id

    def scene(self, image_id):
        """The :class:`Scene` of ``image_id`` (from a small LRU cache or regenerated)."""
        image_id = self._check_image_id(image_id)
        scene = self._scene_cache.get(image_id)
        if scene is None:
            scene = self.generate_scene(image_id)
            self._scene_cache[image_id] = scene
            while len(self._scene_cache) > self._cache_size:
                self._scene_cache.popitem(last=False)
        else:
            self._scene_cache.move_to_end(image_id)
        return scene

    def load_image(self, image_id):
        """The scene's RGB image, uint8 [H, W, 3] (a copy)."""
        return self.scene(image_id).image.copy()

    def load_mask(self, image_id):
        """Visible-pixel instance masks bool [H, W, N] and class ids int32 [N]."""
        scene = self.scene(image_id)
        return scene.masks(), scene.class_ids.copy()

    def instance_annotations(self, image_id):
        """Per-instance class id, bbox (y1, x1, y2, x2; exclusive ends, from the visible
        mask), iscrowd (always False) and visible area, in ``load_mask`` order."""
        image_id = self._check_image_id(image_id)
        cached = self._annotation_cache.get(image_id)
        if cached is None:
            masks, class_ids = self.load_mask(image_id)
            boxes = utils.extract_bboxes(masks)
            areas = masks.reshape(-1, masks.shape[-1]).sum(axis=0)
            cached = [{"class_id": int(c), "bbox": tuple(int(v) for v in box),
                       "iscrowd": False, "area": int(a)}
                      for c, box, a in zip(class_ids, boxes, areas)]
            self._annotation_cache[image_id] = cached
        return [dict(ann) for ann in cached]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_scene_cache"] = OrderedDict()
        return state

    # ------------------------------------------------------------------ references
    def build_index(self):
        """The base index; with rendered references every category present in some
        image is a possible reference category, whatever the size of its instances."""
        super().build_index()
        if not self.render_references:
            return
        images_by_class = {}
        for image_id, classes in self.image_categories.items():
            for class_id in classes:
                images_by_class.setdefault(class_id, []).append(image_id)
        self.category_index = {c: sorted(ids) for c, ids in images_by_class.items()}
        self.unreferenceable_class_ids = [c for c in self._all_class_ids()
                                          if c not in self.category_index]

    def sample_references(self, class_id, k, rng, exclude_image_id=None, return_info=False):
        """``k`` references of ``class_id``.

        With ``render_references`` each is a freshly rendered isolated instance (see
        :meth:`render_reference_image`); its info dict has ``image_id``,
        ``annotation_index`` and ``bbox`` set to None, ``same_image`` False,
        ``rendered`` True, plus the source's extras. Otherwise the base class's crops from
        other scenes. Raises ``RuntimeError`` before ``prepare()`` and ``ValueError`` for an
        unknown class id or ``k < 1``.
        """
        if not self.render_references:
            return super().sample_references(class_id, k, rng, exclude_image_id, return_info)
        self._require_prepared("sample_references()")
        class_id = int(class_id)
        if not 0 < class_id < self.num_classes:
            raise ValueError(f"unknown class id {class_id} (valid: 1..{self.num_classes - 1})")
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        crops, infos = [], []
        for _ in range(int(k)):
            crop, extras = self.render_reference_image(class_id, rng, exclude_image_id)
            crops.append(crop)
            info = {"image_id": None, "annotation_index": None, "bbox": None,
                    "class_id": class_id, "same_image": False, "rendered": True}
            info.update(extras)
            infos.append(info)
        return (crops, infos) if return_info else crops
