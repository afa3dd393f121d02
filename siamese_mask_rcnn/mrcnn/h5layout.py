"""Which weights layout an HDF5 file holds, read with h5py alone (no TensorFlow import).

Used by :mod:`.weights` (which loads the arrays) and by checks that must answer before
TensorFlow starts (``siamese-mrcnn predict``). Layouts:

* ``"layer_names"``: the legacy Keras-2 weights file (root attribute ``layer_names``, as
  ``save_weights`` wrote in Keras 2, matterport and the official Siamese release);
* ``"model_weights"``: a legacy full-model file (the same under the group ``model_weights``);
* ``"keras3"``: a Keras 3 native ``*.weights.h5`` file (a ``layers`` group keyed by class
  counters);
* ``None``: an HDF5 file holding none of these, or one without a single weight array in
  it (a ``layer_names`` attribute naming no layer or only layers without weights, an empty
  ``model_weights`` or ``layers`` group): nothing to load.
"""
import numpy as np

#: What a file of layout ``None`` is told (``{path}`` filled in).
NO_WEIGHTS_MESSAGE = ("{path} holds no weights: not one weight array under a 'layer_names' "
                      "attribute naming layers or a 'model_weights' group (legacy Keras HDF5), or "
                      "under a 'layers' group (Keras 3 .weights.h5)")


def to_str(value):
    """Return ``value`` as ``str``, decoding UTF-8 ``bytes``."""
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8")
    return str(value)


def read_str_list_attr(obj, name):
    """Read a (possibly chunked: ``name0``, ``name1``, ...) list-of-strings attribute ``name``
    of an HDF5 object; ``None`` when neither ``name`` nor ``name + '0'`` exists."""
    if name in obj.attrs:
        raw = [obj.attrs[name]]
    elif f"{name}0" in obj.attrs:
        raw = []
        index = 0
        while f"{name}{index}" in obj.attrs:
            raw.append(obj.attrs[f"{name}{index}"])
            index += 1
    else:
        return None
    values = []
    for chunk in raw:
        values.extend(to_str(v) for v in np.atleast_1d(np.asarray(chunk)).ravel())
    return values


def holds_arrays(group):
    """Whether an ``h5py.Group`` holds at least one dataset (a weight array) at any depth;
    stops at the first one found."""
    import h5py

    return group.visititems(lambda name, obj: True if isinstance(obj, h5py.Dataset) else None) is not None


def weights_layout(h5file):
    """The layout of an open ``h5py.File``: ``"layer_names"``, ``"model_weights"``,
    ``"keras3"`` or ``None`` (see the module docstring)."""
    import h5py

    if "layer_names" in h5file.attrs or "layer_names0" in h5file.attrs:
        names = [n for n in (read_str_list_attr(h5file, "layer_names") or []) if n]
        return "layer_names" if names and holds_arrays(h5file) else None
    group = h5file.get("model_weights")
    if isinstance(group, h5py.Group):
        return "model_weights" if holds_arrays(group) else None
    group = h5file.get("layers")
    if isinstance(group, h5py.Group):
        return "keras3" if holds_arrays(group) else None
    return None


def legacy_layer_holds_arrays(path, layer_name):
    """Whether the legacy-layout weights file ``path`` holds at least one weight array of
    the layer ``layer_name`` (h5py only: no TensorFlow). ``None`` when the file's layout
    stores no layer names (a Keras 3 ``*.weights.h5`` or no weights): the question can
    then only be answered by loading it into a model.

    Raises:
        OSError: the file cannot be opened as HDF5.
    """
    import h5py

    with h5py.File(path, "r") as h5file:
        layout = weights_layout(h5file)
        if layout not in ("layer_names", "model_weights"):
            return None
        root = h5file if layout == "layer_names" else h5file["model_weights"]
        if layer_name not in (read_str_list_attr(root, "layer_names") or []):
            return False
        group = root.get(layer_name)
        return isinstance(group, h5py.Group) and holds_arrays(group)
