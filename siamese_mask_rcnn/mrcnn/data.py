"""Per-image Mask R-CNN inputs and targets in numpy (no TensorFlow).

* image meta data: :func:`compose_image_meta`, :func:`parse_image_meta`;
* input normalisation: :func:`mold_image`, :func:`unmold_image`, :func:`mold_inputs`;
* anchors: :func:`compute_backbone_shapes`, :func:`get_anchors`;
* training targets: :func:`prepare_gt`, :func:`load_image_gt`, :func:`build_rpn_targets`;
* inference output: :func:`unmold_detections`.

Names and semantics follow the matching functions of matterport's
``mrcnn.model``. Random choices take a numpy ``Generator`` (``rng``).
"""

import math

import numpy as np

from . import utils

#: Layout of an image meta vector: name -> (start, length); active_class_ids follow.
IMAGE_META_LAYOUT = {
    "image_id": (0, 1),
    "original_image_shape": (1, 3),
    "image_shape": (4, 3),
    "window": (7, 4),
    "scale": (11, 1),
}
ACTIVE_CLASS_IDS_START = 12

# Matterport's RPN anchor labelling thresholds.
RPN_NEGATIVE_IOU = 0.3
RPN_POSITIVE_IOU = 0.7
RPN_CROWD_IOU = 0.001


# ---------------------------------------------------------------------------
# Image meta data
# ---------------------------------------------------------------------------

def compose_image_meta(image_id, original_image_shape, image_shape, window, scale, active_class_ids):
    """Pack the attributes of one image into a 1-D float array.

    Layout: ``[image_id, original_image_shape(3), image_shape(3),
    window(4) (y1, x1, y2, x2 in image pixels), scale, active_class_ids(NUM_CLASSES)]``.
    """
    if len(original_image_shape) != 3 or len(image_shape) != 3:
        raise ValueError(
            f"compose_image_meta: image shapes must have 3 entries (H, W, C), got "
            f"{tuple(original_image_shape)} and {tuple(image_shape)}")
    meta = np.array(
        [image_id]
        + list(original_image_shape)
        + list(image_shape)
        + list(window)
        + [scale]
        + list(active_class_ids),
        dtype=np.float64)
    return meta


def parse_image_meta(meta):
    """Unpack image meta vector(s) (``[META]`` or ``[batch, META]``) into a dict of arrays.

    Keys: image_id, original_image_shape, image_shape, window, scale (float32),
    active_class_ids (all but scale are int32).
    """
    meta = np.asarray(meta)
    parsed = {}
    for name, (start, length) in IMAGE_META_LAYOUT.items():
        if length == 1:
            parsed[name] = meta[..., start]
        else:
            parsed[name] = meta[..., start:start + length]
    parsed["active_class_ids"] = meta[..., ACTIVE_CLASS_IDS_START:]
    for name in parsed:
        dtype = np.float32 if name == "scale" else np.int32
        parsed[name] = parsed[name].astype(dtype)
    return parsed


# ---------------------------------------------------------------------------
# Input normalisation
# ---------------------------------------------------------------------------

def mold_image(images, config):
    """Subtract the mean pixel: uint8 RGB image(s) -> float32 network input."""
    return np.asarray(images, dtype=np.float32) - np.asarray(config.MEAN_PIXEL, dtype=np.float32)


def unmold_image(normalized_images, config):
    """Inverse of :func:`mold_image`: add the mean pixel back, return uint8."""
    images = np.asarray(normalized_images, dtype=np.float32) + np.asarray(config.MEAN_PIXEL, dtype=np.float32)
    return np.clip(np.around(images), 0, 255).astype(np.uint8)


def resize_for_config(image, config, rng=None):
    """:func:`utils.resize_image` with the config's IMAGE_* resize settings."""
    return utils.resize_image(
        image,
        min_dim=config.IMAGE_MIN_DIM,
        min_scale=config.IMAGE_MIN_SCALE,
        max_dim=config.IMAGE_MAX_DIM,
        mode=config.IMAGE_RESIZE_MODE,
        rng=rng)


def mold_inputs(images, config):
    """Resize and normalise a list of images for inference.

    Returns:
        molded_images: ``[B, H, W, C]`` float32.
        image_metas: ``[B, IMAGE_META_SIZE]`` (image_id 0, no active classes).
        windows: ``[B, (y1, x1, y2, x2)]`` int32, the image inside the padding.

    Raises:
        ValueError: the resized images do not all have the same shape
            (possible with resize modes "none" and "pad64").
    """
    molded_images, image_metas, windows = [], [], []
    for image in images:
        image = np.asarray(image)
        molded, window, scale, _, _ = resize_for_config(image, config)
        molded = mold_image(molded, config)
        meta = compose_image_meta(0, image.shape, molded.shape, window, scale,
                                  np.zeros([config.NUM_CLASSES], dtype=np.int32))
        molded_images.append(molded)
        image_metas.append(meta)
        windows.append(window)
    shapes = sorted(set(m.shape for m in molded_images))
    if len(shapes) > 1:
        raise ValueError(
            f"mold_inputs: resized images have different shapes {shapes}; "
            f"use IMAGE_RESIZE_MODE 'square' or pass images of one size")
    return (np.stack(molded_images).astype(np.float32), np.stack(image_metas),
            np.array(windows, dtype=np.int32))


# ---------------------------------------------------------------------------
# Anchors
# ---------------------------------------------------------------------------

def compute_backbone_shapes(config, image_shape):
    """``[levels, (height, width)]`` of the backbone feature maps for ``image_shape``.

    Uses ``config.COMPUTE_BACKBONE_SHAPE(image_shape)`` if set, else
    ``ceil(image_side / stride)`` for every stride in BACKBONE_STRIDES (also for a
    callable BACKBONE: it must then produce feature maps with those strides, as
    ``backbone.tiny_backbone`` does).

    Raises:
        ValueError: COMPUTE_BACKBONE_SHAPE is a string left by :meth:`Config.from_dict`.
    """
    custom = config.COMPUTE_BACKBONE_SHAPE
    if custom is not None:
        if not callable(custom):
            raise ValueError(
                f"config.COMPUTE_BACKBONE_SHAPE is {custom!r}, not a callable (callables cannot be "
                "restored from JSON; pass compute_backbone_shape= to Config.from_dict/load)")
        return np.asarray(custom(image_shape))
    return np.array([[int(math.ceil(image_shape[0] / stride)), int(math.ceil(image_shape[1] / stride))]
                     for stride in config.BACKBONE_STRIDES])


_ANCHOR_CACHE = {}
_ANCHOR_CACHE_SIZE = 32


def _anchor_key(config, image_shape):
    """Cache key: everything the anchors depend on."""
    shapes = compute_backbone_shapes(config, image_shape)
    return (tuple(int(v) for v in image_shape[:2]),
            tuple(map(tuple, shapes.tolist())),
            tuple(np.ravel(config.RPN_ANCHOR_SCALES).tolist()),
            tuple(np.ravel(config.RPN_ANCHOR_RATIOS).tolist()),
            tuple(np.ravel(config.BACKBONE_STRIDES).tolist()),
            int(config.RPN_ANCHOR_STRIDE)), shapes


def _cached_anchors(config, image_shape):
    """(pixel anchors, normalised anchors) for ``image_shape``, computed once per key."""
    key, shapes = _anchor_key(config, image_shape)
    if key not in _ANCHOR_CACHE:
        if len(_ANCHOR_CACHE) >= _ANCHOR_CACHE_SIZE:  # many image sizes ("none"/"pad64" modes)
            _ANCHOR_CACHE.clear()
        pixels = utils.generate_pyramid_anchors(
            config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS, shapes,
            config.BACKBONE_STRIDES, config.RPN_ANCHOR_STRIDE)
        normalized = utils.norm_boxes(pixels, image_shape[:2]).astype(np.float32)
        pixels.setflags(write=False)
        normalized.setflags(write=False)
        _ANCHOR_CACHE[key] = (pixels, normalized)
    return _ANCHOR_CACHE[key]


def get_anchors(config, image_shape):
    """Normalised float32 anchors ``[N, (y1, x1, y2, x2)]`` for ``image_shape`` (cached, read-only)."""
    return _cached_anchors(config, image_shape)[1]


def get_anchors_pixels(config, image_shape):
    """Pixel anchors ``[N, (y1, x1, y2, x2)]`` for ``image_shape`` (cached, read-only)."""
    return _cached_anchors(config, image_shape)[0]


# ---------------------------------------------------------------------------
# Ground truth for training
# ---------------------------------------------------------------------------

def _as_instance_masks(mask, image_shape, image_id):
    """Validate masks ``[H, W, N]`` against the image; empty inputs become ``[H, W, 0]``."""
    mask = np.asarray(mask)
    if mask.size == 0 and (mask.ndim != 3 or mask.shape[-1] == 0):
        return np.zeros(tuple(image_shape[:2]) + (0,), dtype=bool)
    if mask.ndim == 2:
        mask = mask[..., None]
    if mask.ndim != 3 or mask.shape[:2] != tuple(image_shape[:2]):
        raise ValueError(
            f"image {image_id}: masks of shape {mask.shape} do not match the image of shape "
            f"{tuple(image_shape)} (expected [H, W, instances])")
    return mask


def apply_augmentation(augmentation, image, mask, rng=None):
    """Run an albumentations transform on the image and its instance masks.

    ``augmentation(image=image, masks=[m0, m1, ...])`` is called: geometric
    transforms move image and masks together, pixel-level ones touch only the
    image. With ``rng``, the transform's seed is drawn from it first (if it has
    ``set_random_seed``), which makes the augmentation reproducible.

    Raises:
        ValueError: the transform changed the image shape or the mask count.
    """
    if rng is not None and hasattr(augmentation, "set_random_seed"):
        augmentation.set_random_seed(int(rng.integers(0, 2 ** 31 - 1)))
    masks = [np.ascontiguousarray(mask[:, :, i]).astype(np.uint8) for i in range(mask.shape[-1])]
    result = augmentation(image=image, masks=masks)
    new_image = np.asarray(result["image"])
    if new_image.shape != image.shape:
        raise ValueError(
            f"augmentation changed the image shape from {image.shape} to {new_image.shape}; "
            "only shape-preserving augmentations are supported (resizing is done by the config)")
    new_masks = result.get("masks", masks)
    if len(new_masks) != len(masks):
        raise ValueError(f"augmentation returned {len(new_masks)} masks for {len(masks)} instances")
    if len(new_masks):
        new_mask = np.stack([np.asarray(m) for m in new_masks], axis=-1).astype(bool)
    else:
        new_mask = np.zeros(image.shape[:2] + (0,), dtype=bool)
    if new_mask.shape[:2] != image.shape[:2]:
        raise ValueError(
            f"augmentation changed the mask shape from {image.shape[:2]} to {new_mask.shape[:2]}")
    return new_image.astype(image.dtype, copy=False), new_mask


def prepare_gt(image, mask, class_ids, config, image_id=0, augmentation=None, rng=None,
               source_class_ids=None):
    """Resize, augment and package one image and its instances for training.

    Args:
        image: ``[H, W, C]`` image.
        mask: ``[H, W, N]`` instance masks.
        class_ids: ``[N]`` class ids; negative ids mark crowd regions and are kept.
        config: a :class:`Config`.
        image_id: stored in the image meta.
        augmentation: optional albumentations transform (shape-preserving).
        rng: numpy Generator for the random crop and the augmentation seed.
        source_class_ids: classes of the image's source (active classes); all
            NUM_CLASSES classes are active if None.

    Returns:
        image: resized image, image_meta: ``[IMAGE_META_SIZE]``,
        class_ids: ``[N']`` int32, bbox: ``[N', 4]`` int32 pixel boxes,
        mask: ``[MINI_MASK_SHAPE..., N']`` (or full size) bool masks, where
        instances whose mask became empty are dropped.
    """
    image = np.asarray(image)
    original_shape = image.shape
    mask = _as_instance_masks(mask, original_shape, image_id)
    class_ids = np.asarray(class_ids, dtype=np.int32).reshape(-1)
    if class_ids.shape[0] != mask.shape[-1]:
        raise ValueError(
            f"image {image_id}: {class_ids.shape[0]} class ids for {mask.shape[-1]} masks")

    image, window, scale, padding, crop = resize_for_config(image, config, rng=rng)
    mask = utils.resize_mask(mask, scale, padding, crop)

    if augmentation is not None:
        image, mask = apply_augmentation(augmentation, image, mask, rng=rng)

    mask = mask.astype(bool)
    keep = np.sum(mask, axis=(0, 1)) > 0
    mask = mask[:, :, keep]
    class_ids = class_ids[keep]

    bbox = utils.extract_bboxes(mask)

    active_class_ids = np.zeros([config.NUM_CLASSES], dtype=np.int32)
    if source_class_ids is None:
        active_class_ids[:] = 1
    else:
        active_class_ids[np.asarray(source_class_ids, dtype=np.int64)] = 1

    if config.USE_MINI_MASK:
        mask = utils.minimize_mask(bbox, mask, config.MINI_MASK_SHAPE)

    image_meta = compose_image_meta(image_id, original_shape, image.shape, window, scale,
                                    active_class_ids)
    return image, image_meta, class_ids, bbox, mask


def load_image_gt(dataset, config, image_id, augmentation=None, rng=None):
    """Load image ``image_id`` of ``dataset`` with its masks and run :func:`prepare_gt`.

    Active classes are the classes of the image's source.
    """
    image = dataset.load_image(image_id)
    mask, class_ids = dataset.load_mask(image_id)
    source = dataset.image_info[image_id]["source"]
    source_class_ids = dataset.source_class_ids.get(source)
    return prepare_gt(image, mask, class_ids, config, image_id=image_id,
                      augmentation=augmentation, rng=rng, source_class_ids=source_class_ids)


def build_rpn_targets(image_shape, anchors, gt_class_ids, gt_boxes, config, rng=None):
    """RPN training targets for one image (matterport's rules).

    * anchors with IoU >= 0.7 to a (non-crowd) GT box, and each GT box's best
      anchor(s), are positive (1);
    * anchors with IoU < 0.3 to every GT box are negative (-1), unless they
      overlap a crowd box (class id < 0) with IoU >= 0.001;
    * the rest are neutral (0);
    * at most half of RPN_TRAIN_ANCHORS_PER_IMAGE are positive and positives
      plus negatives are at most RPN_TRAIN_ANCHORS_PER_IMAGE (random subsampling
      with ``rng``).

    Args:
        image_shape: unused (kept for matterport's signature).
        anchors: ``[N, (y1, x1, y2, x2)]`` pixel anchors.
        gt_class_ids: ``[G]``; negative ids are crowds.
        gt_boxes: ``[G, (y1, x1, y2, x2)]`` pixel boxes.

    Returns:
        rpn_match: ``[N]`` int32 in {1, -1, 0}.
        rpn_bbox: ``[RPN_TRAIN_ANCHORS_PER_IMAGE, 4]`` float32 deltas of the
            positive anchors (in anchor order) divided by RPN_BBOX_STD_DEV,
            zero-padded.

    Unlike matterport, a GT box that overlaps no anchor at all does not make
    every zero-IoU anchor positive.
    """
    rng = np.random.default_rng() if rng is None else rng
    anchors = np.asarray(anchors)
    gt_class_ids = np.asarray(gt_class_ids).reshape(-1)
    gt_boxes = np.asarray(gt_boxes).reshape(-1, 4)
    train_anchors = config.RPN_TRAIN_ANCHORS_PER_IMAGE
    rpn_match = np.zeros([anchors.shape[0]], dtype=np.int32)
    rpn_bbox = np.zeros((train_anchors, 4), dtype=np.float32)

    crowd = gt_class_ids < 0
    if np.any(crowd):
        crowd_iou = utils.compute_overlaps(anchors, gt_boxes[crowd]).max(axis=1)
        no_crowd = crowd_iou < RPN_CROWD_IOU
        gt_boxes = gt_boxes[~crowd]
        gt_class_ids = gt_class_ids[~crowd]
    else:
        no_crowd = np.ones([anchors.shape[0]], dtype=bool)

    if gt_boxes.shape[0] > 0:
        overlaps = utils.compute_overlaps(anchors, gt_boxes)
        anchor_iou_argmax = np.argmax(overlaps, axis=1)
        anchor_iou_max = overlaps[np.arange(anchors.shape[0]), anchor_iou_argmax]
        rpn_match[(anchor_iou_max < RPN_NEGATIVE_IOU) & no_crowd] = -1
        # the best anchor(s) of every GT box are positive, whatever their IoU
        gt_best = overlaps.max(axis=0)
        best_anchor, _ = np.nonzero((overlaps == gt_best[None, :]) & (gt_best[None, :] > 0))
        rpn_match[best_anchor] = 1
        rpn_match[anchor_iou_max >= RPN_POSITIVE_IOU] = 1
    else:
        anchor_iou_argmax = np.zeros([anchors.shape[0]], dtype=np.int64)
        rpn_match[no_crowd] = -1

    positives = np.where(rpn_match == 1)[0]
    extra = len(positives) - train_anchors // 2
    if extra > 0:
        rpn_match[rng.choice(positives, extra, replace=False)] = 0
    negatives = np.where(rpn_match == -1)[0]
    extra = len(negatives) - (train_anchors - np.sum(rpn_match == 1))
    if extra > 0:
        rpn_match[rng.choice(negatives, extra, replace=False)] = 0

    positives = np.where(rpn_match == 1)[0]
    if positives.size:
        deltas = utils.box_refinement(anchors[positives], gt_boxes[anchor_iou_argmax[positives]])
        deltas = deltas / np.asarray(config.RPN_BBOX_STD_DEV, dtype=np.float32)
        rpn_bbox[:positives.size] = deltas
    return rpn_match, rpn_bbox


# ---------------------------------------------------------------------------
# Inference output
# ---------------------------------------------------------------------------

def unmold_detections(detections, masks, original_image_shape, image_shape, window):
    """Convert one image's detections to original-image boxes and full-size masks.

    Args:
        detections: ``[N, (y1, x1, y2, x2, class_id, score)]``, boxes normalised
            to the molded image; rows with class_id 0 are padding and ignored.
        masks: ``[N, mh, mw]`` float masks, one per detection (``[N, mh, mw, C]``
            is accepted too: the channel of each detection's class is used).
        original_image_shape: ``[H, W, C]`` before resizing.
        image_shape: ``[H, W, C]`` of the molded image.
        window: ``(y1, x1, y2, x2)`` pixels of the image inside the molded image.

    Returns:
        boxes ``[n, 4]`` int32 original pixels, class_ids ``[n]`` int32,
        scores ``[n]`` float32, masks ``[H, W, n]`` bool; zero-area boxes removed.
    """
    detections = np.asarray(detections)
    masks = np.asarray(masks)
    valid = np.where(detections[:, 4] != 0)[0] if detections.size else np.zeros([0], dtype=np.int64)
    boxes = detections[valid, :4].astype(np.float64)
    class_ids = detections[valid, 4].astype(np.int32)
    scores = detections[valid, 5].astype(np.float32)
    masks = masks[valid]
    if masks.ndim == 4:
        if masks.shape[-1] == 1:
            masks = masks[..., 0]
        else:
            masks = masks[np.arange(len(valid)), :, :, class_ids]

    # normalised window in the molded image -> boxes relative to the window
    wy1, wx1, wy2, wx2 = utils.norm_boxes(np.asarray(window, dtype=np.float64)[None], image_shape[:2])[0]
    shift = np.array([wy1, wx1, wy1, wx1], dtype=np.float64)
    window_h, window_w = wy2 - wy1, wx2 - wx1
    scale = np.array([window_h, window_w, window_h, window_w], dtype=np.float64)
    boxes = utils.denorm_boxes((boxes - shift) / scale, original_image_shape[:2])

    keep = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 0
    boxes, class_ids, scores, masks = boxes[keep], class_ids[keep], scores[keep], masks[keep]

    full_masks = [utils.unmold_mask(masks[i], boxes[i], original_image_shape) for i in range(len(boxes))]
    if full_masks:
        full_masks = np.stack(full_masks, axis=-1)
    else:
        full_masks = np.zeros(tuple(original_image_shape[:2]) + (0,), dtype=bool)
    return boxes, class_ids, scores, full_masks
