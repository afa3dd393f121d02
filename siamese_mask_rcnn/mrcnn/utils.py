"""Mask R-CNN numpy utilities: datasets, boxes, masks, resizing, anchors, AP.

Names and semantics follow matterport's ``mrcnn.utils``. Conventions:

* boxes are ``(y1, x1, y2, x2)`` in pixels with ``y2``/``x2`` exclusive
  (one past the last pixel);
* instance masks are ``[height, width, instances]`` arrays;
* box deltas are ``(dy, dx, log(dh), log(dw))``.

No TensorFlow here.
"""

import logging
import os
import warnings

import numpy as np
import skimage.io
import skimage.transform

logger = logging.getLogger(__name__)


class ImageLoadError(OSError):
    """An image file is missing, unreadable or not a supported image.

    ``path`` holds the offending file; the message always names it.
    """

    def __init__(self, path, reason=""):
        self.path = os.fspath(path) if path is not None else None
        self.reason = reason
        message = f"Cannot load image '{self.path}'"
        if reason:
            message += f": {reason}"
        super().__init__(message)

    def __reduce__(self):
        # keep (path, reason) when the error crosses process boundaries (data workers)
        return type(self), (self.path, self.reason)


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------

def _clean_name(name):
    """Short display name of a class: the text before the first comma."""
    return name.split(",")[0]


def to_uint8_rgb(image, path=None):
    """Convert an image array of any common layout to uint8 ``[H, W, 3]`` RGB.

    Grey images (``[H, W]`` or ``[H, W, 1]``) are repeated to three channels,
    grey+alpha keeps the grey channel and RGBA drops the alpha channel. Non-uint8
    data is rescaled: bool to {0, 255}, other integer types by their range,
    floats in [0, 1] by 255 and other floats clipped to [0, 255].

    Raises:
        ImageLoadError: the array does not look like an image (``path`` named).
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    elif image.ndim == 3 and image.shape[-1] == 2:
        image = image[..., 0]
    elif image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3) or image.size == 0:
        raise ImageLoadError(path, f"unsupported image array of shape {image.shape}")
    image = _to_uint8(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image)


def _to_uint8(image):
    """Rescale an image array to uint8 (see :func:`to_uint8_rgb`)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        if info.min < 0:
            image = np.clip(image, 0, None)
        return (image.astype(np.float64) * (255.0 / info.max)).round().astype(np.uint8)
    image = image.astype(np.float64)
    if image.size and np.nanmax(image) <= 1.0:
        image = image * 255.0
    return np.clip(np.nan_to_num(image), 0, 255).round().astype(np.uint8)


class Dataset:
    """Base class for datasets: register classes and images, then ``prepare()``.

    Sub-class it and add ``load_<name>()`` methods that call :meth:`add_class`
    and :meth:`add_image`; override :meth:`load_mask` (and optionally
    :meth:`load_image` and :meth:`image_reference`).

    Class id 0 is the background class ``"BG"`` of source ``""``.
    """

    def __init__(self, class_map=None):
        self._image_ids = []
        self.image_info = []
        # Background is always the first class.
        self.class_info = [{"source": "", "id": 0, "name": "BG"}]
        self.source_class_ids = {}
        self.class_map = class_map

    def add_class(self, source, class_id, class_name):
        """Register class ``class_id`` of ``source`` (ignored if already registered)."""
        if "." in source:
            raise ValueError(f"Source name cannot contain a dot: '{source}'")
        for info in self.class_info:
            if info["source"] == source and info["id"] == class_id:
                return
        self.class_info.append({"source": source, "id": class_id, "name": class_name})

    def add_image(self, source, image_id, path, **kwargs):
        """Register an image; extra keyword arguments are stored in its info dict."""
        info = {"id": image_id, "source": source, "path": path}
        info.update(kwargs)
        self.image_info.append(info)

    def image_reference(self, image_id):
        """Link or description of the image for debugging; override in sub-classes."""
        return ""

    def prepare(self, class_map=None):
        """Build the internal look-up tables; call after adding classes and images.

        Sets ``num_classes``, ``class_ids``, ``class_names``, ``num_images``,
        ``_image_ids``, ``class_from_source_map`` ("source.id" -> internal id),
        ``image_from_source_map``, ``sources`` and ``source_class_ids``
        (source -> internal class ids, background included in every source).
        """
        self.num_classes = len(self.class_info)
        self.class_ids = np.arange(self.num_classes)
        self.class_names = [_clean_name(c["name"]) for c in self.class_info]
        self.num_images = len(self.image_info)
        self._image_ids = np.arange(self.num_images)

        self.class_from_source_map = {
            f"{info['source']}.{info['id']}": class_id
            for info, class_id in zip(self.class_info, self.class_ids)}
        self.image_from_source_map = {
            f"{info['source']}.{info['id']}": image_id
            for info, image_id in zip(self.image_info, self._image_ids)}

        self.sources = sorted(set(c["source"] for c in self.class_info))
        self.source_class_ids = {}
        for source in self.sources:
            self.source_class_ids[source] = [
                i for i, info in enumerate(self.class_info)
                if i == 0 or info["source"] == source]

    def map_source_class_id(self, source_class_id):
        """Internal class id of a ``"source.class_id"`` string, e.g. ``"coco.12"``."""
        try:
            return self.class_from_source_map[source_class_id]
        except KeyError:
            raise KeyError(f"Unknown source class id '{source_class_id}'") from None

    def get_source_class_id(self, class_id, source):
        """Class id in ``source``'s own numbering of internal class ``class_id``."""
        info = self.class_info[class_id]
        if info["source"] != source:
            raise ValueError(
                f"Class {class_id} belongs to source '{info['source']}', not '{source}'")
        return info["id"]

    @property
    def image_ids(self):
        """Internal image ids ``0 .. num_images-1`` (after :meth:`prepare`)."""
        return self._image_ids

    def source_image_link(self, image_id):
        """Path or URL of the image in its source."""
        return self.image_info[image_id]["path"]

    def load_image(self, image_id):
        """Load image ``image_id`` as a uint8 ``[H, W, 3]`` RGB array.

        Raises:
            ImageLoadError: the file is missing or cannot be decoded (path named).
        """
        path = self.image_info[image_id]["path"]
        return read_image(path)

    def load_mask(self, image_id):
        """Instance masks ``[H, W, N]`` bool and class ids ``[N]``; override this.

        The default returns empty arrays and logs a warning, as matterport does.
        """
        logger.warning("You are using the default load_mask(); define your own in your Dataset.")
        mask = np.empty([0, 0, 0], dtype=bool)
        class_ids = np.empty([0], np.int32)
        return mask, class_ids


def read_image(path):
    """Read an image file into a uint8 ``[H, W, 3]`` RGB array.

    Raises:
        ImageLoadError: missing, unreadable or corrupt file (the path is named).
    """
    if not os.path.isfile(path):
        raise ImageLoadError(path, "no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = skimage.io.imread(path)
    except Exception as exc:  # decoders raise many different types
        raise ImageLoadError(path, f"{type(exc).__name__}: {exc}") from exc
    return to_uint8_rgb(image, path=path)


# ---------------------------------------------------------------------------
# Boxes
# ---------------------------------------------------------------------------

def extract_bboxes(mask):
    """Boxes ``[N, (y1, x1, y2, x2)]`` int32 around each mask of ``[H, W, N]``.

    ``y2``/``x2`` are exclusive. Empty masks give an all-zero box.
    """
    mask = np.asarray(mask)
    boxes = np.zeros([mask.shape[-1], 4], dtype=np.int32)
    for i in range(mask.shape[-1]):
        m = mask[:, :, i]
        rows = np.where(np.any(m, axis=1))[0]
        cols = np.where(np.any(m, axis=0))[0]
        if rows.size:
            boxes[i] = [rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]
    return boxes


def _box_areas(boxes):
    """Areas of ``[N, (y1, x1, y2, x2)]`` boxes."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _safe_divide(numerator, denominator):
    """numerator / denominator with 0 where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def compute_iou(box, boxes, box_area, boxes_area):
    """IoU of one ``box`` ``(y1, x1, y2, x2)`` with each of ``boxes`` ``[N, 4]``.

    ``box_area`` and ``boxes_area`` are passed in so callers can compute them once.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    y1 = np.maximum(box[0], boxes[:, 0])
    y2 = np.minimum(box[2], boxes[:, 2])
    x1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[3], boxes[:, 3])
    intersection = np.maximum(y2 - y1, 0) * np.maximum(x2 - x1, 0)
    union = box_area + boxes_area - intersection
    return _safe_divide(intersection, union)


def compute_overlaps(boxes1, boxes2):
    """IoU matrix ``[N1, N2]`` between two sets of ``(y1, x1, y2, x2)`` boxes."""
    boxes1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    boxes2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    area1 = _box_areas(boxes1)
    area2 = _box_areas(boxes2)
    overlaps = np.zeros((boxes1.shape[0], boxes2.shape[0]))
    # Loop over the shorter side, vectorise over the longer one (memory friendly
    # for anchors x ground truth).
    if boxes2.shape[0] <= boxes1.shape[0]:
        for j in range(boxes2.shape[0]):
            overlaps[:, j] = compute_iou(boxes2[j], boxes1, area2[j], area1)
    else:
        for i in range(boxes1.shape[0]):
            overlaps[i, :] = compute_iou(boxes1[i], boxes2, area1[i], area2)
    return overlaps


def compute_overlaps_masks(masks1, masks2):
    """IoU matrix ``[N1, N2]`` between two sets of ``[H, W, N]`` masks (> 0.5 is on)."""
    masks1 = np.asarray(masks1)
    masks2 = np.asarray(masks2)
    n1, n2 = masks1.shape[-1], masks2.shape[-1]
    if n1 == 0 or n2 == 0:
        return np.zeros((n1, n2))
    m1 = np.reshape(masks1 > .5, (-1, n1)).astype(np.float32)
    m2 = np.reshape(masks2 > .5, (-1, n2)).astype(np.float32)
    area1 = np.sum(m1, axis=0, dtype=np.float64)
    area2 = np.sum(m2, axis=0, dtype=np.float64)
    intersections = (m1.T @ m2).astype(np.float64)
    union = area1[:, None] + area2[None, :] - intersections
    return _safe_divide(intersections, union)


def non_max_suppression(boxes, scores, threshold):
    """Greedy NMS: indices (int32, best first) of the boxes kept.

    A box is dropped when its IoU with an already kept, higher-scoring box is
    greater than ``threshold``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores)
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"non_max_suppression: {boxes.shape[0]} boxes but {scores.shape[0]} scores")
    areas = _box_areas(boxes)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        iou = compute_iou(boxes[i], boxes[order[1:]], areas[i], areas[order[1:]])
        order = order[1:][iou <= threshold]
    return np.array(keep, dtype=np.int32)


def apply_box_deltas(boxes, deltas):
    """Apply ``[N, (dy, dx, log(dh), log(dw))]`` deltas to ``[N, (y1, x1, y2, x2)]`` boxes."""
    boxes = np.asarray(boxes, dtype=np.float32)
    deltas = np.asarray(deltas, dtype=np.float32)
    height = boxes[:, 2] - boxes[:, 0]
    width = boxes[:, 3] - boxes[:, 1]
    center_y = boxes[:, 0] + 0.5 * height + deltas[:, 0] * height
    center_x = boxes[:, 1] + 0.5 * width + deltas[:, 1] * width
    height = height * np.exp(deltas[:, 2])
    width = width * np.exp(deltas[:, 3])
    y1 = center_y - 0.5 * height
    x1 = center_x - 0.5 * width
    return np.stack([y1, x1, y1 + height, x1 + width], axis=1)


def box_refinement(box, gt_box):
    """Deltas ``[N, (dy, dx, log(dh), log(dw))]`` that turn ``box`` into ``gt_box``.

    The inverse of :func:`apply_box_deltas`.
    """
    box = np.asarray(box, dtype=np.float32)
    gt_box = np.asarray(gt_box, dtype=np.float32)
    height = box[:, 2] - box[:, 0]
    width = box[:, 3] - box[:, 1]
    center_y = box[:, 0] + 0.5 * height
    center_x = box[:, 1] + 0.5 * width
    gt_height = gt_box[:, 2] - gt_box[:, 0]
    gt_width = gt_box[:, 3] - gt_box[:, 1]
    gt_center_y = gt_box[:, 0] + 0.5 * gt_height
    gt_center_x = gt_box[:, 1] + 0.5 * gt_width
    dy = (gt_center_y - center_y) / height
    dx = (gt_center_x - center_x) / width
    dh = np.log(gt_height / height)
    dw = np.log(gt_width / width)
    return np.stack([dy, dx, dh, dw], axis=1)


def norm_boxes(boxes, shape):
    """Pixel boxes to normalised coordinates (matterport convention).

    ``(y1, x1, y2, x2)`` with exclusive ``y2``/``x2`` maps to
    ``((y1)/(h-1), (x1)/(w-1), (y2-1)/(h-1), (x2-1)/(w-1))``, float32.
    """
    h, w = shape[:2]
    scale = np.array([h - 1, w - 1, h - 1, w - 1], dtype=np.float64)
    shift = np.array([0, 0, 1, 1], dtype=np.float64)
    return ((np.asarray(boxes, dtype=np.float64) - shift) / scale).astype(np.float32)


def denorm_boxes(boxes, shape):
    """Normalised boxes back to int32 pixel boxes (inverse of :func:`norm_boxes`)."""
    h, w = shape[:2]
    scale = np.array([h - 1, w - 1, h - 1, w - 1], dtype=np.float64)
    shift = np.array([0, 0, 1, 1], dtype=np.float64)
    return np.around(np.asarray(boxes, dtype=np.float64) * scale + shift).astype(np.int32)


def trim_zeros(x):
    """Remove the rows of ``x`` that are all zeros (padding)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"trim_zeros expects a 2-D array, got shape {x.shape}")
    return x[~np.all(x == 0, axis=1)]


# ---------------------------------------------------------------------------
# Resizing images and masks
# ---------------------------------------------------------------------------

def resize(image, output_shape, order=1, mode="constant", cval=0, clip=True,
           preserve_range=False, anti_aliasing=False, anti_aliasing_sigma=None):
    """``skimage.transform.resize`` with anti-aliasing off by default (matterport's wrapper)."""
    return skimage.transform.resize(
        image, output_shape, order=order, mode=mode, cval=cval, clip=clip,
        preserve_range=preserve_range, anti_aliasing=anti_aliasing,
        anti_aliasing_sigma=anti_aliasing_sigma)


def _cast_like(array, dtype):
    """Cast resized data back to ``dtype``, rounding and clipping integer types."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.around(array), info.min, info.max).astype(dtype)
    return array.astype(dtype)


def resize_image(image, min_dim=None, max_dim=None, min_scale=None, mode="square", rng=None):
    """Resize (and pad or crop) an image, keeping its aspect ratio and dtype.

    Modes:
      * ``"none"``: unchanged.
      * ``"square"``: scale up so the short side is at least ``min_dim``
        (never down for ``min_dim``), at least ``min_scale``, but so that the
        long side is at most ``max_dim``; then zero-pad, centred, to
        ``max_dim x max_dim``.
      * ``"pad64"``: scale as for ``min_dim``/``min_scale`` then zero-pad, centred,
        so both sides are multiples of 64 (``min_dim`` must be a multiple of 64).
      * ``"crop"``: scale as for ``min_dim``/``min_scale`` then take a random
        ``min_dim x min_dim`` crop (drawn with ``rng``, a numpy Generator).

    Returns:
        image: the resized image.
        window: ``(y1, x1, y2, x2)`` of the image inside the padded result.
        scale: the resize factor.
        padding: ``[(top, bottom), (left, right), (0, 0)]``.
        crop: ``(y, x, h, w)`` in crop mode, else None.
    """
    image = np.asarray(image)
    image_dtype = image.dtype
    h, w = image.shape[:2]
    window = (0, 0, h, w)
    scale = 1
    padding = [(0, 0), (0, 0), (0, 0)]
    crop = None

    if mode == "none":
        return image, window, scale, padding, crop
    if mode not in ("square", "pad64", "crop"):
        raise ValueError(f"Unknown image resize mode '{mode}' (use none, square, pad64 or crop)")

    if min_dim:
        scale = max(1, min_dim / min(h, w))
    if min_scale and scale < min_scale:
        scale = min_scale
    if max_dim and mode == "square":
        image_max = max(h, w)
        if round(image_max * scale) > max_dim:
            scale = max_dim / image_max

    if scale != 1:
        resized = resize(image, (round(h * scale), round(w * scale)), preserve_range=True)
        image = _cast_like(resized, image_dtype)

    h, w = image.shape[:2]
    if mode == "square":
        if not max_dim:
            raise ValueError("resize_image: mode 'square' needs max_dim")
        top_pad = (max_dim - h) // 2
        left_pad = (max_dim - w) // 2
        padding = [(top_pad, max_dim - h - top_pad), (left_pad, max_dim - w - left_pad), (0, 0)]
        image = np.pad(image, padding[:image.ndim], mode="constant", constant_values=0)
        window = (top_pad, left_pad, h + top_pad, w + left_pad)
    elif mode == "pad64":
        if min_dim and min_dim % 64 != 0:
            raise ValueError(f"resize_image: mode 'pad64' needs min_dim to be a multiple of 64, got {min_dim}")
        top_pad, bottom_pad = _pad_to_multiple(h, 64)
        left_pad, right_pad = _pad_to_multiple(w, 64)
        padding = [(top_pad, bottom_pad), (left_pad, right_pad), (0, 0)]
        image = np.pad(image, padding[:image.ndim], mode="constant", constant_values=0)
        window = (top_pad, left_pad, h + top_pad, w + left_pad)
    else:  # crop
        if not min_dim:
            raise ValueError("resize_image: mode 'crop' needs min_dim")
        if h < min_dim or w < min_dim:
            raise ValueError(f"resize_image: image {h}x{w} is smaller than the crop size {min_dim}")
        rng = np.random.default_rng() if rng is None else rng
        y = int(rng.integers(0, h - min_dim + 1))
        x = int(rng.integers(0, w - min_dim + 1))
        crop = (y, x, min_dim, min_dim)
        image = image[y:y + min_dim, x:x + min_dim]
        window = (0, 0, min_dim, min_dim)
    return image.astype(image_dtype, copy=False), window, scale, padding, crop


def _pad_to_multiple(size, multiple):
    """(before, after) padding that centres ``size`` in the next multiple of ``multiple``."""
    if size % multiple == 0:
        return 0, 0
    target = size - (size % multiple) + multiple
    before = (target - size) // 2
    return before, target - size - before


def resize_mask(mask, scale, padding, crop=None):
    """Resize ``[H, W, N]`` masks like :func:`resize_image` did the image.

    Nearest-neighbour scaling to ``round(H*scale) x round(W*scale)`` (the size
    the image got), then the crop (if any) and the padding. dtype is preserved.
    """
    mask = np.asarray(mask)
    h, w = mask.shape[:2]
    if scale != 1:
        new_h, new_w = round(h * scale), round(w * scale)
        rows = np.minimum(((np.arange(new_h) + 0.5) * (h / new_h)).astype(np.int64), h - 1)
        cols = np.minimum(((np.arange(new_w) + 0.5) * (w / new_w)).astype(np.int64), w - 1)
        mask = mask[rows][:, cols]
    if crop is not None:
        y, x, ch, cw = crop
        mask = mask[y:y + ch, x:x + cw]
    pad = [tuple(p) for p in padding][:mask.ndim]
    pad += [(0, 0)] * (mask.ndim - len(pad))
    if any(p != (0, 0) for p in pad):
        mask = np.pad(mask, pad, mode="constant", constant_values=0)
    return mask


def minimize_mask(bbox, mask, mini_shape):
    """Crop each mask of ``[H, W, N]`` to its box and resize it to ``mini_shape``.

    Returns a bool ``[mini_h, mini_w, N]`` array (see :func:`expand_mask`).

    Raises:
        ValueError: a box has zero area.
    """
    mini_mask = np.zeros(tuple(mini_shape) + (mask.shape[-1],), dtype=bool)
    for i in range(mask.shape[-1]):
        y1, x1, y2, x2 = np.asarray(bbox[i])[:4].astype(np.int64)
        m = mask[y1:y2, x1:x2, i].astype(np.float32)
        if m.size == 0:
            raise ValueError(f"minimize_mask: instance {i} has a box of zero area: {bbox[i]}")
        m = resize(m, tuple(mini_shape))
        mini_mask[:, :, i] = np.around(m).astype(bool)
    return mini_mask


def expand_mask(bbox, mini_mask, image_shape):
    """Paste mini-masks back into full-size ``[H, W, N]`` bool masks (inverse of :func:`minimize_mask`)."""
    mask = np.zeros(tuple(image_shape[:2]) + (mini_mask.shape[-1],), dtype=bool)
    for i in range(mask.shape[-1]):
        y1, x1, y2, x2 = np.asarray(bbox[i])[:4].astype(np.int64)
        if y2 <= y1 or x2 <= x1:
            continue
        m = resize(mini_mask[:, :, i].astype(np.float32), (y2 - y1, x2 - x1))
        mask[y1:y2, x1:x2, i] = np.around(m).astype(bool)
    return mask


def unmold_mask(mask, bbox, image_shape, threshold=0.5):
    """Turn a small float mask predicted for ``bbox`` into a full-size bool mask.

    The mask is resized to the box, thresholded at ``threshold`` and pasted into
    an ``image_shape[:2]`` array (the part of the box outside the image is dropped).
    """
    y1, x1, y2, x2 = [int(v) for v in np.asarray(bbox)[:4]]
    full_mask = np.zeros(tuple(image_shape[:2]), dtype=bool)
    if y2 <= y1 or x2 <= x1:
        return full_mask
    m = resize(np.asarray(mask, dtype=np.float32), (y2 - y1, x2 - x1))
    m = m >= threshold
    height, width = full_mask.shape
    cy1, cx1 = max(y1, 0), max(x1, 0)
    cy2, cx2 = min(y2, height), min(x2, width)
    if cy2 > cy1 and cx2 > cx1:
        full_mask[cy1:cy2, cx1:cx2] = m[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
    return full_mask


# ---------------------------------------------------------------------------
# Anchors
# ---------------------------------------------------------------------------

def generate_anchors(scales, ratios, shape, feature_stride, anchor_stride):
    """Anchors ``[N, (y1, x1, y2, x2)]`` in pixels for one feature map.

    Args:
        scales: anchor side length(s) in pixels.
        ratios: width/height ratios (0.5 is a tall box).
        shape: ``(height, width)`` of the feature map.
        feature_stride: pixels per feature-map cell; anchor centres are at
            ``cell_index * feature_stride``.
        anchor_stride: place anchors on every ``anchor_stride``-th cell.

    Order: feature-map positions row-major (y, then x), and for each position
    every (ratio, scale) pair, ratio-major -- the order the RPN head outputs.
    """
    scales = np.atleast_1d(np.asarray(scales, dtype=np.float64))
    ratios = np.atleast_1d(np.asarray(ratios, dtype=np.float64))
    # ratio-major list of (height, width) per anchor shape
    ratio_grid = np.repeat(ratios, scales.size)
    scale_grid = np.tile(scales, ratios.size)
    heights = scale_grid / np.sqrt(ratio_grid)
    widths = scale_grid * np.sqrt(ratio_grid)

    centers_y = np.arange(0, shape[0], anchor_stride) * feature_stride
    centers_x = np.arange(0, shape[1], anchor_stride) * feature_stride
    grid_y, grid_x = np.meshgrid(centers_y, centers_x, indexing="ij")
    cy = grid_y.reshape(-1, 1)  # [positions, 1]
    cx = grid_x.reshape(-1, 1)
    boxes = np.stack([cy - 0.5 * heights, cx - 0.5 * widths,
                      cy + 0.5 * heights, cx + 0.5 * widths], axis=-1)
    return boxes.reshape(-1, 4)


def generate_pyramid_anchors(scales, ratios, feature_shapes, feature_strides, anchor_stride):
    """Anchors of every pyramid level, concatenated level by level.

    ``scales[i]`` is used on ``feature_shapes[i]`` with ``feature_strides[i]``.
    Returns ``[N, (y1, x1, y2, x2)]`` in pixels.
    """
    if not (len(scales) == len(feature_shapes) == len(feature_strides)):
        raise ValueError(
            f"generate_pyramid_anchors: {len(scales)} scales, {len(feature_shapes)} feature shapes "
            f"and {len(feature_strides)} strides must be equally many")
    anchors = [generate_anchors(scales[i], ratios, feature_shapes[i], feature_strides[i], anchor_stride)
               for i in range(len(scales))]
    return np.concatenate(anchors, axis=0)


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------

def compute_matches(gt_boxes, gt_class_ids, gt_masks,
                    pred_boxes, pred_class_ids, pred_scores, pred_masks,
                    iou_threshold=0.5, score_threshold=0.0):
    """Match predictions to ground truth by mask IoU, best-scoring prediction first.

    All-zero (padding) box rows are removed first. Each prediction takes the
    unmatched GT instance of the same class with the highest mask IoU, if that
    IoU is at least ``iou_threshold``. GT candidates whose IoU is below
    ``score_threshold`` are not considered (matterport semantics).

    Returns:
        gt_match: ``[N_gt]`` index of the matched prediction or -1.
        pred_match: ``[N_pred]`` index of the matched GT or -1 (predictions
            sorted by descending score).
        overlaps: ``[N_pred, N_gt]`` mask IoUs (predictions sorted by score).
    """
    gt_boxes = trim_zeros(np.asarray(gt_boxes).reshape(-1, 4))
    gt_masks = np.asarray(gt_masks)[..., :gt_boxes.shape[0]]
    gt_class_ids = np.asarray(gt_class_ids)[:gt_boxes.shape[0]]
    pred_boxes = trim_zeros(np.asarray(pred_boxes).reshape(-1, 4))
    n_pred = pred_boxes.shape[0]
    pred_scores = np.asarray(pred_scores)[:n_pred]
    order = np.argsort(-pred_scores, kind="stable")
    pred_class_ids = np.asarray(pred_class_ids)[:n_pred][order]
    pred_masks = np.asarray(pred_masks)[..., :n_pred][..., order]

    overlaps = compute_overlaps_masks(pred_masks, gt_masks)
    pred_match = -1 * np.ones([n_pred])
    gt_match = -1 * np.ones([gt_boxes.shape[0]])
    for i in range(n_pred):
        candidates = np.argsort(-overlaps[i], kind="stable")
        low = np.where(overlaps[i, candidates] < score_threshold)[0]
        if low.size > 0:
            candidates = candidates[:low[0]]
        for j in candidates:
            if gt_match[j] > -1:
                continue
            if overlaps[i, j] < iou_threshold:
                break
            if pred_class_ids[i] == gt_class_ids[j]:
                gt_match[j] = i
                pred_match[i] = j
                break
    return gt_match, pred_match, overlaps


def compute_ap(gt_boxes, gt_class_ids, gt_masks,
               pred_boxes, pred_class_ids, pred_scores, pred_masks,
               iou_threshold=0.5):
    """Average precision at one mask-IoU threshold (VOC-style interpolated AP).

    Returns:
        mAP, precisions, recalls (both padded with a leading 0 and trailing 0/1),
        overlaps ``[N_pred, N_gt]``.
    """
    gt_match, pred_match, overlaps = compute_matches(
        gt_boxes, gt_class_ids, gt_masks, pred_boxes, pred_class_ids, pred_scores, pred_masks,
        iou_threshold)
    hits = np.cumsum(pred_match > -1)
    precisions = hits / (np.arange(len(pred_match)) + 1)
    if len(gt_match):
        recalls = hits.astype(np.float32) / len(gt_match)
    else:
        recalls = np.zeros(len(pred_match), dtype=np.float32)
    precisions = np.concatenate([[0], precisions, [0]])
    recalls = np.concatenate([[0], recalls, [1]])
    # precision envelope: each precision is the best precision at any higher recall
    for i in range(len(precisions) - 2, -1, -1):
        precisions[i] = max(precisions[i], precisions[i + 1])
    steps = np.where(recalls[:-1] != recalls[1:])[0] + 1
    mAP = float(np.sum((recalls[steps] - recalls[steps - 1]) * precisions[steps]))
    return mAP, precisions, recalls, overlaps


def compute_ap_range(gt_box, gt_class_id, gt_mask,
                     pred_box, pred_class_id, pred_score, pred_mask,
                     iou_thresholds=None, verbose=1):
    """Mean AP over ``iou_thresholds`` (default 0.5, 0.55, ..., 0.95)."""
    if iou_thresholds is None:
        iou_thresholds = np.arange(0.5, 1.0, 0.05)
    aps = []
    for threshold in iou_thresholds:
        ap, _, _, _ = compute_ap(gt_box, gt_class_id, gt_mask,
                                 pred_box, pred_class_id, pred_score, pred_mask,
                                 iou_threshold=threshold)
        if verbose:
            print(f"AP @{threshold:.2f}:\t {ap:.3f}")
        aps.append(ap)
    mean_ap = float(np.mean(aps))
    if verbose:
        print(f"AP @{iou_thresholds[0]:.2f}-{iou_thresholds[-1]:.2f}:\t {mean_ap:.3f}")
    return mean_ap


def compute_recall(pred_boxes, gt_boxes, iou):
    """Fraction of GT boxes covered (IoU >= ``iou``) by some predicted box.

    Returns:
        recall, and the indices of the predicted boxes with IoU >= ``iou``.
    """
    overlaps = compute_overlaps(pred_boxes, gt_boxes)
    if overlaps.size == 0:
        return 0.0, np.zeros([0], dtype=np.int64)
    iou_max = np.max(overlaps, axis=1)
    iou_argmax = np.argmax(overlaps, axis=1)
    positive_ids = np.where(iou_max >= iou)[0]
    matched_gt = iou_argmax[positive_ids]
    recall = len(set(matched_gt.tolist())) / overlaps.shape[1]
    return recall, positive_ids
