"""Siamese Mask R-CNN configuration (paper §4 and §5.1).

``SiameseConfig`` extends the Mask R-CNN ``Config`` with the reference image settings
(kept under the release's ``TARGET_*`` / ``NUM_TARGETS`` names) and the matching layer, and
sets the one-shot defaults: two classes (background / match), one class-agnostic mask, the
paper's loss weights. Its defaults are the ``paper`` preset; ``siamese_config(name)``
builds any preset of :mod:`siamese_mask_rcnn.presets` (``paper``, ``small``, ``demo``,
``tiny``, ``smoke``).
"""
import numpy as np

from .mrcnn.config import Config
from .paper_settings import PaperSettings
from .presets import PRESETS, preset_settings  # noqa: F401  (PRESETS: public re-export)


class SiameseConfig(PaperSettings, Config):
    """One-shot Mask R-CNN settings (defaults = the "paper" preset)."""

    NAME = "siamese"
    BACKBONE = "resnet50"
    NUM_CLASSES = 2  # background / match
    IMAGES_PER_GPU = 3
    GPU_COUNT = 1

    # Reference ("target") images: matterport "square" resize with these dims, zero padding.
    NUM_TARGETS = 1  # k-shot: the pooled embeddings of the k references are averaged
    TARGET_MAX_DIM = 192
    TARGET_MIN_DIM = 150
    TARGET_PADDING = True

    # Matching (paper §4.3, Appendix 1.2): 1x1 conv of [P_query, |P_query - pool(P_ref)|] to this many channels.
    MATCHING_CHANNELS = 384
    # Negative pairs (open-world search, beyond the paper): this fraction of training pairs
    # takes a reference of a training category ABSENT from the query, so every anchor and
    # ROI is background. 0 trains exactly as the paper and the release did.
    NEGATIVE_PAIR_FRACTION = 0.0
    # The presence head (open-world search, beyond the paper; siamese_mask_rcnn.presence): one
    # "is the category here?" score per (query, reference) pair from the matched maps, trained
    # with a negative reference per query behind a gradient stop, multiplied into the
    # detection scores. False builds exactly the paper's model (the release's weights).
    PRESENCE_HEAD = False
    PRESENCE_CHANNELS = 64
    # True lets the presence loss train the encoder and the matching as well (no gradient stop).
    PRESENCE_GRADIENT = False
    # "multiply": detection scores times the presence, those below DETECTION_MIN_CONFIDENCE
    # dropped; "none": the presence is reported beside the detector's own scores.
    PRESENCE_GATING = "multiply"
    # The reference classification loss (open-world search, beyond the paper;
    # siamese_mask_rcnn.reference_loss): the number of category ids (dataset.num_classes) whose
    # training references' embeddings are classified into their category in training. 0 trains
    # exactly as the paper did; inference models never have the layer.
    REFERENCE_CLASSES = 0
    # Verification (open-world search, beyond the paper; siamese_mask_rcnn.verification): None
    # keeps every detection (the paper); a cosine in [-1, 1] crops each detection, embeds it
    # with the reference encoder and drops it when less similar to the reference.
    VERIFY_MIN_SIMILARITY = None
    # Known-category rejection (beyond the paper; siamese_mask_rcnn.verification): None keeps
    # every detection; a margin in [-2, 2] drops a detection whose embedding is closer by more
    # than it to a known category's prototype (the reference classifier of a model trained with
    # REFERENCE_CLASSES > 0) than to the reference.
    VERIFY_KNOWN_MARGIN = None
    # Independent photometric + geometric augmentation of query and references (beyond the
    # paper; siamese_mask_rcnn.augmentation). False trains exactly as the paper did.
    PAIR_AUGMENTATION = False
    # The official release puts a ReLU after every FPN conv; keep it so its weights behave.
    FPN_RELU = True

    LOSS_WEIGHTS = {"rpn_class_loss": 2.0, "rpn_bbox_loss": 0.1, "mrcnn_class_loss": 2.0,
                    "mrcnn_bbox_loss": 0.5, "mrcnn_mask_loss": 1.0}
    STEPS_PER_EPOCH = 1000
    VALIDATION_STEPS = 50
    TARGET_SHAPE = None  # derived
    _RANGES = {**Config._RANGES, "NEGATIVE_PAIR_FRACTION": (0.0, 1.0)}
    _NOT_NONE = Config._NOT_NONE + ("NEGATIVE_PAIR_FRACTION",)

    def _derive(self):
        super()._derive()
        if self.PRESENCE_GATING not in ("multiply", "none"):
            raise ValueError(f"PRESENCE_GATING must be 'multiply' or 'none', got {self.PRESENCE_GATING!r}")
        if int(self.PRESENCE_CHANNELS) < 1:
            raise ValueError(f"PRESENCE_CHANNELS must be >= 1, got {self.PRESENCE_CHANNELS}")
        check_min_similarity(self.VERIFY_MIN_SIMILARITY)
        check_known_margin(self.VERIFY_KNOWN_MARGIN)
        classes = self.REFERENCE_CLASSES
        if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or classes < 0 or classes == 1:
            raise ValueError(f"REFERENCE_CLASSES must be 0 (off) or the number of category ids (>= 2, "
                             f"background included), got {classes!r}")
        self.TARGET_SHAPE = np.array([self.TARGET_MAX_DIM, self.TARGET_MAX_DIM, self.IMAGE_CHANNEL_COUNT])


def _number_in(value, low, high):
    """Whether ``value`` is a real number (not a bool) in [low, high]."""
    return (not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.number))
            and low <= float(value) <= high)


def check_min_similarity(value):
    """``VERIFY_MIN_SIMILARITY`` as a float (None: verification off), or ``ValueError`` unless
    it is a cosine in [-1, 1]. Checked when a config is made and again at use (it may be set
    afterwards)."""
    if value is None:
        return None
    if not _number_in(value, -1.0, 1.0):
        raise ValueError(f"VERIFY_MIN_SIMILARITY must be None (off) or a cosine in [-1, 1], got {value!r}")
    return float(value)


def check_known_margin(value):
    """``VERIFY_KNOWN_MARGIN`` as a float (None: known-category rejection off), or
    ``ValueError`` unless it is a difference of two cosines, in [-2, 2]. Checked when a config
    is made and again at use."""
    if value is None:
        return None
    if not _number_in(value, -2.0, 2.0):
        raise ValueError(f"VERIFY_KNOWN_MARGIN must be None (off) or a difference of cosines in [-2, 2], "
                         f"got {value!r}")
    return float(value)


def siamese_config(preset="paper", **overrides):
    """A ``SiameseConfig`` of ``preset`` with ``overrides`` (config keys) applied on top.

    ``preset`` is a name of :data:`siamese_mask_rcnn.presets.PRESETS`: ``"paper"``,
    ``"small"``, ``"demo"``, ``"tiny"`` or ``"smoke"``.

    Raises:
        ValueError: ``preset`` is unknown (the message lists the valid names), or an
            override is not a config key / has an invalid value (from ``Config``).
    """
    return SiameseConfig(**{**preset_settings(preset), **overrides})
