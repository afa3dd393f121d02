"""Anchors: one feature map, the whole pyramid, the backbone shapes, and a cache (no TensorFlow).

Anchors are ``[N, (y1, x1, y2, x2)]``, in pixels or normalised (matterport convention, see
:func:`.boxes.norm_boxes`). Their order is the order of the RPN outputs: level by level,
then feature-map positions row-major, then (ratio, scale) ratio-major. Defaults: 3 ratios
(0.5, 1, 2) at every position of P2..P6 with one scale per level (paper, Appendix 1.3).
"""
import math

import numpy as np

from .boxes import norm_boxes


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

    Raises:
        ValueError: ``scales``, ``feature_shapes`` and ``feature_strides`` differ in length.
    """
    if not (len(scales) == len(feature_shapes) == len(feature_strides)):
        raise ValueError(
            f"generate_pyramid_anchors: {len(scales)} scales, {len(feature_shapes)} feature shapes "
            f"and {len(feature_strides)} strides must be equally many")
    anchors = [generate_anchors(scales[i], ratios, feature_shapes[i], feature_strides[i], anchor_stride)
               for i in range(len(scales))]
    return np.concatenate(anchors, axis=0)


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
        pixels = generate_pyramid_anchors(
            config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS, shapes,
            config.BACKBONE_STRIDES, config.RPN_ANCHOR_STRIDE)
        normalized = norm_boxes(pixels, image_shape[:2]).astype(np.float32)
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
