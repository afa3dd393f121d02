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
  instead of crops of other scenes. For training it can keep every scene in memory
  (``cache_size=None``: rendered once, in parallel processes with ``workers > 1``, stored
  as uint8 image and uint8 instance label map) and render a fixed bank of references per
  category once (:meth:`GeneratedSceneDataset.build_reference_bank`), so that a training
  step reads its examples from memory instead of rendering them.

A query/reference pair follows the paper's training examples (Section 5.1): the
references show one category present in the query; the ground truth is the query's
instances of that category.

This module does not import TensorFlow.
"""
import concurrent.futures
import dataclasses
import logging
import multiprocessing
import pickle
from collections import OrderedDict

import numpy as np

from siamese_mask_rcnn.datasets.base import OneShotDataset
from siamese_mask_rcnn.mrcnn import utils
from siamese_mask_rcnn.mrcnn.resizing import resize_image

log = logging.getLogger(__name__)


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

    def compact(self):
        """This scene with its label map stored as uint8 when it has < 256 instances
        (a third of the int16 map's memory; the masks are unchanged)."""
        if len(self.class_ids) < 256 and self.labels.dtype != np.uint8:
            return dataclasses.replace(self, labels=self.labels.astype(np.uint8))
        return self


def _render_scenes(dataset, image_ids):
    """``[(image_id, compact Scene)]`` of ``dataset`` (runs in a worker process)."""
    return [(int(i), dataset.generate_scene(int(i)).compact()) for i in image_ids]


def _render_references(dataset, class_ids, per_class, seed, min_dim, max_dim):
    """``[(class_id, uint8 [per_class, max_dim, max_dim, 3], [extras])]`` (a worker's share
    of :meth:`GeneratedSceneDataset.build_reference_bank`)."""
    out = []
    for class_id in class_ids:
        rng = np.random.default_rng([int(seed), int(class_id)])
        crops, extras = [], []
        for _ in range(int(per_class)):
            crop, extra = dataset.render_reference_image(int(class_id), rng)
            crops.append(resize_image(crop, min_dim=min_dim, max_dim=max_dim, mode="square")[0])
            extras.append(extra)
        out.append((int(class_id), np.stack(crops).astype(np.uint8), extras))
    return out


def _run_pickled(fn, dataset_bytes, chunk, *args):
    """``fn(dataset, chunk, *args)`` on a dataset pickled by the parent (a worker's task)."""
    return fn(pickle.loads(dataset_bytes), chunk, *args)


def parallel_chunks(fn, dataset, items, workers, *args):
    """``fn(dataset, chunk, *args)`` over ``workers`` interleaved chunks of ``items``: the
    first chunk in this process, the others in ``workers - 1`` spawned processes. Returns
    the lists the calls returned, concatenated in chunk order.

    ``fn``, ``dataset`` and ``args`` must be picklable; ``dataset`` is pickled once, before
    this process starts its own chunk (which fills the dataset's caches: pickled meanwhile by
    the pool's feeder thread, a cache could change size during pickling). The spawned
    processes import this package, so a script that gets here must guard its entry point with
    ``if __name__ == "__main__":`` (the ``multiprocessing`` rule). If the processes cannot be
    started, the remaining chunks run in this process (logged as a warning).
    """
    items = list(items)
    workers = max(1, min(int(workers), len(items)))
    chunks = [items[k::workers] for k in range(workers)]
    results = [None] * workers
    if workers > 1:
        try:
            with concurrent.futures.ProcessPoolExecutor(
                    workers - 1, mp_context=multiprocessing.get_context("spawn")) as pool:
                dataset_bytes = pickle.dumps(dataset)
                futures = [pool.submit(_run_pickled, fn, dataset_bytes, chunk, *args) for chunk in chunks[1:]]
                results[0] = fn(dataset, chunks[0], *args)
                for k, future in enumerate(futures, start=1):
                    results[k] = future.result()
        except (OSError, concurrent.futures.process.BrokenProcessPool) as err:
            log.warning("worker processes failed (%s); rendering in this process", err)
    for k, chunk in enumerate(chunks):
        if results[k] is None:
            results[k] = fn(dataset, chunk, *args)
    return [r for part in results for r in part]


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

    ``cache_size=None`` keeps every scene once rendered (uint8 image and label map,
    about 4 bytes per pixel); ``prepare()`` then renders all of them, in ``workers``
    processes (:func:`parallel_chunks`). Scenes are pure functions of the image id, so the
    data do not depend on ``workers``. :meth:`build_reference_bank` fixes the references
    of training categories to a bank rendered once.

    Raises:
        ValueError: ``cache_size`` (when not None) or ``workers`` below 1.
    """

    def __init__(self, render_references=True, cache_size=16, workers=1):
        super().__init__()
        self.render_references = bool(render_references)
        if cache_size is not None and int(cache_size) < 1:
            raise ValueError(f"cache_size must be >= 1 or None (keep every scene), got {cache_size}")
        if int(workers) < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._cache_size = None if cache_size is None else int(cache_size)
        self.workers = int(workers)
        self._scene_cache = OrderedDict()
        self._annotation_cache = {}
        self.reference_bank = None

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
            if self._cache_size is None:
                scene = scene.compact()
            self._scene_cache[image_id] = scene
            while self._cache_size is not None and len(self._scene_cache) > self._cache_size:
                self._scene_cache.popitem(last=False)
        elif self._cache_size is not None:
            self._scene_cache.move_to_end(image_id)
        return scene

    def render_all_scenes(self, workers=None):
        """Render every scene not yet cached, in ``workers`` processes (default: the
        dataset's ``workers``), and keep them all (sets ``cache_size`` to None).

        Returns the number of scenes rendered. Memory: about ``4 × H × W`` bytes a scene.
        """
        self._cache_size = None
        missing = [i for i in range(len(self.image_info)) if i not in self._scene_cache]
        for image_id, scene in parallel_chunks(_render_scenes, self, missing,
                                               self.workers if workers is None else workers):
            self._scene_cache[image_id] = scene
        return len(missing)

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
        image is a possible reference category, whatever the size of its instances.
        With ``cache_size=None`` every scene is rendered first (in ``workers`` processes)."""
        if self._cache_size is None:
            self.render_all_scenes()
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
        if self.reference_bank is not None and class_id in self.reference_bank["crops"]:
            return self._sample_bank(class_id, int(k), rng, exclude_image_id, return_info)
        crops, infos = [], []
        for _ in range(int(k)):
            crop, extras = self.render_reference_image(class_id, rng, exclude_image_id)
            crops.append(crop)
            info = {"image_id": None, "annotation_index": None, "bbox": None,
                    "class_id": class_id, "same_image": False, "rendered": True}
            info.update(extras)
            infos.append(info)
        return (crops, infos) if return_info else crops

    # ------------------------------------------------------------------ reference bank
    def build_reference_bank(self, class_ids, per_class, min_dim, max_dim, seed=0, workers=None):
        """Render ``per_class`` references of each of ``class_ids`` once, resized as the
        model molds references ("square": short side to ``min_dim``, long side at most
        ``max_dim``, zero-padded to ``max_dim``², pixels), and draw later references of these
        categories from the bank (paper Section 5.1's training pairs, with a finite set of
        renders per category instead of a new one per pair).

        Reference ``j`` of class ``c`` comes from ``default_rng([seed, c])``, so the bank
        does not depend on ``workers`` (processes, default: the dataset's ``workers``).
        Memory: ``len(class_ids) × per_class × max_dim² × 3`` bytes. Returns the number of
        references rendered.

        Raises:
            ValueError: ``render_references`` is False, ``per_class < 1``, an unknown
                class id, or ``max_dim < 1``.
        """
        if not self.render_references:
            raise ValueError("a reference bank needs render_references=True")
        if int(per_class) < 1 or int(max_dim) < 1:
            raise ValueError(f"per_class and max_dim must be >= 1, got {per_class}, {max_dim}")
        class_ids = sorted({int(c) for c in class_ids})
        bad = [c for c in class_ids if not 0 < c < self.num_classes]
        if bad:
            raise ValueError(f"unknown class ids {bad} (valid: 1..{self.num_classes - 1})")
        rendered = parallel_chunks(_render_references, self, class_ids,
                                   self.workers if workers is None else workers,
                                   int(per_class), int(seed), min_dim, int(max_dim))
        self.reference_bank = {"crops": {c: crops for c, crops, _ in rendered},
                               "extras": {c: extras for c, _, extras in rendered},
                               "per_class": int(per_class), "seed": int(seed)}
        return len(class_ids) * int(per_class)

    def bank_entry_allowed(self, class_id, extras, exclude_image_id):
        """Whether bank reference ``extras`` of ``class_id`` may serve query
        ``exclude_image_id`` (always here; Omniglot excludes the query's drawers)."""
        return True

    def _sample_bank(self, class_id, k, rng, exclude_image_id, return_info):
        """``k`` references of ``class_id`` from the bank (distinct while the bank has enough)."""
        crops = self.reference_bank["crops"][class_id]
        extras = self.reference_bank["extras"][class_id]
        allowed = [j for j, e in enumerate(extras)
                   if exclude_image_id is None or self.bank_entry_allowed(class_id, e, exclude_image_id)]
        if not allowed:
            raise ValueError(f"no bank reference of class {class_id} may serve image {exclude_image_id}")
        picks = rng.choice(len(allowed), size=k, replace=k > len(allowed))
        chosen = [allowed[int(p)] for p in picks]
        out = [crops[j].copy() for j in chosen]
        if not return_info:
            return out
        infos = [{"image_id": None, "annotation_index": None, "bbox": None, "class_id": class_id,
                  "same_image": False, "rendered": True, "bank_index": j, **extras[j]} for j in chosen]
        return out, infos
