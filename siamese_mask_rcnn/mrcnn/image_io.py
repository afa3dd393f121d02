"""Reading images from disk into uint8 RGB arrays (no TensorFlow).

:func:`read_image` and :func:`to_uint8_rgb` turn any common image file or array layout
(grey, grey+alpha, RGB, RGBA; bool, integer or float data) into a uint8 ``[H, W, 3]`` RGB
array; :class:`ImageLoadError` names the offending file.
"""
import os
import warnings

import numpy as np


class ImageLoadError(OSError):
    """An image file is missing, unreadable or not a supported image.

    ``path`` holds the offending file; the message always names it.
    """

    def __init__(self, path, reason=""):
        self.path = os.fspath(path) if path is not None else None
        self.reason = reason
        message = f"Cannot load image '{self.path}'" if self.path is not None else "Not an image"
        if reason:
            message += f": {reason}"
        super().__init__(message)

    def __reduce__(self):
        # keep (path, reason) when the error crosses process boundaries (data workers)
        return type(self), (self.path, self.reason)


def to_uint8_rgb(image, path=None):
    """Convert an image array of any common layout to uint8 ``[H, W, 3]`` RGB.

    Grey images (``[H, W]`` or ``[H, W, 1]``) are repeated to three channels,
    grey+alpha keeps the grey channel and RGBA drops the alpha channel. Non-uint8
    data is rescaled: bool to {0, 255}, other integer types by their range,
    floats in [0, 1] by 255 and other floats clipped to [0, 255].

    Raises:
        ImageLoadError: ``image`` is not an array (None, a number, a string: the message
            names it), does not look like an image, has NaN or infinite values,
            or a data type that is not bool, integer or float (``path`` named).
    """
    if image is None or np.ndim(image) == 0:  # None, a number, a string: name what was given
        shown = repr(image) if len(repr(image)) <= 60 else repr(image)[:57] + "..."
        raise ImageLoadError(path, f"expected an image array [H, W] or [H, W, C], got "
                                   f"{type(image).__name__} {shown}")
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    elif image.ndim == 3 and image.shape[-1] == 2:
        image = image[..., 0]
    elif image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3) or image.size == 0:
        raise ImageLoadError(path, f"unsupported image array of shape {image.shape}")
    try:
        image = _to_uint8(image)
    except ValueError as exc:
        raise ImageLoadError(path, f"{exc} in an image array of shape {image.shape}") from None
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
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"unsupported image data type {image.dtype}")
    image = image.astype(np.float64)
    bad = int(np.sum(~np.isfinite(image)))
    if bad:
        raise ValueError(f"{bad} non-finite (NaN or infinite) values")
    if image.max() <= 1.0:
        image = image * 255.0
    return np.clip(image, 0, 255).round().astype(np.uint8)


#: PIL modes holding more than 8 bits per pixel, and the value that maps to 255.
_WIDE_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535}


def pil_to_rgb(image, path=None):
    """A PIL image as uint8 ``[H, W, 3]`` RGB, as displayed (EXIF orientation applied).

    8-bit modes (``1``, ``L``, ``LA``, ``P``, ``PA``, ``RGB``, ``RGBA``, ``CMYK``,
    ``YCbCr``, ``HSV``, ...) use PIL's own conversion to RGB (palettes and colour spaces
    applied, alpha dropped), ``LAB`` PIL's CIELAB → sRGB colour transform; 16-bit and 32-bit integer greys (``I;16*``, ``I``) are
    scaled from 0..65535 to 0..255 (values outside are clipped), float greys (``F``) as by
    :func:`to_uint8_rgb` (``[0, 1]`` times 255, else clipped to ``[0, 255]``).

    Raises:
        ImageLoadError: a mode PIL cannot convert (``path`` named).
    """
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in _WIDE_MODES:
        grey = np.asarray(image, dtype=np.float64)
        grey = np.clip(grey, 0, _WIDE_MODES[mode]) * (255.0 / _WIDE_MODES[mode])
        return to_uint8_rgb(grey.round().astype(np.uint8), path=path)
    if mode == "F":
        return to_uint8_rgb(np.asarray(image, dtype=np.float32), path=path)
    if mode == "LAB":  # PIL converts CIELAB only through a colour transform
        from PIL import ImageCms
        transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"),
                                            "LAB", "RGB")
        return to_uint8_rgb(np.asarray(ImageCms.applyTransform(image, transform)), path=path)
    if mode != "RGB":
        try:
            image = image.convert("RGB")
        except (ValueError, OSError) as exc:
            raise ImageLoadError(path, f"image mode {mode!r} cannot be converted to RGB ({exc})") from exc
    return to_uint8_rgb(np.asarray(image), path=path)


def read_image(path):
    """Read an image file into a uint8 ``[H, W, 3]`` RGB array, as displayed.

    The file's EXIF orientation (e.g. 6: "rotate 90° clockwise to display") is applied, so
    boxes and masks are in the frame every image viewer shows. Every mode PIL can open is
    converted as :func:`pil_to_rgb` describes; multi-frame files give their first frame.

    Raises:
        ImageLoadError: missing, unreadable or corrupt file (the path is named).
    """
    from PIL import Image

    if not os.path.isfile(path):
        raise ImageLoadError(path, "no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as handle:
                handle.load()
                return pil_to_rgb(handle, path=path)
    except ImageLoadError:
        raise
    except Exception as exc:  # decoders raise many different types
        raise ImageLoadError(path, f"{type(exc).__name__}: {exc}") from exc
