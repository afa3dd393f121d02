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
clutter: the base class never picks them as targets or references there.

By default (``render_references=True``) a reference is a **fresh, isolated instance**
of the category on a plain neutral-grey background, rendered with its own random
size/rotation/colour jitter and cropped tight around the object with a small
margin (:func:`render_reference`).  It therefore never comes from the query image
and is never occluded.  With ``render_references=False`` the base class's crop of an
instance from another scene is used instead, as for COCO.

Speed: one 128x128 scene takes a few milliseconds on one CPU core (see
``tests/test_synthetic.py``, which prints the measured time).
"""
import colorsys
import dataclasses
import inspect
import math
from collections import OrderedDict

import numpy as np

from siamese_mask_rcnn.datasets.base import OneShotDataset
from siamese_mask_rcnn.datasets.coco import split_positions
from siamese_mask_rcnn.mrcnn import utils

SOURCE = "synthetic"
SHAPE_FAMILIES = ("polygon", "star", "blob", "ring", "cross", "crescent", "glyph")
PATTERNS = ("solid", "stripes", "checker", "dots", "rings", "halves")
NUM_HUES = 12
# Two tones per hue: (saturation, value).
TONES = ((0.85, 0.95), (0.9, 0.55))
WHITE = (235, 235, 235)
BLACK = (25, 25, 25)
REFERENCE_BACKGROUND = (128, 128, 128)


@dataclasses.dataclass
class CategoryStyle:
    """The appearance of one synthetic category.

    ``shape`` and ``pattern_params`` hold the family-specific parameters; colours are
    RGB tuples in 0..255; ``signature`` is the coarse (family, primary, secondary,
    pattern) key that is unique per category.
    """

    class_id: int
    name: str
    family: str
    shape: dict
    primary: tuple
    secondary: tuple
    pattern: str
    pattern_params: dict
    signature: tuple


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
# Category appearances
# ---------------------------------------------------------------------------

def hue_colour(hue_index, tone_index):
    """RGB uint8 tuple of palette hue ``hue_index`` (0..11) in tone ``tone_index`` (0/1)."""
    s, v = TONES[tone_index]
    r, g, b = colorsys.hsv_to_rgb(hue_index / NUM_HUES, s, v)
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def _sample_shape(rng, family):
    """Family-specific shape parameters (normalised units: the shape fits the unit disc)."""
    if family == "polygon":
        return {"sides": int(rng.integers(3, 9)), "phase": float(rng.uniform(0, 2 * np.pi))}
    if family == "star":
        return {"points": int(rng.integers(4, 9)), "inner": float(rng.uniform(0.38, 0.6)),
                "phase": float(rng.uniform(0, 2 * np.pi))}
    if family == "blob":
        orders = np.arange(2, 6)
        amplitudes = rng.uniform(0.05, 0.22, size=orders.size) / np.sqrt(orders - 1)
        phases = rng.uniform(0, 2 * np.pi, size=orders.size)
        theta = np.linspace(0, 2 * np.pi, 256, endpoint=False)
        radius = 1.0 + (amplitudes[:, None] * np.cos(orders[:, None] * theta + phases[:, None])).sum(0)
        return {"radius_lut": (radius / radius.max()).astype(np.float32)}
    if family == "ring":
        return {"sides": int(rng.choice([0, 3, 4, 6])), "hole": float(rng.uniform(0.4, 0.58)),
                "phase": float(rng.uniform(0, 2 * np.pi))}
    if family == "cross":
        return {"width": float(rng.uniform(0.28, 0.42)), "length": float(rng.uniform(0.85, 1.0))}
    if family == "crescent":
        return {"offset": float(rng.uniform(0.35, 0.55)), "bite": float(rng.uniform(0.7, 0.85))}
    if family == "glyph":
        return {"segments": _random_glyph_strokes(rng), "width": float(rng.uniform(0.2, 0.27))}
    raise ValueError(f"unknown shape family {family!r}; expected one of {SHAPE_FAMILIES}")


def _random_glyph_strokes(rng):
    """2-4 connected strokes walking over a 3x3 grid of points in [-0.75, 0.75]^2."""
    grid = np.array([(y, x) for y in (-0.75, 0.0, 0.75) for x in (-0.75, 0.0, 0.75)])
    current = int(rng.integers(0, 9))
    visited = {current}
    segments = []
    for _ in range(int(rng.integers(2, 5))):
        candidates = [k for k in range(9) if k not in visited
                      and np.abs(grid[k] - grid[current]).max() <= 0.75 + 1e-6]
        if not candidates:
            break
        nxt = int(rng.choice(candidates))
        segments.append((tuple(grid[current]), tuple(grid[nxt])))
        visited.add(nxt)
        current = nxt
    return tuple(segments)


def _sample_pattern(rng, pattern):
    """Pattern parameters: spatial frequency (periods per unit) and orientation."""
    if pattern == "stripes":
        angle = float(rng.choice([0.0, 0.5, 0.25, 0.75]) * np.pi)
        return {"freq": float(rng.uniform(1.1, 1.6)), "angle": angle}
    if pattern == "checker":
        return {"freq": float(rng.uniform(0.9, 1.2))}
    if pattern == "dots":
        return {"freq": float(rng.uniform(1.1, 1.4)), "radius": float(rng.uniform(0.17, 0.22))}
    if pattern == "rings":
        return {"freq": float(rng.uniform(1.6, 2.2))}
    if pattern == "halves":
        return {"angle": float(rng.choice([0.0, 0.5, 0.25, 0.75]) * np.pi)}
    return {}


def _sample_colours(rng):
    """(primary, secondary, key): a saturated primary and a distant hue, black or white."""
    hue = int(rng.integers(0, NUM_HUES))
    tone = int(rng.integers(0, 2))
    kind = rng.uniform()
    if kind < 0.2:
        secondary, key = WHITE, "white"
    elif kind < 0.4:
        secondary, key = BLACK, "black"
    else:
        offset = int(rng.integers(3, NUM_HUES - 2))
        hue2 = (hue + offset) % NUM_HUES
        tone2 = int(rng.integers(0, 2))
        secondary, key = hue_colour(hue2, tone2), f"h{hue2}t{tone2}"
    return hue_colour(hue, tone), secondary, (f"h{hue}t{tone}", key)


def make_category_style(class_id, rng, used_signatures=None):
    """Draw one category's appearance, retrying until its coarse signature is new."""
    used = used_signatures if used_signatures is not None else set()
    for _ in range(1000):
        family = SHAPE_FAMILIES[int(rng.integers(0, len(SHAPE_FAMILIES)))]
        pattern = PATTERNS[int(rng.integers(0, len(PATTERNS)))]
        primary, secondary, colour_key = _sample_colours(rng)
        if pattern == "solid":
            colour_key = (colour_key[0], "-")
        signature = (family, colour_key[0], colour_key[1], pattern)
        if signature in used:
            continue
        used.add(signature)
        return CategoryStyle(
            class_id=class_id,
            name=f"{family}-{pattern}-{colour_key[0]}-{colour_key[1]}",
            family=family, shape=_sample_shape(rng, family),
            primary=primary, secondary=primary if pattern == "solid" else secondary,
            pattern=pattern, pattern_params=_sample_pattern(rng, pattern),
            signature=signature)
    raise RuntimeError(f"could not find a new appearance for category {class_id}: too many categories")


def make_category_styles(num_categories, seed=0):
    """Appearances of categories ``1..num_categories``, deterministic in ``seed``.

    Category ``c`` is drawn from ``default_rng([seed, c])`` (retrying only on a
    signature clash), so adding categories does not change the earlier ones unless
    they clash.
    """
    if num_categories < 1:
        raise ValueError(f"num_categories must be >= 1, got {num_categories}")
    used = set()
    return [make_category_style(c, np.random.default_rng([seed, c]), used)
            for c in range(1, num_categories + 1)]


# ---------------------------------------------------------------------------
# Shape and pattern functions on the object's normalised frame (u, v)
# ---------------------------------------------------------------------------

def _polar(u, v):
    return np.hypot(u, v), np.arctan2(v, u)


def _polygon_radius(theta, sides, phase):
    """Boundary radius of a regular polygon with circumradius 1 (sides=0: circle)."""
    if sides == 0:
        return np.ones_like(theta)
    sector = 2 * np.pi / sides
    local = np.mod(theta - phase, sector) - sector / 2
    return np.cos(np.pi / sides) / np.cos(local)


def shape_mask(style, u, v):
    """Bool mask of the category's shape at normalised coordinates ``u`` (x), ``v`` (y)."""
    p = style.shape
    family = style.family
    if family in ("polygon", "star", "blob", "ring"):
        r, theta = _polar(u, v)
        if family == "polygon":
            return r <= _polygon_radius(theta, p["sides"], p["phase"])
        if family == "star":
            t = np.mod(theta - p["phase"], 2 * np.pi / p["points"]) / (2 * np.pi / p["points"])
            return r <= p["inner"] + (1 - p["inner"]) * np.abs(1 - 2 * t)
        if family == "blob":
            lut = p["radius_lut"]
            index = (np.mod(theta, 2 * np.pi) * (lut.size / (2 * np.pi))).astype(np.int32) % lut.size
            return r <= lut[index]
        outer = _polygon_radius(theta, p["sides"], p["phase"])
        return (r <= outer) & (r > p["hole"] * outer)
    if family == "cross":
        w, length = p["width"], p["length"]
        au, av = np.abs(u), np.abs(v)
        return ((au <= w) & (av <= length)) | ((av <= w) & (au <= length))
    if family == "crescent":
        return (u * u + v * v <= 1.0) & ((u - p["offset"]) ** 2 + v * v > p["bite"] ** 2)
    if family == "glyph":
        inside = np.zeros(np.broadcast(u, v).shape, dtype=bool)
        for (y0, x0), (y1, x1) in p["segments"]:
            inside |= _segment_distance(u, v, x0, y0, x1, y1) <= p["width"]
        return inside
    raise ValueError(f"unknown shape family {family!r}")


def _segment_distance(u, v, x0, y0, x1, y1):
    """Distance of points (u, v) to the segment (x0, y0)-(x1, y1)."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((u - x0) * dx + (v - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(u - (x0 + t * dx), v - (y0 + t * dy))


def pattern_mask(style, u, v):
    """Bool map: True where the primary colour shows, False for the secondary colour."""
    p = style.pattern_params
    name = style.pattern
    if name == "solid":
        return np.ones(np.broadcast(u, v).shape, dtype=bool)
    if name == "stripes":
        along = u * math.cos(p["angle"]) + v * math.sin(p["angle"])
        return np.sin(np.pi * p["freq"] * along * 2) >= 0
    if name == "checker":
        return (np.sin(np.pi * p["freq"] * 2 * u) >= 0) ^ (np.sin(np.pi * p["freq"] * 2 * v) >= 0)
    if name == "dots":
        period = 1.0 / p["freq"]
        du = np.mod(u + period / 2, period) - period / 2
        dv = np.mod(v + period / 2, period) - period / 2
        return du * du + dv * dv > p["radius"] ** 2
    if name == "rings":
        return np.sin(np.pi * p["freq"] * 2 * np.hypot(u, v) + np.pi / 2) >= 0
    if name == "halves":
        return u * math.cos(p["angle"]) + v * math.sin(p["angle"]) >= 0
    raise ValueError(f"unknown pattern {name!r}; expected one of {PATTERNS}")


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


# ---------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------

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


def generate_scene(styles, rng, image_size=128, class_pool=None, present_range=(1, 2),
                   instances_range=(1, 3), distractor_range=(2, 5), radius_range=(0.08, 0.16),
                   max_rotation_deg=20.0, min_visible_area=40, min_visible_fraction=0.5,
                   noise_std=4.0, tries=12):
    """Render one cluttered scene of instances of ``styles`` (a list of CategoryStyle).

    ``class_pool`` restricts the "present" categories (default: all); distractors
    come from all categories.  ``image_size`` is an int or (height, width).  Objects
    that cannot be placed without hiding earlier ones too much are skipped.
    Returns a :class:`Scene` whose ``info`` holds the ``poses`` and unoccluded
    ``full_areas`` of the annotated instances, in drawing order.
    """
    height, width = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    by_id = {s.class_id: s for s in styles}
    all_ids = sorted(by_id)
    plan = scene_plan(rng, all_ids if class_pool is None else class_pool, all_ids,
                      present_range, instances_range, distractor_range)
    canvas = make_background(rng, height, width)
    labels = np.zeros((height, width), dtype=np.int16)
    areas, full_areas, class_ids, poses = [], [], [], []
    for class_id in plan:
        style = by_id[class_id]
        last_pose = []

        def patch(r, style=style, last_pose=last_pose):
            pose = random_pose(r, height, width, radius_range, max_rotation_deg)
            last_pose[:] = [pose]
            return render_instance(style, pose, height, width)

        if place_instances(canvas, labels, areas, full_areas, patch, rng, tries,
                           min_visible_area, min_visible_fraction):
            class_ids.append(class_id)
            poses.append(last_pose[0])
    return Scene(image=finish_image(canvas, rng, noise_std), labels=labels,
                 class_ids=np.asarray(class_ids, dtype=np.int32),
                 info={"poses": poses, "full_areas": full_areas})


def render_reference(style, rng, radius=None, margin=3, background=REFERENCE_BACKGROUND,
                     max_rotation_deg=20.0, noise_std=2.0, return_mask=False):
    """A fresh isolated instance of ``style`` on a plain neutral background.

    The object is drawn with a random pose (``radius`` in pixels; default random in
    10-20 px), then the image is cropped tight around it with ``margin`` pixels on
    every side.  Returns uint8 [h, w, 3] (and the bool object mask when
    ``return_mask``).
    """
    radius = float(rng.uniform(10, 20)) if radius is None else float(radius)
    size = int(math.ceil(2 * radius * 1.2)) + 2 * margin + 4
    pose = random_pose(rng, size, size, radius_range=(radius / size, radius / size),
                       max_rotation_deg=max_rotation_deg)
    pose.cy = pose.cx = size / 2.0
    canvas = np.empty((size, size, 3), dtype=np.float32)
    canvas[:] = np.asarray(background, dtype=np.float32)
    y0, x0, mask, colours = render_instance(style, pose, size, size)
    full = np.zeros((size, size), dtype=bool)
    full[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]] = mask
    canvas[full] = colours[mask]
    ys, xs = np.nonzero(full)
    top, left = max(ys.min() - margin, 0), max(xs.min() - margin, 0)
    bottom, right = min(ys.max() + 1 + margin, size), min(xs.max() + 1 + margin, size)
    image = finish_image(canvas, rng, noise_std)[top:bottom, left:right]
    if return_mask:
        return image, full[top:bottom, left:right]
    return image


# ---------------------------------------------------------------------------
# Datasets
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
        """Render scene ``image_id`` (deterministic); subclasses implement."""
        raise NotImplementedError(f"{type(self).__name__} must implement generate_scene(image_id)")

    def render_reference_image(self, class_id, rng, exclude_image_id=None):
        """A fresh reference of ``class_id``: ``(uint8 [h, w, 3], info_extras dict)``;
        subclasses implement (``exclude_image_id`` is the query the reference is for)."""
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
        image is a possible target, whatever the size of its instances."""
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
        ``rendered`` True, plus the source's extras. Otherwise the base class's crops from other scenes.
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
    """

    def __init__(self, num_categories=400, num_images=1000, image_size=128, seed=0,
                 category_seed=0, split=1, oneshot_class_ids=None, present_class_ids=None,
                 render_references=True, scene_options=None, cache_size=16):
        super().__init__(render_references=render_references, cache_size=cache_size)
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
        self.present_class_ids = self._resolve_present(present_class_ids, train, oneshot)
        self.prepare()
        self.set_class_split(train, oneshot)

    def _resolve_present(self, present, train, oneshot):
        """The class pool for "present" categories (see the class docstring)."""
        if present is None:
            return None
        if isinstance(present, str):
            if present not in ("train", "oneshot"):
                raise ValueError(f"present_class_ids must be None, 'train', 'oneshot' or a "
                                 f"list of class ids, got {present!r}")
            ids = list(train if present == "train" else oneshot)
        else:
            ids = sorted(int(c) for c in present)
        bad = [c for c in ids if not 0 < c <= len(self.styles)]
        if bad or not ids:
            raise ValueError(f"present_class_ids {ids} must be a non-empty list of class ids "
                             f"in 1..{len(self.styles)}")
        return ids

    def style(self, class_id):
        """The :class:`CategoryStyle` of ``class_id``."""
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
                                 max_rotation_deg=self.scene_options.get("max_rotation_deg", 20.0))
        return image, {}

    def image_reference(self, image_id):
        """A description of the scene: seed, id and its categories."""
        names = [self.class_names[c] for c in self.scene(image_id).class_ids]
        return f"synthetic scene {int(image_id)} (seed {self.seed}): {', '.join(names)}"


def make_train_val(num_categories=400, num_train=1000, num_val=200, image_size=128, seed=0,
                   category_seed=0, split=1, **kwargs):
    """A training and an evaluation :class:`SyntheticOneShotDataset`.

    Both share the categories (``category_seed``) and the split; their scenes differ
    (scene seeds ``2*seed`` and ``2*seed + 1``). Extra keyword arguments go to both.
    """
    train = SyntheticOneShotDataset(num_categories, num_train, image_size, seed=2 * int(seed),
                                    category_seed=category_seed, split=split, **kwargs)
    val = SyntheticOneShotDataset(num_categories, num_val, image_size, seed=2 * int(seed) + 1,
                                  category_seed=category_seed, split=split, **kwargs)
    return train, val
