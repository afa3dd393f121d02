"""Load and save Keras 3 model weights by layer name in the legacy Keras-2 HDF5 layout.

Keras 3 only writes ``*.weights.h5`` files keyed by class counters, which cannot be matched
to matterport's Mask R-CNN weights (``mask_rcnn_coco.h5``) or to the official Siamese Mask
R-CNN release.  This module reads and writes the legacy layout directly with h5py:

* root attribute ``layer_names``: every layer of the saving model, in ``model.layers`` order,
  weightless layers included (their ``weight_names`` are empty);
* full-model files keep all of that under the group ``model_weights``;
* one group per layer with the attribute ``weight_names`` (e.g. ``b'conv1/kernel:0'``); the
  array of a weight lives at ``group[weight_name]``;
* a nested sub-model is one group whose weight names carry the inner layer's name
  (``rpn_model`` -> ``rpn_conv_shared/kernel:0``), possibly behind a longer prefix path
  (``some_submodel/res2a_branch2a/kernel:0``);
* very long attribute lists may be split into ``layer_names0``, ``layer_names1``, ...;
* attribute strings may come back from h5py as ``bytes`` or ``str``.

Weights are matched to model layers by the *leaf* layer name: the path component just before
the weight's own name.  Nested Keras models are flattened on both sides, so a file that keeps
the backbone in a sub-model group loads into a model that keeps it flat, and vice versa.
"""
import dataclasses
import os
import re
import warnings

import h5py
import keras
import numpy as np

from .fileio import atomic_write
from .h5layout import NO_WEIGHTS_MESSAGE, read_str_list_attr, weights_layout

#: Attributes larger than this many bytes are split into numbered chunks (HDF5 header limit).
HDF5_ATTRIBUTE_LIMIT = 64512

__all__ = [
    "LoadReport",
    "is_keras3_weights_file",
    "keras3_weight_shapes",
    "load_keras3_weights",
    "read_h5_weights",
    "read_h5_weight_shapes",
    "iter_weighted_layers",
    "load_weights_by_name",
    "save_weights_by_name",
]


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _open_h5(filepath, mode="r"):
    """Open ``filepath`` with h5py, raising clear errors for missing or non-HDF5 files."""
    path = os.fspath(filepath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if os.path.isdir(path) or not h5py.is_hdf5(path):
        raise ValueError(f"not an HDF5 weights file: {path}")
    try:
        return h5py.File(path, mode)
    except OSError as err:  # truncated or corrupt: h5py's message does not name the file
        raise ValueError(f"{path}: unreadable HDF5 weights file (truncated or corrupt?): {err}") from None


def is_keras3_weights_file(filepath):
    """True for a Keras 3 native ``*.weights.h5`` file (what ``keras.Model.save_weights``
    writes: a ``layers`` group keyed by class counters, no ``layer_names`` attribute)."""
    with _open_h5(filepath) as h5file:
        return weights_layout(h5file) == "keras3"


def keras3_weight_shapes(filepath):
    """The shapes (tuples) of every array of a Keras 3 native ``*.weights.h5`` file, in file
    order. That format keys layers by class counters (``dense_3``), not by layer name, so
    shapes are all it tells about the model that saved it.

    Raises:
        FileNotFoundError / ValueError: as :func:`read_h5_weights`.
    """
    shapes = []

    def visit(_, obj):
        if isinstance(obj, h5py.Dataset):
            shapes.append(tuple(int(d) for d in obj.shape))

    path = os.fspath(filepath)
    with _open_h5(path) as h5file:
        try:
            h5file.visititems(visit)
        except (OSError, RuntimeError, KeyError) as err:
            raise ValueError(f"{path}: unreadable HDF5 weights file (truncated or corrupt?): "
                             f"{type(err).__name__}: {err}") from None
    return shapes


def _weights_root(h5file, filepath):
    """Return the group holding the per-layer groups (root or ``model_weights``)."""
    layout = weights_layout(h5file)
    if layout == "layer_names":
        return h5file
    if layout == "model_weights":
        return h5file["model_weights"]
    if layout == "keras3":
        raise ValueError(
            f"{filepath} looks like a Keras 3 '.weights.h5' file (no 'layer_names' attribute); "
            "load it with load_weights_by_name() or the model's load_weights(), which read it whole")
    raise ValueError(NO_WEIGHTS_MESSAGE.format(path=filepath))


def _split_weight_name(weight_name, group_name):
    """Split an HDF5 weight name into (leaf layer name, short weight name).

    ``'conv1/kernel:0'`` -> ``('conv1', 'kernel')``; ``'a/b/res2a_branch2a/bias:0'`` ->
    ``('res2a_branch2a', 'bias')``; a name without a layer component (``'kernel:0'``) belongs to
    the group.  A leaf equal to the group name plus a TF uniquifying suffix (``conv1_1`` in group
    ``conv1``) is mapped back to the group name, as Keras 2 loaded such files by group.
    """
    name = re.sub(r":\d+$", "", weight_name)
    parts = [p for p in name.split("/") if p]
    if not parts:
        raise ValueError(f"empty weight name in group {group_name!r}")
    short = parts[-1]
    layer = parts[-2] if len(parts) >= 2 else group_name
    if layer != group_name and re.fullmatch(re.escape(group_name) + r"_\d+", layer):
        layer = group_name
    return layer, short


def _read_group_weights(group, group_name, filepath):
    """Return [(leaf layer, short name, array)] for one per-layer group, in file order."""
    weight_names = read_str_list_attr(group, "weight_names") or []
    entries = []
    for weight_name in weight_names:
        if weight_name not in group:
            raise ValueError(
                f"{filepath}: group {group_name!r} lists weight {weight_name!r} "
                "but has no such dataset")
        layer, short = _split_weight_name(weight_name, group_name)
        entries.append((layer, short, np.asarray(group[weight_name][()])))
    return entries


def read_h5_weights(filepath):
    """Read every weighted layer of a legacy Keras HDF5 weights file.

    Args:
        filepath: path of a matterport-style ``.h5`` file (weights-only or full model).

    Returns:
        dict ``layer name -> [(short weight name, np.ndarray), ...]`` in file order; nested
        sub-model groups are flattened to their inner layers.  Layers without weights are
        left out.  If two groups hold the same layer, the first one wins (with a warning).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not HDF5, truncated or corrupt, or not in the legacy layout
            (the path is named).
    """
    path = os.fspath(filepath)
    try:
        return _read_h5_weights(path)
    except FileNotFoundError:
        raise
    except (OSError, RuntimeError, KeyError) as err:  # h5py errors of a truncated/corrupt file
        raise ValueError(f"{path}: unreadable HDF5 weights file (truncated or corrupt?): "
                         f"{type(err).__name__}: {err}") from None


def _read_h5_weights(path):
    """:func:`read_h5_weights` without the error translation."""
    result = {}
    owner = {}
    with _open_h5(path) as h5file:
        root = _weights_root(h5file, path)
        layer_names = read_str_list_attr(root, "layer_names")
        if layer_names is None:
            layer_names = list(root.keys())
        for group_name in layer_names:
            if group_name not in root:
                raise ValueError(f"{path}: layer {group_name!r} listed in 'layer_names' has no group")
            for layer, short, array in _read_group_weights(root[group_name], group_name, path):
                if layer in owner and owner[layer] != group_name:
                    warnings.warn(
                        f"{path}: layer {layer!r} appears in groups {owner[layer]!r} and "
                        f"{group_name!r}; keeping the first", stacklevel=2)
                    continue
                owner[layer] = group_name
                result.setdefault(layer, []).append((short, array))
    return result


def read_h5_layer_weights(filepath, layer_name):
    """The weights ``[(short weight name, np.ndarray), ...]`` of one top-level layer group
    ``layer_name`` of a legacy-layout ``.h5`` file, or None when the file has no such group
    or is a Keras 3 ``.weights.h5`` file (which is keyed by class counters, not layer names).
    Reads only that group.

    Raises:
        FileNotFoundError / ValueError: as :func:`read_h5_weights` (missing, not HDF5, corrupt).
    """
    path = os.fspath(filepath)
    try:
        with _open_h5(path) as h5file:
            if weights_layout(h5file) == "keras3":
                return None
            root = _weights_root(h5file, path)
            if layer_name not in root:
                return None
            return [(short, array) for _, short, array in _read_group_weights(root[layer_name], layer_name, path)]
    except (FileNotFoundError, ValueError):
        raise
    except (OSError, RuntimeError, KeyError) as err:
        raise ValueError(f"{path}: unreadable HDF5 weights file (truncated or corrupt?): "
                         f"{type(err).__name__}: {err}") from None


def read_h5_weight_shapes(filepath):
    """Like :func:`read_h5_weights` but without reading the arrays: ``layer name ->
    [(short weight name, shape tuple), ...]`` (fast on large files).

    Raises:
        FileNotFoundError / ValueError: as :func:`read_h5_weights`.
    """
    path = os.fspath(filepath)
    result = {}
    with _open_h5(path) as h5file:
        root = _weights_root(h5file, path)
        layer_names = read_str_list_attr(root, "layer_names") or list(root.keys())
        for group_name in layer_names:
            if group_name not in root:
                continue
            group = root[group_name]
            for weight_name in read_str_list_attr(group, "weight_names") or []:
                if weight_name in group:
                    layer, short = _split_weight_name(weight_name, group_name)
                    result.setdefault(layer, []).append((short, tuple(group[weight_name].shape)))
    return result


# ---------------------------------------------------------------------------------------------
# Model traversal
# ---------------------------------------------------------------------------------------------
def _walk_weighted_layers(model, parents=(), seen=None):
    """Yield (enclosing model names, layer) for every weight-owning leaf layer of ``model``.

    Nested ``keras.Model`` instances are descended into; a layer object reached several times
    (shared sub-model, shared layer) is yielded once.
    """
    if seen is None:
        seen = set()
    for layer in model.layers:
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.Model) and layer.layers:
            yield from _walk_weighted_layers(layer, parents + (layer.name,), seen)
        elif layer.weights:
            yield parents, layer


def iter_weighted_layers(model):
    """Yield ``(name, layer)`` for every layer of ``model`` that owns weights.

    Nested Keras models (Functional/Sequential sub-models such as ``rpn_model``) are flattened
    into their inner layers; wrappers such as ``TimeDistributed`` count as one layer.  A layer
    shared at several call sites appears once.  The model must be built.
    """
    for _, layer in _walk_weighted_layers(model):
        yield layer.name, layer


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class LoadReport:
    """Outcome of :func:`load_weights_by_name`.

    Attributes:
        loaded: model layer names that received weights.
        n_arrays: number of arrays assigned to variables.
        missing_in_file: weighted model layers with no entry in the file (not excluded).
        unused_in_file: weighted file layers that were not loaded into any model layer.
        skipped: ``(layer, reason)`` for layers left untouched because of a mismatch.
        excluded: model layer names left out because of ``exclude``.
    """

    loaded: list = dataclasses.field(default_factory=list)
    n_arrays: int = 0
    missing_in_file: list = dataclasses.field(default_factory=list)
    unused_in_file: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    excluded: list = dataclasses.field(default_factory=list)

    def __str__(self):
        lines = [f"loaded {len(self.loaded)} layers ({self.n_arrays} arrays)"]
        for title, names in (("excluded", self.excluded),
                             ("missing in file", self.missing_in_file),
                             ("unused in file", self.unused_in_file)):
            if names:
                lines.append(f"{title} ({len(names)}): {', '.join(names)}")
        if self.skipped:
            lines.append(f"skipped ({len(self.skipped)}):")
            lines.extend(f"  {name}: {reason}" for name, reason in self.skipped)
        return "\n".join(lines)


def check_load_report(report, filepath, logger):
    """Check the outcome of loading ``filepath`` with ``skip_mismatch=True``: log (warning,
    on ``logger``) each layer skipped for its shape, and return ``report``.

    Raises:
        ValueError: no layer of the file matched a model layer by name (the file is named;
            e.g. a weights file of another architecture).
    """
    if not report.loaded:
        raise ValueError(f"{filepath}: no layer name matches the model (expected "
                         "matterport-style names such as conv1, res2a_branch2a, fpn_c5p5)")
    if report.skipped:
        logger.warning("%s: %d layer(s) with other shapes were not loaded: %s", filepath,
                       len(report.skipped), ", ".join(name for name, _ in report.skipped))
    logger.info("loaded %d layers (%d arrays) from %s; %d model layers not in the file",
                len(report.loaded), report.n_arrays, filepath, len(report.missing_in_file))
    return report


def load_keras3_weights(model, filepath):
    """Load a Keras 3 native ``*.weights.h5`` file into ``model`` (Keras' own loader: the
    model must have exactly the architecture that saved it). Returns a :class:`LoadReport`
    listing every weighted layer as loaded.

    Raises:
        ValueError: the file does not fit the model (the path and Keras' reason named).
    """
    import tempfile

    path = os.path.abspath(os.fspath(filepath))
    with tempfile.TemporaryDirectory() as tmp:
        # Keras insists on the ".weights.h5" suffix; a link gives any name one.
        link = path if path.endswith(".weights.h5") else os.path.join(tmp, "model.weights.h5")
        if link != path:
            os.symlink(path, link)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model.load_weights(link)
            # Keras only warns when it leaves parts of the model at their initial values
            partial = [str(w.message) for w in caught if "Skipping" in str(w.message)
                       or "freshly-initialized" in str(w.message)]
            if partial:
                raise ValueError(f"{len(partial)} part(s) of the model found nothing in the file, "
                                 f"e.g. {partial[0]}")
        except Exception as err:  # Keras raises ValueError, KeyError, ... on a mismatch
            raise ValueError(f"{path}: a Keras 3 .weights.h5 file that does not fit this model "
                             f"(Keras' native format loads only into the same architecture): "
                             f"{type(err).__name__}: {err}") from None
    report = LoadReport()
    for name, layer in iter_weighted_layers(model):
        report.loaded.append(name)
        report.n_arrays += len(layer.weights)
    return report


def _compile_exclude(exclude):
    """Return a predicate telling whether a layer name matches ``exclude``.

    Each entry is an exact layer name or a regular expression matched with ``re.fullmatch``.
    """
    if exclude is None:
        return lambda name: False
    if isinstance(exclude, str):
        exclude = [exclude]
    patterns = []
    exact = set()
    for entry in exclude:
        exact.add(entry)
        try:
            patterns.append(re.compile(entry))
        except re.error:
            pass
    return lambda name: name in exact or any(p.fullmatch(name) for p in patterns)


def _match_layer_weights(layer_name, layer, file_weights):
    """Pair a layer's variables with file arrays.

    Matches by short weight name when both sides have the same unique names, otherwise by
    order.  Returns ``(pairs, problems)``: ``pairs`` is ``[(variable, array)]``, ``problems``
    a list of human-readable mismatch descriptions (empty when everything fits).
    """
    variables = list(layer.weights)
    model_names = [v.name for v in variables]
    file_names = [name for name, _ in file_weights]
    if (len(set(model_names)) == len(model_names) and len(set(file_names)) == len(file_names)
            and set(model_names) == set(file_names)):
        by_name = dict(file_weights)
        pairs = [(v, by_name[v.name]) for v in variables]
    elif len(variables) == len(file_weights):
        pairs = [(v, array) for v, (_, array) in zip(variables, file_weights)]
    else:
        return [], [f"{layer_name}: file has {len(file_weights)} weights {file_names}, "
                    f"model has {len(variables)} weights {model_names}"]
    problems = []
    for variable, array in pairs:
        model_shape = tuple(int(d) for d in variable.shape)
        if tuple(array.shape) != model_shape:
            problems.append(f"{layer_name}/{variable.name}: file shape {tuple(array.shape)} "
                            f"vs model shape {model_shape}")
    return pairs, problems


def _plan_by_name(model, file_layers, is_excluded, report):
    """Return [(model layer name, layer, file layer name)] for loading by layer name."""
    plan = []
    for parents, layer in _walk_weighted_layers(model):
        if is_excluded(layer.name) or any(is_excluded(p) for p in parents):
            report.excluded.append(layer.name)
        elif layer.name in file_layers:
            plan.append((layer.name, layer, layer.name))
        else:
            report.missing_in_file.append(layer.name)
    return plan


def _plan_by_order(model, file_layers, filepath):
    """Return [(model layer name, layer, file layer name)] pairing layers in order."""
    model_layers = list(iter_weighted_layers(model))
    if len(model_layers) != len(file_layers):
        raise ValueError(
            f"{filepath}: file has {len(file_layers)} weighted layers but the model has "
            f"{len(model_layers)}; use by_name=True to load a subset")
    return [(name, layer, file_name)
            for (name, layer), file_name in zip(model_layers, file_layers)]


def load_weights_by_name(model, filepath, by_name=True, exclude=None, skip_mismatch=False,
                         verbose=0):
    """Load a legacy Keras HDF5 weights file into a (built) Keras 3 model.

    Args:
        model: a built ``keras.Model``; nested sub-models are flattened (see
            :func:`iter_weighted_layers`).
        filepath: matterport-layout ``.h5`` file (weights-only or full model).
        by_name: match file layers to model layers by layer name (matterport's
            ``load_weights(by_name=True)``); if False, pair the weighted layers of file and model
            in order, which requires equal counts.
        exclude: layer names to leave untouched; each entry is an exact layer name or a regular
            expression matched against the whole name (``re.fullmatch``), e.g.
            ``["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_mask"]`` or ``[r"mrcnn_.*"]``.  An
            entry naming a nested sub-model (``"rpn_model"``) excludes all its layers.
            Only valid with ``by_name=True``.
        skip_mismatch: if True, layers whose weight count or shapes differ are skipped and
            listed in ``report.skipped``; if False (default) one ``ValueError`` lists every
            mismatch and nothing is assigned.
        verbose: 1 prints the report, 2 also prints each loaded layer.

    A Keras 3 native ``*.weights.h5`` file (``keras.Model.save_weights``) is recognised and
    loaded whole with Keras' own loader (:func:`load_keras3_weights`).

    Returns:
        a :class:`LoadReport`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not an HDF5 file, truncated or corrupt, not in a known layout, or a
            mismatch (every problem listed); the path is named.
    """
    path = os.fspath(filepath)
    if exclude and not by_name:
        raise ValueError("exclude requires by_name=True")
    if is_keras3_weights_file(path):
        if exclude:
            raise ValueError(f"{path}: a Keras 3 .weights.h5 file loads whole (Keras' native "
                             "format); exclude is not supported for it")
        report = load_keras3_weights(model, path)
        if verbose:
            print(report)
        return report
    file_layers = read_h5_weights(path)
    report = LoadReport()
    if by_name:
        plan = _plan_by_name(model, file_layers, _compile_exclude(exclude), report)
    else:
        plan = _plan_by_order(model, file_layers, path)

    assignments = []
    problems = []
    used_file_layers = set()
    for name, layer, file_name in plan:
        pairs, layer_problems = _match_layer_weights(name, layer, file_layers[file_name])
        if layer_problems:
            problems.extend(layer_problems)
            report.skipped.append((name, "; ".join(layer_problems)))
            continue
        assignments.append((name, pairs))
        used_file_layers.add(file_name)
    if problems and not skip_mismatch:
        raise ValueError(
            f"{path}: {len(problems)} weight mismatch(es), nothing was loaded "
            "(pass skip_mismatch=True to skip these layers):\n  " + "\n  ".join(problems))

    for name, pairs in assignments:
        for variable, array in pairs:
            variable.assign(np.asarray(array, dtype=variable.dtype))
        report.loaded.append(name)
        report.n_arrays += len(pairs)
        if verbose > 1:
            print(f"loaded {name}: {', '.join(v.name for v, _ in pairs)}")
    report.unused_in_file = [n for n in file_layers if n not in used_file_layers]
    if verbose:
        print(report)
    return report


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def _write_str_list_attr(obj, name, values):
    """Write a list of strings as a bytes-array attribute, chunking it if it is too large."""
    array = np.array([v.encode("utf-8") for v in values], dtype=bytes)
    if array.size == 0:
        array = np.zeros((0,), dtype="S1")
    if array.nbytes <= HDF5_ATTRIBUTE_LIMIT:
        obj.attrs[name] = array
        return
    n_chunks = int(np.ceil(array.nbytes / HDF5_ATTRIBUTE_LIMIT))
    while any(c.nbytes > HDF5_ATTRIBUTE_LIMIT for c in np.array_split(array, n_chunks)):
        n_chunks += 1
    for index, chunk in enumerate(np.array_split(array, n_chunks)):
        obj.attrs[f"{name}{index}"] = chunk


def _group_weight_entries(layer):
    """Return [(hdf5 weight name, variable)] for one top-level layer of the saving model."""
    if isinstance(layer, keras.Model) and layer.layers:
        entries = [(f"{sub.name}/{v.name}:0", v) for _, sub in _walk_weighted_layers(layer)
                   for v in sub.weights]
    else:
        variables = list(layer.weights)
        names = [v.name for v in variables]
        unique = len(set(names)) == len(names)
        entries = [(f"{layer.name}/{v.name if unique else f'{v.name}_{i}'}:0", v)
                   for i, v in enumerate(variables)]
    seen = set()
    for weight_name, _ in entries:
        if weight_name in seen:
            raise ValueError(f"layer {layer.name!r}: duplicate weight name {weight_name!r}; "
                             "inner layers of a sub-model need unique names")
        seen.add(weight_name)
    return entries


def _write_layer_group(h5file, layer_name, entries):
    """Create the group of one layer holding ``entries`` = [(weight name, array)]."""
    group = h5file.create_group(layer_name)
    _write_str_list_attr(group, "weight_names", [name for name, _ in entries])
    for weight_name, array in entries:
        group.create_dataset(weight_name, data=array)


def _atomic_h5_write(filepath, write_fn):
    """Call ``write_fn(h5file)`` on a temp file next to ``filepath``, then move it in place."""
    with atomic_write(filepath, suffix=".h5") as tmp_path:
        with h5py.File(tmp_path, "w") as h5file:
            write_fn(h5file)
            h5file.flush()


def _write_root_attrs(h5file, layer_names):
    """Write the root attributes of the legacy layout."""
    _write_str_list_attr(h5file, "layer_names", layer_names)
    # np.bytes_ makes h5py store fixed-length strings that read back as bytes
    h5file.attrs["backend"] = np.bytes_(b"tensorflow")
    h5file.attrs["keras_version"] = np.bytes_(str(keras.__version__).encode("utf-8"))


def save_weights_by_name(model, filepath):
    """Save ``model``'s weights in matterport's legacy Keras-2 HDF5 layout, atomically.

    One group per top-level layer (weightless layers included, with empty ``weight_names``);
    a nested sub-model is one group whose weight names are ``'inner_layer/weight:0'``.  The file
    is written to a temporary file in the target directory and then renamed over ``filepath``;
    parent directories are created.  The result loads back with :func:`load_weights_by_name`.
    """
    top_layers = list(model.layers)

    def write(h5file):
        _write_root_attrs(h5file, [layer.name for layer in top_layers])
        for layer in top_layers:
            entries = [(name, np.asarray(v.numpy()))
                       for name, v in _group_weight_entries(layer)]
            _write_layer_group(h5file, layer.name, entries)

    _atomic_h5_write(filepath, write)
