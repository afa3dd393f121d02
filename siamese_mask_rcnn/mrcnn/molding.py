"""Molding images into network inputs and unmolding the network's detections (no TensorFlow).

* :func:`mold_image` / :func:`unmold_image`: subtract / add back the mean pixel;
* :func:`mold_inputs`: resize, pad and normalise a batch of images, with their image metas;
* :func:`unmold_detections`: the one conversion of padded detection rows and mask-head
  outputs back to original-image boxes and full-size masks (used by ``MaskRCNN`` and the
  Siamese model alike).
"""
import numpy as np

from .boxes import denorm_boxes, norm_boxes
from .image_meta import compose_image_meta
from .masks import unmold_masks
from .resizing import resize_image


def mold_image(images, config):
    """Subtract the mean pixel: uint8 RGB image(s) -> float32 network input."""
    return np.asarray(images, dtype=np.float32) - np.asarray(config.MEAN_PIXEL, dtype=np.float32)


def unmold_image(normalized_images, config):
    """Inverse of :func:`mold_image`: add the mean pixel back, return uint8."""
    images = np.asarray(normalized_images, dtype=np.float32) + np.asarray(config.MEAN_PIXEL, dtype=np.float32)
    return np.clip(np.around(images), 0, 255).astype(np.uint8)


def resize_for_config(image, config, rng=None):
    """:func:`.resizing.resize_image` with the config's IMAGE_* resize settings."""
    return resize_image(
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

    boxes = unmold_boxes(boxes, original_image_shape, image_shape, window)
    keep = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 0
    boxes, class_ids, scores, masks = boxes[keep], class_ids[keep], scores[keep], masks[keep]

    return boxes, class_ids, scores, unmold_masks(masks, boxes, original_image_shape)


def unmold_boxes(boxes, original_image_shape, image_shape, window):
    """Boxes ``[N, (y1, x1, y2, x2)]`` normalised to the molded image → int32 pixel boxes of
    the original image (``original_image_shape`` ``[H, W, ...]``; ``image_shape`` and ``window``
    as for :func:`unmold_detections`). Boxes outside the window are not clipped."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    # normalised window in the molded image -> boxes relative to the window
    wy1, wx1, wy2, wx2 = norm_boxes(np.asarray(window, dtype=np.float64)[None], image_shape[:2])[0]
    shift = np.array([wy1, wx1, wy1, wx1], dtype=np.float64)
    window_h, window_w = wy2 - wy1, wx2 - wx1
    if window_h > 0 and window_w > 0:
        scale = np.array([window_h, window_w, window_h, window_w], dtype=np.float64)
        return denorm_boxes((boxes - shift) / scale, original_image_shape[:2])
    # a 1-pixel-thin window (extreme aspect ratio): map through pixel coordinates
    return _window_pixels_to_original(boxes, image_shape, window, original_image_shape)


def _window_pixels_to_original(boxes, image_shape, window, original_image_shape):
    """Normalised boxes of the molded image → int32 pixel boxes of the original image, by
    the window's pixel extent and the original size (used when the window is 1 px thin)."""
    height, width = image_shape[:2]
    orig_h, orig_w = original_image_shape[:2]
    y1, x1, y2, x2 = (float(v) for v in window)
    pixels = boxes * np.array([height - 1, width - 1, height - 1, width - 1]) + np.array([0, 0, 1, 1])
    shift = np.array([y1, x1, y1, x1])
    scale = np.array([(y2 - y1) / orig_h, (x2 - x1) / orig_w] * 2)
    out = np.around((pixels - shift) / scale)
    out = np.clip(out, 0, np.array([orig_h, orig_w, orig_h, orig_w]))
    return out.astype(np.int32)
