"""Appearances of the procedural dataset's categories (shape, colours, pattern).

Every category of :mod:`siamese_mask_rcnn.datasets.synthetic` has one
:class:`CategoryStyle`, drawn once from ``(category_seed, class_id)`` by
:func:`make_category_styles`: a shape family with its parameters, a primary and a
secondary colour and a two-colour pattern (see the ``synthetic`` module docstring).
:func:`shape_mask` and :func:`pattern_mask` evaluate a style on the object's own
normalised frame ``(u, v)`` (the shape fits the unit disc), so patterns rotate and
stretch with the object.

This module does not import TensorFlow.
"""
import colorsys
import dataclasses
import math

import numpy as np

SHAPE_FAMILIES = ("polygon", "star", "blob", "ring", "cross", "crescent", "glyph")
PATTERNS = ("solid", "stripes", "checker", "dots", "rings", "halves")
NUM_HUES = 12
# Two tones per hue: (saturation, value).
TONES = ((0.85, 0.95), (0.9, 0.55))
WHITE = (235, 235, 235)
BLACK = (25, 25, 25)


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
    """Draw one category's appearance, retrying until its coarse signature is new.

    ``used_signatures`` (a set, updated in place) holds the signatures already taken.
    Raises ``RuntimeError`` when 1000 draws find no new signature (too many categories).
    """
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
    they clash. Raises ``ValueError`` for ``num_categories < 1``.
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
    """Bool mask of the category's shape at normalised coordinates ``u`` (x), ``v`` (y)
    (arrays of one broadcast shape; the shape fits the unit disc). Raises ``ValueError``
    for an unknown shape family."""
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
    """Bool map at normalised ``(u, v)``: True where the primary colour shows, False for the
    secondary colour. Raises ``ValueError`` for an unknown pattern."""
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
