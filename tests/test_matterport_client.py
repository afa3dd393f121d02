"""A matterport-style client, end to end, written the way matterport's shapes notebook is.

Config and ``utils.Dataset`` subclasses, ``train`` heads then all, ``find_last``, an
inference model loading those weights by name, ``detect``, then the evaluation loop every
matterport notebook runs: ``load_image_gt(..., use_mini_mask=False)`` → ``detect`` →
``utils.compute_ap``. Only matterport's names and call forms are used below.
"""
import numpy as np
import pytest

pytest.importorskip("tensorflow")

from siamese_mask_rcnn.mrcnn import model as modellib  # noqa: E402
from siamese_mask_rcnn.mrcnn import utils  # noqa: E402
from siamese_mask_rcnn.mrcnn.backbone import tiny_backbone  # noqa: E402
from siamese_mask_rcnn.mrcnn.config import Config  # noqa: E402
from siamese_mask_rcnn.mrcnn.shapes import SHAPES, random_shape_specs, shape_mask  # noqa: E402


class ShapesConfig(Config):
    NAME = "shapes"
    GPU_COUNT = 1
    IMAGES_PER_GPU = 2
    NUM_CLASSES = 1 + 3
    BACKBONE = tiny_backbone
    IMAGE_MIN_DIM = 128
    IMAGE_MAX_DIM = 128
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    TOP_DOWN_PYRAMID_SIZE = 16
    FPN_CLASSIF_FC_LAYERS_SIZE = 32
    RPN_CONV_CHANNELS = 16
    MASK_CONV_CHANNELS = 16
    RPN_TRAIN_ANCHORS_PER_IMAGE = 32
    POST_NMS_ROIS_TRAINING = 64
    POST_NMS_ROIS_INFERENCE = 32
    TRAIN_ROIS_PER_IMAGE = 16
    MAX_GT_INSTANCES = 6
    STEPS_PER_EPOCH = 2
    VALIDATION_STEPS = 1
    SEED = 0


class InferenceConfig(ShapesConfig):
    GPU_COUNT = 1
    IMAGES_PER_GPU = 1
    DETECTION_MIN_CONFIDENCE = 0.0  # an untrained model must still return detections to score:
    # with matterport's argmax rule a barely trained model may call every ROI background (a
    # floor of 0 then keeps nothing); "foreground" keeps every ROI from the floor on
    DETECTION_SCORE_RULE = "foreground"
    DETECTION_MAX_INSTANCES = 8


class ShapesDataset(utils.Dataset):
    """matterport's notebook dataset: ``load_shapes`` registers, ``load_image``/``load_mask`` draw."""

    def load_shapes(self, count, height, width, seed):
        for i, name in enumerate(SHAPES, start=1):
            self.add_class("shapes", i, name)
        rng = np.random.default_rng(seed)
        for i in range(count):
            self.add_image("shapes", image_id=i, path=None, width=width, height=height,
                           bg_color=rng.integers(0, 60, 3), shapes=random_shape_specs(rng, height, width))

    def load_image(self, image_id):
        info = self.image_info[image_id]
        image = np.ones([info["height"], info["width"], 3], dtype=np.uint8) * info["bg_color"].astype(np.uint8)
        for shape, color, dims in info["shapes"]:
            image[shape_mask(shape, dims, info["height"], info["width"])] = color
        return image

    def image_reference(self, image_id):
        return f"shapes image {image_id}"

    def load_mask(self, image_id):
        info = self.image_info[image_id]
        mask = np.stack([shape_mask(s, d, info["height"], info["width"]) for s, _, d in info["shapes"]], -1)
        class_ids = np.array([self.class_names.index(s) for s, _, _ in info["shapes"]])
        return mask.astype(bool), class_ids.astype(np.int32)


def make_dataset(count, seed):
    dataset = ShapesDataset()
    dataset.load_shapes(count, 128, 128, seed)
    dataset.prepare()
    return dataset


def test_matterport_notebook_flow(tmp_path):
    import tensorflow as tf
    tf.random.set_seed(0)
    config = ShapesConfig()
    dataset_train, dataset_val = make_dataset(12, seed=1), make_dataset(3, seed=2)

    model = modellib.MaskRCNN(mode="training", config=config, model_dir=str(tmp_path))
    model.train(dataset_train, dataset_val, learning_rate=config.LEARNING_RATE, epochs=1, layers="heads")
    model.train(dataset_train, dataset_val, learning_rate=config.LEARNING_RATE / 10, epochs=2, layers="all")

    inference_config = InferenceConfig()
    model = modellib.MaskRCNN(mode="inference", config=inference_config, model_dir=str(tmp_path))
    model_path = model.find_last()
    assert model_path.endswith("mask_rcnn_shapes_0002.h5")
    model.load_weights(model_path, by_name=True)
    assert model.epoch == 2

    image_id = dataset_val.image_ids[0]
    # matterport's default is full-size masks; USE_MINI_MASK only applies when asked for
    _, _, _, _, full = modellib.load_image_gt(dataset_val, inference_config, image_id)
    _, _, _, _, mini = modellib.load_image_gt(dataset_val, inference_config, image_id, use_mini_mask=True)
    assert full.shape[:2] == (128, 128) and mini.shape[:2] == tuple(inference_config.MINI_MASK_SHAPE)

    APs, scored = [], 0
    for image_id in dataset_val.image_ids:
        image, image_meta, gt_class_id, gt_bbox, gt_mask = modellib.load_image_gt(
            dataset_val, inference_config, image_id, use_mini_mask=False)
        assert gt_mask.shape == image.shape[:2] + (len(gt_class_id),)
        molded_images = np.expand_dims(modellib.mold_image(image, inference_config), 0)
        assert molded_images.shape == (1, 128, 128, 3)
        results = model.detect([image], verbose=0)
        r = results[0]
        assert r["masks"].shape[:2] == image.shape[:2]
        scored += len(r["rois"])
        AP, precisions, recalls, overlaps = utils.compute_ap(
            gt_bbox, gt_class_id, gt_mask, r["rois"], r["class_ids"], r["scores"], r["masks"])
        assert overlaps.shape == (len(r["rois"]), len(gt_class_id))
        assert 0.0 <= AP <= 1.0 and len(precisions) == len(recalls)
        APs.append(AP)
    assert scored > 0, "no detection at DETECTION_MIN_CONFIDENCE=0 (foreground rule): the AP loop was not exercised"
    assert np.isfinite(np.mean(APs))
