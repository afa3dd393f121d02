"""Siamese Mask R-CNN configuration and the paper's presets (SPEC §2–§3).

``SiameseConfig`` extends the Mask R-CNN ``Config`` with the reference ("target") image
settings and the matching layer, and sets the one-shot defaults: two classes
(background / match), one class-agnostic mask, the paper's loss weights.

Presets (``siamese_config("paper")`` / ``siamese_config("small")``):

* ``paper`` — 1024² query, 192² reference, FC 1024, 256 RPN anchors, 2000/1000 post-NMS
  ROIs, 200 training ROIs, 100 instances, detection NMS 0.5, min confidence 0.7,
  weight decay 1e-4, clip norm 5, learning rate 0.02, 3 images per GPU (batch 12 on 4).
* ``small`` — 512² query (shorter side scaled up to at least 400, as in the release), 96² reference, FC 512, 64 RPN anchors, 500/500 ROIs,
  100 training ROIs, 30 instances (the official release's small model).
"""
import numpy as np

from .mrcnn.config import Config


class SiameseConfig(Config):
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

    # Matching (SPEC §2): 1x1 conv of [P_query, |P_query - pool(P_ref)|] to this many channels.
    MATCHING_CHANNELS = 384
    # The official release puts a ReLU after every FPN conv; keep it so its weights behave.
    FPN_RELU = True

    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 800
    IMAGE_MAX_DIM = 1024
    FPN_CLASSIF_FC_LAYERS_SIZE = 1024
    RPN_TRAIN_ANCHORS_PER_IMAGE = 256
    PRE_NMS_LIMIT = 6000
    RPN_NMS_THRESHOLD = 0.7
    POST_NMS_ROIS_TRAINING = 2000
    POST_NMS_ROIS_INFERENCE = 1000
    TRAIN_ROIS_PER_IMAGE = 200
    MAX_GT_INSTANCES = 100
    DETECTION_MAX_INSTANCES = 100
    DETECTION_NMS_THRESHOLD = 0.5
    DETECTION_MIN_CONFIDENCE = 0.7
    LEARNING_RATE = 0.02
    LEARNING_MOMENTUM = 0.9
    WEIGHT_DECAY = 0.0001
    GRADIENT_CLIP_NORM = 5.0
    LOSS_WEIGHTS = {"rpn_class_loss": 2.0, "rpn_bbox_loss": 0.1, "mrcnn_class_loss": 2.0,
                    "mrcnn_bbox_loss": 0.5, "mrcnn_mask_loss": 1.0}
    STEPS_PER_EPOCH = 1000
    VALIDATION_STEPS = 50
    TARGET_SHAPE = None  # derived

    def _derive(self):
        super()._derive()
        self.TARGET_SHAPE = np.array([self.TARGET_MAX_DIM, self.TARGET_MAX_DIM, self.IMAGE_CHANNEL_COUNT])


PRESETS = {
    "paper": {},
    "small": {
        "IMAGE_MIN_DIM": 400, "IMAGE_MAX_DIM": 512,
        "TARGET_MIN_DIM": 75, "TARGET_MAX_DIM": 96,
        "FPN_CLASSIF_FC_LAYERS_SIZE": 512,
        "RPN_TRAIN_ANCHORS_PER_IMAGE": 64,
        "POST_NMS_ROIS_TRAINING": 500, "POST_NMS_ROIS_INFERENCE": 500,
        "TRAIN_ROIS_PER_IMAGE": 100,
        "MAX_GT_INSTANCES": 30, "DETECTION_MAX_INSTANCES": 30,
    },
}


def siamese_config(preset="paper", **overrides):
    """A ``SiameseConfig`` of ``preset`` ("paper" or "small") with ``overrides`` applied."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return SiameseConfig(**{**PRESETS[preset], **overrides})
