"""Siamese Mask R-CNN: one-shot instance segmentation by example (Keras 3 / TensorFlow).

The package keeps imports light: TensorFlow is only imported by the modules that
build or run models (``siamese_mask_rcnn.mrcnn.model``, ``siamese_mask_rcnn.siamese``).
"""

import os as _os

# TensorFlow's C++ logging floods the console with cost-model notes; keep errors only
# unless the user chose a level.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
