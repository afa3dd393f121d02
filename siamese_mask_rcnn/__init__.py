"""Siamese Mask R-CNN: one-shot instance segmentation by example (Keras 3 / TensorFlow).

The package keeps imports light: TensorFlow is only imported by the modules that
build or run models (``siamese_mask_rcnn.mrcnn.model``, ``siamese_mask_rcnn.siamese``).
"""

__version__ = "0.1.0"
