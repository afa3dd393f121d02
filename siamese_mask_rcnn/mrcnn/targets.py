"""Training targets in numpy: ground truth of one image and its RPN targets (no TensorFlow).

* :func:`prepare_gt` / :func:`load_image_gt`: resize (and augment) an image with its
  instances, and compose its image meta;
* :func:`build_rpn_targets`: anchor labels and box deltas for the RPN (the Mask R-CNN
  RPN of the paper's §4.1 and Appendix 1.3, with matterport's labelling rules).

The ROI-head targets are sampled inside the graph by ``layers.DetectionTargetLayer``.
Random choices take a numpy ``Generator`` (``rng``).
"""
import logging

import numpy as np

from .anchors import get_anchors_pixels
from .boxes import box_refinement, compute_overlaps, extract_bboxes
from .image_meta import compose_image_meta
from .masks import minimize_mask
from .molding import mold_image, resize_for_config
from .resizing import resize_mask


# Matterport's RPN anchor labelling thresholds.
RPN_NEGATIVE_IOU = 0.3
RPN_POSITIVE_IOU = 0.7
RPN_CROWD_IOU = 0.001

log = logging.getLogger(__name__)


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
               source_class_ids=None, use_mini_mask=None):
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
        use_mini_mask: return mini-masks (``MINI_MASK_SHAPE``) instead of full-size masks;
            None means ``config.USE_MINI_MASK`` (what the training graph expects).

    Returns:
        image: resized image, image_meta: ``[IMAGE_META_SIZE]``,
        class_ids: ``[N']`` int32, bbox: ``[N', 4]`` int32 pixel boxes (resized image),
        mask: ``[MINI_MASK_SHAPE..., N']`` or ``[H, W, N']`` bool masks, where
        instances whose mask became empty are dropped.

    Raises:
        ValueError: masks and image or masks and class ids do not match (image id named),
            or the augmentation changed the image shape.
    """
    image = np.asarray(image)
    original_shape = image.shape
    mask = _as_instance_masks(mask, original_shape, image_id)
    class_ids = np.asarray(class_ids, dtype=np.int32).reshape(-1)
    if class_ids.shape[0] != mask.shape[-1]:
        raise ValueError(
            f"image {image_id}: {class_ids.shape[0]} class ids for {mask.shape[-1]} masks")

    image, window, scale, padding, crop = resize_for_config(image, config, rng=rng)
    mask = resize_mask(mask, scale, padding, crop)

    if augmentation is not None:
        image, mask = apply_augmentation(augmentation, image, mask, rng=rng)

    mask = mask.astype(bool)
    keep = np.sum(mask, axis=(0, 1)) > 0
    mask = mask[:, :, keep]
    class_ids = class_ids[keep]

    bbox = extract_bboxes(mask)

    active_class_ids = np.zeros([config.NUM_CLASSES], dtype=np.int32)
    if source_class_ids is None:
        active_class_ids[:] = 1
    else:
        active_class_ids[np.asarray(source_class_ids, dtype=np.int64)] = 1

    if config.USE_MINI_MASK if use_mini_mask is None else use_mini_mask:
        mask = minimize_mask(bbox, mask, config.MINI_MASK_SHAPE)

    image_meta = compose_image_meta(image_id, original_shape, image.shape, window, scale,
                                    active_class_ids)
    return image, image_meta, class_ids, bbox, mask


def load_image_gt(dataset, config, image_id, augment=False, augmentation=None, use_mini_mask=False,
                  rng=None):
    """Load image ``image_id`` of ``dataset`` with its instances, resized for ``config``.

    matterport's signature and defaults: ``use_mini_mask=False`` returns full-size masks of
    the resized image (what ``utils.compute_ap`` needs next to ``detect``'s masks);
    ``use_mini_mask=True`` returns ``MINI_MASK_SHAPE`` crops as the training graph uses
    with ``USE_MINI_MASK``. ``augment=True`` (deprecated, as in matterport) flips the image
    left-right with probability 0.5; prefer ``augmentation`` (an albumentations transform).
    Active classes are the classes of the image's source.

    Returns:
        ``image, image_meta, class_ids, bbox, mask`` as :func:`prepare_gt`.

    Raises:
        ImageLoadError: the image file cannot be read; ValueError: see :func:`prepare_gt`.
    """
    image = dataset.load_image(image_id)
    mask, class_ids = dataset.load_mask(image_id)
    if augment:
        log.warning("'augment' is deprecated. Use 'augmentation' instead.")
        rng = np.random.default_rng() if rng is None else rng
        if rng.random() < 0.5:
            image = np.fliplr(image)
            mask = np.fliplr(mask)
    source = dataset.image_info[image_id]["source"]
    source_class_ids = dataset.source_class_ids.get(source)
    return prepare_gt(image, mask, class_ids, config, image_id=image_id,
                      augmentation=augmentation, rng=rng, source_class_ids=source_class_ids,
                      use_mini_mask=use_mini_mask)


_GT_OVERFLOW_WARNED = set()


def describe_image(dataset, image_id):
    """How messages name internal image ``image_id`` of ``dataset``: ``"image <id in the
    data's own annotation file> (<path>)"`` when the image info has them, else
    ``"image <image_id>"``."""
    info = dataset.image_info[image_id] if 0 <= image_id < len(dataset.image_info) else {}
    text = f"image {info.get('id', image_id)}"
    return f"{text} ({info['path']})" if info.get("path") else text


def keep_gt_instances(class_ids, n, rng, image_id, image_name=None):
    """Indices (sorted) of the ``n`` = ``MAX_GT_INSTANCES`` GT instances kept when an image
    has more.

    Target instances (positive class ids: for the Siamese model, the reference's category)
    come first, a random subset with ``rng`` if there are too many, then crowd regions; the
    rest are dropped and count as background. Logs a warning once per image id with the
    counts, naming the image as ``image_name`` (see :func:`describe_image`; default
    ``"image <image_id>"``).
    """
    class_ids = np.asarray(class_ids)
    positive = np.flatnonzero(class_ids > 0)
    crowd = np.flatnonzero(class_ids <= 0)
    keep = np.concatenate([rng.permutation(positive), rng.permutation(crowd)])[:n].astype(int)
    if image_id not in _GT_OVERFLOW_WARNED:
        _GT_OVERFLOW_WARNED.add(image_id)
        kept_targets = min(len(positive), n)
        log.warning("%s has %d ground-truth instances (%d target, %d crowd), more than "
                    "MAX_GT_INSTANCES=%d: %d target and %d crowd instance(s) dropped (trained as "
                    "background); raise MAX_GT_INSTANCES to keep them",
                    image_name or f"image {image_id}", len(class_ids),
                    len(positive), len(crowd), n, len(positive) - kept_targets,
                    len(crowd) - (n - kept_targets))
    return np.sort(keep)


def pack_training_inputs(config, image, image_meta, class_ids, boxes, masks, rng, extra=(),
                         image_name=None):
    """The training inputs of one prepared image, in the model's input order.

    RPN targets are built on the (cached) pixel anchors of ``image``; at most
    ``MAX_GT_INSTANCES`` instances are kept (see :func:`keep_gt_instances`: target instances
    first, a warning once per image when some are dropped) and the GT arrays are
    zero-padded to that length. ``image_name`` names the image in that warning
    (:func:`describe_image`).

    Returns:
        ``[molded image, image_meta, *extra, rpn_match [A, 1], rpn_bbox
        [RPN_TRAIN_ANCHORS_PER_IMAGE, 4], gt_class_ids [G], gt_boxes [G, 4] (pixels),
        gt_masks [h, w, G]]`` with ``G = MAX_GT_INSTANCES``.
    """
    anchors = get_anchors_pixels(config, image.shape)
    rpn_match, rpn_bbox = build_rpn_targets(image.shape, anchors, class_ids, boxes, config, rng=rng)
    n = min(len(class_ids), config.MAX_GT_INSTANCES)
    if len(class_ids) > n:
        keep = keep_gt_instances(class_ids, n, rng, int(image_meta[0]), image_name)
        class_ids, boxes, masks = class_ids[keep], boxes[keep], masks[..., keep]
    gt_ids = np.zeros([config.MAX_GT_INSTANCES], np.int32)
    gt_boxes = np.zeros([config.MAX_GT_INSTANCES, 4], np.float32)
    gt_masks = np.zeros(list(masks.shape[:2]) + [config.MAX_GT_INSTANCES], bool)
    gt_ids[:n], gt_boxes[:n], gt_masks[..., :n] = class_ids[:n], boxes[:n], masks[..., :n]
    return [mold_image(image, config), image_meta] + list(extra) + [
        rpn_match[:, None], rpn_bbox, gt_ids, gt_boxes, gt_masks]


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
        crowd_iou = compute_overlaps(anchors, gt_boxes[crowd]).max(axis=1)
        no_crowd = crowd_iou < RPN_CROWD_IOU
        gt_boxes = gt_boxes[~crowd]
        gt_class_ids = gt_class_ids[~crowd]
    else:
        no_crowd = np.ones([anchors.shape[0]], dtype=bool)

    if gt_boxes.shape[0] > 0:
        overlaps = compute_overlaps(anchors, gt_boxes)
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
        deltas = box_refinement(anchors[positives], gt_boxes[anchor_iou_argmax[positives]])
        deltas = deltas / np.asarray(config.RPN_BBOX_STD_DEV, dtype=np.float32)
        rpn_bbox[:positives.size] = deltas
    return rpn_match, rpn_bbox
