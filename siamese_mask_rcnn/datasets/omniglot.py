"""Omniglot characters as a one-shot instance-segmentation data source.

Omniglot (Lake et al.) has handwritten characters of many alphabets, each character
drawn once by each of 20 people ("drawers"), as 105x105 binary PNGs.  This module
reads the official zip archives (``images_background.zip``,
``images_evaluation.zip``, ``images_background_small1.zip``,
``images_background_small2.zip``, ...) straight from a directory with
:mod:`zipfile`, without extracting them.  Member paths look like
``<archive root>/<Alphabet>/<characterXX>/<image id>_<drawer>.png``; the same
``(alphabet, character, drawer)`` found in two archives (the two "small" archives
share Greek and Latin, byte for byte) is counted once.

* **Category** = one character of one alphabet, named ``"<Alphabet>/<characterXX>"``;
  internal class ids ``1..N`` in sorted (alphabet, character) order.
* **Split by alphabet**: the held-out (one-shot) categories are all characters of
  the held-out alphabets; by default every 4th alphabet in sorted order starting at
  the ``split``-th (25 %, the rule of the paper's COCO splits), or an explicit list
  ``oneshot_alphabets``.
* **Scenes** (generated from ``(seed, image_id)``, nothing written to disk): a light,
  slightly tinted and noisy background; 1-2 "present" characters with 1-3 instances
  each, each instance by a different drawer, and 2-4 distractor characters.  Every
  glyph is cropped to its strokes, rotated by up to +-15 degrees, scaled to 20-38 % of
  the scene side (strokes are thickened when shrunk a lot so they stay >= ~2 px) and
  drawn in a dark or a saturated colour.  Later glyphs occlude earlier ones; an
  instance mask is the visible stroke pixels of that instance (masks never
  overlap).  Placements hiding too much of an earlier glyph or overlapping its box by
  more than ``max_box_overlap`` are retried elsewhere.
* **References**: a fresh rendering of the character by a drawer who drew **none**
  of the query scene's instances of that character, dark strokes on a plain light
  background, cropped tight with a small margin (``info["drawer"]`` says who).

This module does not import TensorFlow.
"""
import colorsys
import io
import os
import pathlib
import re
import zipfile

import numpy as np
from scipy import ndimage

from siamese_mask_rcnn.datasets.scenes import (GeneratedSceneDataset, Scene, bilinear_upsample,
                                               finish_image, place_instances,
                                               resolve_present_class_ids, scene_plan)
from siamese_mask_rcnn.datasets import randomised
from siamese_mask_rcnn.datasets.splits import split_positions

SOURCE = "omniglot"
#: A member ``.../<Alphabet>/<characterXX>/<image id>_<drawer>.png`` of an Omniglot archive.
_MEMBER = re.compile(r"(?:^|/)([^/]+)/([^/]+)/(\d+)_(\d+)\.png$")
REFERENCE_BACKGROUND = (240, 240, 240)
REFERENCE_STROKE = (20, 20, 20)


def find_archives(data_dir):
    """Sorted paths of the ``*.zip`` archives in ``data_dir``.

    Raises ``FileNotFoundError`` naming the directory when it does not exist or holds
    no zip archive.
    """
    data_dir = pathlib.Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"Omniglot directory not found: {data_dir} (expected a folder "
                                f"with the official archives, e.g. images_background.zip)")
    archives = sorted(p for p in data_dir.iterdir() if p.suffix.lower() == ".zip" and p.is_file())
    if not archives:
        raise FileNotFoundError(f"no Omniglot zip archive (e.g. images_background.zip) in {data_dir}")
    return archives


def parse_member(name):
    """``(alphabet, character, drawer)`` of an archive member name, or None if it is not
    a character image."""
    match = _MEMBER.search(name)
    if match is None:
        return None
    return match.group(1), match.group(2), int(match.group(4))


def index_archives(archives):
    """Index the character images of Omniglot archives without extracting them.

    Returns ``(images, archive_alphabets)``: ``images`` maps ``(alphabet, character)``
    to ``{drawer: (archive path, member name)}`` (the first archive wins for a
    duplicated drawing); ``archive_alphabets`` maps every archive path to the sorted
    alphabets it contains.  Raises ``ValueError`` naming an archive that is not a
    valid zip file or holds no character image.
    """
    images, archive_alphabets = {}, {}
    for path in archives:
        path = pathlib.Path(path)
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile as error:
            raise ValueError(f"not a valid zip archive: {path} ({error})") from None
        alphabets = set()
        for name in names:
            parsed = parse_member(name)
            if parsed is None:
                continue
            alphabet, character, drawer = parsed
            alphabets.add(alphabet)
            images.setdefault((alphabet, character), {}).setdefault(drawer, (str(path), name))
        if not alphabets:
            raise ValueError(f"no Omniglot character image (<Alphabet>/<character>/<id>_<drawer>.png) "
                             f"in archive {path}")
        archive_alphabets[str(path)] = sorted(alphabets)
    return images, archive_alphabets


def decode_glyph(png_bytes, name="<bytes>"):
    """Stroke mask (True = ink), bool [h, w], of an Omniglot PNG (white background, black
    strokes). Raises ``ValueError`` naming ``name`` when the bytes are not a readable image."""
    from PIL import Image
    try:
        with Image.open(io.BytesIO(png_bytes)) as image:
            gray = np.asarray(image.convert("L"))
    except Exception as error:  # PIL raises several error types for corrupt data
        raise ValueError(f"cannot decode Omniglot image {name}: {error}") from None
    return gray < 128


def crop_to_strokes(strokes, pad=1):
    """Crop a bool stroke image to its strokes' bounding box plus ``pad`` pixels."""
    ys, xs = np.nonzero(strokes)
    if ys.size == 0:
        return strokes
    y0, x0 = max(ys.min() - pad, 0), max(xs.min() - pad, 0)
    return strokes[y0:ys.max() + 1 + pad, x0:xs.max() + 1 + pad]


def transform_glyph(strokes, size, angle_deg=0.0, threshold=0.3):
    """Rotate a bool glyph by ``angle_deg`` and scale its longer side to ``size`` pixels.

    Strokes are thickened (3x3 max filter) before a strong reduction so they stay
    about 2 px wide.  Returns a bool mask cropped to the strokes.
    """
    from PIL import Image, ImageFilter
    image = Image.fromarray(np.where(strokes, 255, 0).astype(np.uint8))
    scale = float(size) / max(strokes.shape)
    if scale < 0.5:
        image = image.filter(ImageFilter.MaxFilter(5 if scale < 0.3 else 3))
    if angle_deg:
        image = image.rotate(float(angle_deg), resample=Image.BILINEAR, expand=True)
    height, width = image.size[1], image.size[0]
    target = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    small = np.asarray(image.resize(target, resample=Image.BILINEAR if scale >= 1 else Image.BOX))
    mask = small >= threshold * 255
    if not mask.any():
        mask[small.argmax() // small.shape[1], small.argmax() % small.shape[1]] = True
    return crop_to_strokes(mask, pad=0)


def random_stroke_colour(rng, dark_fraction=0.5):
    """RGB float32 colour of one glyph: dark (value <= 0.3) or saturated (value 0.45-0.8)."""
    hue = rng.uniform()
    if rng.uniform() < dark_fraction:
        rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0, 0.6), rng.uniform(0.05, 0.3))
    else:
        rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.7, 1.0), rng.uniform(0.45, 0.8))
    return np.asarray(rgb, dtype=np.float32) * 255


def thicken(mask, pixels):
    """``mask`` grown by ``pixels`` pixels (``pixels`` 3x3 dilations, scipy.ndimage), padded so
    nothing is cut; bool [h + 2*pixels, w + 2*pixels]."""
    pixels = int(pixels)
    if pixels <= 0:
        return mask
    return ndimage.binary_dilation(np.pad(mask, pixels), structure=np.ones((3, 3), bool),
                                   iterations=pixels)


def contrasting_colour(rng, background_rgb, min_contrast=60.0):
    """A random stroke colour whose luma differs from ``background_rgb``'s by at least
    ``min_contrast`` (0..255 units): dark strokes on light backgrounds, light on dark,
    float32 [3]."""
    def luma(rgb):
        return float(np.dot(np.asarray(rgb, dtype=np.float32), (0.299, 0.587, 0.114)))

    back = luma(background_rgb)
    for _ in range(20):
        colour = randomised.random_colour(rng, saturation=rng.uniform(0.0, 1.0))
        if abs(luma(colour) - back) >= min_contrast:
            return colour
    return np.full(3, 10.0 if back > 127 else 245.0, dtype=np.float32)


def _stroke_range(value):
    """The scene option ``stroke_threshold`` as ``(low, high)`` floats; ``ValueError`` unless
    it is a pair of numbers with 0 < low <= high < 1 (checked once, when a dataset is made)."""
    numbers = (isinstance(value, (tuple, list)) and len(value) == 2
               and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                       for v in value))
    low, high = (float(value[0]), float(value[1])) if numbers else (-1.0, -1.0)
    if not 0.0 < low <= high < 1.0:
        raise ValueError(f"stroke_threshold must be a (low, high) pair of numbers with "
                         f"0 < low <= high < 1, got {value!r}")
    return low, high


def light_background(rng, height, width, grid=3):
    """A light, slightly tinted background, float32 [H, W, 3] (values ~195-250)."""
    base = rng.uniform(215, 240)
    coarse = base + rng.uniform(-12, 12, size=(grid, grid, 1)) + rng.uniform(-6, 6, size=(grid, grid, 3))
    return bilinear_upsample(coarse.astype(np.float32), height, width)


def boxes_overlap_fraction(box, boxes):
    """Intersection of ``box`` with each of ``boxes`` divided by the smaller box's area."""
    if not boxes:
        return np.zeros(0)
    b = np.asarray(boxes, dtype=np.float64)
    y1 = np.maximum(box[0], b[:, 0])
    x1 = np.maximum(box[1], b[:, 1])
    y2 = np.minimum(box[2], b[:, 2])
    x2 = np.minimum(box[3], b[:, 3])
    inter = np.clip(y2 - y1, 0, None) * np.clip(x2 - x1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(np.minimum(area, areas), 1)


#: Scene options of randomised Omniglot rendering (beyond the paper, :mod:`.randomised`): any
#: background, stroke colours of any hue with enough contrast, glyph size 15-42 % of the
#: scene side (paper look: 20-38 %), rotation +-25 degrees, 2-5 distractors, randomised finish
#: and letterboxing; the paper look's number of present characters, occlusion limits and
#: stroke width (``thickening`` 0). Measured with the demo's Omniglot mask loss weight 3
#: (docs/transfer.md): one-shot detection / segmentation 21.3 / 17.1 mAP50 in distribution;
#: with strokes grown by 0-1 px at random and 2-6 distractors 16.0 / 12.7, and no better on the
#: transfer scenes (11.6 against 12.4); with strokes of random width (``stroke_threshold``
#: (0.3, 0.85), 1-3 px) 18.5 / 11.1, and 11.4 on the transfer scenes (one run, AVX2).
RANDOMISED_SCENE_OPTIONS = {"randomise": True, "size_range": (0.15, 0.42), "distractor_range": (2, 5),
                            "max_rotation_deg": 25.0, "thickening": 0}


class OmniglotOneShotDataset(GeneratedSceneDataset):
    """Cluttered scenes of real Omniglot characters (see the module docstring).

    Args:
        data_dir: directory holding the official Omniglot ``*.zip`` archives.
        num_images: number of scenes (image ids ``0..num_images-1``).
        image_size: scene side in pixels (int) or ``(height, width)``.
        seed: scene ``i`` is generated from ``default_rng([seed, i])``.
        oneshot_alphabets: names of the held-out alphabets (default: every 4th
            alphabet in sorted order starting at the ``split``-th).
        split: 1..4, used when ``oneshot_alphabets`` is None.
        present_class_ids: None (all), "train", "oneshot" or a list of class ids
            that may be "present" (1-3 instances) in a scene.
        render_references: fresh renders by an unused drawer (True) or the base
            class's crops of instances in other scenes (False).
        scene_options: overrides of the scene parameters: ``present_range`` (1, 2),
            ``instances_range`` (1, 3), ``distractor_range`` (2, 4), ``size_range``
            (0.2, 0.38) of the scene side, ``max_rotation_deg`` 15,
            ``max_box_overlap`` 0.25, ``min_visible_area`` 20,
            ``min_visible_fraction`` 0.6, ``dark_fraction`` 0.5, ``noise_std`` 3,
            ``randomise`` False (True: randomised rendering, beyond the paper; see
            :data:`RANDOMISED_SCENE_OPTIONS`; a probability randomises that fraction of
            the scenes and references), ``thickening`` 0 (randomised glyphs: strokes grown
            by 0..thickening px at random, :func:`thicken`), ``stroke_threshold`` (0.3, 0.3)
            (randomised glyphs: the coverage threshold of :func:`transform_glyph` drawn from
            this range; higher gives thinner strokes, 0.85 about 1-2 px), ``blur_probability`` and
            ``jpeg_probability`` 0.35 (randomised finish, :func:`.randomised.random_finish`).
        cache_size, workers: as for the procedural dataset (None keeps every scene,
            rendered on construction in ``workers`` processes).

    Attributes: ``archives``, ``archive_alphabets``, ``alphabets`` (sorted distinct),
    ``categories`` (``(alphabet, character)`` per class id - 1), ``drawers``
    (class id → sorted drawer numbers), ``oneshot_alphabets``.

    Raises ``FileNotFoundError`` naming a missing directory or one without archives and
    ``ValueError`` naming a bad archive, an unknown scene option or alphabet, or an
    invalid ``present_class_ids``. The alphabet split follows the paper's rule for the
    COCO splits (Section 3).
    """

    DEFAULT_SCENE_OPTIONS = {
        "present_range": (1, 2), "instances_range": (1, 3), "distractor_range": (2, 4),
        "size_range": (0.2, 0.38), "max_rotation_deg": 15.0, "max_box_overlap": 0.25,
        "min_visible_area": 20, "min_visible_fraction": 0.6, "dark_fraction": 0.5,
        "noise_std": 3.0, "tries": 12, "randomise": False, "thickening": 0, "stroke_threshold": (0.3, 0.3),
        "blur_probability": 0.35, "jpeg_probability": 0.35,
    }

    def __init__(self, data_dir, num_images=1000, image_size=128, seed=0, oneshot_alphabets=None,
                 split=1, present_class_ids=None, render_references=True, scene_options=None,
                 cache_size=16, workers=1):
        super().__init__(render_references=render_references, cache_size=cache_size,
                         workers=workers)
        unknown = set(scene_options or {}) - set(self.DEFAULT_SCENE_OPTIONS)
        if unknown:
            raise ValueError(f"unknown scene option(s) {sorted(unknown)}; "
                             f"known: {sorted(self.DEFAULT_SCENE_OPTIONS)}")
        self.scene_options = {**self.DEFAULT_SCENE_OPTIONS, **(scene_options or {})}
        self._stroke_range = _stroke_range(self.scene_options["stroke_threshold"])
        self.data_dir = pathlib.Path(data_dir)
        self.image_size = ((int(image_size), int(image_size)) if np.isscalar(image_size)
                           else tuple(int(v) for v in image_size))
        self.seed = int(seed)
        self.archives = find_archives(self.data_dir)
        self._files, self.archive_alphabets = index_archives(self.archives)
        self.categories = sorted(self._files)
        self.alphabets = sorted({alphabet for alphabet, _ in self.categories})
        self.drawers = {k: sorted(self._files[cat]) for k, cat in enumerate(self.categories, start=1)}
        self._glyph_cache = {}
        self._open_archives = {}
        self._open_pid = None
        for class_id, (alphabet, character) in enumerate(self.categories, start=1):
            self.add_class(SOURCE, class_id, f"{alphabet}/{character}")
        height, width = self.image_size
        for image_id in range(int(num_images)):
            self.add_image(SOURCE, image_id, None, height=height, width=width)
        self.oneshot_alphabets = self._resolve_oneshot_alphabets(oneshot_alphabets, split)
        held_out = set(self.oneshot_alphabets)
        oneshot = [k for k, (a, _) in enumerate(self.categories, start=1) if a in held_out]
        train = [k for k, (a, _) in enumerate(self.categories, start=1) if a not in held_out]
        self.present_class_ids = resolve_present_class_ids(present_class_ids, train, oneshot,
                                                            len(self.categories))
        self.prepare()
        self.set_class_split(train, oneshot)

    # ------------------------------------------------------------------ setup
    def _resolve_oneshot_alphabets(self, oneshot_alphabets, split):
        """Held-out alphabet names, validated against the archives' alphabets."""
        if oneshot_alphabets is None:
            return [self.alphabets[p - 1] for p in split_positions(split, len(self.alphabets))]
        names = [oneshot_alphabets] if isinstance(oneshot_alphabets, str) else list(oneshot_alphabets)
        unknown = [a for a in names if a not in self.alphabets]
        if unknown:
            raise ValueError(f"unknown alphabet(s) {unknown} in oneshot_alphabets; the archives in "
                             f"{self.data_dir} hold: {', '.join(self.alphabets)}")
        if len(set(names)) == len(self.alphabets):
            raise ValueError("oneshot_alphabets holds every alphabet: no training categories left")
        return sorted(set(names))

    # ------------------------------------------------------------------ reading
    def __getstate__(self):
        state = super().__getstate__()
        state["_open_archives"] = {}
        state["_open_pid"] = None
        return state

    def _archive(self, path):
        """An open ``ZipFile`` for ``path``, reopened in a forked worker process."""
        if self._open_pid != os.getpid():
            self._open_archives = {}
            self._open_pid = os.getpid()
        archive = self._open_archives.get(path)
        if archive is None:
            archive = zipfile.ZipFile(path)
            self._open_archives[path] = archive
        return archive

    def glyph(self, class_id, drawer):
        """Stroke mask (bool [h, w]) of character ``class_id`` by ``drawer``, cropped to its
        strokes. Raises ``ValueError`` when that drawer did not draw the character."""
        key = (int(class_id), int(drawer))
        strokes = self._glyph_cache.get(key)
        if strokes is None:
            files = self._files[self.categories[key[0] - 1]]
            if key[1] not in files:
                raise ValueError(f"character {self.class_names[key[0]]} has no drawing by drawer "
                                 f"{key[1]} (drawers: {sorted(files)})")
            path, name = files[key[1]]
            strokes = crop_to_strokes(decode_glyph(self._archive(path).read(name), f"{path}:{name}"))
            self._glyph_cache[key] = strokes
        return strokes

    def _stroke_threshold(self, rng, randomise):
        """The glyph's coverage threshold: drawn from ``stroke_threshold`` for a randomised
        glyph when that range is not a single value (no draw otherwise, so the paper look
        and earlier randomised scenes stay as they were)."""
        low, high = self._stroke_range
        return rng.uniform(low, high) if randomise and high > low else low

    # ------------------------------------------------------------------ scenes
    def generate_scene(self, image_id):
        """Scene ``image_id`` from ``default_rng([seed, image_id])``; ``info["drawers"]``
        holds the drawer of every annotated instance."""
        opts = self.scene_options
        rng = np.random.default_rng([self.seed, int(image_id)])
        randomise = randomised.applies(rng, opts["randomise"])
        height, width = randomised.letterbox_shape(rng, *self.image_size) if randomise else self.image_size
        all_ids = list(range(1, len(self.categories) + 1))
        plan = scene_plan(rng, all_ids if self.present_class_ids is None else self.present_class_ids,
                          all_ids, opts["present_range"], opts["instances_range"],
                          opts["distractor_range"])
        drawer_plan = self._assign_drawers(plan, rng)
        canvas = (randomised.random_background(rng, height, width) if randomise
                  else light_background(rng, height, width))
        labels = np.zeros((height, width), dtype=np.int16)
        areas, full_areas, class_ids, drawers, boxes = [], [], [], [], []
        side = min(height, width)

        def accept(y0, x0, mask):
            box = (y0, x0, y0 + mask.shape[0], x0 + mask.shape[1])
            return not np.any(boxes_overlap_fraction(box, boxes) > opts["max_box_overlap"])

        for class_id, drawer in zip(plan, drawer_plan):
            strokes = self.glyph(class_id, drawer)
            colour = (contrasting_colour(rng, canvas.mean(axis=(0, 1))) if randomise
                      else random_stroke_colour(rng, opts["dark_fraction"]))

            def patch(r, strokes=strokes, colour=colour):
                size = r.uniform(*opts["size_range"]) * side
                angle = r.uniform(-opts["max_rotation_deg"], opts["max_rotation_deg"])
                mask = transform_glyph(strokes, size, angle, self._stroke_threshold(r, randomise))
                if randomise and opts["thickening"]:
                    mask = thicken(mask, int(r.integers(0, int(opts["thickening"]) + 1)))
                mask = mask[:height, :width]
                y0 = int(r.integers(0, height - mask.shape[0] + 1))
                x0 = int(r.integers(0, width - mask.shape[1] + 1))
                colours = np.broadcast_to(colour, mask.shape + (3,))
                return y0, x0, mask, colours

            if place_instances(canvas, labels, areas, full_areas, patch, rng, opts["tries"],
                               opts["min_visible_area"], opts["min_visible_fraction"], accept):
                ys, xs = np.nonzero(labels == len(areas))
                boxes.append((ys.min(), xs.min(), ys.max() + 1, xs.max() + 1))
                class_ids.append(class_id)
                drawers.append(drawer)
        image = (randomised.random_finish(canvas, rng, opts["blur_probability"], opts["jpeg_probability"])
                 if randomise else finish_image(canvas, rng, opts["noise_std"]))
        if (height, width) != tuple(self.image_size):
            image, labels, _, _ = randomised.letterbox(image, labels, *self.image_size)
        return Scene(image=image, labels=labels, class_ids=np.asarray(class_ids, dtype=np.int32),
                     info={"drawers": np.asarray(drawers, dtype=np.int32)})

    def _assign_drawers(self, plan, rng):
        """One drawer per planned instance; instances of one character get distinct drawers."""
        drawers, used = [], {}
        for class_id in plan:
            available = [d for d in self.drawers[class_id] if d not in used.get(class_id, set())]
            if not available:
                available = self.drawers[class_id]
            drawer = int(available[int(rng.integers(len(available)))])
            used.setdefault(class_id, set()).add(drawer)
            drawers.append(drawer)
        return drawers

    def scene_drawers(self, image_id, class_id=None):
        """Drawers of the annotated instances of ``image_id`` (of ``class_id`` only if given)."""
        scene = self.scene(image_id)
        drawers = scene.info["drawers"]
        if class_id is not None:
            drawers = drawers[scene.class_ids == int(class_id)]
        return [int(d) for d in drawers]

    # ------------------------------------------------------------------ references
    def render_reference_image(self, class_id, rng, exclude_image_id=None, margin=3):
        """The character by a drawer absent from query ``exclude_image_id``'s instances of
        it, dark strokes on a plain light background, cropped with ``margin`` px (randomised
        rendering: a random background, a contrasting stroke colour, a 2-9 px margin and a
        randomised finish).

        Returns ``(uint8 [h, w, 3], {"drawer": d})``. Raises ``ValueError`` when every
        drawer of the character appears in the query.
        """
        used = set() if exclude_image_id is None else set(self.scene_drawers(exclude_image_id, class_id))
        candidates = [d for d in self.drawers[int(class_id)] if d not in used]
        if not candidates:
            raise ValueError(f"every drawer of {self.class_names[int(class_id)]} appears in image "
                             f"{exclude_image_id}; no drawer left for a reference")
        drawer = int(candidates[int(rng.integers(len(candidates)))])
        opts = self.scene_options
        size = rng.uniform(*opts["size_range"]) * min(self.image_size)
        angle = rng.uniform(-opts["max_rotation_deg"], opts["max_rotation_deg"])
        randomise = randomised.applies(rng, opts["randomise"])
        mask = transform_glyph(self.glyph(class_id, drawer), size, angle, self._stroke_threshold(rng, randomise))
        if randomise:
            if opts["thickening"]:
                mask = thicken(mask, int(rng.integers(0, int(opts["thickening"]) + 1)))
            margin = int(rng.integers(2, 10))
        height, width = mask.shape[0] + 2 * margin, mask.shape[1] + 2 * margin
        if randomise:
            image = randomised.random_background(rng, height, width)
            stroke = contrasting_colour(rng, image.mean(axis=(0, 1)))
        else:
            image = np.empty((height, width, 3), dtype=np.float32)
            image[:] = np.asarray(REFERENCE_BACKGROUND, dtype=np.float32)
            stroke = REFERENCE_STROKE
        image[margin:margin + mask.shape[0], margin:margin + mask.shape[1]][mask] = stroke
        finished = (randomised.random_finish(image, rng, opts["blur_probability"], opts["jpeg_probability"])
                    if randomise else finish_image(image, rng, 2.0))
        return finished, {"drawer": drawer}

    def bank_entry_allowed(self, class_id, extras, exclude_image_id):
        """A bank reference may serve a query only if its drawer drew none of the query's
        instances of the character (as :meth:`render_reference_image` ensures)."""
        return extras.get("drawer") not in set(self.scene_drawers(exclude_image_id, class_id))

    def image_reference(self, image_id):
        """A description of the scene: its characters and their drawers."""
        scene = self.scene(image_id)
        parts = [f"{self.class_names[c]} (drawer {d})"
                 for c, d in zip(scene.class_ids, scene.info["drawers"])]
        return f"omniglot scene {int(image_id)} (seed {self.seed}): {', '.join(parts)}"
