"""The image meta vector: its layout, composed and parsed in numpy and in the graph.

One image's attributes travel through the model as a 1-D float vector::

    [image_id, original_image_shape (H, W, C), image_shape (H, W, C),
     window (y1, x1, y2, x2) in pixels of the molded image, scale, active_class_ids (NUM_CLASSES)]

:data:`IMAGE_META_LAYOUT` is the single definition of that layout: :func:`compose_image_meta`
and :func:`parse_image_meta` (numpy) and :func:`parse_image_meta_graph` (tensors inside a
``Layer.call``) read it, and ``Config.IMAGE_META_SIZE`` is :func:`image_meta_size`.
"""
import numpy as np


#: Layout of an image meta vector: name -> (start, length); active_class_ids follow.
IMAGE_META_LAYOUT = {
    "image_id": (0, 1),
    "original_image_shape": (1, 3),
    "image_shape": (4, 3),
    "window": (7, 4),
    "scale": (11, 1),
}
ACTIVE_CLASS_IDS_START = 12


def image_meta_size(num_classes):
    """Length of an image meta vector for ``num_classes`` classes (background included)."""
    return ACTIVE_CLASS_IDS_START + int(num_classes)


def _slice_meta(meta):
    """``{name: meta[..., field]}`` for every field of the layout; works on numpy arrays and on
    tensors (plain slicing, no TensorFlow import)."""
    parsed = {}
    for name, (start, length) in IMAGE_META_LAYOUT.items():
        parsed[name] = meta[..., start] if length == 1 else meta[..., start:start + length]
    parsed["active_class_ids"] = meta[..., ACTIVE_CLASS_IDS_START:]
    return parsed


def compose_image_meta(image_id, original_image_shape, image_shape, window, scale, active_class_ids):
    """Pack the attributes of one image into a 1-D float64 array of :func:`image_meta_size` values.

    Args:
        image_id: the dataset's image id.
        original_image_shape, image_shape: ``(H, W, C)`` before and after resizing (pixels).
        window: ``(y1, x1, y2, x2)`` of the image inside the molded (padded) image, pixels.
        scale: the resize factor.
        active_class_ids: ``[NUM_CLASSES]`` flags of the classes of the image's source.

    Raises:
        ValueError: an image shape does not have three entries.
    """
    if len(original_image_shape) != 3 or len(image_shape) != 3:
        raise ValueError(
            f"compose_image_meta: image shapes must have 3 entries (H, W, C), got "
            f"{tuple(original_image_shape)} and {tuple(image_shape)}")
    meta = np.zeros([image_meta_size(len(active_class_ids))], dtype=np.float64)
    values = {"image_id": [image_id], "original_image_shape": original_image_shape,
              "image_shape": image_shape, "window": window, "scale": [scale]}
    for name, (start, length) in IMAGE_META_LAYOUT.items():
        meta[start:start + length] = np.asarray(values[name], dtype=np.float64).reshape(-1)[:length]
    meta[ACTIVE_CLASS_IDS_START:] = np.asarray(active_class_ids, dtype=np.float64)
    return meta


def parse_image_meta(meta):
    """Unpack image meta vector(s) (``[META]`` or ``[batch, META]``, numpy) into a dict of arrays.

    Keys: image_id, original_image_shape, image_shape, window (pixels), scale (float32),
    active_class_ids (all but scale are int32).
    """
    parsed = _slice_meta(np.asarray(meta))
    return {name: value.astype(np.float32 if name == "scale" else np.int32)
            for name, value in parsed.items()}


def parse_image_meta_graph(meta):
    """Graph twin of :func:`parse_image_meta`: split a float tensor ``[batch, META]`` into a
    dict of float tensors with the same keys (call it inside a ``Layer.call``)."""
    return _slice_meta(meta)
