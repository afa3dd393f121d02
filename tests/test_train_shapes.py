"""End to end: the Mask R-CNN core learns coloured shapes from scratch on the CPU.

A small config (tiny backbone, 128² images) trains for a few dozen steps on generated
squares / circles / triangles; the loss must fall clearly and ``detect`` must return boxes
and masks that overlap the shapes of unseen images.
"""
import numpy as np
import pytest

from siamese_mask_rcnn.mrcnn import utils
from siamese_mask_rcnn.mrcnn.backbone import tiny_backbone
from siamese_mask_rcnn.mrcnn.config import Config
from siamese_mask_rcnn.mrcnn.shapes import ShapesDataset


class ShapesConfig(Config):
    NAME = "shapes"
    BACKBONE = tiny_backbone
    NUM_CLASSES = 4
    IMAGE_MIN_DIM = IMAGE_MAX_DIM = 128
    IMAGES_PER_GPU = 4
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    TOP_DOWN_PYRAMID_SIZE = 32
    FPN_CLASSIF_FC_LAYERS_SIZE = 64
    RPN_CONV_CHANNELS = 64
    MASK_CONV_CHANNELS = 32
    RPN_TRAIN_ANCHORS_PER_IMAGE = 64
    POST_NMS_ROIS_TRAINING = 200
    POST_NMS_ROIS_INFERENCE = 100
    TRAIN_ROIS_PER_IMAGE = 32
    MAX_GT_INSTANCES = 8
    DETECTION_MAX_INSTANCES = 8
    DETECTION_MIN_CONFIDENCE = 0.5
    MINI_MASK_SHAPE = (28, 28)
    LEARNING_RATE = 0.01
    STEPS_PER_EPOCH = 30
    VALIDATION_STEPS = 0
    SEED = 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import tensorflow as tf
    from siamese_mask_rcnn.mrcnn.model import MaskRCNN

    tf.random.set_seed(0)
    logs = tmp_path_factory.mktemp("logs")
    model = MaskRCNN("training", ShapesConfig(), str(logs))
    history = model.train(ShapesDataset(300, seed=0), None, ShapesConfig.LEARNING_RATE, epochs=4,
                          layers="all", verbose=0)
    inference = MaskRCNN("inference", ShapesConfig(IMAGES_PER_GPU=1), str(logs))
    inference.load_weights(model.find_last(), by_name=True)
    return history, inference


def test_loss_falls_clearly(trained):
    history, _ = trained
    first, last = history[0]["loss"], history[-1]["loss"]
    assert np.isfinite(last) and last < 0.6 * first, [h["loss"] for h in history]
    assert history[-1]["mrcnn_mask_loss"] < history[0]["mrcnn_mask_loss"]


def test_detections_overlap_the_shapes(trained):
    _, model = trained
    images = ShapesDataset(6, seed=99)
    matched, total = 0, 0
    for image_id in images.image_ids:
        masks, class_ids = images.load_mask(image_id)
        result = model.detect([images.load_image(image_id)])[0]
        total += len(class_ids)
        if len(result["rois"]) == 0:
            continue
        assert result["masks"].shape[:2] == masks.shape[:2]
        box_iou = utils.compute_overlaps(utils.extract_bboxes(masks), result["rois"])
        mask_iou = utils.compute_overlaps_masks(masks, result["masks"])
        matched += int(np.sum((box_iou.max(axis=1) >= 0.5) & (mask_iou.max(axis=1) >= 0.5)))
    assert matched >= 0.5 * total, f"only {matched} of {total} shapes found with box and mask IoU >= 0.5"


def test_augmentation_reaches_the_batches_except_for_listed_sources(tmp_path):
    """An albumentations transform given to ``train`` is applied to every training image
    (and its masks); sources in ``no_augmentation_sources`` are left as they are."""
    import albumentations as A

    from siamese_mask_rcnn.mrcnn.model import MaskRCNN
    from siamese_mask_rcnn.mrcnn.pipeline import SkipCounter
    from siamese_mask_rcnn.mrcnn.training import make_training_dataset

    model = MaskRCNN("training", ShapesConfig(), str(tmp_path))
    data = ShapesDataset(8, seed=3)

    def first_batch(augmentation, plain_sources=None):
        ds, _ = make_training_dataset(model, data, augmentation, 0, 0, SkipCounter(), 4, plain_sources)
        return [t.numpy() for t in next(iter(ds))]

    plain = first_batch(None)
    flipped = first_batch(A.HorizontalFlip(p=1.0))
    untouched = first_batch(A.HorizontalFlip(p=1.0), ["shapes"])
    np.testing.assert_allclose(flipped[0], plain[0][:, :, ::-1])            # images mirrored
    boxes, flipped_boxes = plain[5], flipped[5]  # gt boxes (y1, x1, y2, x2), from the flipped masks
    real = boxes.any(axis=-1)
    np.testing.assert_array_equal(flipped_boxes[real][:, [0, 2]], boxes[real][:, [0, 2]])
    np.testing.assert_array_equal(np.sort(flipped_boxes[real][:, 1]), np.sort(128 - boxes[real][:, 3]))
    for a, b in zip(untouched, plain):
        np.testing.assert_array_equal(a, b)
