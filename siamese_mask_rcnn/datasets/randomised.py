"""Randomised rendering for the training renderers (domain randomisation, beyond the paper).

A model trained on scenes of one fixed look (mid-grey smooth backgrounds, objects of one
size band, light clutter, clean pixels) learns that look: on scenes composed differently
(dark or busy backgrounds, small or large objects, heavy clutter, blur and compression) its
one-shot score collapses (README, "Transfer"). Drawing every rendering choice of the
*training* scenes from wide ranges makes the look useless as a cue, so the model has to
match the object itself.

This module holds the look-independent pieces shared by the procedural renderer
(:mod:`.synthetic`) and the Omniglot scenes (:mod:`.omniglot`):

* :func:`random_background` — one of six background kinds (flat, smooth field, linear
  ramp, waves, tiles, speckle) at any brightness and saturation, texture of any contrast;
* :func:`random_finish` — gamma, pixel noise, optional blur and optional JPEG round trip,
  then uint8;
* :func:`outline` — the boundary ring of a mask (objects drawn with a contour);
* :func:`letterbox_shape` / :func:`letterbox` — content of another aspect, zero-padded;
* :data:`SCENE_OPTIONS` — the wider scene-layout ranges (object size, density, occlusion,
  rotation) that go with them.

Nothing here reads or imports the evaluation-only composer :mod:`.transfer` (a test checks
it): the two are written separately, so transfer scenes stay a test of what the training
never saw exactly (their rasteriser, background kinds, canvas shapes and reference crops).

Every function draws only from the ``numpy.random.Generator`` it is given. This module does
not import TensorFlow.
"""
import colorsys
import io

import numpy as np
from scipy import ndimage

from siamese_mask_rcnn.datasets.scenes import bilinear_upsample

#: Layout ranges of randomised procedural scenes (arguments of ``synthetic.generate_scene``):
#: object radius 6-20 % of the scene side (paper renderer: 8-16 %), rotation +-30 degrees, 2-6
#: distractors (paper: 2-5); 1-2 present categories with 1-3 instances and occlusion down to
#: 50 % visible as in the paper renderer. (Measured with ``run_demo(rendering="randomised")``
#: before letterboxing existed: heavier clutter — 1-3 present categories, 1-4 instances, 0-9
#: distractors, 35 % visible, radius 5-22 %, +-35 degrees — made the task too hard to learn
#: in the demo's 3,000 steps: one-shot detection mAP50 16.5 in distribution.)
SCENE_OPTIONS = {
    "radius_range": (0.06, 0.2),
    "present_range": (1, 2),
    "instances_range": (1, 3),
    "distractor_range": (2, 6),
    "min_visible_fraction": 0.5,
    "max_rotation_deg": 30.0,
}

#: Per-instance colour jitter of randomised objects: brightness factor and per-channel shift
#: (0..255 units); shading: the largest relative brightness change across an object.
COLOUR_JITTER = {"brightness": (0.65, 1.35), "shift": 30.0, "shading": (0.0, 0.4)}

#: Probability that a randomised procedural object is drawn with a contour, and its width.
OUTLINE = {"probability": 0.3, "width": (1, 2)}

#: Letterboxing: with this probability a randomised scene's content has another aspect
#: (longer / shorter side in ``aspect``) and is centred on the square canvas with zero padding,
#: as a non-square photo looks after the model's resize-and-pad (``IMAGE_RESIZE_MODE="square"``).
LETTERBOX = {"probability": 0.4, "aspect": (1.0, 1.7)}

BACKGROUND_KINDS = ("flat", "field", "ramp", "waves", "tiles", "speckle")


def applies(rng, randomise):
    """Whether one scene or reference is drawn randomised. ``randomise``: a bool, or a
    probability in [0, 1] drawn once per call from ``rng`` (no draw for 0, 1, True or False,
    so those keep the random stream of a fixed choice).

    Raises:
        ValueError: ``randomise`` is not a number in [0, 1].
    """
    try:
        probability = None if isinstance(randomise, (str, bytes)) else float(randomise)
    except (TypeError, ValueError):
        probability = None
    if probability is None or not 0.0 <= probability <= 1.0:
        raise ValueError(f"randomise must be a bool or a probability in [0, 1], got {randomise!r}")
    if probability in (0.0, 1.0):
        return probability == 1.0
    return bool(rng.uniform() < probability)


def random_colour(rng, value=None, saturation=None):
    """An RGB colour float32 [3] (0..255) of random hue; ``value`` and ``saturation`` in 0..1
    (random when None: value 0.03-0.97, saturation 0-0.6)."""
    value = rng.uniform(0.03, 0.97) if value is None else value
    saturation = rng.uniform(0.0, 0.6) if saturation is None else saturation
    rgb = colorsys.hsv_to_rgb(float(rng.uniform()), float(saturation), float(value))
    return np.asarray(rgb, dtype=np.float32) * 255.0


def random_background(rng, height, width, kind=None):
    """A background float32 [H, W, 3] (0..255) of a random ``kind`` (one of
    :data:`BACKGROUND_KINDS`): a base colour of any brightness and saturation, plus a
    pattern between it and a second colour whose contrast is random (0 to ~60 % of the
    range): a smooth field of 2-8 cells, a linear ramp, waves (sine or square, any
    direction, period 4-40 px), tiles (a random grid of cells) or speckle (pixel grain).

    Raises:
        ValueError: an unknown ``kind``.
    """
    kind = BACKGROUND_KINDS[int(rng.integers(len(BACKGROUND_KINDS)))] if kind is None else kind
    base = random_colour(rng)
    other = np.clip(base + rng.uniform(-150, 150) * rng.uniform(0.0, 0.6)
                    + rng.uniform(-25, 25, size=3), 0, 255).astype(np.float32)
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    if kind == "flat":
        weight = np.zeros((height, width), dtype=np.float32)
    elif kind == "field":
        grid = int(rng.integers(2, 9))
        coarse = rng.uniform(-1.0, 1.0, size=(grid, grid, 1)).astype(np.float32)
        weight = 0.5 + 0.5 * bilinear_upsample(coarse, height, width)[:, :, 0]
    elif kind == "ramp":
        angle = rng.uniform(0, 2 * np.pi)
        proj = np.cos(angle) * xs + np.sin(angle) * ys
        weight = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1.0)
    elif kind == "waves":
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(4.0, 40.0)
        phase = np.sin(2 * np.pi * (np.cos(angle) * xs + np.sin(angle) * ys) / period + rng.uniform(0, 6.3))
        weight = (phase > 0).astype(np.float32) if rng.uniform() < 0.5 else 0.5 + 0.5 * phase
    elif kind == "tiles":
        cell = int(rng.integers(6, 33))
        cells = rng.uniform(0.0, 1.0, size=(height // cell + 1, width // cell + 1)).astype(np.float32)
        weight = cells[(ys[:, 0] // cell).astype(int)][:, (xs[0] // cell).astype(int)]
    elif kind == "speckle":
        weight = rng.uniform(0.0, 1.0, size=(height, width)).astype(np.float32)
    else:
        raise ValueError(f"unknown background kind {kind!r}; known: {BACKGROUND_KINDS}")
    weight = np.broadcast_to(weight, (height, width))[:, :, None]
    return (base * (1 - weight) + other * weight).astype(np.float32)


def letterbox_shape(rng, height, width):
    """The content ``(h, w)`` of a randomised ``height`` x ``width`` scene: the whole canvas,
    or with :data:`LETTERBOX` probability a centred band of random aspect (one side shortened)."""
    if rng.uniform() >= LETTERBOX["probability"]:
        return height, width
    aspect = rng.uniform(*LETTERBOX["aspect"])
    if rng.uniform() < 0.5:
        return height, max(int(round(width / aspect)), 1)
    return max(int(round(height / aspect)), 1), width


def letterbox(image, labels, height, width):
    """``image`` [h, w, 3] and ``labels`` [h, w] centred on a ``height`` x ``width`` canvas with
    zero padding; returns ``(image, labels, top, left)``."""
    h, w = labels.shape
    top, left = (height - h) // 2, (width - w) // 2
    pad = ((top, height - h - top), (left, width - w - left))
    return (np.pad(image, pad + ((0, 0),)), np.pad(labels, pad), top, left)


def shade(colours, rng):
    """``colours`` float32 [h, w, 3] times a linear brightness ramp across the window of
    random direction and strength (:data:`COLOUR_JITTER` ``shading``)."""
    h, w = colours.shape[:2]
    if h == 0 or w == 0:
        return colours
    strength = rng.uniform(*COLOUR_JITTER["shading"])
    angle = rng.uniform(0, 2 * np.pi)
    ys = (np.arange(h, dtype=np.float32)[:, None] / max(h - 1, 1)) - 0.5
    xs = (np.arange(w, dtype=np.float32)[None, :] / max(w - 1, 1)) - 0.5
    ramp = 1.0 + strength * (np.cos(angle) * xs + np.sin(angle) * ys)
    return np.clip(colours * ramp[:, :, None], 0, 255).astype(np.float32)


def outline(mask, width=1):
    """The pixels of bool ``mask`` [h, w] within ``width`` pixels of its boundary (``width``
    4-connected erosions, scipy.ndimage; outside the image counts as background), bool [h, w]."""
    width = int(width)
    if width <= 0:  # scipy reads 0 iterations as "until nothing changes"
        return np.zeros_like(mask, dtype=bool)
    inner = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1),
                                   iterations=width, border_value=0)
    return mask & ~inner


def _blur(image, sigma):
    """Separable Gaussian blur of float32 [H, W, 3] (edge-replicated borders)."""
    radius = max(int(np.ceil(3 * sigma)), 1)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1, dtype=np.float32) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(image, ((radius, radius), (0, 0), (0, 0)), mode="edge")
    image = sum(t * padded[i:i + image.shape[0]] for i, t in enumerate(taps))
    padded = np.pad(image, ((0, 0), (radius, radius), (0, 0)), mode="edge")
    return sum(t * padded[:, i:i + image.shape[1]] for i, t in enumerate(taps)).astype(np.float32)


def random_finish(image, rng, blur_probability=0.35, jpeg_probability=0.35):
    """Finish a float image [H, W, 3] (0..255) as a camera or a compressor might: gamma
    0.6-1.6, Gaussian pixel noise of standard deviation 0-10, with ``blur_probability`` a
    Gaussian blur (sigma 0.3-1.3 px) and with ``jpeg_probability`` a JPEG round trip
    (quality 30-95, through Pillow). Returns uint8 [H, W, 3]; the geometry is unchanged, so
    instance masks stay valid."""
    from PIL import Image

    image = np.clip(np.asarray(image, dtype=np.float32), 0, 255)
    image = 255.0 * (image / 255.0) ** rng.uniform(0.6, 1.6)
    if rng.uniform() < blur_probability:
        image = _blur(image, rng.uniform(0.3, 1.3))
    image = image + rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(0.0, 10.0)
    out = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    if rng.uniform() < jpeg_probability:
        buffer = io.BytesIO()
        Image.fromarray(out).save(buffer, format="JPEG", quality=int(rng.integers(30, 96)))
        out = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), dtype=np.uint8)
    return out
