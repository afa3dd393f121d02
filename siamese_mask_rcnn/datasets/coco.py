"""MS-COCO as a one-shot dataset, and the four one-shot class splits S1–S4.

Paper Section 3 and Table 3 of its appendix: the 80 COCO categories in COCO's order
(person is the 1st, toothbrush the 80th) are split four ways; split ``S_i`` holds out every
4th category starting at the ``i``-th (20 one-shot categories), the other 60 are the
background (training) categories. COCO's category ids are not 1..80, so categories are mapped by
their **position** in the annotation file's category list sorted by id (the split rule
itself lives in :mod:`siamese_mask_rcnn.datasets.splits`).

The split ``"all"`` holds out nothing: every category is a training category (the Siamese
row of the paper's Table 1, trained and evaluated on all 80 categories).

This module does not import TensorFlow.
"""
import collections
import json
import logging
import math
import numbers
import os
import pathlib
import warnings

import numpy as np

from siamese_mask_rcnn.cocoformat import coco_from_dict
from siamese_mask_rcnn.datasets.base import OneShotDataset
from siamese_mask_rcnn.datasets import splits as _splits
from siamese_mask_rcnn.datasets.splits import NUM_SPLITS  # noqa: F401

logger = logging.getLogger(__name__)

#: The 80 COCO category names in COCO's order (sorted by category id).
COCO_CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)

SOURCE = "coco"


#: The split without held-out categories (paper Table 1: all 80 categories are trained on).
SPLIT_ALL = "all"


def check_split(split):
    """Return ``split`` as an int in 1..4, or ``"all"``; raise ``ValueError`` naming the value."""
    if isinstance(split, str) and split.strip().lower() == SPLIT_ALL:
        return SPLIT_ALL
    try:
        return _splits.check_split(split)
    except ValueError:
        raise ValueError(f"unknown one-shot split {split!r}: expected 1, 2, 3 or 4 (S1..S4) "
                         f"or {SPLIT_ALL!r} (no held-out categories)") from None


def split_positions(split, num_categories=_splits.NUM_COCO_CATEGORIES):
    """1-based category positions held out by split ``S_split`` (see
    :func:`siamese_mask_rcnn.datasets.splits.split_positions`); ``"all"`` holds out nothing
    (an empty list). Raises ``ValueError`` for a split other than 1..4 or ``"all"``.
    """
    if check_split(split) == SPLIT_ALL:
        return []
    return _splits.split_positions(split, num_categories)


def parse_split(text):
    """``argparse`` type of a ``--split`` option: ``"1"``..``"4"`` → int, ``"all"`` → ``"all"``.

    Raises ``argparse.ArgumentTypeError`` (a clean usage error) for anything else.
    """
    import argparse
    value = str(text).strip()
    try:
        return check_split(int(value) if value.isdigit() else value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid split {text!r}: choose 1, 2, 3, 4 (one-shot splits S1..S4) or "
            f"{SPLIT_ALL!r} (all categories are training categories)") from None


def split_label(split):
    """Display name of a split: ``"S1"``..``"S4"`` or ``"all"``."""
    split = check_split(split)
    return SPLIT_ALL if split == SPLIT_ALL else f"S{split}"


def split_class_names(split):
    """``(oneshot_names, background_names)`` of COCO split ``S_split`` in COCO order."""
    held_out = set(split_positions(split))
    oneshot = [n for p, n in enumerate(COCO_CLASS_NAMES, start=1) if p in held_out]
    background = [n for p, n in enumerate(COCO_CLASS_NAMES, start=1) if p not in held_out]
    return oneshot, background


class AnnotationError(ValueError):
    """An annotation of a COCO file cannot be used; the message is
    ``<file>: annotation <id>: <what is wrong>``."""

    def __init__(self, file, annotation_id, problem):
        super().__init__(f"{file}: annotation {annotation_id}: {problem}")
        self.file, self.annotation_id, self.problem = file, annotation_id, problem


class ImageSizeError(ValueError):
    """An image file's size differs from the ``width``/``height`` its annotation file gives."""


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _numbers_problem(values, what):
    """Why ``values`` is not a list of finite numbers, or None."""
    if not isinstance(values, (list, tuple)):
        return f"{what} is {type(values).__name__}, not a list of numbers"
    if not all(_is_number(v) for v in values):
        return f"{what} holds a value that is not a number: {list(values)!r}"
    if not all(math.isfinite(v) for v in values):
        return f"{what} holds a non-finite number: {list(values)!r}"
    return None


def _polygon_area(coords):
    """Area (pixels²) of one polygon ``[x1, y1, x2, y2, ...]`` (shoelace formula)."""
    xs, ys = np.asarray(coords[0::2], float), np.asarray(coords[1::2], float)
    return 0.5 * abs(float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))))


def _segmentation_problem(seg, height, width):
    """``(problem, degenerate)`` of a COCO segmentation: ``problem`` is None when it is
    usable; ``degenerate`` is True when it is well-formed but covers no pixel."""
    if isinstance(seg, list):
        if not seg:
            return "empty segmentation (no polygon)", False
        area = 0.0
        for k, poly in enumerate(seg):
            problem = _numbers_problem(poly, f"polygon {k}")
            if problem:
                return problem, False
            if len(poly) % 2:
                return f"polygon {k} has an odd number of coordinates ({len(poly)})", False
            if len(poly) < 6:
                return (f"polygon {k} has {len(poly) // 2} point(s); a polygon needs at "
                        "least 3"), False
            area += _polygon_area(poly)
        if area <= 0:
            return "zero-area mask (its polygons enclose no area)", True
        return None, False
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if _numbers_problem(size, "RLE size") or len(size) != 2:
            return f"RLE size must be [height, width], got {size!r}", False
        if [int(v) for v in size] != [height, width]:
            return (f"RLE size {list(size)} differs from the image's [height, width] "
                    f"[{height}, {width}]"), False
        if isinstance(counts, list):
            problem = _numbers_problem(counts, "RLE counts")
            if problem:
                return problem, False
            if sum(counts) != height * width:
                return f"RLE counts cover {sum(counts)} pixels, the image has {height * width}", False
            if sum(counts[1::2]) == 0:
                return "zero-area mask (its RLE covers no pixel)", True
            return None, False
        if not isinstance(counts, (str, bytes)):
            return f"RLE counts must be a list or a string, got {type(counts).__name__}", False
        from pycocotools import mask as mask_utils
        try:
            rle = {"size": [height, width],
                   "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
            area = int(mask_utils.area(rle))
        except Exception as err:  # pycocotools raises several types on bad strings
            return f"unreadable compressed RLE ({type(err).__name__}: {err})", False
        if area == 0:
            return "zero-area mask (its RLE covers no pixel)", True
        return None, False
    return f"segmentation is {type(seg).__name__}, not polygons or RLE", False


def _known(value, ids):
    """``value in ids``, False for unhashable values (a list as an id)."""
    try:
        return value in ids
    except TypeError:
        return False


def check_annotation(ann, images, categories):
    """``(problem, degenerate)`` of one COCO annotation (see :func:`_segmentation_problem`).

    ``images``: image id → ``(height, width)`` of the file's ``images`` list;
    ``categories``: the known category ids. Checks the category and image ids, the bbox
    (4 finite numbers, width and height > 0: zero is *degenerate*, negative an error) and
    the segmentation (polygons of ≥ 3 points, RLE of the image's size, some area).
    """
    if not isinstance(ann, dict):
        return f"is {type(ann).__name__}, not an object", False
    if not _known(ann.get("category_id"), categories):
        return f"unknown category id {ann.get('category_id')!r} (not in the file's categories)", False
    if not _known(ann.get("image_id"), images):
        return f"unknown image id {ann.get('image_id')!r} (not in the file's images)", False
    bbox = ann.get("bbox")
    problem = _numbers_problem(bbox, "bbox")
    if problem:
        return problem, False
    if len(bbox) != 4:
        return f"bbox has {len(bbox)} numbers, expected 4 [x, y, width, height]: {list(bbox)!r}", False
    if bbox[2] < 0 or bbox[3] < 0:
        return f"bbox has a negative width or height: {list(bbox)!r}", False
    if bbox[2] == 0 or bbox[3] == 0:
        return f"zero-area bbox {list(bbox)!r}", True
    if "segmentation" not in ann:
        return "no segmentation", False
    height, width = images[ann["image_id"]]
    return _segmentation_problem(ann["segmentation"], height, width)


def ann_to_mask(segmentation, height, width):
    """Decode a COCO segmentation (polygons, uncompressed or compressed RLE) to a bool mask."""
    from pycocotools import mask as mask_utils
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    with warnings.catch_warnings():
        # pycocotools' decode triggers numpy 2's "__array__ copy keyword" deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def _read_coco_json(annotation_file):
    """Load and sanity-check a COCO instances JSON; errors name the file."""
    path = pathlib.Path(annotation_file)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    missing = [k for k in ("images", "annotations", "categories")
               if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValueError(f"{path} is not a COCO instances file: missing {missing}")
    return data


def _coco_bbox_to_yxyx(bbox):
    """COCO ``[x, y, w, h]`` (float) → ``(y1, x1, y2, x2)`` rounded ints, y2/x2 exclusive."""
    x, y, w, h = (float(v) for v in bbox)
    return (int(round(y)), int(round(x)), int(round(y + h)), int(round(x + w)))


def _orientation_note(path):
    """``' as displayed (EXIF orientation 6; stored 375x500)'`` when the file is rotated."""
    try:
        from PIL import Image
        with Image.open(path) as handle:
            orientation = handle.getexif().get(0x0112, 1)
            if orientation in (None, 1):
                return ""
            return f" as displayed (EXIF orientation {orientation}; stored {handle.width}x{handle.height})"
    except Exception:  # only a hint for the message
        return ""


class OneShotCocoDataset(OneShotDataset):
    """COCO (or any COCO-format instances file) as a one-shot dataset.

    Usage::

        ds = OneShotCocoDataset()
        ds.load_coco("/data/coco", "train", year="2017")     # matterport's layout
        ds.set_split(1)                                        # S1 (may precede prepare)
        ds.prepare()

    Internal class ids follow the order of categories sorted by COCO id, so with one
    annotation file internal class id == position (1..80 for COCO). Splits are by position
    (see :func:`split_positions`): for a file with fewer categories, positions beyond the
    count are ignored; with more, the every-4th pattern continues to the end.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.split = None
        self._class_by_coco_id = None
        self.annotation_problems = []
        self.dropped_annotations = {"invalid": 0, "degenerate": 0}

    # ------------------------------------------------------------------ loading
    def load_coco(self, dataset_dir=None, subset=None, year="2017", annotation_file=None,
                  image_dir=None, return_coco=False, strict=False):
        """Register the categories, images and annotations of a COCO instances file.

        Paths: ``dataset_dir/annotations/instances_{subset}{year}.json`` and images in
        ``dataset_dir/{subset}{year}/`` (matterport's layout), unless ``annotation_file``
        and/or ``image_dir`` are given explicitly. Returns the ``pycocotools`` COCO object
        when ``return_coco``. Call ``prepare()`` afterwards.

        Every annotation is checked (:func:`check_annotation`): unknown category or image
        ids, a bbox that is not 4 finite numbers or has a negative width/height, polygons
        with fewer than 3 points, RLE of another size, non-finite numbers, and degenerate
        (zero-area) boxes or masks. Such annotations are dropped — from training targets
        and evaluation ground truth alike — each logged as ``<file>: annotation <id>:
        <what is wrong>``; ``annotation_problems`` lists the messages and
        ``dropped_annotations`` counts them (``{"invalid": n, "degenerate": m}``). With
        ``strict=True`` any problem raises ``ValueError`` listing them all instead.
        An image whose real size differs from the file's ``width``/``height`` raises
        :class:`ImageSizeError` when it is read (training skips it and counts it).
        Raises ``FileNotFoundError`` naming a missing annotation file or image folder and
        ``ValueError`` naming a file that is not COCO instances JSON, duplicate image or
        category ids, or a call without ``dataset_dir``/``subset`` nor explicit paths.
        """
        annotation_file, image_dir = self._resolve_paths(dataset_dir, subset, year,
                                                         annotation_file, image_dir)
        data = _read_coco_json(annotation_file)
        categories, images = self._checked_lists(data, annotation_file)
        for cat in categories:
            self.add_class(SOURCE, int(cat["id"]), cat["name"])
        by_image = self._checked_annotations(data["annotations"], annotation_file, images,
                                             {int(c["id"]) for c in categories}, strict)
        for img in images:
            self.add_image(SOURCE, image_id=img["id"],
                           path=os.path.join(str(image_dir), img["file_name"]),
                           width=int(img["width"]), height=int(img["height"]),
                           coco_url=img.get("coco_url"), annotation_file=str(annotation_file),
                           annotations=by_image.get(img["id"], []))
        self._class_by_coco_id = None
        if return_coco:
            return coco_from_dict(data)
        return None

    @staticmethod
    def _checked_lists(data, annotation_file):
        """The file's categories (sorted by id) and images (sorted by id), checked."""
        categories, images = [], []
        for kind, entries, keys, out in (("category", data["categories"], ("id", "name"), categories),
                                         ("image", data["images"], ("id", "file_name", "width", "height"),
                                          images)):
            seen = set()
            for entry in entries:
                missing = [k for k in keys if not isinstance(entry, dict) or k not in entry]
                if missing:
                    ident = entry.get("id") if isinstance(entry, dict) else entry
                    raise ValueError(f"{annotation_file}: {kind} {ident!r}: missing {missing}")
                if entry["id"] in seen:
                    raise ValueError(f"{annotation_file}: duplicate {kind} id {entry['id']!r}")
                seen.add(entry["id"])
                if kind == "image" and not all(_is_number(entry[k]) and entry[k] >= 1
                                               for k in ("width", "height")):
                    raise ValueError(f"{annotation_file}: image {entry['id']!r}: width/height must be "
                                     f"positive numbers, got {entry['width']!r}x{entry['height']!r}")
                out.append(entry)
        return sorted(categories, key=lambda c: c["id"]), sorted(images, key=lambda i: i["id"])

    def _checked_annotations(self, annotations, annotation_file, images, categories, strict):
        """Valid annotations grouped by image id; problems recorded (or raised if strict)."""
        sizes = {img["id"]: (int(img["height"]), int(img["width"])) for img in images}
        by_image, problems = {}, []
        counts = collections.Counter()
        for ann in annotations:
            problem, degenerate = check_annotation(ann, sizes, categories)
            if problem is None:
                by_image.setdefault(ann["image_id"], []).append(ann)
                continue
            ident = ann.get("id") if isinstance(ann, dict) else None
            problems.append(str(AnnotationError(annotation_file, ident, problem)))
            counts["degenerate" if degenerate else "invalid"] += 1
        if problems and strict:
            raise ValueError(f"{annotation_file}: {len(problems)} unusable annotation(s):\n  "
                             + "\n  ".join(problems))
        for message in problems[:20]:
            logger.warning("%s (dropped)", message)
        if problems:
            logger.warning("%s: %d of %d annotations dropped (%d invalid, %d degenerate); the list "
                           "is in dataset.annotation_problems", annotation_file, len(problems),
                           len(annotations), counts["invalid"], counts["degenerate"])
        self.annotation_problems = getattr(self, "annotation_problems", []) + problems
        previous = getattr(self, "dropped_annotations", {})
        self.dropped_annotations = {k: previous.get(k, 0) + counts[k] for k in ("invalid", "degenerate")}
        return by_image

    @staticmethod
    def _resolve_paths(dataset_dir, subset, year, annotation_file, image_dir):
        """Annotation file and image folder from explicit paths or matterport's layout."""
        if annotation_file is None or image_dir is None:
            if dataset_dir is None or subset is None:
                raise ValueError("give dataset_dir and subset, or both annotation_file "
                                 "and image_dir")
        if annotation_file is None:
            annotation_file = os.path.join(dataset_dir, "annotations",
                                           f"instances_{subset}{year}.json")
        if image_dir is None:
            image_dir = os.path.join(dataset_dir, f"{subset}{year}")
        if not os.path.isfile(annotation_file):
            raise FileNotFoundError(f"COCO annotation file not found: {annotation_file}")
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"COCO image folder not found: {image_dir}")
        return annotation_file, image_dir

    # ------------------------------------------------------------------ splits
    def prepare(self, class_map=None):
        """matterport's ``prepare``, the one-shot index and, if set, the class split."""
        self._class_by_coco_id = None
        super().prepare(class_map=class_map)
        if self.split is not None:
            self._apply_split()

    def coco_class_ids_by_position(self):
        """Internal class ids of the COCO categories, ordered by COCO category id."""
        self._require_prepared("coco_class_ids_by_position()")
        coco_ids = sorted(int(info["id"]) for info in self.class_info
                          if info["source"] == SOURCE)
        return [int(self.map_source_class_id(f"{SOURCE}.{cid}")) for cid in coco_ids]

    def set_split(self, split):
        """Use one-shot split ``S_split`` (1..4): held out = categories at
        :func:`split_positions`, training = all other categories. ``"all"``: every category
        is a training category and none is held out (paper Table 1). May be called before
        ``prepare()`` (applied there). Raises ``ValueError`` for an unknown split.
        """
        self.split = check_split(split)
        if self._prepared:
            self._apply_split()

    def _apply_split(self):
        """Set ``train_class_ids`` / ``oneshot_class_ids`` from ``self.split``."""
        by_position = self.coco_class_ids_by_position()
        held_out = set(split_positions(self.split, len(by_position)))
        oneshot = [c for p, c in enumerate(by_position, start=1) if p in held_out]
        train = [c for p, c in enumerate(by_position, start=1) if p not in held_out]
        self.set_class_split(train, oneshot)

    # ------------------------------------------------------------------ annotations
    def _internal_class_id(self, coco_category_id):
        """Internal class id of a COCO category id (cached map)."""
        if self._class_by_coco_id is None:
            self._class_by_coco_id = {
                int(info["id"]): int(self.map_source_class_id(f"{SOURCE}.{info['id']}"))
                for info in self.class_info if info["source"] == SOURCE}
        return self._class_by_coco_id[int(coco_category_id)]

    def instance_annotations(self, image_id):
        """Per-instance metadata from the JSON (no mask decoding); see the base contract.

        Extra key ``annotation_id``: the COCO annotation id.
        """
        info = self.image_info[image_id]
        if info["source"] != SOURCE:
            return super().instance_annotations(image_id)
        return [{"class_id": self._internal_class_id(ann["category_id"]),
                 "bbox": _coco_bbox_to_yxyx(ann["bbox"]),
                 "iscrowd": bool(ann.get("iscrowd", 0)),
                 "area": float(ann.get("area", 0.0)),
                 "annotation_id": ann.get("id")}
                for ann in info["annotations"]]

    def load_mask(self, image_id):
        """Instance masks ``[H, W, N]`` bool and class ids ``[N]`` int32 (crowd negative),
        one per annotation in file order (same order as :meth:`instance_annotations`).

        Raises:
            AnnotationError: a segmentation of the annotation file cannot be decoded (names the file and the annotation id).
        """
        info = self.image_info[image_id]
        if info["source"] != SOURCE:
            return super().load_mask(image_id)
        height, width = int(info["height"]), int(info["width"])
        anns = info["annotations"]
        masks = np.zeros((height, width, len(anns)), dtype=bool)
        class_ids = np.zeros((len(anns),), dtype=np.int32)
        for k, ann in enumerate(anns):
            try:
                masks[:, :, k] = ann_to_mask(ann["segmentation"], height, width)
            except Exception as err:  # pycocotools raises TypeError, ValueError, ...
                raise AnnotationError(info.get("annotation_file", info["path"]), ann.get("id"),
                                      f"cannot decode the segmentation ({type(err).__name__}: "
                                      f"{err})") from None
            class_id = self._internal_class_id(ann["category_id"])
            class_ids[k] = -class_id if ann.get("iscrowd", 0) else class_id
        return masks, class_ids

    def load_image(self, image_id):
        """The image as displayed (EXIF orientation applied), uint8 ``[H, W, 3]``.

        Raises:
            ImageLoadError: the file is missing or cannot be decoded (path named).
            ImageSizeError: its size differs from the annotation file's ``width``/``height``
                (file, both sizes and any EXIF orientation named).
        """
        image = super().load_image(image_id)
        info = self.image_info[image_id]
        if info["source"] == SOURCE:
            expected = (int(info["height"]), int(info["width"]))
            if tuple(image.shape[:2]) != expected:
                raise ImageSizeError(
                    f"{info['path']}: the annotation file {info.get('annotation_file', '')} gives "
                    f"{expected[1]}x{expected[0]} (width x height), the image is "
                    f"{image.shape[1]}x{image.shape[0]}{_orientation_note(info['path'])}")
        return image

    def image_reference(self, image_id):
        """The image's COCO URL if known, else its file path."""
        info = self.image_info[image_id]
        if info["source"] != SOURCE:
            return super().image_reference(image_id)
        return info.get("coco_url") or info["path"]

    # ------------------------------------------------------------------ COCO export (fast)
    def _coco_image_entry(self, image_id):
        """COCO ``images`` entry from the original metadata (id = internal image id)."""
        info = self.image_info[image_id]
        if info["source"] != SOURCE:
            return super()._coco_image_entry(image_id)
        entry = {"id": int(image_id), "width": int(info["width"]),
                 "height": int(info["height"]), "file_name": os.path.basename(info["path"]),
                 "coco_id": info["id"]}
        if info.get("coco_url"):
            entry["coco_url"] = info["coco_url"]
        return entry

    def _coco_annotations_for_image(self, image_id, class_ids):
        """The original annotations with ids remapped to internal ids (no mask decoding)."""
        info = self.image_info[image_id]
        if info["source"] != SOURCE:
            return super()._coco_annotations_for_image(image_id, class_ids)
        anns = []
        for ann in info["annotations"]:
            class_id = self._internal_class_id(ann["category_id"])
            if class_id not in class_ids:
                continue
            anns.append({"image_id": int(image_id), "category_id": class_id,
                         "segmentation": ann["segmentation"],
                         "bbox": [float(v) for v in ann["bbox"]],
                         "area": float(ann.get("area", 0.0)),
                         "iscrowd": int(bool(ann.get("iscrowd", 0)))})
        return anns
