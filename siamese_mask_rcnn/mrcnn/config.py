"""Mask R-CNN configuration (matterport attribute names and defaults).

A configuration is a plain object whose UPPER_CASE attributes hold the
hyper-parameters. Customise it either by sub-classing (class attributes) or by
keyword overrides::

    class ShapesConfig(Config):
        NAME = "shapes"
        NUM_CLASSES = 4

    config = ShapesConfig(IMAGES_PER_GPU=1, IMAGE_MAX_DIM=512)

Derived attributes (``BATCH_SIZE``, ``IMAGE_SHAPE``, ``IMAGE_META_SIZE``) are
recomputed after every override. Configurations serialise to JSON with
:meth:`Config.to_dict` / :meth:`Config.save` and come back with
:meth:`Config.from_dict` / :meth:`Config.load`.

No TensorFlow here: this module must stay importable without it.
"""

import copy
import json
import math
import numbers
import os

import numpy as np

from .fileio import atomic_write
from .image_meta import image_meta_size

#: Prefix used by :meth:`Config.to_dict` for callables (which JSON cannot hold).
CALLABLE_PREFIX = "<callable:"

#: Attributes computed in :meth:`Config.__init__`; never read back from a dict.
DERIVED_ATTRIBUTES = ("BATCH_SIZE", "IMAGE_SHAPE", "IMAGE_META_SIZE")
#: The values of ``DETECTION_SCORE_RULE`` (see :class:`Config`).
DETECTION_SCORE_RULES = ("argmax", "foreground")
#: matterport's ``IMAGE_RESIZE_MODE`` values (implemented by :func:`.resizing.resize_image`).
RESIZE_MODES = ("none", "square", "pad64", "crop")


def _is_config_key(name):
    """True for the names that are configuration values (UPPER_CASE, public)."""
    return not name.startswith("_") and name.isupper()


def _is_finite_number(value):
    """True for an int or float that is finite; a bool (a number to Python, never a count,
    ratio or weight) and a string (``"0.5"`` from a hand-edited file) are not."""
    return (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
            and math.isfinite(float(value)))


def _to_json_value(value):
    """Convert a configuration value to something ``json.dump`` accepts.

    numpy arrays and tuples become lists, numpy scalars become Python numbers,
    dicts are converted recursively and callables become ``"<callable:name>"``.
    """
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json_value(v) for v in value]
    if callable(value):
        name = getattr(value, "__name__", type(value).__name__)
        return f"{CALLABLE_PREFIX}{name}>"
    return value


def _from_json_value(value, default):
    """Give a JSON value back the container type of the class default ``default``.

    Lists become numpy arrays where the default is an array and tuples where the
    default is a tuple; everything else is returned unchanged.
    """
    if isinstance(value, list):
        if isinstance(default, np.ndarray):
            return np.array(value, dtype=default.dtype)
        if isinstance(default, tuple):
            return tuple(value)
    return value


def is_callable_placeholder(value):
    """True if ``value`` is the string :meth:`Config.to_dict` writes for a callable."""
    return isinstance(value, str) and value.startswith(CALLABLE_PREFIX) and value.endswith(">")


#: Matterport's five training losses, in the order of the loss layer's output (defined here,
#: without TensorFlow, and re-exported as ``mrcnn.losses.LOSS_NAMES``).
LOSS_NAMES = ("rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss", "mrcnn_mask_loss")
#: Loss names ``LOSS_WEIGHTS`` may hold: matterport's five and the Siamese model's optional
#: presence head's and reference classification's.
KNOWN_LOSS_NAMES = LOSS_NAMES + ("presence_loss", "reference_class_loss")


class Config:
    """Base configuration class: sub-class it or pass keyword overrides.

    Attribute names, meanings and defaults follow matterport's Mask R-CNN.
    Two additions: ``SEED`` (an int makes data sampling reproducible) and
    ``DATA_WORKERS`` (number of parallel data-loading workers).
    """

    # Name of the configuration, used for log/checkpoint directories.
    NAME = None

    # GPUs to use and images per GPU; the batch size is their product.
    GPU_COUNT = 1
    IMAGES_PER_GPU = 2

    # Training steps per epoch and validation steps after every epoch.
    STEPS_PER_EPOCH = 1000
    VALIDATION_STEPS = 50

    # "resnet50", "resnet101" or a callable building the backbone. With a
    # callable, COMPUTE_BACKBONE_SHAPE must also be given.
    BACKBONE = "resnet101"
    COMPUTE_BACKBONE_SHAPE = None

    # Strides of the FPN pyramid levels P2..P6.
    BACKBONE_STRIDES = [4, 8, 16, 32, 64]

    # Size of the fully-connected layers of the classification head.
    FPN_CLASSIF_FC_LAYERS_SIZE = 1024

    # Channels of the top-down FPN layers.
    TOP_DOWN_PYRAMID_SIZE = 256
    # Widths of the RPN's shared 3x3 conv and of the mask head's convs. matterport's values
    # (512, 256) are the defaults; smaller values make CPU-sized models much faster.
    RPN_CONV_CHANNELS = 512
    MASK_CONV_CHANNELS = 256
    # Inference-mode models on a CPU may compute the RPN's and the mask head's 3x3 convs
    # (float32) by Winograd F(2x2, 3x3) (mrcnn.winograd): 2.25x fewer multiply-adds, the same
    # outputs up to float rounding. "auto": only on CPUs with AVX-512 (faster there; slower
    # than TensorFlow's convolution with AVX2 only, both measured); True: always; False:
    # TensorFlow's convolution (training and GPUs always use it).
    WINOGRAD_CONVS = "auto"

    # Number of classes including the background.
    NUM_CLASSES = 1

    # Anchor side lengths in pixels (one per pyramid level), width/height
    # ratios, and the anchor stride on the feature maps.
    RPN_ANCHOR_SCALES = (32, 64, 128, 256, 512)
    RPN_ANCHOR_RATIOS = [0.5, 1, 2]
    RPN_ANCHOR_STRIDE = 1

    # NMS threshold on RPN proposals and anchors per image for RPN training.
    RPN_NMS_THRESHOLD = 0.7
    RPN_TRAIN_ANCHORS_PER_IMAGE = 256

    # ROIs kept before and after proposal NMS.
    PRE_NMS_LIMIT = 6000
    POST_NMS_ROIS_TRAINING = 2000
    POST_NMS_ROIS_INFERENCE = 1000

    # Store instance masks cropped to their box and resized to MINI_MASK_SHAPE.
    USE_MINI_MASK = True
    MINI_MASK_SHAPE = (56, 56)

    # Input image resizing, see utils.resize_image: "none", "square", "pad64", "crop".
    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 800
    IMAGE_MAX_DIM = 1024
    IMAGE_MIN_SCALE = 0
    IMAGE_CHANNEL_COUNT = 3

    # Mean pixel (RGB) subtracted from the input images.
    MEAN_PIXEL = np.array([123.7, 116.8, 103.9])

    # ROIs per image fed to the heads during training and their positive ratio.
    TRAIN_ROIS_PER_IMAGE = 200
    ROI_POSITIVE_RATIO = 0.33
    # Hard negatives (an addition; 0 = Mask R-CNN's uniform sampling of the negative ROIs):
    # this fraction of each image's negative ROIs is taken from the proposals the RPN scores
    # highest (objects that are not the target, and near misses), the rest uniformly.
    HARD_NEGATIVE_FRACTION = 0.0

    # ROIAlign output sizes and mask output size.
    POOL_SIZE = 7
    MASK_POOL_SIZE = 14
    MASK_SHAPE = [28, 28]
    # Mask loss on thin foreground (an addition; 0 = the paper's plain per-pixel binary
    # cross-entropy): with b in 0..1 each positive ROI's pixel weights become
    # (1 - b) + b * w, w weighing its target's foreground and background pixels half each
    # (see mrcnn.losses.mask_pixel_weights). Strokes, wires and legs cover few of the 28x28
    # target pixels, so plain cross-entropy is dominated by the background around them.
    MASK_FOREGROUND_BALANCE = 0.0

    # Maximum ground-truth instances per image.
    MAX_GT_INSTANCES = 100

    # Standard deviations used to normalise the box-refinement targets.
    RPN_BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])
    BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])

    # Detection output: maximum count, minimum score and NMS threshold.
    DETECTION_MAX_INSTANCES = 100
    DETECTION_MIN_CONFIDENCE = 0.7
    DETECTION_NMS_THRESHOLD = 0.3
    # Which class a detection ROI gets (an addition; matterport's rule is the default):
    # "argmax": the ROI's most probable class, dropped if that is the background, then kept
    #   if its probability is >= DETECTION_MIN_CONFIDENCE (matterport, the official release);
    # "foreground": the ROI's most probable non-background class and its probability, kept if
    #   >= DETECTION_MIN_CONFIDENCE even when the background is more probable. With a floor
    #   below 0.5 this keeps the lower-ranked ROIs an AP curve can still use (for the Siamese
    #   two-class head: every ROI scored by its match probability).
    DETECTION_SCORE_RULE = "argmax"

    # SGD hyper-parameters.
    LEARNING_RATE = 0.001
    LEARNING_MOMENTUM = 0.9
    WEIGHT_DECAY = 0.0001

    # Loss weights.
    LOSS_WEIGHTS = {
        "rpn_class_loss": 1.,
        "rpn_bbox_loss": 1.,
        "mrcnn_class_loss": 1.,
        "mrcnn_bbox_loss": 1.,
        "mrcnn_mask_loss": 1.,
    }

    # Train the heads on RPN proposals (True) or on externally given ROIs.
    USE_RPN_ROIS = True

    # Batch normalisation training: False freezes BN layers (small batches).
    TRAIN_BN = False

    # Gradient clipping: the global L2 norm of all gradients together is clipped to this value
    # (tf.clip_by_global_norm; Keras 2's optimizer ``clipnorm``, which matterport and the
    # official release used), applied to the global-batch gradient under tf.distribute.
    GRADIENT_CLIP_NORM = 5.0

    # How the losses are normalised (see mrcnn.losses):
    # "release" (matterport and the official Siamese release): the classifier loss is the mean
    #   over all TRAIN_ROIS_PER_IMAGE rows (padding rows included); the other losses are pooled
    #   over the anchors / positive ROIs of a replica's whole batch; replicas are averaged.
    # "per_image": each loss is a mean over one image's valid rows, averaged over the global batch.
    LOSS_NORMALIZATION = "release"
    # Mixed precision (an addition): None (float32), "mixed_float16" (GPUs; training uses
    # dynamic loss scaling) or "mixed_bfloat16" (TPUs, recent CPUs). Weights stay float32,
    # and so do losses, box decoding, NMS, ROIAlign and the Siamese matching distance.
    MIXED_PRECISION = None

    # Additions to matterport: seed for reproducible data sampling (None means
    # fresh entropy) and the number of parallel data-loading workers.
    SEED = None
    DATA_WORKERS = 2

    def __init__(self, **overrides):
        """Build a configuration, applying ``overrides`` then deriving values.

        Raises:
            ValueError: an override names an attribute the class does not have.
        """
        self._copy_mutable_defaults()
        self._apply(overrides, allow_new=False)

    def validate(self):
        """Check the configuration again after attributes were edited on the instance
        (``config.IMAGE_MAX_DIM = 256`` after construction), and recompute the derived
        values (``BATCH_SIZE``, ``IMAGE_SHAPE``, ``IMAGE_META_SIZE``, ...) from them. Every
        model calls it when it is built, so an edit made after construction is checked
        exactly like an override. Returns the configuration.

        Raises:
            ValueError: as the constructor, naming the key and the value; also for an
                UPPER_CASE attribute the class does not have (a misspelt key set on the
                instance, e.g. ``config.DETECTON_MIN_CONFIDENCE = 0.3``).
        """
        extra = self.__dict__.get("_extra_keys", set())
        unknown = sorted(k for k in vars(self) if _is_config_key(k) and not hasattr(type(self), k)
                         and k not in extra and k not in DERIVED_ATTRIBUTES)
        if unknown:
            raise ValueError(f"Unknown config attribute(s) {unknown} set on this {type(self).__name__} "
                             "(misspelt? every key is a class attribute, e.g. DETECTION_MIN_CONFIDENCE)")
        self._derive()
        return self

    # ------------------------------------------------------------------ building
    def _copy_mutable_defaults(self):
        """Give the instance its own copies of mutable class defaults.

        Without this, editing ``config.LOSS_WEIGHTS["x"]`` would change every
        configuration of the class.
        """
        for key in self.config_keys():
            value = getattr(type(self), key, None)
            if isinstance(value, (list, dict, np.ndarray)):
                setattr(self, key, copy.deepcopy(value))

    def _apply(self, overrides, allow_new):
        """Set ``overrides`` on the instance, then recompute derived values."""
        for key, value in overrides.items():
            if key in DERIVED_ATTRIBUTES:
                raise ValueError(
                    f"Config attribute '{key}' is derived from other attributes and cannot be overridden")
            if not (_is_config_key(key) and hasattr(type(self), key)):
                if not allow_new:
                    raise ValueError(
                        f"Unknown config attribute '{key}' for {type(self).__name__} "
                        "(attributes are UPPER_CASE, e.g. IMAGES_PER_GPU)")
                # a lenient load (from_dict(strict=False)) keeps keys of other versions
                self.__dict__.setdefault("_extra_keys", set()).add(key)
            setattr(self, key, value)
        self._derive()

    def _derive(self):
        """Compute BATCH_SIZE, IMAGE_SHAPE and IMAGE_META_SIZE from the other values."""
        self.BATCH_SIZE = self.IMAGES_PER_GPU * self.GPU_COUNT
        if self.IMAGE_RESIZE_MODE == "crop":
            side = self.IMAGE_MIN_DIM
        else:
            side = self.IMAGE_MAX_DIM
        self.IMAGE_SHAPE = np.array([side, side, self.IMAGE_CHANNEL_COUNT])
        self.IMAGE_META_SIZE = image_meta_size(self.NUM_CLASSES)
        if getattr(self, "DETECTION_SCORE_RULE", "argmax") not in DETECTION_SCORE_RULES:
            raise ValueError(f"DETECTION_SCORE_RULE must be one of {DETECTION_SCORE_RULES}, "
                             f"got {self.DETECTION_SCORE_RULE!r}")
        if self.LOSS_NORMALIZATION not in ("release", "per_image"):
            raise ValueError(f"LOSS_NORMALIZATION must be 'release' or 'per_image', "
                             f"got {self.LOSS_NORMALIZATION!r}")
        self._check_ranges()

    #: Config keys that must be whole numbers >= 1 / >= 0, and numbers within a range
    #: (checked when a config is made or loaded; a key a subclass lacks, or None, is skipped).
    _AT_LEAST_ONE = ("GPU_COUNT", "IMAGES_PER_GPU", "NUM_CLASSES", "STEPS_PER_EPOCH",
                     "TRAIN_ROIS_PER_IMAGE", "DETECTION_MAX_INSTANCES", "POST_NMS_ROIS_TRAINING",
                     "POST_NMS_ROIS_INFERENCE", "PRE_NMS_LIMIT", "RPN_TRAIN_ANCHORS_PER_IMAGE",
                     "MAX_GT_INSTANCES", "IMAGE_MIN_DIM", "IMAGE_MAX_DIM", "TOP_DOWN_PYRAMID_SIZE",
                     "FPN_CLASSIF_FC_LAYERS_SIZE", "IMAGE_CHANNEL_COUNT", "RPN_ANCHOR_STRIDE")
    _AT_LEAST_ZERO = ("VALIDATION_STEPS", "SEED")
    _RANGES = {"DETECTION_MIN_CONFIDENCE": (0.0, 1.0), "DETECTION_NMS_THRESHOLD": (0.0, 1.0),
               "RPN_NMS_THRESHOLD": (0.0, 1.0), "ROI_POSITIVE_RATIO": (0.0, 1.0),
               "LEARNING_MOMENTUM": (0.0, 1.0), "MASK_FOREGROUND_BALANCE": (0.0, 1.0),
               "HARD_NEGATIVE_FRACTION": (0.0, 1.0)}
    #: Ratios whose None would silently mean something else (checked like _RANGES, and None refused).
    _NOT_NONE = ("MASK_FOREGROUND_BALANCE", "HARD_NEGATIVE_FRACTION")
    #: Switch keys that may also be None (matterport's TRAIN_BN=None: BatchNorm in its
    #: normal mode); every other key whose default is True/False must be a bool.
    _NONE_OR_BOOL = ("TRAIN_BN",)

    def _check_ranges(self):
        """Reject values no model can use (a negative batch, a threshold above 1, ...) with
        a message naming the key and the value, instead of a shape error deep in TensorFlow.

        Raises:
            ValueError: a count below its minimum or not a whole number, a number outside
                its range (``LEARNING_RATE`` must be > 0, ``GRADIENT_CLIP_NORM`` > 0 or 0/None
                for no clipping), a value that is not a finite number (a bool or a string is
                not), or a switch (a key whose default is True/False) that is not a bool
                (``"false"`` from a command line would read as true).
        """
        def number(key):
            value = getattr(self, key, None)
            if value is None:
                return None
            if not _is_finite_number(value):
                raise ValueError(f"{key} must be a finite number, got {value!r}")
            return float(value)

        for minimum, keys in ((1, self._AT_LEAST_ONE), (0, self._AT_LEAST_ZERO)):
            for key in keys:
                value = number(key)
                if value is not None and (value < minimum or value != int(value)):
                    raise ValueError(f"{key} must be a whole number >= {minimum}, got {getattr(self, key)!r}")
        for key, (low, high) in self._RANGES.items():
            value = number(key)
            if value is not None and not low <= value <= high:
                raise ValueError(f"{key} must be between {low:g} and {high:g}, got {getattr(self, key)!r}")
        if number("LEARNING_RATE") is not None and not number("LEARNING_RATE") > 0:
            raise ValueError(f"LEARNING_RATE must be > 0, got {self.LEARNING_RATE!r}")
        if number("WEIGHT_DECAY") is not None and not number("WEIGHT_DECAY") >= 0:
            raise ValueError(f"WEIGHT_DECAY must be >= 0, got {self.WEIGHT_DECAY!r}")
        clip = number("GRADIENT_CLIP_NORM")
        if clip is not None and clip < 0:
            raise ValueError(f"GRADIENT_CLIP_NORM must be > 0 (or 0 / None: no clipping), "
                             f"got {self.GRADIENT_CLIP_NORM!r}")
        for key in self._switch_keys():
            value = getattr(self, key)
            if not (isinstance(value, (bool, np.bool_)) or (value is None and key in self._NONE_OR_BOOL)):
                allowed = "True, False or None" if key in self._NONE_OR_BOOL else "True or False"
                raise ValueError(f"{key} must be {allowed}, got {value!r}")
        for key in self._NOT_NONE:
            if getattr(self, key, 0.0) is None:
                raise ValueError(f"{key} must be a number between 0 and 1, got None")
        mode = getattr(self, "IMAGE_RESIZE_MODE", "square")
        if mode not in RESIZE_MODES:
            raise ValueError(f"IMAGE_RESIZE_MODE must be {', '.join(map(repr, RESIZE_MODES[:-1]))} or "
                             f"{RESIZE_MODES[-1]!r}, got {mode!r}")
        winograd = getattr(self, "WINOGRAD_CONVS", "auto")
        if not (isinstance(winograd, (bool, np.bool_)) or winograd == "auto"):
            raise ValueError(f"WINOGRAD_CONVS must be True, False or 'auto', got {winograd!r}")
        weights = getattr(self, "LOSS_WEIGHTS", {})
        if not isinstance(weights, dict):
            raise ValueError(f"LOSS_WEIGHTS must be a dict of loss name -> weight, got {weights!r}")
        unknown = sorted(set(weights) - set(KNOWN_LOSS_NAMES))
        if unknown:
            raise ValueError(f"LOSS_WEIGHTS: unknown loss name(s) {unknown}; known: "
                             f"{', '.join(KNOWN_LOSS_NAMES)} (a loss left out weighs 1)")
        for name, value in weights.items():
            if not _is_finite_number(value) or value < 0:
                raise ValueError(f"LOSS_WEIGHTS[{name!r}] must be a finite number >= 0, got {value!r}")

    def _switch_keys(self):
        """Keys some class of this config's hierarchy defines as True/False."""
        return [key for key in self.config_keys()
                if any(isinstance(cls.__dict__.get(key), (bool, np.bool_)) for cls in type(self).__mro__)]

    def config_keys(self):
        """Sorted names of every configuration attribute (UPPER_CASE)."""
        names = set(k for k in dir(type(self)) if _is_config_key(k))
        names.update(k for k in vars(self) if _is_config_key(k))
        return sorted(names)

    # ------------------------------------------------------------------ display
    def display(self):
        """Print every configuration attribute, sorted by name."""
        self._derive()  # derived values follow edits made after construction
        print("\nConfigurations:")
        for key in self.config_keys():
            print(f"{key:30} {getattr(self, key)}")
        print("\n")

    def __repr__(self):
        return f"<{type(self).__name__} NAME={self.NAME!r}>"

    # ------------------------------------------------------------ serialisation
    def to_dict(self):
        """JSON-safe dict of all configuration attributes (derived ones included).

        numpy values and tuples become lists; callables (e.g. a custom
        ``BACKBONE``) become the string ``"<callable:NAME>"``.
        """
        self._derive()  # derived values follow edits made after construction
        return {key: _to_json_value(getattr(self, key)) for key in self.config_keys()}

    @classmethod
    def from_dict(cls, d, strict=True, backbone=None, compute_backbone_shape=None):
        """Build an instance of ``cls`` from a dict written by :meth:`to_dict`.

        Derived attributes in ``d`` are ignored (they are recomputed). Lists are
        turned back into numpy arrays / tuples where the class default is one.

        Callables cannot be restored from JSON: a ``"<callable:NAME>"`` value stays
        a string unless a substitute is given with ``backbone=`` (for BACKBONE) or
        ``compute_backbone_shape=`` (for COMPUTE_BACKBONE_SHAPE).

        Args:
            d: mapping of attribute name to value.
            strict: if True, keys unknown to ``cls`` raise ValueError; if False
                they are set on the instance anyway.
            backbone: callable to use for BACKBONE instead of the stored value.
            compute_backbone_shape: callable for COMPUTE_BACKBONE_SHAPE.
        """
        if not isinstance(d, dict):
            raise ValueError(f"Config.from_dict expects a dict, got {type(d).__name__}")
        values = {}
        for key, value in d.items():
            if key in DERIVED_ATTRIBUTES:
                continue
            values[key] = _from_json_value(value, getattr(cls, key, None))
        if backbone is not None:
            values["BACKBONE"] = backbone
        if compute_backbone_shape is not None:
            values["COMPUTE_BACKBONE_SHAPE"] = compute_backbone_shape
        config = cls.__new__(cls)
        config._copy_mutable_defaults()
        config._apply(values, allow_new=not strict)
        return config

    def save(self, path):
        """Write :meth:`to_dict` as JSON to ``path`` atomically (tmp file + rename)."""
        with atomic_write(path) as tmp_path:
            with open(tmp_path, "w") as f:
                json.dump(self.to_dict(), f, indent=2, sort_keys=True)

    @classmethod
    def load(cls, path, strict=True, backbone=None, compute_backbone_shape=None):
        """Read a configuration saved by :meth:`save` (see :meth:`from_dict`).

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: the file is not valid JSON or holds unknown keys.
        """
        path = os.fspath(path)
        try:
            with open(path) as f:
                d = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"Config file '{path}' is not valid JSON: {exc}") from exc
        try:
            return cls.from_dict(d, strict=strict, backbone=backbone,
                                 compute_backbone_shape=compute_backbone_shape)
        except ValueError as exc:
            raise ValueError(f"Config file '{path}': {exc}") from exc
