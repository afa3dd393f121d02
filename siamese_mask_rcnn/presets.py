"""Every named configuration in one table: ``paper``, ``small``, ``demo``, ``tiny``, ``smoke``.

Each preset is its parent preset with a few settings changed; ``paper`` is
``SiameseConfig``'s own defaults. :func:`preset_settings` gives the flattened settings,
``config.siamese_config(name, **overrides)`` the config.

* ``paper`` — the paper's model (paper §5.1, Appendix 1): 1024² query, 192² reference, FC 1024,
  256 RPN anchors per image, 2000/1000 post-NMS ROIs, 200 training ROIs, 100 instances,
  detection NMS 0.5, minimum confidence 0.7, weight decay 1e-4, clip norm 5, learning rate
  0.02, 3 images per GPU (batch 12 on 4 GPUs).
* ``small`` — the official release's small model: 512² query (shorter side scaled up to at
  least 400, the release's IMAGE_MIN_DIM), 96² reference, FC 512,
  64 RPN anchors, 500/500 ROIs, 100 training ROIs, 30 instances.
* ``demo`` — the CPU demo on embedded data (``siamese-mrcnn demo``): a few-layer backbone
  (``tiny_backbone``), 128² scenes, 32² references, narrow heads.
* ``tiny`` — ``demo`` shrunk further for the test suite: 16-channel pyramid, 24 matching
  channels, 32-wide classifier, 2 images per GPU, one data worker.
* ``smoke`` — ``small``'s structure at 128² with ``tiny_backbone``: the COCO training
  script's ``--backbone tiny`` CPU smoke run.

This module does not import TensorFlow: ``tiny_backbone`` is looked up (importing Keras)
only when a preset that uses it is flattened.
"""
#: Marks the ``BACKBONE`` of CPU-sized presets; replaced by ``mrcnn.backbone.tiny_backbone``.
TINY_BACKBONE = "<tiny_backbone>"

#: name -> (parent preset or None, settings changed from the parent).
PRESETS = {
    "paper": (None, {}),
    "small": ("paper", {
        "IMAGE_MIN_DIM": 400, "IMAGE_MAX_DIM": 512,
        "TARGET_MIN_DIM": 75, "TARGET_MAX_DIM": 96,
        "FPN_CLASSIF_FC_LAYERS_SIZE": 512,
        "RPN_TRAIN_ANCHORS_PER_IMAGE": 64,
        "POST_NMS_ROIS_TRAINING": 500, "POST_NMS_ROIS_INFERENCE": 500,
        "TRAIN_ROIS_PER_IMAGE": 100,
        "MAX_GT_INSTANCES": 30, "DETECTION_MAX_INSTANCES": 30,
    }),
    "demo": ("small", {
        "NAME": "demo", "BACKBONE": TINY_BACKBONE, "IMAGES_PER_GPU": 4, "GPU_COUNT": 1,
        "IMAGE_MIN_DIM": 128, "IMAGE_MAX_DIM": 128,
        "TARGET_MIN_DIM": 32, "TARGET_MAX_DIM": 32,
        "RPN_ANCHOR_SCALES": (8, 16, 32, 64, 128), "TOP_DOWN_PYRAMID_SIZE": 64,
        "MATCHING_CHANNELS": 96, "FPN_CLASSIF_FC_LAYERS_SIZE": 128,
        "RPN_TRAIN_ANCHORS_PER_IMAGE": 64, "RPN_CONV_CHANNELS": 128, "MASK_CONV_CHANNELS": 64,
        "POST_NMS_ROIS_TRAINING": 200, "POST_NMS_ROIS_INFERENCE": 100,
        "TRAIN_ROIS_PER_IMAGE": 32, "MAX_GT_INSTANCES": 12, "DETECTION_MAX_INSTANCES": 12,
        "DETECTION_MIN_CONFIDENCE": 0.5, "MINI_MASK_SHAPE": (28, 28), "LEARNING_RATE": 0.01,
        "WEIGHT_DECAY": 0.0001, "STEPS_PER_EPOCH": 100, "VALIDATION_STEPS": 2, "SEED": 0,
        "DATA_WORKERS": 2, "FPN_RELU": False,
        # with --presence-head, its loss trains the encoder too (measured better here)
        "PRESENCE_GRADIENT": True,
    }),
    "tiny": ("demo", {
        "IMAGES_PER_GPU": 2, "TOP_DOWN_PYRAMID_SIZE": 16, "MATCHING_CHANNELS": 24,
        "FPN_CLASSIF_FC_LAYERS_SIZE": 32, "RPN_CONV_CHANNELS": 32, "MASK_CONV_CHANNELS": 16,
        "TRAIN_ROIS_PER_IMAGE": 16, "POST_NMS_ROIS_TRAINING": 100,
        "POST_NMS_ROIS_INFERENCE": 50, "VALIDATION_STEPS": 1, "DATA_WORKERS": 1,
    }),
    "smoke": ("small", {
        "BACKBONE": TINY_BACKBONE,
        "IMAGE_MIN_DIM": 128, "IMAGE_MAX_DIM": 128,
        "TARGET_MIN_DIM": 32, "TARGET_MAX_DIM": 32,
        "RPN_ANCHOR_SCALES": (8, 16, 32, 64, 128),
        "TOP_DOWN_PYRAMID_SIZE": 32, "MATCHING_CHANNELS": 48,
        "FPN_CLASSIF_FC_LAYERS_SIZE": 64,
        "POST_NMS_ROIS_TRAINING": 200, "POST_NMS_ROIS_INFERENCE": 100,
        "PRE_NMS_LIMIT": 1000,
        "TRAIN_ROIS_PER_IMAGE": 32, "MAX_GT_INSTANCES": 10,
        "RPN_TRAIN_ANCHORS_PER_IMAGE": 64, "DETECTION_MAX_INSTANCES": 10,
        "MINI_MASK_SHAPE": (28, 28),
    }),
}

#: The preset names, largest model first (for ``--preset`` choices).
PRESET_NAMES = tuple(PRESETS)


def _check_name(name):
    """Raise ``ValueError`` naming an unknown preset and the valid ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")


def _resolve(settings):
    """Replace the :data:`TINY_BACKBONE` marker by the ``tiny_backbone`` callable."""
    if settings.get("BACKBONE") == TINY_BACKBONE:
        # Imported here, not at the top, so that configs stay free of Keras / TensorFlow.
        from .mrcnn.backbone import tiny_backbone
        settings["BACKBONE"] = tiny_backbone
    return settings


def preset_changes(name):
    """The settings ``name`` changes from its parent preset (a new dict, ``BACKBONE``
    resolved to a callable where the preset uses ``tiny_backbone``).

    E.g. ``preset_changes("tiny")`` are the overrides that turn ``demo`` into ``tiny``.

    Raises:
        ValueError: ``name`` is not a preset (the message lists the valid names).
    """
    _check_name(name)
    return _resolve(dict(PRESETS[name][1]))


def preset_settings(name):
    """All settings of preset ``name`` that differ from ``SiameseConfig``'s defaults (the
    ``paper`` preset), its ancestors' changes applied first.

    Raises:
        ValueError: ``name`` is not a preset (the message lists the valid names).
    """
    _check_name(name)
    chain = []
    while name is not None:
        parent, changes = PRESETS[name]
        chain.append(changes)
        name = parent
    settings = {}
    for changes in reversed(chain):
        settings.update(changes)
    return _resolve(settings)
