"""A procedural one-shot instance-segmentation dataset rendered in memory.

Purpose
-------
A newcomer without COCO or a GPU must be able to see the whole one-shot idea work:
train a tiny Siamese Mask R-CNN on a few CPU minutes and watch it find objects of
categories it has never seen labels for.  This module generates such data from a
seed; nothing is read from or written to disk.

Categories
----------
Every category (class ids ``1..num_categories``) has one appearance, drawn once from
``(category_seed, class_id)`` by :func:`make_category_styles`.  Appearances differ in
*coarse* features that survive at low resolution (scenes ~128 px, objects 20-40 px,
references ~32 px):

* a **shape family** with its own parameters: ``polygon`` (3-8 sides), ``star``
  (4-8 points, inner radius), ``blob`` (random low-order Fourier outline), ``ring``
  (circle or polygon with a hole), ``cross`` (plus sign, arm width), ``crescent``
  (disc minus an offset disc) and ``glyph`` (2-4 thick strokes joining points of a
  3x3 grid, like a letter);
* a **primary colour** (12 saturated hues in a light and a dark tone) and a
  **secondary colour** (a distant hue, black or white);
* a **two-colour pattern**: ``solid``, ``stripes`` (horizontal, vertical or diagonal),
  ``checker``, ``dots``, ``rings`` (concentric) or ``halves``, at about 2-3
  periods across the object (stripes/checks 5-10 px wide in a 32 px object).

The coarse signature (family, primary, secondary, pattern) is unique per category,
so no two categories look alike at a glance.  Instances of one category vary
moderately: size (radius 8-16 % of the scene side), rotation (+-20 degrees by
default), stretch (aspect 0.85-1.15) and a small colour jitter (brightness
+-10 %, per-channel shift +-10).  The pattern is defined in the object's own
frame, so it rotates and stretches with the object.

Scenes
------
Scene ``image_id`` is regenerated from ``(scene_seed, image_id)`` whenever asked for,
so ``load_image``/``load_mask``/``instance_annotations`` are deterministic and nothing
big is stored (annotations and the last few scenes are cached).  A scene has a
textured background (a smooth low-saturation colour field plus a faint sinusoidal
texture), 1-2 "present" categories with 1-3 instances each and 2-5 distractor
instances of other categories.  Objects are drawn one after another; a later object
occludes earlier ones, and every instance mask holds exactly the **visible** pixels
of that instance, so the masks of one image never overlap.  A placement is rejected
(and retried elsewhere) when it would leave an earlier instance with fewer than
``min_visible_area`` pixels or less than ``min_visible_fraction`` of its area, so
every drawn object is annotated and no annotated object is mostly hidden.  Light
pixel noise is added to the whole image at the end.

Splits and references
---------------------
As in the COCO splits of the paper, every 4th category (starting at the
``split``-th, ``split`` in 1..4) is a one-shot (held-out) category, the others are
background (training) categories; an explicit ``oneshot_class_ids`` overrides this.
Held-out categories still appear in training scenes, but only as unlabelled
clutter: the base class never picks them as reference categories there.

By default (``render_references=True``) a reference is a **fresh, isolated instance**
of the category on a plain neutral-grey background, rendered with its own random
size/rotation/colour jitter and cropped tight around the object with a small
margin (:func:`render_reference`).  It therefore never comes from the query image
and is never occluded.  With ``render_references=False`` the base class's crop of an
instance from another scene is used instead, as for COCO.

Speed: one 128x128 scene takes a few milliseconds on one CPU core (see
``tests/test_synthetic.py``, which prints the measured time).
"""
import dataclasses
import inspect
import math

import numpy as np

from siamese_mask_rcnn.datasets.scenes import (GeneratedSceneDataset, Scene, bilinear_upsample,
                                               finish_image, place_instances,
                                               resolve_present_class_ids, scene_plan)
from siamese_mask_rcnn.datasets import randomised
from siamese_mask_rcnn.datasets.splits import split_positions
from siamese_mask_rcnn.datasets.synthetic_styles import (make_category_styles, pattern_mask,
                                                         shape_mask)

SOURCE = "synthetic"
REFERENCE_BACKGROUND = (128, 128, 128)


@dataclasses.dataclass
class InstancePose:
    """Where and how one instance is drawn: centre (pixels), radius (pixels),
    rotation (radians), stretch (aspect ratio) and colour jitter."""

    cy: float
    cx: float
    radius: float
    angle: float
    stretch: float
    brightness: float
    colour_shift: tuple


# ---------------------------------------------------------------------------
# Rendering instances
# ---------------------------------------------------------------------------

def random_pose(rng, height, width, radius_range=(0.08, 0.16), max_rotation_deg=20.0,
                stretch_range=(0.85, 1.15)):
    """A random pose with the whole object inside a ``height`` x ``width`` canvas.

    ``radius_range`` is relative to the shorter image side.
    """
    side = min(height, width)
    radius = float(rng.uniform(*radius_range)) * side
    stretch = float(rng.uniform(*stretch_range))
    extent = radius * math.sqrt(max(stretch, 1.0 / stretch))
    cy = float(rng.uniform(extent, max(extent, height - extent)))
    cx = float(rng.uniform(extent, max(extent, width - extent)))
    angle = math.radians(float(rng.uniform(-max_rotation_deg, max_rotation_deg)))
    return InstancePose(cy=cy, cx=cx, radius=radius, angle=angle, stretch=stretch,
                        brightness=float(rng.uniform(0.9, 1.1)),
                        colour_shift=tuple(float(x) for x in rng.uniform(-10, 10, size=3)))


def render_instance(style, pose, height, width):
    """Rasterise one instance on a ``height`` x ``width`` canvas.

    Returns ``(y0, x0, mask, colours)``: the top-left corner of the instance's
    (canvas-clipped) bounding window, a bool mask of its pixels in that window and
    float32 RGB colours [h, w, 3] for the window.  ``mask`` may be empty.
    """
    stretch_root = math.sqrt(pose.stretch)
    extent = pose.radius * max(stretch_root, 1.0 / stretch_root)
    y0 = max(int(math.floor(pose.cy - extent)) - 1, 0)
    x0 = max(int(math.floor(pose.cx - extent)) - 1, 0)
    y1 = min(int(math.ceil(pose.cy + extent)) + 2, height)
    x1 = min(int(math.ceil(pose.cx + extent)) + 2, width)
    if y1 <= y0 or x1 <= x0:
        return y0, x0, np.zeros((0, 0), dtype=bool), np.zeros((0, 0, 3), dtype=np.float32)
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - pose.cy)[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - pose.cx)[None, :]
    cos_a, sin_a = math.cos(pose.angle), math.sin(pose.angle)
    u = (cos_a * dx + sin_a * dy) / (pose.radius * stretch_root)
    v = (-sin_a * dx + cos_a * dy) / (pose.radius / stretch_root)
    mask = shape_mask(style, u, v)
    primary = _jitter_colour(style.primary, pose)
    secondary = _jitter_colour(style.secondary, pose)
    colours = np.where(pattern_mask(style, u, v)[:, :, None], primary, secondary).astype(np.float32)
    return y0, x0, mask, colours


def _jitter_colour(rgb, pose):
    return np.clip(np.asarray(rgb, dtype=np.float32) * pose.brightness
                   + np.asarray(pose.colour_shift, dtype=np.float32), 0, 255)


def make_background(rng, height, width, grid=4):
    """A textured background, float32 [H, W, 3]: a smooth low-saturation colour field
    (bilinear upsampling of a ``grid`` x ``grid`` random field) plus a faint
    sinusoidal texture."""
    base_value = rng.uniform(70, 185)
    coarse = (base_value + rng.uniform(-35, 35, size=(grid, grid, 1))
              + rng.uniform(-14, 14, size=(grid, grid, 3)))
    field = bilinear_upsample(coarse.astype(np.float32), height, width)
    fy, fx = rng.uniform(0.05, 0.25, size=2)
    phase = rng.uniform(0, 2 * np.pi)
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    texture = np.sin(fy * ys + fx * xs + phase) * np.sin(0.7 * fx * ys - 0.9 * fy * xs)
    return field + (rng.uniform(4, 10) * texture)[:, :, None]


# ---------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------

def randomise_instance(mask, colours, rng):
    """Randomised rendering of one drawn instance (:mod:`.randomised`; its pose already carries
    the wider colour jitter): shading across the object and, with probability
    ``randomised.OUTLINE["probability"]``, a dark or light contour 1-2 px wide (part of the
    object's mask, bool [h, w]). Returns the new colours float32 [h, w, 3]."""
    colours = randomised.shade(colours, rng)
    if mask.size and rng.uniform() < randomised.OUTLINE["probability"]:
        ring = randomised.outline(mask, int(rng.integers(randomised.OUTLINE["width"][0],
                                                         randomised.OUTLINE["width"][1] + 1)))
        colours = colours.copy()
        colours[ring] = randomised.random_colour(rng, value=rng.choice([0.08, 0.92]), saturation=0.1)
    return colours


def _randomised_pose(pose, rng):
    """``pose`` with the wider colour jitter of randomised rendering."""
    jitter = randomised.COLOUR_JITTER
    pose.brightness = float(rng.uniform(*jitter["brightness"]))
    pose.colour_shift = tuple(float(x) for x in rng.uniform(-jitter["shift"], jitter["shift"], size=3))
    return pose


def generate_scene(styles, rng, image_size=128, class_pool=None, present_range=(1, 2),
                   instances_range=(1, 3), distractor_range=(2, 5), radius_range=(0.08, 0.16),
                   max_rotation_deg=20.0, min_visible_area=40, min_visible_fraction=0.5,
                   noise_std=4.0, tries=12, randomise=False):
    """Render one cluttered scene of instances of ``styles`` (a list of CategoryStyle).

    ``class_pool`` restricts the "present" categories (default: all); distractors
    come from all categories.  ``image_size`` is an int or (height, width).  Objects
    that cannot be placed without hiding earlier ones too much are skipped.
    ``randomise`` (beyond the paper; pass it with :data:`.randomised.SCENE_OPTIONS` for the
    wider layout): a background of any kind and brightness, wider colour jitter, shading,
    contours, a randomised finish (gamma, noise, blur, JPEG) instead of light noise, and
    sometimes content of another aspect, zero-padded (:mod:`.randomised`); a probability in
    [0, 1] randomises that fraction of the scenes (drawn per scene). Returns a :class:`Scene`
    whose ``info`` holds the ``poses`` and unoccluded ``full_areas`` of the annotated
    instances, in drawing order.
    """
    full_shape = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    randomise = randomised.applies(rng, randomise)
    height, width = randomised.letterbox_shape(rng, *full_shape) if randomise else full_shape
    by_id = {s.class_id: s for s in styles}
    all_ids = sorted(by_id)
    plan = scene_plan(rng, all_ids if class_pool is None else class_pool, all_ids,
                      present_range, instances_range, distractor_range)
    canvas = (randomised.random_background(rng, height, width) if randomise
              else make_background(rng, height, width))
    labels = np.zeros((height, width), dtype=np.int16)
    areas, full_areas, class_ids, poses = [], [], [], []
    for class_id in plan:
        style = by_id[class_id]
        last_pose = []

        def patch(r, style=style, last_pose=last_pose):
            pose = random_pose(r, height, width, radius_range, max_rotation_deg)
            if randomise:
                pose = _randomised_pose(pose, r)
            last_pose[:] = [pose]
            y0, x0, mask, colours = render_instance(style, pose, height, width)
            if randomise:
                colours = randomise_instance(mask, colours, r)
            return y0, x0, mask, colours

        if place_instances(canvas, labels, areas, full_areas, patch, rng, tries,
                           min_visible_area, min_visible_fraction):
            class_ids.append(class_id)
            poses.append(last_pose[0])
    image = randomised.random_finish(canvas, rng) if randomise else finish_image(canvas, rng, noise_std)
    if (height, width) != full_shape:
        image, labels, top, left = randomised.letterbox(image, labels, *full_shape)
        for pose in poses:
            pose.cy, pose.cx = pose.cy + top, pose.cx + left
    return Scene(image=image, labels=labels,
                 class_ids=np.asarray(class_ids, dtype=np.int32),
                 info={"poses": poses, "full_areas": full_areas})


def render_reference(style, rng, radius=None, margin=3, background=REFERENCE_BACKGROUND,
                     max_rotation_deg=20.0, noise_std=2.0, return_mask=False, randomise=False):
    """A fresh isolated instance of ``style`` on a plain neutral background.

    The object is drawn with a random pose (``radius`` in pixels; default random in
    10-20 px), then the image is cropped tight around it with ``margin`` pixels on
    every side.  With ``randomise`` (beyond the paper, :mod:`.randomised`) the background is
    a random one of any kind and brightness, the margin 2-9 px, the colours jittered, shaded
    and maybe outlined like the scenes', and the finish randomised (``background`` and
    ``noise_std`` are then not used); a probability randomises that fraction.  Returns
    uint8 [h, w, 3] (and the bool object mask when ``return_mask``).
    """
    randomise = randomised.applies(rng, randomise)
    radius = float(rng.uniform(10, 20)) if radius is None else float(radius)
    if randomise:
        margin = int(rng.integers(2, 10))
    size = int(math.ceil(2 * radius * 1.2)) + 2 * margin + 4
    pose = random_pose(rng, size, size, radius_range=(radius / size, radius / size),
                       max_rotation_deg=max_rotation_deg)
    pose.cy = pose.cx = size / 2.0
    if randomise:
        pose = _randomised_pose(pose, rng)
        canvas = randomised.random_background(rng, size, size)
    else:
        canvas = np.empty((size, size, 3), dtype=np.float32)
        canvas[:] = np.asarray(background, dtype=np.float32)
    y0, x0, mask, colours = render_instance(style, pose, size, size)
    if randomise:
        colours = randomise_instance(mask, colours, rng)
    full = np.zeros((size, size), dtype=bool)
    full[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]] = mask
    canvas[full] = colours[mask]
    ys, xs = np.nonzero(full)
    top, left = max(ys.min() - margin, 0), max(xs.min() - margin, 0)
    bottom, right = min(ys.max() + 1 + margin, size), min(xs.max() + 1 + margin, size)
    finished = randomised.random_finish(canvas, rng) if randomise else finish_image(canvas, rng, noise_std)
    image = finished[top:bottom, left:right]
    if return_mask:
        return image, full[top:bottom, left:right]
    return image


# ---------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------

def default_oneshot_class_ids(num_categories, split=1):
    """Held-out class ids: every 4th category starting at the ``split``-th (1..4),
    the rule of the paper's COCO splits."""
    return split_positions(split, num_categories)


class SyntheticOneShotDataset(GeneratedSceneDataset):
    """The procedural one-shot dataset described in the module docstring.

    Class ids are ``1..num_categories`` (internal id == category number), image ids
    ``0..num_images-1``. The dataset is prepared and split on construction.

    Args:
        num_categories: number of categories (appearances from ``category_seed``).
        num_images: number of scenes.
        image_size: scene side in pixels (int) or ``(height, width)``.
        seed: scene seed; scene ``i`` is generated from ``default_rng([seed, i])``.
        category_seed: seed of the category appearances (keep it equal across
            datasets that must share categories).
        split: 1..4, held-out categories are ``split, split+4, ...`` (25 %).
        oneshot_class_ids: explicit held-out class ids (overrides ``split``).
        present_class_ids: categories that may be "present" (1-3 instances) in a
            scene: None (all), "train", "oneshot" or a list of class ids;
            distractors are always drawn from all categories.
        render_references: references are fresh renders (True) or crops of
            instances in other scenes (False).
        scene_options: keyword arguments for :func:`generate_scene` (e.g.
            ``distractor_range``, ``radius_range``, ``min_visible_area``).
        cache_size: scenes kept in memory (least recently used first out); None keeps
            every scene, all rendered on construction.
        workers: processes that render the scenes when ``cache_size`` is None (and the
            reference bank, see ``build_reference_bank``).

    Raises ``ValueError`` for ``num_images < 0``, ``num_categories < 1``, an unknown scene
    option, a split outside 1..4, an invalid ``present_class_ids``, ``cache_size < 1`` or
    ``workers < 1``.
    """

    def __init__(self, num_categories=400, num_images=1000, image_size=128, seed=0,
                 category_seed=0, split=1, oneshot_class_ids=None, present_class_ids=None,
                 render_references=True, scene_options=None, cache_size=16, workers=1):
        super().__init__(render_references=render_references, cache_size=cache_size,
                         workers=workers)
        if int(num_images) < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        self.image_size = ((int(image_size), int(image_size)) if np.isscalar(image_size)
                           else tuple(int(v) for v in image_size))
        self.seed = int(seed)
        self.category_seed = int(category_seed)
        self.scene_options = dict(scene_options or {})
        known = set(inspect.signature(generate_scene).parameters) - {"styles", "rng", "image_size",
                                                                    "class_pool"}
        unknown = sorted(set(self.scene_options) - known)
        if unknown:
            raise ValueError(f"unknown scene option(s) {unknown}; known: {sorted(known)}")
        self.styles = make_category_styles(int(num_categories), self.category_seed)
        for style in self.styles:
            self.add_class(SOURCE, style.class_id, style.name)
        height, width = self.image_size
        for image_id in range(int(num_images)):
            self.add_image(SOURCE, image_id, None, height=height, width=width)
        # Internal class ids equal the category numbers (classes were added in order),
        # so the split and the present pool can be resolved before prepare() renders
        # the scenes to build the index.
        all_ids = list(range(1, len(self.styles) + 1))
        oneshot = (default_oneshot_class_ids(len(self.styles), split) if oneshot_class_ids is None
                   else sorted(int(c) for c in oneshot_class_ids))
        train = [c for c in all_ids if c not in set(oneshot)]
        self.present_class_ids = resolve_present_class_ids(present_class_ids, train, oneshot,
                                                            len(self.styles))
        self.prepare()
        self.set_class_split(train, oneshot)

    def style(self, class_id):
        """The :class:`CategoryStyle` of ``class_id``; ``ValueError`` for an unknown id."""
        class_id = int(class_id)
        if not 0 < class_id <= len(self.styles):
            raise ValueError(f"unknown class id {class_id} (valid: 1..{len(self.styles)})")
        return self.styles[class_id - 1]

    def generate_scene(self, image_id):
        """Scene ``image_id`` from ``default_rng([seed, image_id])``."""
        rng = np.random.default_rng([self.seed, int(image_id)])
        return generate_scene(self.styles, rng, self.image_size, class_pool=self.present_class_ids,
                              **self.scene_options)

    def render_reference_image(self, class_id, rng, exclude_image_id=None):
        """A fresh isolated instance of ``class_id`` on neutral grey, cropped tight with a
        3 px margin; its radius follows the scenes' ``radius_range``."""
        low, high = self.scene_options.get("radius_range", (0.08, 0.16))
        side = min(self.image_size)
        image = render_reference(self.style(class_id), rng, radius=rng.uniform(low, high) * side,
                                 max_rotation_deg=self.scene_options.get("max_rotation_deg", 20.0),
                                 randomise=self.scene_options.get("randomise", False))
        return image, {}

    def image_reference(self, image_id):
        """A description of the scene: seed, id and its categories."""
        names = [self.class_names[c] for c in self.scene(image_id).class_ids]
        return f"synthetic scene {int(image_id)} (seed {self.seed}): {', '.join(names)}"


#: Names of the training renderings: the paper-like look, randomised rendering, or half of
#: the scenes and references each (drawn per scene / reference).
RENDERINGS = ("paper", "randomised", "mixed")

#: Fraction of randomised scenes and references of the ``"mixed"`` rendering.
MIXED_FRACTION = 0.5


def rendering_options(rendering="paper"):
    """The ``scene_options`` of a named rendering: ``"paper"`` — {} (this module's fixed look);
    ``"randomised"`` — :data:`.randomised.SCENE_OPTIONS` with ``randomise=True`` (beyond the
    paper: any background, wider object size, density, occlusion, rotation and colour, contours,
    randomised finish; scenes and rendered references alike); ``"mixed"`` — the same with
    ``randomise=MIXED_FRACTION`` (half of the scenes and references, drawn one by one; the
    layout ranges apply to all).

    Raises:
        ValueError: an unknown ``rendering``.
    """
    if rendering == "paper":
        return {}
    if rendering == "randomised":
        return {**randomised.SCENE_OPTIONS, "randomise": True}
    if rendering == "mixed":
        return {**randomised.SCENE_OPTIONS, "randomise": MIXED_FRACTION}
    raise ValueError(f"unknown rendering {rendering!r}; choose one of {RENDERINGS}")


def make_train_val(num_categories=400, num_train=1000, num_val=200, image_size=128, seed=0,
                   category_seed=0, split=1, rendering="paper", **kwargs):
    """A training and an evaluation :class:`SyntheticOneShotDataset`.

    Both share the categories (``category_seed``), the split and the ``rendering``
    (:func:`rendering_options`; explicit ``scene_options`` override its values); their scenes
    differ (scene seeds ``2*seed`` and ``2*seed + 1``). Extra keyword arguments go to both.

    Raises:
        ValueError: an unknown ``rendering``.
    """
    kwargs["scene_options"] = {**rendering_options(rendering), **(kwargs.get("scene_options") or {})}
    train = SyntheticOneShotDataset(num_categories, num_train, image_size, seed=2 * int(seed),
                                    category_seed=category_seed, split=split, **kwargs)
    val = SyntheticOneShotDataset(num_categories, num_val, image_size, seed=2 * int(seed) + 1,
                                  category_seed=category_seed, split=split, **kwargs)
    return train, val
