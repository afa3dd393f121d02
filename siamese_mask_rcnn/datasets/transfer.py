"""An independent scene composer for evaluating transfer (evaluation only, never training).

The one-shot claim of the paper (Sections 1 and 6) is that a model finds objects *like the
reference* in images it has never seen. Scenes from the same renderer that made the
training data only test the renderer's own statistics. This module composes one-shot scenes
with code written separately from the training renderers (it imports nothing from
``datasets.scenes``, ``datasets.synthetic``, ``datasets.synthetic_styles`` or
``datasets.omniglot``, and they import nothing from it) and draws every rendering choice
from wider, different ranges:

* **canvas**: height and width drawn per scene (shorter side ``short_side`` px, aspect
  ``aspect``, portrait or landscape), instead of one fixed square;
* **background**: one of flat, two-colour gradient, multi-octave value noise, stripes,
  checker or grain, with any brightness (``background_value``, dark backgrounds included)
  and saturation up to ``background_saturation``, texture contrast ``texture_contrast``;
* **objects**: polygon rasterisation with anti-aliased (supersampled) edges, an affine pose
  with rotation ``rotation_deg``, stretch ``stretch`` and shear ``shear``, scale
  ``object_scale`` (a fraction of the shorter side), colour jitter ``brightness`` and
  ``colour_shift``, a shading gradient ``shading`` and an outline of ``outline_width`` px
  on a fraction ``outline_probability`` of the procedural objects; Omniglot strokes drawn
  ``stroke_width`` px wide in any colour with enough contrast to the background;
* **density**: ``present_categories`` categories with ``instances`` instances each plus
  ``distractors`` other objects; occlusion allowed down to ``min_visible_fraction`` of an
  object;
* **image**: gamma ``gamma``, Gaussian noise ``noise_std``, blur ``blur_sigma`` and, with
  probability ``jpeg_probability``, JPEG compression at quality ``jpeg_quality``.

The objects are the categories of the training data: the procedural categories are read
from their appearance descriptions (shape family and parameters, two colours and a pattern,
duck-typed ``styles`` such as ``SyntheticOneShotDataset.styles``) and drawn by this
module's own rasteriser; Omniglot characters are read by this module straight from the
official zip archives. Class ids and names equal those of the in-distribution dataset, so
its one-shot categories stay the held-out ones (paper Section 5.1).

Every scene is a pure function of ``(seed, image_id)``. An instance's mask holds the pixels
where its coverage is at least one half and no later object's coverage is (the visible
pixels; masks never overlap). :class:`TransferSceneDataset` is a
:class:`~siamese_mask_rcnn.datasets.base.OneShotDataset`: the evaluation protocol
(paper Section 5.2) draws references as crops of instances in *other* scenes, as for COCO,
and ``export_coco`` writes the scenes in COCO format.

This module does not import TensorFlow.
"""
import colorsys
import io
import math
import pathlib
import re
import zipfile

import numpy as np

from siamese_mask_rcnn.datasets.base import OneShotDataset

SOURCE = "transfer"

#: Supersampling factor of the rasteriser (sub-pixels per pixel side).
SUPERSAMPLE = 4

#: The rendering ranges; every ``(low, high)`` pair is sampled uniformly per scene or object.
DEFAULT_RANGES = {
    "short_side": (96, 176),            # pixels, the canvas's shorter side
    "aspect": (1.0, 1.6),               # longer / shorter side
    "background_value": (12, 245),      # mean background brightness, 0..255
    "background_saturation": (0.0, 0.7),
    "texture_contrast": (0.0, 45.0),    # amplitude of the background texture, 0..255 units
    "object_scale": (0.07, 0.22),       # procedural objects: radius / shorter side
    "glyph_scale": (0.16, 0.45),        # Omniglot characters: longer glyph side / shorter side
    "rotation_deg": 40.0,               # +- degrees
    "stretch": (0.7, 1.4),
    "shear": (-0.2, 0.2),
    "brightness": (0.7, 1.3),           # object colour factor
    "colour_shift": 25.0,               # +- per channel, 0..255 units
    "shading": (0.0, 0.35),             # relative brightness change across an object
    "outline_probability": 0.35,
    "outline_width": (1.0, 2.5),        # pixels
    "stroke_width": (1.0, 4.5),         # Omniglot strokes, pixels
    "min_contrast": 70.0,               # Omniglot: |luma(stroke) - luma(background)| at least
    "present_categories": (1, 3),
    "instances": (1, 4),
    "distractors": (0, 8),
    "min_visible_fraction": 0.4,
    "min_visible_area": 30,             # pixels
    "tries": 15,
    "gamma": (0.7, 1.4),
    "noise_std": (0.0, 9.0),
    "blur_sigma": (0.0, 1.1),
    "jpeg_probability": 0.4,
    "jpeg_quality": (35, 92),
}

#: Nominal stroke width of the Omniglot drawings, pixels at their 105 px resolution.
OMNIGLOT_NATIVE_STROKE = 2.0

_OMNIGLOT_MEMBER = re.compile(r"([^/]+)/([^/]+)/[^/]*?_(\d+)\.png$", re.IGNORECASE)


# ---------------------------------------------------------------------------
# Small geometric helpers
# ---------------------------------------------------------------------------

def _circle(cx, cy, radius, count=96):
    """Closed polygon ``[count, 2]`` (u, v) of a circle."""
    t = np.linspace(0.0, 2 * np.pi, count, endpoint=False)
    return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], axis=1)


def _capsule(p0, p1, radius, count=24):
    """Closed polygon of the points within ``radius`` of the segment ``p0``-``p1`` (u, v)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    direction = math.atan2(p1[1] - p0[1], p1[0] - p0[0])
    half = np.linspace(-np.pi / 2, np.pi / 2, count)
    end = [p1 + radius * np.array([math.cos(direction + a), math.sin(direction + a)]) for a in half]
    start = [p0 + radius * np.array([math.cos(direction + np.pi + a), math.sin(direction + np.pi + a)])
             for a in half]
    return np.array(end + start)


def _radial_outline(radius_fn, count=360):
    """Closed polygon of a star-shaped outline ``r(theta)`` around the origin."""
    theta = np.linspace(0.0, 2 * np.pi, count, endpoint=False)
    r = radius_fn(theta)
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)


def style_outline(style):
    """The shape of a procedural category as filled polygons in its unit frame.

    ``style`` needs ``family`` and ``shape`` (the parameters of the shape family). Returns
    ``[(points [N, 2] as (u, v), fill)]`` drawn in order, ``fill`` 1 adds and 0 cuts out
    (holes). Units: the shape fits the unit disc.

    Raises:
        ValueError: an unknown shape family (named).
    """
    family, p = style.family, style.shape
    if family == "polygon":
        return [(_regular_polygon(p["sides"], p["phase"]), 1)]
    if family == "star":
        sector = 2 * np.pi / p["points"]

        def star_radius(theta):
            t = np.mod(theta - p["phase"], sector) / sector
            return p["inner"] + (1.0 - p["inner"]) * np.abs(1.0 - 2.0 * t)
        return [(_radial_outline(star_radius, 64 * p["points"]), 1)]
    if family == "blob":
        lut = np.asarray(p["radius_lut"], dtype=np.float64)
        theta = (np.arange(lut.size) + 0.5) * (2 * np.pi / lut.size)
        return [(np.stack([lut * np.cos(theta), lut * np.sin(theta)], axis=1), 1)]
    if family == "ring":
        outer = _circle(0, 0, 1.0) if p["sides"] == 0 else _regular_polygon(p["sides"], p["phase"])
        return [(outer, 1), (outer * p["hole"], 0)]
    if family == "cross":
        w, length = p["width"], p["length"]
        bar = np.array([[-length, -w], [length, -w], [length, w], [-length, w]])
        return [(bar, 1), (bar[:, ::-1], 1)]
    if family == "crescent":
        return [(_circle(0, 0, 1.0), 1), (_circle(p["offset"], 0, p["bite"]), 0)]
    if family == "glyph":
        # segments are ((y0, x0), (y1, x1)) in the unit frame
        return [(_capsule((x0, y0), (x1, y1), p["width"]), 1) for (y0, x0), (y1, x1) in p["segments"]]
    raise ValueError(f"unknown shape family {family!r} of category {getattr(style, 'name', style)}")


def _regular_polygon(sides, phase):
    """Vertices of a regular polygon with circumradius 1, a vertex at angle ``phase``."""
    angles = phase + 2 * np.pi * np.arange(int(sides)) / int(sides)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def style_pattern(style, u, v):
    """Bool array: True where the category's primary colour shows at unit-frame ``(u, v)``.

    ``style`` needs ``pattern`` and ``pattern_params``. Raises ``ValueError`` for an
    unknown pattern (named).
    """
    name, p = style.pattern, style.pattern_params

    def first_half(x):
        return np.mod(x, 1.0) < 0.5

    if name == "solid":
        return np.ones(np.broadcast(u, v).shape, dtype=bool)
    if name == "stripes":
        return first_half(p["freq"] * (u * math.cos(p["angle"]) + v * math.sin(p["angle"])))
    if name == "checker":
        return first_half(p["freq"] * u) != first_half(p["freq"] * v)
    if name == "dots":
        period = 1.0 / p["freq"]
        du = np.mod(u + period / 2, period) - period / 2
        dv = np.mod(v + period / 2, period) - period / 2
        return np.hypot(du, dv) > p["radius"]
    if name == "rings":
        phase = np.mod(p["freq"] * np.hypot(u, v), 1.0)
        return (phase < 0.25) | (phase >= 0.75)
    if name == "halves":
        return u * math.cos(p["angle"]) + v * math.sin(p["angle"]) >= 0
    raise ValueError(f"unknown pattern {name!r} of category {getattr(style, 'name', style)}")


def _affine(rng, ranges, scale):
    """A random 2x2 matrix mapping the object frame to pixels: rotation, stretch, shear."""
    angle = math.radians(rng.uniform(-ranges["rotation_deg"], ranges["rotation_deg"]))
    stretch = rng.uniform(*ranges["stretch"])
    shear = rng.uniform(*ranges["shear"])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    shape = np.array([[scale * math.sqrt(stretch), scale * shear], [0.0, scale / math.sqrt(stretch)]])
    return rotation @ shape


def _window(matrix, extent_uv):
    """Half size (pixels, x and y) of the box holding the frame's square ``+-extent_uv``."""
    corners = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=float) * extent_uv
    mapped = corners @ matrix.T
    return np.abs(mapped).max(axis=0)


def _block_mean(array, factor):
    """Mean over ``factor`` x ``factor`` blocks of the first two axes."""
    h, w = array.shape[0] // factor, array.shape[1] // factor
    shaped = array[:h * factor, :w * factor].reshape((h, factor, w, factor) + array.shape[2:])
    return shaped.mean(axis=(1, 3))


def _luma(rgb):
    rgb = np.asarray(rgb, dtype=np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def _hsv(h, s, v):
    return np.asarray(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))) * 255.0


# ---------------------------------------------------------------------------
# Object sources
# ---------------------------------------------------------------------------

class ProceduralShapes:
    """The procedural categories, drawn from their appearance descriptions.

    ``styles``: one object per category, in class-id order (class id ``k + 1`` for
    ``styles[k]``), with ``name``, ``family``, ``shape``, ``primary`` and ``secondary``
    (RGB 0..255), ``pattern`` and ``pattern_params`` (e.g.
    ``SyntheticOneShotDataset.styles``).

    Raises:
        ValueError: ``styles`` is empty.
    """

    kind = "procedural"

    def __init__(self, styles):
        self.styles = list(styles)
        if not self.styles:
            raise ValueError("ProceduralShapes needs at least one category style")
        self.class_names = [str(getattr(s, "name", f"category {k + 1}")) for k, s in enumerate(self.styles)]

    def patch(self, class_id, rng, short_side, ranges, background_mean):
        """One object of ``class_id``: ``(alpha [h, w] in 0..1, premultiplied colour [h, w, 3],
        extras)``, pixels of the scene."""
        from PIL import Image, ImageDraw
        from scipy import ndimage

        style = self.styles[int(class_id) - 1]
        radius = rng.uniform(*ranges["object_scale"]) * short_side
        matrix = _affine(rng, ranges, radius)
        half = _window(matrix, 1.0) + 1.5
        h, w = int(math.ceil(2 * half[1])), int(math.ceil(2 * half[0]))
        centre = np.array([w / 2.0, h / 2.0])
        s = SUPERSAMPLE
        canvas = Image.new("L", (w * s, h * s), 0)
        draw = ImageDraw.Draw(canvas)
        for points, fill in style_outline(style):
            xy = (points @ matrix.T + centre) * s
            draw.polygon([tuple(p) for p in xy], fill=255 if fill else 0)
        inside = np.asarray(canvas) > 127
        outline = None
        if rng.uniform() < ranges["outline_probability"]:
            width = int(round(rng.uniform(*ranges["outline_width"]) * s))
            eroded = ndimage.minimum_filter(inside, size=2 * width + 1, mode="constant", cval=False)
            outline = inside & ~eroded
        # unit-frame coordinates of every sub-pixel centre
        px = ((np.arange(w * s, dtype=np.float32) + 0.5) / s - centre[0])[None, :]
        py = ((np.arange(h * s, dtype=np.float32) + 0.5) / s - centre[1])[:, None]
        inverse = np.linalg.inv(matrix).astype(np.float32)
        u = inverse[0, 0] * px + inverse[0, 1] * py
        v = inverse[1, 0] * px + inverse[1, 1] * py
        factor = rng.uniform(*ranges["brightness"])
        shift = rng.uniform(-ranges["colour_shift"], ranges["colour_shift"], size=3)
        primary = np.clip(np.asarray(style.primary, float) * factor + shift, 0, 255)
        secondary = np.clip(np.asarray(style.secondary, float) * factor + shift, 0, 255)
        colour = np.where(style_pattern(style, u, v)[:, :, None], primary, secondary)
        slope, direction = rng.uniform(*ranges["shading"]), rng.uniform(0, 2 * np.pi)
        colour = colour * (1.0 + slope * 0.5 * (u * math.cos(direction) + v * math.sin(direction)))[:, :, None]
        if outline is not None:
            edge = np.full(3, 20.0) if _luma(primary) > 110 else np.full(3, 235.0)
            colour[outline] = edge
        colour = np.clip(colour, 0, 255) * inside[:, :, None]
        return (_block_mean(inside.astype(np.float32), s), _block_mean(colour.astype(np.float32), s),
                {"outline": outline is not None})


class OmniglotGlyphs:
    """Omniglot characters read straight from the official zip archives.

    ``data_dir``: folder with the ``*.zip`` archives. ``categories``: the
    ``(alphabet, character)`` pairs in class-id order (default: every character of the
    archives, sorted). Member names look like ``<root>/<Alphabet>/<character>/<id>_<drawer>.png``;
    a drawing found in two archives is read from the first (sorted by file name).

    Raises:
        FileNotFoundError: ``data_dir`` is missing or has no zip archive (named).
        ValueError: an archive is not a zip file, or a requested category is not in the
            archives (named).
    """

    kind = "omniglot"

    def __init__(self, data_dir, categories=None):
        self.data_dir = pathlib.Path(data_dir)
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"Omniglot folder not found: {self.data_dir}")
        archives = sorted(p for p in self.data_dir.glob("*.zip") if p.is_file())
        if not archives:
            raise FileNotFoundError(f"no Omniglot zip archive in {self.data_dir}")
        self._members = {}
        for path in archives:
            try:
                with zipfile.ZipFile(path) as archive:
                    names = archive.namelist()
            except zipfile.BadZipFile as err:
                raise ValueError(f"{path} is not a valid zip archive: {err}") from None
            for name in names:
                match = _OMNIGLOT_MEMBER.search(name)
                if match:
                    key = (match.group(1), match.group(2))
                    self._members.setdefault(key, {}).setdefault(int(match.group(3)), (path, name))
        if categories is None:
            categories = sorted(self._members)
        self.categories = [tuple(c) for c in categories]
        missing = [c for c in self.categories if c not in self._members]
        if missing:
            raise ValueError(f"characters not in the archives of {self.data_dir}: "
                             f"{', '.join('/'.join(c) for c in missing[:5])}")
        self.class_names = [f"{a}/{c}" for a, c in self.categories]
        self._cache = {}
        self._open = {}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_open"] = {}
        return state

    def drawing(self, class_id, drawer):
        """Stroke coverage of one drawing, float32 [h, w] in 0..1, cropped to the strokes.

        Raises:
            ValueError: the drawing's PNG in the archive cannot be decoded (names the archive
                and the member).
        """
        from PIL import Image

        key = (int(class_id), int(drawer))
        if key not in self._cache:
            path, name = self._members[self.categories[key[0] - 1]][key[1]]
            archive = self._open.get(path)
            if archive is None:
                archive = self._open[path] = zipfile.ZipFile(path)
            try:
                gray = np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("L"), dtype=np.float32)
            except OSError as err:
                raise ValueError(f"cannot decode {path}:{name}: {err}") from None
            strokes = gray < 128  # black strokes on white paper
            if not strokes.any():
                raise ValueError(f"{path}:{name} holds no stroke")
            rows, cols = np.nonzero(strokes.any(axis=1))[0], np.nonzero(strokes.any(axis=0))[0]
            self._cache[key] = strokes[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        return self._cache[key]

    def patch(self, class_id, rng, short_side, ranges, background_mean):
        """One drawing of ``class_id`` by a random drawer: ``(alpha [h, w], premultiplied
        colour [h, w, 3], {"drawer": d})``, pixels of the scene."""
        from PIL import Image, ImageFilter

        drawers = sorted(self._members[self.categories[int(class_id) - 1]])
        drawer = int(drawers[int(rng.integers(len(drawers)))])
        strokes = self.drawing(class_id, drawer)
        size = rng.uniform(*ranges["glyph_scale"]) * short_side
        scale = size / max(strokes.shape)
        width = rng.uniform(*ranges["stroke_width"])
        grow = int(math.ceil(max(0.0, width / scale - OMNIGLOT_NATIVE_STROKE) / 2))
        padded = np.pad(strokes, grow + 2).astype(np.uint8) * 255
        image = Image.fromarray(padded)
        if grow:
            image = image.filter(ImageFilter.MaxFilter(2 * grow + 1))
        source = np.asarray(image, dtype=np.float32) / 255.0
        matrix = _affine(rng, ranges, scale)
        src_half = np.array([source.shape[1] / 2.0, source.shape[0] / 2.0])
        half = _window(matrix, 1.0) * src_half.max() + 1.5
        h, w = int(math.ceil(2 * half[1])), int(math.ceil(2 * half[0]))
        s = SUPERSAMPLE
        ys, xs = np.mgrid[0:h * s, 0:w * s].astype(np.float64)
        px = (xs + 0.5) / s - w / 2.0
        py = (ys + 0.5) / s - h / 2.0
        inverse = np.linalg.inv(matrix)
        sx = inverse[0, 0] * px + inverse[0, 1] * py + src_half[0] - 0.5
        sy = inverse[1, 0] * px + inverse[1, 1] * py + src_half[1] - 0.5
        coverage = _bilinear(source, sy, sx)
        alpha = _block_mean(coverage.astype(np.float32), s)
        colour = self._stroke_colour(rng, background_mean, ranges["min_contrast"])
        gradient = rng.uniform(*ranges["shading"])
        ramp = 1.0 + gradient * ((np.arange(w) / max(w - 1, 1)) - 0.5)
        premultiplied = alpha[:, :, None] * np.clip(colour[None, None, :] * ramp[None, :, None], 0, 255)
        return alpha, premultiplied.astype(np.float32), {"drawer": drawer}

    @staticmethod
    def _stroke_colour(rng, background_mean, min_contrast):
        """Any hue and value, pushed to the other side of the background's brightness when
        the luma difference is below ``min_contrast``."""
        background = _luma(background_mean)
        colour = _hsv(rng.uniform(), rng.uniform(0, 1), rng.uniform(0, 1))
        if abs(_luma(colour) - background) < min_contrast:
            value = rng.uniform(0.0, 0.25) if background > 127 else rng.uniform(0.85, 1.0)
            colour = _hsv(rng.uniform(), rng.uniform(0, 0.8), value)
        return colour


def _bilinear(image, y, x):
    """Bilinear samples of a 2-D ``image`` at float pixel coordinates (0 outside)."""
    height, width = image.shape
    y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    fy, fx = y - y0, x - x0
    out = np.zeros(y.shape, dtype=np.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            valid = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
            values = np.zeros(y.shape, dtype=np.float64)
            values[valid] = image[yy[valid], xx[valid]]
            out += wy * wx * values
    return out


# ---------------------------------------------------------------------------
# Backgrounds and finishing
# ---------------------------------------------------------------------------

BACKGROUND_KINDS = ("flat", "gradient", "noise", "stripes", "checker", "grain")


def _smooth_noise(rng, height, width, cells):
    """Value noise in -1..1: a ``cells`` grid upsampled bicubically to [height, width]."""
    from PIL import Image

    grid = rng.uniform(-1, 1, size=(max(2, cells), max(2, cells))).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((width, height), Image.BICUBIC))


def compose_background(rng, height, width, ranges):
    """A background, float32 [height, width, 3] in 0..255, and its kind (a name of
    :data:`BACKGROUND_KINDS`)."""
    kind = BACKGROUND_KINDS[int(rng.integers(len(BACKGROUND_KINDS)))]
    value = rng.uniform(*ranges["background_value"]) / 255.0
    saturation = rng.uniform(*ranges["background_saturation"])
    hue = rng.uniform()
    base = _hsv(hue, saturation, value).astype(np.float32)
    contrast = rng.uniform(*ranges["texture_contrast"])
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    if kind == "flat":
        texture = np.zeros((height, width), np.float32)
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (math.cos(angle) * xs + math.sin(angle) * ys)
        texture = (ramp - ramp.mean()) / max(float(np.ptp(ramp)), 1.0) * 2.0
    elif kind == "noise":
        texture = sum(_smooth_noise(rng, height, width, cells) / (k + 1)
                      for k, cells in enumerate((3, 7, 17, 41)))
        texture = texture / max(float(np.abs(texture).max()), 1e-6)
    elif kind == "stripes":
        period, angle = rng.uniform(4, 30), rng.uniform(0, np.pi)
        texture = np.sign(np.sin(2 * np.pi * (math.cos(angle) * xs + math.sin(angle) * ys) / period))
    elif kind == "checker":
        cell = rng.uniform(5, 28)
        texture = ((np.floor(xs / cell) + np.floor(ys / cell)) % 2) * 2.0 - 1.0
    else:  # grain
        texture = rng.uniform(-1, 1, size=(height, width)).astype(np.float32)
    texture = np.broadcast_to(texture, (height, width)).astype(np.float32)
    tint = _hsv(hue + rng.uniform(-0.3, 0.3), saturation, 1.0) / 255.0
    image = base[None, None, :] + contrast * texture[:, :, None] * tint[None, None, :].astype(np.float32)
    return np.clip(image, 0, 255).astype(np.float32), kind


def finish(image, rng, ranges):
    """Gamma, noise, blur and JPEG on a float image in 0..255; returns uint8 [H, W, 3] and
    the effects applied."""
    from PIL import Image, ImageFilter

    gamma = rng.uniform(*ranges["gamma"])
    noise = rng.uniform(*ranges["noise_std"])
    sigma = rng.uniform(*ranges["blur_sigma"])
    jpeg = rng.uniform() < ranges["jpeg_probability"]
    quality = int(rng.integers(ranges["jpeg_quality"][0], ranges["jpeg_quality"][1] + 1))
    out = 255.0 * np.power(np.clip(image, 0, 255) / 255.0, gamma)
    out = out + rng.standard_normal(out.shape) * noise
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    picture = Image.fromarray(out)
    if sigma >= 0.3:
        picture = picture.filter(ImageFilter.GaussianBlur(sigma))
    if jpeg:
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=quality)
        picture = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    effects = {"gamma": gamma, "noise_std": noise, "blur_sigma": sigma if sigma >= 0.3 else 0.0,
               "jpeg_quality": quality if jpeg else None}
    return np.array(picture, dtype=np.uint8), effects


# ---------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------

def compose_scene(source, rng, present_pool, all_class_ids, ranges, anchor=None, skip_instance=None):
    """Compose one scene from ``source`` (:class:`ProceduralShapes` or :class:`OmniglotGlyphs`).

    ``present_pool``: class ids that may be "present" (``instances`` instances each), the
    class id ``anchor`` (if given) always among them; distractors come from
    ``all_class_ids``. Objects are laid out first (each tried at
    ``tries`` positions; a position is refused when it would leave an earlier instance with
    fewer than ``min_visible_area`` pixels or ``min_visible_fraction`` of its mask), then
    painted in order. ``skip_instance`` leaves that annotated instance unpainted (everything
    else, the random draws included, is unchanged): the pixels it changes are then visible.

    Returns ``(image uint8 [H, W, 3], labels int16 [H, W] (0 background, k + 1 instance k),
    class_ids int32 [N], info dict)``.
    """
    short = int(rng.integers(ranges["short_side"][0], ranges["short_side"][1] + 1))
    long_side = int(round(short * rng.uniform(*ranges["aspect"])))
    height, width = (short, long_side) if rng.uniform() < 0.5 else (long_side, short)
    background, kind = compose_background(rng, height, width, ranges)
    mean = background.reshape(-1, 3).mean(axis=0)
    pool = np.asarray(sorted(set(present_pool) - {anchor}), dtype=np.int64)
    n_present = int(rng.integers(ranges["present_categories"][0], ranges["present_categories"][1] + 1))
    n_present = min(n_present - (anchor is not None), pool.size)
    present = ([] if anchor is None else [int(anchor)]) + [
        int(c) for c in rng.choice(pool, size=max(n_present, 0), replace=False)]
    plan = [c for c in present
            for _ in range(int(rng.integers(ranges["instances"][0], ranges["instances"][1] + 1)))]
    others = np.setdiff1d(np.asarray(all_class_ids), present)
    n_other = min(int(rng.integers(ranges["distractors"][0], ranges["distractors"][1] + 1)), others.size)
    plan += [int(c) for c in rng.choice(others, size=n_other, replace=False)]
    plan = [plan[int(k)] for k in rng.permutation(len(plan))]

    labels = np.zeros((height, width), dtype=np.int16)
    layers, areas, full, class_ids, extras = [], [], [], [], []
    for class_id in plan:
        alpha, colour, extra = source.patch(class_id, rng, short, ranges, mean)
        mask = alpha >= 0.5
        area = int(mask.sum())
        h, w = mask.shape
        if h > height or w > width or area < ranges["min_visible_area"]:
            continue
        for _ in range(int(ranges["tries"])):
            y0 = int(rng.integers(0, height - h + 1))
            x0 = int(rng.integers(0, width - w + 1))
            window = labels[y0:y0 + h, x0:x0 + w]
            covered = np.bincount(window[mask], minlength=len(areas) + 1)[1:]
            left = np.asarray(areas, dtype=np.int64) - covered
            need = np.maximum(ranges["min_visible_area"],
                              ranges["min_visible_fraction"] * np.asarray(full, dtype=np.float64))
            if left.size and np.any(left < need):
                continue
            window[mask] = len(areas) + 1
            areas[:] = list(left) + [area]
            full.append(area)
            layers.append((y0, x0, alpha, colour))
            class_ids.append(class_id)
            extras.append(extra)
            break
    canvas = background
    for k, (y0, x0, alpha, colour) in enumerate(layers):
        if k == skip_instance:
            continue
        h, w = alpha.shape
        window = canvas[y0:y0 + h, x0:x0 + w]
        window *= (1.0 - alpha)[:, :, None]
        window += colour
    image, effects = finish(canvas, rng, ranges)
    info = {"background": kind, "effects": effects, "instances": extras}
    return image, labels, np.asarray(class_ids, dtype=np.int32), info


class TransferSceneDataset(OneShotDataset):
    """One-shot scenes of an independent composer, for evaluation only (module docstring).

    Args:
        source: a :class:`ProceduralShapes` or :class:`OmniglotGlyphs` (class ids
            ``1..len(source.class_names)``, names ``source.class_names``).
        num_images: number of scenes (image ids ``0..num_images-1``); all are composed on
            construction and kept (about ``4 × H × W`` bytes each).
        seed: scene ``i`` comes from ``numpy.random.default_rng([seed, i])`` and its
            :meth:`anchor` category (shared with its neighbour scene).
        oneshot_class_ids: the held-out categories (default: every category); the others
            are background categories.
        present_class_ids: categories that may be "present" (several instances) in a scene:
            ``"oneshot"`` (default: only the evaluated ones), ``"all"`` or a list of ids.
            Distractors come from every category.
        ranges: overrides of :data:`DEFAULT_RANGES` (e.g. ``{"jpeg_probability": 0}``).

    The dataset is prepared and split on construction; ``scene_info[i]`` holds scene
    ``i``'s background kind, image effects and per-instance extras (e.g. Omniglot drawers).

    Raises:
        ValueError: ``num_images < 0``, an unknown range key (named), class ids out of
            range or an empty present pool.
    """

    def __init__(self, source, num_images=150, seed=0, oneshot_class_ids=None,
                 present_class_ids="oneshot", ranges=None):
        super().__init__()
        unknown = sorted(set(ranges or {}) - set(DEFAULT_RANGES))
        if unknown:
            raise ValueError(f"unknown composer range(s) {unknown}; known: {sorted(DEFAULT_RANGES)}")
        if int(num_images) < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        self.source = source
        self.seed = int(seed)
        self.ranges = {**DEFAULT_RANGES, **(ranges or {})}
        count = len(source.class_names)
        all_ids = list(range(1, count + 1))
        oneshot = all_ids if oneshot_class_ids is None else sorted(int(c) for c in oneshot_class_ids)
        if present_class_ids == "oneshot":
            present = oneshot
        elif present_class_ids == "all":
            present = all_ids
        elif isinstance(present_class_ids, str):
            raise ValueError(f"present_class_ids must be 'oneshot', 'all' or a list of class ids, "
                             f"got {present_class_ids!r}")
        else:
            present = sorted(int(c) for c in present_class_ids)
        bad = [c for c in set(oneshot) | set(present) if not 0 < c <= count]
        if bad or not present:
            raise ValueError(f"class ids must be in 1..{count} and the present pool non-empty; "
                             f"got one-shot {oneshot}, present {present}")
        self.present_class_ids = present
        for class_id, name in enumerate(source.class_names, start=1):
            self.add_class(SOURCE, class_id, name)
        self._scenes, self._annotations, self.scene_info = [], [], []
        for image_id in range(int(num_images)):
            image, labels, class_ids, info = self.compose(image_id)
            self._scenes.append((image, labels.astype(np.uint8) if len(class_ids) < 256 else labels,
                                 class_ids))
            self._annotations.append(_annotations(labels, class_ids))
            self.scene_info.append(info)
            self.add_image(SOURCE, image_id, None, height=image.shape[0], width=image.shape[1])
        self.prepare()
        self.set_class_split([c for c in all_ids if c not in set(oneshot)], oneshot)

    def anchor(self, image_id):
        """The category always present in scene ``image_id``: scenes ``2j`` and ``2j + 1``
        share one (``j``-th of a seeded permutation of the present pool, cycling), so every
        evaluated scene has a reference in another scene however few scenes there are."""
        order = np.random.default_rng([self.seed, 2 ** 31 - 1]).permutation(self.present_class_ids)
        return int(order[(int(image_id) // 2) % order.size])

    def compose(self, image_id, skip_instance=None):
        """Compose scene ``image_id`` afresh (see :func:`compose_scene`); a pure function
        of ``(seed, image_id)`` and the settings."""
        rng = np.random.default_rng([self.seed, int(image_id)])
        return compose_scene(self.source, rng, self.present_class_ids,
                             list(range(1, len(self.source.class_names) + 1)), self.ranges,
                             anchor=self.anchor(image_id), skip_instance=skip_instance)

    def _check(self, image_id):
        image_id = int(image_id)
        if not 0 <= image_id < len(self._scenes):
            raise IndexError(f"image id {image_id} out of range: {len(self._scenes)} transfer scenes")
        return image_id

    def load_image(self, image_id):
        """The scene's RGB image, uint8 [H, W, 3] (a copy)."""
        return self._scenes[self._check(image_id)][0].copy()

    def load_mask(self, image_id):
        """Visible-pixel instance masks bool [H, W, N] and class ids int32 [N]."""
        _, labels, class_ids = self._scenes[self._check(image_id)]
        masks = labels[:, :, None] == np.arange(1, len(class_ids) + 1, dtype=labels.dtype)
        return masks, class_ids.copy()

    def instance_annotations(self, image_id):
        """Per-instance ``class_id``, ``bbox`` (y1, x1, y2, x2 exclusive, pixels), ``iscrowd``
        (always False) and ``area`` (pixels), in mask order."""
        return self._annotations[self._check(image_id)]

    def image_reference(self, image_id):
        """A description of the scene: seed, id, background and categories."""
        _, _, class_ids = self._scenes[self._check(image_id)]
        names = ", ".join(self.class_names[c] for c in class_ids)
        return (f"transfer scene {int(image_id)} (seed {self.seed}, "
                f"{self.scene_info[int(image_id)]['background']} background): {names}")


def _annotations(labels, class_ids):
    """Instance annotations from a label map (see ``instance_annotations``)."""
    out = []
    for k, class_id in enumerate(class_ids):
        ys, xs = np.nonzero(labels == k + 1)
        out.append({"class_id": int(class_id), "iscrowd": False, "area": int(ys.size),
                    "bbox": (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)})
    return out


def transfer_dataset_like(dataset, num_images=150, seed=0, ranges=None):
    """A :class:`TransferSceneDataset` with the categories and split of an in-distribution
    dataset: its ``styles`` (procedural data) or its Omniglot ``data_dir`` and
    ``categories``; one-shot categories = ``dataset.oneshot_class_ids``.

    Raises:
        ValueError: ``dataset`` has neither ``styles`` nor ``data_dir`` and ``categories``.
    """
    if getattr(dataset, "styles", None) is not None:
        source = ProceduralShapes(dataset.styles)
    elif getattr(dataset, "categories", None) is not None and getattr(dataset, "data_dir", None):
        source = OmniglotGlyphs(dataset.data_dir, categories=dataset.categories)
    else:
        raise ValueError(f"cannot compose transfer scenes like a {type(dataset).__name__}: it has "
                         f"neither category styles nor Omniglot archives")
    return TransferSceneDataset(source, num_images=num_images, seed=seed,
                                oneshot_class_ids=dataset.oneshot_class_ids, ranges=ranges)
