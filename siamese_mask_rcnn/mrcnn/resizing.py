"""Resizing, padding and cropping of images and their instance masks (no TensorFlow).

:func:`resize_image` implements matterport's resize modes; :func:`resize_mask` applies the
same scale, crop and padding to ``[H, W, N]`` masks.
"""
import numpy as np
import skimage.transform

from .config import RESIZE_MODES


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


def scaled_size(h, w, scale):
    """``(round(h * scale), round(w * scale))``, at least 1 pixel per side: an extreme aspect
    ratio (a 2000x3 image scaled to fit 512) keeps a 1-pixel side instead of vanishing."""
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


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

    Raises:
        ValueError: an unknown ``mode``, a mode without the dimension it needs (``square``: ``max_dim``; ``crop``: ``min_dim``), ``pad64`` with ``min_dim`` not a multiple of 64, or ``crop`` on an image smaller than the crop.
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
    if mode not in RESIZE_MODES:
        raise ValueError(f"Unknown image resize mode '{mode}' (use {', '.join(RESIZE_MODES[:-1])} or "
                         f"{RESIZE_MODES[-1]})")

    if min_dim:
        scale = max(1, min_dim / min(h, w))
    if min_scale and scale < min_scale:
        scale = min_scale
    if max_dim and mode == "square":
        image_max = max(h, w)
        if round(image_max * scale) > max_dim:
            scale = max_dim / image_max

    if scale != 1:
        resized = resize(image, scaled_size(h, w, scale), preserve_range=True)
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

    Nearest-neighbour scaling to :func:`scaled_size` (the size the image got,
    at least 1 pixel per side), then the crop (if any) and the padding. dtype is preserved.
    """
    mask = np.asarray(mask)
    h, w = mask.shape[:2]
    if scale != 1:
        new_h, new_w = scaled_size(h, w, scale)
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
