"""Run a trained model on your own reference and query images.

Python::

    from siamese_mask_rcnn.predict import predict
    result = predict("mask_rcnn_demo_0010.h5", ["ref.jpg"], "scene.jpg", out_png="result.png")

Command line: ``siamese-mrcnn predict --weights W.h5 --reference ref.jpg --query scene.jpg
--out result.png --json result.json``.

The model's configuration comes from ``--config``, else from the ``config.json`` that
training writes beside its checkpoints, else from ``--preset``, else from the preset whose
classifier width (``FPN_CLASSIF_FC_LAYERS_SIZE``) matches the file: the official release's
``small_siamese_mrcnn_0160.h5`` (FC 512) gets ``small``, its ``large_*.h5`` files (FC 1024)
get ``paper``.
"""
import json
import numbers
import os
import pathlib
import sys
import re
import warnings

import numpy as np

from .cocoformat import box_yxyx_to_xywh, encode_mask
from .mrcnn import utils
from .mrcnn.fileio import UnwritableOutputError, check_folder_possible, ensure_writable_dir


class InputError(ValueError):
    """A user-supplied file is missing or unusable (the message names it)."""


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class SmallImageWarning(UserWarning):
    """A query or reference image too small to hold an object the model can see (it still runs)."""


#: A query whose shorter side is below this (pixels) is enlarged many times to the model's input
#: size: it holds no object the model can resolve, yet the model may fire on the enlarged pixels.
SMALL_QUERY_SIDE = 32
#: A reference whose shorter side is below this (pixels) shows little more than its colours.
SMALL_REFERENCE_SIDE = 8


def small_image_warnings(ref_images, query_image, ref_names=None, query_name="<array>"):
    """The warnings (strings) for images smaller than :data:`SMALL_QUERY_SIDE` (query) or
    :data:`SMALL_REFERENCE_SIDE` (reference) pixels on their shorter side; ``[]`` when none is.
    ``ref_images`` / ``query_image``: decoded ``[H, W, ...]`` arrays; the names (file paths)
    are only for the messages."""
    notes = []
    names = list(ref_names) if ref_names is not None else ["<array>"] * len(ref_images)
    for image, name in zip(ref_images, names):
        h, w = np.shape(image)[:2]
        if min(h, w) < SMALL_REFERENCE_SIDE:
            notes.append(f"reference image {name} is {w} px wide and {h} px high (shorter side under "
                         f"{SMALL_REFERENCE_SIDE} px): "
                         "its embedding describes little more than its colours")
    h, w = np.shape(query_image)[:2]
    if min(h, w) < SMALL_QUERY_SIDE:
        notes.append(f"query image {query_name} is {w} px wide and {h} px high (shorter side under "
                     f"{SMALL_QUERY_SIDE} px): it is "
                     "enlarged to the model's input size and holds no object the model can resolve; its "
                     "detections, if any, describe the enlarged pixels")
    return notes


def check_user_image_path(path, role):
    """``InputError`` naming ``path`` unless it is a local file (not a URL, not a directory).
    Cheap (no decoding, no TensorFlow): the command line runs it before anything slow."""
    if _URL.match(str(path)):
        raise InputError(f"{role} image {path} is a URL: only local files are read "
                         "(download it first)")
    path = pathlib.Path(path)
    if not path.exists():
        raise InputError(f"{role} image not found: {path}")
    if path.is_dir():
        raise InputError(f"{role} image is a directory, not an image file: {path}")
    _check_readable(path, f"{role} image")
    return path


def _check_readable(path, what):
    """``InputError`` naming ``path`` unless its first byte can be read (permissions, a
    broken link or a device that fails)."""
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as err:
        raise InputError(f"{what} {os.fspath(path)} cannot be read ({err.strerror or err})") from None


def check_inputs(weights, references, query, out_png=None, out_json=None, config_path=None, decode=False,
                 known_margin=None):
    """The checks of :func:`predict` that need no model and no TensorFlow: the weights file
    and every reference and the query are local, readable files (not directories), the
    weights file opens as HDF5, ``config_path`` (if given; else the ``config.json`` beside
    ``weights`` if there is one, which :func:`resolve_config` would read) is a JSON file of valid
    configuration values, known-category rejection (``known_margin`` or the config's
    ``VERIFY_KNOWN_MARGIN``) is asked only of a file with the reference classifier
    (:func:`check_known_prototypes`), ``out_png`` /
    ``out_json`` are not directories and their folders can be written (missing folders are
    created once every input and output passed the checks). ``decode=True`` also decodes every image file (the command line does, so that
    a corrupt image is reported before TensorFlow starts).

    Raises:
        InputError: naming the first offending file.
    """
    folders = []
    for out, what, example in ((out_png, "output image (--out)", "result.png"),
                               (out_json, "output JSON (--json)", "result.json")):
        if out:
            if os.path.isdir(out):
                raise InputError(f"{what} {os.fspath(out)!r} is a directory; give a file name "
                                 f"inside it, e.g. {os.path.join(out, example)!r}")
            folders.append(os.path.dirname(os.path.abspath(os.fspath(out))))
    try:  # every output and input is checked before any folder is created
        for folder in folders:
            check_folder_possible(folder)
    except UnwritableOutputError as err:
        raise InputError(str(err)) from None
    refs = references if isinstance(references, (list, tuple)) else [references]
    check = read_user_image if decode else check_user_image_path
    for ref in refs:
        if not isinstance(ref, np.ndarray):
            check(ref, "reference")
    if not isinstance(query, np.ndarray):
        check(query, "query")
    if weights is not None:
        check_weights_file(weights)
    if not config_path and weights is not None:  # resolve_config then reads the run's file
        beside = config_beside(weights)
        config_path = beside if os.path.exists(beside) else None
    saved = check_config_file(config_path) if config_path else None
    if weights is not None:
        check_known_prototypes(weights, known_margin, config_path, config_values=saved)
    try:
        for folder in folders:
            ensure_writable_dir(folder)
    except UnwritableOutputError as err:
        raise InputError(str(err)) from None


def config_beside(weights):
    """The path of the ``config.json`` that training writes beside its checkpoint ``weights``
    (whether or not it exists): what :func:`resolve_config` reads without an explicit config."""
    return os.path.join(os.path.dirname(os.path.abspath(weights)), "config.json")


def check_demo_checkpoint(weights):
    """``weights`` is a usable weights file (:func:`check_weights_file`) with the run's
    ``config.json`` beside it whose values are usable (:func:`check_config_file`), as every
    ``siamese-mrcnn demo`` checkpoint has. No TensorFlow is imported.

    Raises:
        InputError: naming the file and what is wrong with it.
    """
    check_weights_file(weights)
    beside = config_beside(weights)
    if not os.path.isfile(beside):
        raise InputError(f"no config.json beside {weights} (a siamese-mrcnn demo checkpoint keeps the run's "
                         "config.json in its folder)")
    check_config_file(beside)


def known_prototypes_missing(weights, margin, config_place=None):
    """The refusal of known-category rejection for ``weights``, a file without the reference
    classifier. The margin came from the ``--known-margin`` option (``config_place`` None) or
    from ``VERIFY_KNOWN_MARGIN`` of a config (``config_place`` says which, e.g. ``"in
    run/config.json"``); the message names it and how to turn rejection off."""
    if config_place is None:
        source, hint = f"--known-margin {float(margin) + 0.0:g}", "leave out --known-margin (in Python: known_margin=None)"
    else:
        source = f"VERIFY_KNOWN_MARGIN {float(margin):g} {config_place}"
        hint = ("pass --known-margin none (in Python: known_margin=\"none\") or remove VERIFY_KNOWN_MARGIN "
                "from that config")
    return (f"{weights}: known-category rejection ({source}) needs the reference classifier "
            "(reference_class_logits), which this file does not hold: it was not trained with "
            f"siamese-mrcnn demo --reference-loss; {hint}")


def check_known_prototypes(weights, known_margin=None, config_path=None, config_values=None):
    """Before TensorFlow starts: known-category rejection (``known_margin``, else the
    ``VERIFY_KNOWN_MARGIN`` of ``config_path`` or of the ``config.json`` beside ``weights``;
    ``"none"`` turns it off) is only asked of a file that holds the reference classifier
    (``reference_class_logits``). A Keras 3 ``*.weights.h5`` file stores no layer names and
    is checked when it is loaded (:func:`load_model`). :func:`check_inputs` calls it (after
    the file and config checks, before any output folder is created), passing the values
    :func:`check_config_file` read as ``config_values`` so the file is read once.

    Raises:
        InputError: ``known_margin`` is neither ``"none"`` nor a number in [-2, 2], the config
            file is unusable (:func:`check_config_file`), or rejection is asked and the
            legacy-layout file has no reference classifier.
    """
    from .mrcnn.h5layout import legacy_layer_holds_arrays
    from .verification import PROTOTYPES_LAYER

    if known_margin == "none":
        return
    if known_margin is not None:
        from .config import check_known_margin

        try:
            margin = check_known_margin(known_margin)
        except ValueError:
            raise InputError(f"known margin must be a number in [-2, 2] or 'none' (rejection off), "
                             f"got {known_margin!r}") from None
        place = None
    else:
        path = config_path or config_beside(weights)
        if config_values is None:
            if not os.path.isfile(path):
                return
            config_values = check_config_file(path)
        margin = config_values.get("VERIFY_KNOWN_MARGIN")
        if margin is None:
            return
        place = f"in {path}"
    if legacy_layer_holds_arrays(weights, PROTOTYPES_LAYER) is False:
        raise InputError(known_prototypes_missing(weights, margin, place))


def check_weights_file(weights):
    """The weights file exists, is a readable file (not a directory) and opens as HDF5 with
    at least one weight array in a layout the loader reads (h5py only: no TensorFlow).

    Raises:
        InputError: naming ``weights`` and what is wrong with it.
    """
    if not os.path.exists(weights):
        raise InputError(f"weights file not found: {weights}")
    if os.path.isdir(weights):
        raise InputError(f"weights file is a directory, not an .h5 file: {weights}")
    _check_readable(weights, "weights file")
    _check_hdf5(weights)


def check_config_file(config_path):
    """``config_path`` is a JSON file whose values ``SiameseConfig`` accepts (unknown keys are
    allowed, as :func:`resolve_config` ignores them); no TensorFlow is imported. Returns the
    parsed JSON object (a dict).

    Raises:
        InputError: naming ``config_path`` and what is wrong with it.
    """
    if not os.path.isfile(config_path):
        raise InputError(f"config file not found: {config_path}" if not os.path.exists(config_path)
                         else f"config file is a directory, not a JSON file: {config_path}")
    try:
        with open(config_path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise InputError(f"config file {config_path} cannot be read ({err.strerror or err})") from None
    except ValueError as err:  # UnicodeDecodeError
        raise InputError(f"config file {config_path} cannot be used: not UTF-8 text ({err})") from None
    try:
        saved = json.loads(text)
    except ValueError as err:
        raise InputError(f"config file {config_path} cannot be used: not valid JSON ({err})") from None
    if not isinstance(saved, dict):
        raise InputError(f"config file {config_path} cannot be used: expected a JSON object of "
                         f"configuration keys and values, got a JSON {type(saved).__name__}")
    from .config import SiameseConfig  # no TensorFlow: values are checked before it starts

    try:  # what resolve_config's lenient load does with the file, on the text read above
        SiameseConfig.from_dict(saved, strict=False)
    except (ValueError, TypeError) as err:
        raise InputError(f"config file {config_path} cannot be used: {err}") from None
    return saved


def _check_hdf5(weights):
    """``InputError`` naming ``weights`` unless it opens as an HDF5 file holding weights in a
    layout the loader reads (h5py, no TensorFlow): catches other formats, most truncated
    files and HDF5 files without weights before any model is built."""
    import h5py

    from .mrcnn.h5layout import NO_WEIGHTS_MESSAGE, weights_layout

    try:
        with h5py.File(weights, "r") as h5file:
            layout = weights_layout(h5file)
    except OSError as err:
        if not h5py.is_hdf5(weights):  # the library's own wording (mrcnn.weights)
            raise InputError(f"not an HDF5 weights file: {weights}") from None
        raise InputError(f"cannot read weights file {weights}: truncated or corrupt HDF5 file ({err})") from None
    if layout is None:
        raise InputError(NO_WEIGHTS_MESSAGE.format(path=weights))


def read_user_image(path, role):
    """Read an image file as uint8 RGB, as displayed (EXIF orientation applied);
    ``InputError`` naming ``path`` if it cannot. Only local files are read: a URL
    (``https://...``) is refused."""
    path = check_user_image_path(path, role)
    try:
        return utils.read_image(str(path))
    except (OSError, ValueError) as err:
        raise InputError(f"{role} image {path} is not a readable image ({err})") from None


def _preset_signature(config):
    """The weight shapes that tell the presets apart: classifier width, matching conv kernel,
    and whether the backbone is a ResNet (``res2a_branch2a``)."""
    depth = int(config.TOP_DOWN_PYRAMID_SIZE)
    return (int(config.FPN_CLASSIF_FC_LAYERS_SIZE), (1, 1, 2 * depth, int(config.MATCHING_CHANNELS)),
            isinstance(config.BACKBONE, str))


def weight_file_shapes(weights):
    """The array shapes of a weights file, read once for :func:`infer_preset` and
    :func:`file_has_presence_head` (their optional ``shapes``): ``(keras3_shapes, layers)``,
    for a Keras 3 native ``*.weights.h5`` file the set of its array shapes (tuples) and
    ``{}``, for a legacy-layout ``.h5`` ``None`` and ``layer name -> [(weight name, shape
    tuple), ...]``. No array is read.

    Raises ``InputError`` naming the file if it cannot be read (missing, not HDF5,
    truncated).
    """
    from .mrcnn.weights import is_keras3_weights_file, keras3_weight_shapes, read_h5_weight_shapes

    try:
        if is_keras3_weights_file(weights):
            return set(keras3_weight_shapes(weights)), {}
        return None, read_h5_weight_shapes(weights)
    except (OSError, ValueError) as err:
        reason = str(err)
        prefix = f"{os.fspath(weights)}: "
        reason = reason[len(prefix):] if reason.startswith(prefix) else reason  # name the file once
        raise InputError(f"cannot read weights file {weights}: {reason}") from None


def infer_preset(weights, shapes=None):
    """``(preset, reason)``: the preset (``siamese_mask_rcnn.presets``) whose weight shapes the
    file has: the width of ``mrcnn_class_logits`` (``FPN_CLASSIF_FC_LAYERS_SIZE``), the
    ``fpn_distance_P2`` kernel (pyramid and matching channels) and a ResNet backbone or not.
    The release's ``small_siamese_mrcnn_0160.h5`` (FC 512) gives ``small``, its
    ``large_*.h5`` files (FC 1024) give ``paper``. A Keras 3 native ``*.weights.h5`` file
    stores no layer names: its preset is the first (largest) one whose classifier kernel
    ``[FC, NUM_CLASSES]``, matching kernel and first backbone kernel (ResNet ``conv1``
    ``[7, 7, 3, 64]`` or not) are all among the file's array shapes.

    ``shapes``: :func:`weight_file_shapes` of the file if already read (else it is read here).

    Raises ``InputError`` naming the file if it cannot be read, lacks these layers, or no
    preset has its shapes.
    """
    from .config import siamese_config
    from .presets import PRESET_NAMES

    keras3_shapes, layers = weight_file_shapes(weights) if shapes is None else shapes
    if keras3_shapes is not None:
        return _infer_keras3_preset(weights, keras3_shapes)
    logits = dict(layers.get("mrcnn_class_logits", []))
    matching = dict(layers.get("fpn_distance_P2", []))
    if "kernel" not in logits or "kernel" not in matching:
        raise InputError(f"{weights} has no mrcnn_class_logits / fpn_distance_P2 kernel: cannot infer "
                         "its preset (pass --preset or --config)")
    found = (int(logits["kernel"][0]), tuple(int(d) for d in matching["kernel"]), "res2a_branch2a" in layers)
    for name in PRESET_NAMES:
        if _preset_signature(siamese_config(name)) == found:
            return name, (f"its classifier is {found[0]} wide and its matching kernel is "
                          f"{list(found[1])}")
    raise InputError(f"{weights}: classifier width {found[0]}, matching kernel {list(found[1])} "
                     f"match no preset of {list(PRESET_NAMES)}; pass --config with the model's config.json")


#: Kernel shape of the ResNet backbone's first convolution (``conv1``).
_RESNET_CONV1_KERNEL = (7, 7, 3, 64)


def _infer_keras3_preset(weights, shapes):
    """:func:`infer_preset` for a Keras 3 ``*.weights.h5`` file whose arrays have ``shapes``."""
    from .config import siamese_config
    from .presets import PRESET_NAMES

    for name in PRESET_NAMES:
        config = siamese_config(name)
        width, matching, resnet = _preset_signature(config)
        classifier = (width, int(config.NUM_CLASSES))
        if classifier in shapes and matching in shapes and (_RESNET_CONV1_KERNEL in shapes) == resnet:
            return name, (f"its Keras 3 weights hold a {list(classifier)} classifier kernel and a "
                          f"{list(matching)} matching kernel")
    raise InputError(f"{weights}: a Keras 3 .weights.h5 file that does not fit this model: no preset of "
                     f"{list(PRESET_NAMES)} has its classifier and matching kernel shapes (Keras 3 files "
                     "keep no layer names); pass --config with the config.json of the model that saved it")


def resolve_config(weights, config_path=None, preset=None, *, shapes=None, **overrides):
    """The single-image inference config for ``weights``: an explicit JSON, the run's
    ``config.json``, ``preset``, or (``preset=None``) the preset inferred from the file's
    shapes (``infer_preset``, which says so on stderr; ``shapes`` as there); ``overrides``
    (config keys) are applied on top. Raises ``InputError`` naming an explicit config file
    that does not exist, or a file whose preset cannot be inferred."""
    from .config import SiameseConfig, siamese_config

    overrides = {"IMAGES_PER_GPU": 1, "GPU_COUNT": 1, **overrides}
    if config_path and not os.path.exists(config_path):
        raise InputError(f"config file not found: {config_path}")
    path = config_path or config_beside(weights)
    if not os.path.exists(path):
        if preset is None:
            preset, reason = infer_preset(weights, shapes)
            print(f"no config.json beside {weights}: assuming preset {preset!r} ({reason}); "
                  "pass --preset or --config to choose", file=sys.stderr)
        return siamese_config(preset, **overrides)
    try:
        loaded = SiameseConfig.load(path, strict=False)
        config = SiameseConfig.from_dict({**loaded.to_dict(), **overrides}, strict=False)
    except (ValueError, TypeError, OSError) as err:
        message = str(err)  # the loader's messages may name the file already
        raise InputError(message if str(path) in message else f"config file {path} cannot be used: {message}") \
            from None
    unknown = sorted(getattr(loaded, "_extra_keys", ()))
    if unknown:  # kept for configs of other versions, but a misspelt key would do nothing
        print(f"config file {path}: unknown key(s) {', '.join(unknown)} ignored (misspelt, or "
              "from another version of siamese-mask-rcnn?)", file=sys.stderr)
    return config


def file_has_presence_head(weights, shapes=None):
    """Whether a legacy-layout weights file holds the presence head's layers
    (``siamese_mask_rcnn.presence``); False for a Keras 3 file (no layer names) or an
    unreadable one (its loading reports that). ``shapes``: :func:`weight_file_shapes` of
    the file if already read (else it is read here)."""
    from .presence import PRESENCE_LAYER_NAMES

    if shapes is None:
        try:
            shapes = weight_file_shapes(weights)
        except InputError:
            return False
    keras3_shapes, layers = shapes
    return keras3_shapes is None and all(name in layers for name in PRESENCE_LAYER_NAMES)


def with_presence_head_of(weights, config, shapes=None):
    """``config``, with ``PRESENCE_HEAD`` switched on (and a note on stderr) when the file
    holds a trained presence head that the config leaves out: its layers would otherwise be
    ignored without a word and every detection left ungated. ``shapes`` as in
    :func:`file_has_presence_head`."""
    if getattr(config, "PRESENCE_HEAD", False) or not file_has_presence_head(weights, shapes):
        return config
    from .config import SiameseConfig

    print(f"{weights} holds a trained presence head (presence_* layers) that the config leaves out: "
          "using it (PRESENCE_HEAD=True)", file=sys.stderr)
    return SiameseConfig.from_dict({**config.to_dict(), "PRESENCE_HEAD": True}, strict=False)


def check_detection_arguments(min_confidence=None, score_rule=None, max_detections=None):
    """Check :func:`load_model`'s detection arguments (None: keep the config's) before any
    file is read, naming the argument.

    Raises:
        ValueError: ``min_confidence`` not a number in [0, 1] (nan included), ``score_rule``
            not one of :data:`.mrcnn.config.DETECTION_SCORE_RULES`, ``max_detections`` not a
            whole number >= 1.
    """
    from .mrcnn.config import DETECTION_SCORE_RULES

    if min_confidence is not None:
        if isinstance(min_confidence, bool) or not isinstance(min_confidence, numbers.Real) \
                or not 0.0 <= float(min_confidence) <= 1.0:
            raise ValueError(f"min_confidence must be a number in [0, 1], got {min_confidence!r}")
    if score_rule is not None and score_rule not in DETECTION_SCORE_RULES:
        raise ValueError(f"score_rule must be one of {DETECTION_SCORE_RULES}, got {score_rule!r}")
    if max_detections is not None:
        if isinstance(max_detections, bool) or not isinstance(max_detections, numbers.Integral) \
                or max_detections < 1:
            raise ValueError(f"max_detections must be a whole number >= 1, got {max_detections!r}")


def load_model(weights, config_path=None, preset=None, min_confidence=None, allow_partial=False,
               exclude=None, min_similarity=None, known_margin=None, score_rule=None, max_detections=None):
    """An inference ``SiameseMaskRCNN`` with ``weights`` loaded by layer name.

    ``weights``: a legacy-layout ``.h5`` (this project's checkpoints, matterport, the
    official release) or a Keras 3 ``*.weights.h5`` of the same architecture. A file that
    does not fill every weighted layer of the model is refused (the missing layers listed)
    unless ``allow_partial`` or the missing layers match ``exclude`` (layer names or
    regular expressions): random layers would give confident-looking nonsense.
    ``min_confidence`` / ``min_similarity`` override the config's ``DETECTION_MIN_CONFIDENCE``
    / ``VERIFY_MIN_SIMILARITY`` (verification, :mod:`.verification`; ``"none"`` turns it off);
    ``known_margin`` the config's ``VERIFY_KNOWN_MARGIN`` (known-category rejection; ``"none"``
    turns it off). ``score_rule`` / ``max_detections`` override ``DETECTION_SCORE_RULE``
    (``"argmax"`` or ``"foreground"``, see :class:`.mrcnn.config.Config`) /
    ``DETECTION_MAX_INSTANCES``.

    Raises:
        ValueError: a bad ``min_confidence``, ``score_rule`` or ``max_detections``
            (:func:`check_detection_arguments`, before any file is read).
        InputError: a ``max_detections`` above the config's ``POST_NMS_ROIS_INFERENCE``,
            a missing, truncated or corrupt file, a file that does not fit the
            configuration (without a ``config.json``, the message says which preset was
            assumed and how to pass ``--config``), a partial file, or known-category rejection
            (``known_margin`` / ``VERIFY_KNOWN_MARGIN``) with a file that holds no reference
            classifier.
    """
    from .siamese import SiameseMaskRCNN

    check_detection_arguments(min_confidence, score_rule, max_detections)
    if not os.path.exists(weights):
        raise InputError(f"weights file not found: {weights}")
    overrides = {} if min_confidence is None else {"DETECTION_MIN_CONFIDENCE": float(min_confidence)}
    if min_similarity is not None:
        overrides["VERIFY_MIN_SIMILARITY"] = None if min_similarity == "none" else float(min_similarity)
    if known_margin is not None:
        overrides["VERIFY_KNOWN_MARGIN"] = None if known_margin == "none" else float(known_margin)
    if score_rule is not None:
        overrides["DETECTION_SCORE_RULE"] = score_rule
    if max_detections is not None:
        overrides["DETECTION_MAX_INSTANCES"] = max_detections
    beside = config_beside(weights)
    # Without a config the file's shapes give the preset and tell whether it holds a
    # presence head: read them once for both.
    shapes = (weight_file_shapes(weights) if not config_path and preset is None
              and not os.path.exists(beside) else None)
    config = with_presence_head_of(
        weights, resolve_config(weights, config_path, preset, shapes=shapes, **overrides), shapes)
    if max_detections is not None and max_detections > config.POST_NMS_ROIS_INFERENCE:
        # more slots than scored proposals only pads (and a huge cap fills memory with padding)
        raise InputError(f"max_detections must be at most the {config.POST_NMS_ROIS_INFERENCE} proposals "
                         f"the model scores (POST_NMS_ROIS_INFERENCE), got {max_detections}")
    model = SiameseMaskRCNN("inference", config, model_dir=os.path.dirname(os.path.abspath(weights)))
    try:
        report = model.load_weights(weights, by_name=True, exclude=exclude)
        check_complete(weights, report, allow_partial)
    except (OSError, ValueError) as err:
        message = str(err) if str(weights) in str(err) else f"{weights}: {err}"
        message = message.replace(" (pass skip_mismatch=True to skip these layers)", "")
        if config_path is None and not os.path.exists(beside) and not _unreadable(message):
            chosen = (f"used the preset '{preset}' you chose" if preset else
                      f"assumed preset '{config.NAME}'")
            message = (f"{_shorten(message)}\nno config was found (no --config, no {beside}): {chosen}; "
                       "if the weights come from another configuration, pass the config.json of the "
                       "run that wrote them with --config FILE (or another --preset)")
        raise InputError(message) from None
    if getattr(config, "VERIFY_KNOWN_MARGIN", None) is not None and model.known_prototypes is None:
        from_option = known_margin not in (None, "none")
        raise InputError(known_prototypes_missing(weights, known_margin if from_option else config.VERIFY_KNOWN_MARGIN,
                                                  None if from_option else "of the config"))
    return model


def _unreadable(message):
    """True for errors about the file itself (not about fitting a configuration)."""
    return any(words in message for words in ("truncated or corrupt", "not an HDF5", "not found",
                                              "no 'layer_names'"))


def _shorten(message, lines=8):
    """The first ``lines`` lines of a long error (e.g. 71 shape mismatches)."""
    parts = message.split("\n")
    return "\n".join(parts[:lines] + ([f"  ... ({len(parts) - lines} more)"] if len(parts) > lines else []))


def check_complete(weights, report, allow_partial=False):
    """Refuse a weights file that left model layers unfilled (``report.missing_in_file``;
    excluded layers do not count) unless ``allow_partial``: ``InputError`` listing them."""
    missing = list(report.missing_in_file)
    if missing and not allow_partial:
        total = len(missing) + len(report.loaded) + len(report.skipped)
        raise InputError(
            f"{weights} fills only {len(report.loaded)} of the model's {total} weighted layers; "
            f"{len(missing)} missing: {', '.join(missing[:20])}{', ...' if len(missing) > 20 else ''} "
            "(they would keep random values): pass --allow-partial (allow_partial=True) to run "
            "anyway, or, from Python, exclude=[...] for layers you mean to leave out")


def build_predictor(weights, config=None, preset=None, allow_partial=False, min_confidence=None,
                    score_rule=None, max_detections=None):
    """Load an inference model from ``weights`` and return its evaluation ``predict_fn``
    (``predict_fn(image, {class_id: [crops]}) → {class_id: result}``, see
    ``SiameseMaskRCNN.predict_fn``).

    The config is ``config``, else the ``config.json`` training wrote beside the weights,
    else the ``preset``, else the preset inferred from the file (:func:`infer_preset`).
    ``min_confidence``, ``score_rule``, ``max_detections`` as in :func:`load_model` (without
    ``config``; None keeps the config's).
    Raises ``InputError`` naming a missing, unreadable or partial weights file (see
    :func:`load_model`; ``allow_partial`` as there); ``TypeError`` for those three given with
    ``config``.
    """
    detection = dict(min_confidence=min_confidence, score_rule=score_rule, max_detections=max_detections)
    if config is None:
        return load_model(weights, preset=preset, allow_partial=allow_partial, **detection).predict_fn()
    if any(v is not None for v in detection.values()):
        raise TypeError("build_predictor(): set min_confidence / score_rule / max_detections in the config given")
    from .siamese import SiameseMaskRCNN

    if not os.path.exists(weights):
        raise InputError(f"weights file not found: {weights}")
    model = SiameseMaskRCNN("inference", config, model_dir="logs")
    try:
        check_complete(weights, model.load_weights(weights, by_name=True), allow_partial)
    except (OSError, ValueError) as err:
        raise InputError(str(err) if str(weights) in str(err) else f"{weights}: {err}") from None
    return model.predict_fn()


def result_to_json(result, reference_paths, query_path, config=None):
    """A JSON-ready description: boxes (x1, y1, x2, y2 and y1, x1, y2, x2), scores, RLE masks;
    with ``config``, the score threshold (``min_confidence``) and, for a model with the
    presence head, ``presence`` and ``presence_gating`` (whether the scores include it)."""
    detections = []
    for i in range(len(result["scores"])):
        y1, x1, y2, x2 = (int(v) for v in result["rois"][i])
        detections.append({"score": float(result["scores"][i]), "box_yxyx": [y1, x1, y2, x2],
                           "box_xywh": box_yxyx_to_xywh((y1, x1, y2, x2)),
                           "mask_area": int(result["masks"][:, :, i].sum()),
                           "mask_rle": encode_mask(result["masks"][:, :, i])})
        if "similarity" in result:  # verified (siamese_mask_rcnn.verification)
            detections[-1]["similarity"] = float(result["similarity"][i])
        if "known_margin" in result:  # known-category rejection
            detections[-1]["known_margin"] = float(result["known_margin"][i])
    payload = {"query": str(query_path), "references": [str(p) for p in reference_paths],
               "count": len(detections), "detections": detections}
    if "presence" in result:  # a model with the presence head (siamese_mask_rcnn.presence)
        payload["presence"] = float(result["presence"])
    if config is not None:  # what the scores mean
        payload["min_confidence"] = float(config.DETECTION_MIN_CONFIDENCE)
        payload["score_rule"] = str(getattr(config, "DETECTION_SCORE_RULE", "argmax"))
        if getattr(config, "DETECTION_MAX_INSTANCES", None) is not None:
            payload["max_detections"] = int(config.DETECTION_MAX_INSTANCES)
        if "presence" in result:
            payload["presence_gating"] = str(config.PRESENCE_GATING)
        if getattr(config, "VERIFY_MIN_SIMILARITY", None) is not None:
            payload["min_similarity"] = float(config.VERIFY_MIN_SIMILARITY)
        if getattr(config, "VERIFY_KNOWN_MARGIN", None) is not None:
            payload["max_known_margin"] = float(config.VERIFY_KNOWN_MARGIN)
    if "verification_dropped" in result:
        payload["verification_dropped"] = int(result["verification_dropped"])
    return payload


def predict(weights, references, query, out_png=None, out_json=None, config_path=None, preset=None,
            min_confidence=None, model=None, allow_partial=False, min_similarity=None, known_margin=None,
            score_rule=None, max_detections=None):
    """Find every instance of the references' category in ``query``.

    ``references``: one path/array or a list (k-shot: their embeddings are averaged).
    Returns ``{"rois", "scores", "masks", "class_ids"}`` (and ``"presence"``, the
    probability that the category is in the query, for a model with the presence head: its
    scores are already multiplied by it, so an absent category gives no detection) and, when
    verification is on (``min_similarity`` or the config's ``VERIFY_MIN_SIMILARITY``),
    ``"similarity"`` per detection (and ``"known_margin"`` with known-category rejection,
    ``known_margin`` or the config's ``VERIFY_KNOWN_MARGIN``); writes a picture and/or JSON.
    ``score_rule`` / ``max_detections``: ``DETECTION_SCORE_RULE`` / ``DETECTION_MAX_INSTANCES``
    of the model loaded here (``"foreground"`` keeps ROIs the background outscores, which
    matters only with a ``min_confidence`` below 0.5; see :func:`load_model`). With ``model``
    (already loaded) these and ``min_confidence``, ``min_similarity``, ``known_margin`` cannot
    apply: set them when loading it.

    A query smaller than :data:`SMALL_QUERY_SIDE` px or a reference smaller than
    :data:`SMALL_REFERENCE_SIDE` px on its shorter side still runs, with a
    :class:`SmallImageWarning` (also in the JSON's ``"warnings"`` list, empty otherwise): the
    model may fire on a few enlarged pixels.

    Raises:
        InputError: a missing, unreadable or URL image, a weights file :func:`load_model`
            refuses, ``out_png`` / ``out_json`` is a directory or its folder cannot be
            written (checked before the model is loaded).
        ValueError: a loading option (``min_confidence``, ``score_rule``, ``max_detections``,
            ``min_similarity``, ``known_margin``) given with ``model``, or a bad value of one
            (named as the argument).
    """
    if model is not None:
        given = [name for name, value in (("min_confidence", min_confidence), ("score_rule", score_rule),
                                          ("max_detections", max_detections), ("min_similarity", min_similarity),
                                          ("known_margin", known_margin)) if value is not None]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise ValueError(f"predict(model=...): {', '.join(given)} {verb} when the model is loaded; "
                             f"pass {'it' if len(given) == 1 else 'them'} to load_model(...) instead")
    check_inputs(weights if model is None else None, references, query, out_png, out_json,
                 config_path=config_path if model is None else None, known_margin=known_margin)
    refs = references if isinstance(references, (list, tuple)) else [references]
    ref_images = [read_user_image(r, "reference") if not isinstance(r, np.ndarray) else r for r in refs]
    query_image = read_user_image(query, "query") if not isinstance(query, np.ndarray) else query
    names = [r if not isinstance(r, np.ndarray) else "<array>" for r in refs]
    query_name = query if not isinstance(query, np.ndarray) else "<array>"
    notes = small_image_warnings(ref_images, query_image, names, query_name)
    for note in notes:
        warnings.warn(note, SmallImageWarning, stacklevel=2)
    if model is None:
        model = load_model(weights, config_path, preset, min_confidence, allow_partial=allow_partial,
                           min_similarity=min_similarity, known_margin=known_margin, score_rule=score_rule,
                           max_detections=max_detections)
    result = model.detect_embeddings(query_image, {0: model.embed_category(ref_images)})[0]
    if out_png:
        import matplotlib.pyplot as plt
        from .mrcnn import visualize
        fig = visualize.display_siamese_instances(ref_images[0], query_image, result["rois"], result["masks"],
                                                  result["scores"], title=f"{len(result['scores'])} detections"
                                                  + (f" (presence {result['presence']:.2f})" if "presence" in result
                                                     else ""), reference_placement="beside")
        visualize.save_figure(fig, out_png)
        plt.close(fig)
    if out_json:
        payload = result_to_json(result, names, query_name, config=model.config)
        payload["warnings"] = notes  # [] when no image is small
        pathlib.Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(out_json).write_text(json.dumps(payload, indent=2))
    return result
