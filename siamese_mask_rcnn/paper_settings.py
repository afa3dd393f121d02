"""The paper's Mask R-CNN settings shared by the Siamese model and the plain Mask R-CNN.

Paper §5.1 and Appendix 1 train the Siamese Mask R-CNN with the hyper-parameters of the
Mask R-CNN it extends; the plain Mask R-CNN baseline on COCO
(:mod:`siamese_mask_rcnn.coco_maskrcnn`) uses the same ones. :class:`PaperSettings` holds
them once; ``SiameseConfig`` and ``CocoConfig`` list it before ``Config`` so these values
replace matterport's defaults. This module imports nothing.
"""


class PaperSettings:
    """Image size, anchors/ROIs, detection and optimiser settings of paper §5.1.

    Images are resized "square" to 1024² pixels (shorter side at least 800); 256 RPN
    training anchors and 200 training ROIs per image; 2000 / 1000 proposals after NMS in
    training / inference; at most 100 ground-truth instances and detections; detection NMS
    IoU 0.5 and minimum confidence 0.7; SGD with learning rate 0.02, momentum 0.9, weight
    decay 1e-4 and a global gradient clip norm of 5.
    """

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
