"""Tests of the assembled Mask R-CNN graph (``mrcnn.model.MaskRCNN``).

The full-size ResNet-50 COCO inference graph (1024² input) is built once per module and
run once; everything else uses ``backbone.tiny_backbone`` at 128².
"""
import json
import math
import os
import pathlib

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from siamese_mask_rcnn.mrcnn import model as M  # noqa: E402
from siamese_mask_rcnn.mrcnn import weights as W  # noqa: E402
from h5_fixtures import write_manifest_h5  # noqa: E402
from siamese_mask_rcnn.mrcnn.backbone import tiny_backbone  # noqa: E402
from siamese_mask_rcnn.mrcnn.config import Config  # noqa: E402

MANIFEST = "matterport_resnet50_coco_manifest.json"
HEAD_LAYERS = ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"]


class CocoR50Config(Config):
    NAME = "coco"
    BACKBONE = "resnet50"
    NUM_CLASSES = 81
    IMAGES_PER_GPU = 1
    IMAGE_MIN_DIM = 800
    IMAGE_MAX_DIM = 1024


def tiny_shapes(image_shape):
    """Feature-map sizes of ``tiny_backbone`` (strides 4..64, like ResNet)."""
    return np.array([[math.ceil(image_shape[0] / s), math.ceil(image_shape[1] / s)]
                     for s in (4, 8, 16, 32, 64)])


def tiny_config():
    return Config(NAME="tiny", BACKBONE=tiny_backbone, COMPUTE_BACKBONE_SHAPE=tiny_shapes,
                  NUM_CLASSES=4, IMAGES_PER_GPU=1, IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128,
                  RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128), TOP_DOWN_PYRAMID_SIZE=32,
                  FPN_CLASSIF_FC_LAYERS_SIZE=64, PRE_NMS_LIMIT=500, POST_NMS_ROIS_INFERENCE=50,
                  DETECTION_MAX_INSTANCES=10, DETECTION_MIN_CONFIDENCE=0.0)


def random_image(seed, shape):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# ----------------------------------------------------------------------------------------
# full-size ResNet-50 COCO inference graph, built and run once
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def coco_r50(tmp_path_factory):
    """``(model, image, detect results, raw graph outputs)`` of one ``detect`` call."""
    config = CocoR50Config()
    model = M.MaskRCNN("inference", config, tmp_path_factory.mktemp("r50_logs"))
    raw = []
    predict = model._predict

    def spy(inputs):
        outputs = predict(inputs)
        raw.append(outputs)
        return outputs

    model._predict = spy
    image = random_image(0, (480, 640, 3))
    results = model.detect([image])
    model._predict = predict
    assert len(raw) == 1
    return model, image, results, raw[0]


def test_full_size_inference_graph_output_shapes(coco_r50):
    model, _, _, raw = coco_r50
    detections, class_probs, bbox, masks, rpn_rois, rpn_class, rpn_bbox = raw
    assert detections.shape == (1, 100, 6)
    assert class_probs.shape == (1, 1000, 81)
    assert bbox.shape == (1, 1000, 81, 4)
    assert masks.shape == (1, 100, 28, 28, 81)
    assert rpn_rois.shape == (1, 1000, 4)
    # anchors: 3 ratios × (256² + 128² + 64² + 32² + 16²) locations = 261,888
    assert rpn_class.shape == (1, 261888, 2) and rpn_bbox.shape == (1, 261888, 4)
    assert len(model.get_anchors(model.config.IMAGE_SHAPE)) == 261888
    assert [tuple(x.shape) for x in model.keras_model.inputs] == [(None, 1024, 1024, 3), (None, 93)]
    np.testing.assert_allclose(class_probs.sum(-1), 1.0, atol=1e-4)
    assert np.all((rpn_rois >= 0) & (rpn_rois <= 1))


def test_full_size_detect_results_match_raw_detections(coco_r50):
    _, image, results, raw = coco_r50
    assert len(results) == 1
    r = results[0]
    rows = raw[0][0]
    n = int(np.sum(rows[:, 4] > 0))
    assert r["rois"].shape == (n, 4) and r["class_ids"].shape == (n,) and r["scores"].shape == (n,)
    assert r["masks"].shape == (480, 640, n) and r["masks"].dtype == bool
    np.testing.assert_allclose(r["scores"], rows[:n, 5], rtol=1e-6)
    np.testing.assert_array_equal(r["class_ids"], rows[:n, 4].astype(int))
    assert np.all(np.diff(r["scores"]) <= 0) and np.all(r["scores"] >= 0.7)
    assert np.all((r["class_ids"] >= 1) & (r["class_ids"] <= 80))
    assert np.all(r["rois"] >= 0) and np.all(r["rois"][:, [0, 2]] <= 480) and np.all(r["rois"][:, [1, 3]] <= 640)


def test_matterport_resnet50_weights_load_completely(coco_r50, matterport_layout_dir, tmp_path):
    model = coco_r50[0]
    manifest_path = matterport_layout_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    h5 = write_manifest_h5(manifest_path, tmp_path / "r50_coco.h5")
    file_weights = W.read_h5_weights(h5)
    assert sum(len(v) for v in file_weights.values()) == 384

    # the model's weighted layers are exactly the manifest's 131 (rpn_model nested)
    top_level = {layer.name for layer in model.keras_model.layers if layer.weights}
    assert top_level == {layer["name"] for layer in manifest["layers"]}
    assert len(top_level) == 131
    flat = dict(W.iter_weighted_layers(model.keras_model))
    assert set(flat) == set(file_weights)

    report = model.load_weights(h5, by_name=True)
    assert report.n_arrays == 384
    assert not report.missing_in_file and not report.unused_in_file and not report.skipped
    compared = 0
    for name, layer in flat.items():
        arrays = dict(file_weights[name])
        assert sorted(arrays) == sorted(v.name for v in layer.weights), name
        for variable in layer.weights:
            np.testing.assert_array_equal(variable.numpy(), arrays[variable.name], err_msg=name)
            compared += 1
    assert compared == 384
    assert model.epoch == 0  # not a checkpoint name: no epoch to resume


@pytest.fixture(scope="module")
def r50_five_classes(tmp_path_factory):
    """ResNet-50 with 5 classes at 256² (weights do not depend on the image size)."""
    config = CocoR50Config(NUM_CLASSES=5, IMAGE_MIN_DIM=256, IMAGE_MAX_DIM=256)
    return M.MaskRCNN("inference", config, tmp_path_factory.mktemp("r50_5_logs"))


def test_coco_weights_need_head_exclusion_for_other_class_counts(r50_five_classes, matterport_layout_dir,
                                                                 tmp_path):
    model = r50_five_classes
    h5 = write_manifest_h5(matterport_layout_dir / MANIFEST, tmp_path / "r50_coco.h5", seed=3)
    file_weights = W.read_h5_weights(h5)
    conv1 = model.keras_model.get_layer("conv1")
    before = conv1.kernel.numpy().copy()

    with pytest.raises(ValueError) as err:
        model.load_weights(h5, by_name=True)
    message = str(err.value)
    for name in ("mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_mask"):
        assert name in message
    np.testing.assert_array_equal(conv1.kernel.numpy(), before)  # nothing assigned

    heads = {name: [v.numpy().copy() for v in layer.weights]
             for name, layer in W.iter_weighted_layers(model.keras_model)
             if name in HEAD_LAYERS}
    report = model.load_weights(h5, by_name=True, exclude=HEAD_LAYERS)
    assert sorted(report.excluded) == sorted(heads) == ["mrcnn_bbox_fc", "mrcnn_class_logits", "mrcnn_mask"]
    assert report.n_arrays == 384 - 6
    assert not report.missing_in_file and not report.skipped
    np.testing.assert_array_equal(conv1.kernel.numpy(), dict(file_weights["conv1"])["kernel"])
    for name, values in heads.items():
        layer = model.keras_model.get_layer(name)
        for variable, value in zip(layer.weights, values):
            np.testing.assert_array_equal(variable.numpy(), value)


# ----------------------------------------------------------------------------------------
# tiny models
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return M.MaskRCNN("inference", tiny_config(), tmp_path_factory.mktemp("tiny_logs"))


def raw_outputs(model, image):
    molded, metas, _ = model.mold_inputs([image])
    return model._predict([molded, metas])


def test_save_load_round_trip_reproduces_detections(tiny, tmp_path):
    image = random_image(1, (100, 128, 3))
    before = tiny.detect([image])[0]
    raw_before = raw_outputs(tiny, image)
    assert len(before["scores"]) > 0  # min confidence 0: random weights still detect

    other = M.MaskRCNN("inference", tiny_config(), tmp_path / "logs")
    assert not np.allclose(raw_outputs(other, image)[1], raw_before[1])  # different init

    checkpoint = tmp_path / "logs" / "tiny20260101T1200" / "mask_rcnn_tiny_0003.h5"
    tiny.save_weights(checkpoint)
    assert checkpoint.exists()
    other.load_weights(checkpoint, by_name=True)
    after = other.detect([image])[0]
    for key in ("rois", "class_ids", "scores", "masks"):
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    for a, b in zip(raw_outputs(other, image), raw_before):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # loading a checkpoint resumes its run: epoch and log directory
    assert other.epoch == 3
    assert other.log_dir == str(tmp_path / "logs" / "tiny20260101T1200")


def test_run_graph_returns_intermediate_tensors_by_layer_name(tiny):
    image = random_image(2, (128, 128, 3))
    molded, metas, _ = tiny.mold_inputs([image])
    outputs = [("rois", "ROI"), ("p2", "fpn_p2"), ("p6", "fpn_p6"),
               ("anchors", "anchors"), ("detections", "mrcnn_detection")]
    out = tiny.run_graph(molded, outputs, image_metas=metas)
    raw_images = tiny.run_graph([image], outputs)  # matterport's call: raw images, molded inside
    for key in out:
        np.testing.assert_allclose(raw_images[key], out[key], rtol=1e-5, atol=1e-6)
    assert set(out) == {"rois", "p2", "p6", "anchors", "detections"}
    assert out["rois"].shape == (1, 50, 4)
    assert out["p2"].shape == (1, 32, 32, 32) and out["p6"].shape == (1, 2, 2, 32)
    n_anchors = 3 * (32 ** 2 + 16 ** 2 + 8 ** 2 + 4 ** 2 + 2 ** 2)
    assert out["anchors"].shape == (1, n_anchors, 4)
    np.testing.assert_allclose(out["anchors"][0], tiny.get_anchors(tiny.config.IMAGE_SHAPE))
    assert out["detections"].shape == (1, 10, 6)
    raw = tiny._predict([molded, metas])
    np.testing.assert_allclose(out["rois"], raw[4], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["detections"], raw[0], rtol=1e-4, atol=1e-5)


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_set_log_dir_and_find_last(tiny):
    root = pathlib.Path(tiny.model_dir)
    with pytest.raises(FileNotFoundError, match="tiny"):
        tiny.find_last()

    fake = root / "tiny20260101T1200" / "mask_rcnn_tiny_0003.h5"
    tiny.set_log_dir(str(fake))
    assert tiny.epoch == 3
    assert tiny.log_dir == str(root / "tiny20260101T1200")
    assert tiny.checkpoint_path.format(4) == str(root / "tiny20260101T1200" / "mask_rcnn_tiny_0004.h5")

    tiny.set_log_dir()  # a fresh run: epoch 0, directory stamped with the current time
    assert tiny.epoch == 0
    assert os.path.dirname(tiny.log_dir) == str(root)
    assert os.path.basename(tiny.log_dir).startswith("tiny20") and "T" in os.path.basename(tiny.log_dir)

    touch(fake)
    touch(root / "tiny20260101T1200" / "mask_rcnn_tiny_0001.h5")
    assert tiny.find_last() == str(fake)
    newer = root / "tiny20260102T0900"
    touch(newer / "mask_rcnn_tiny_0001.h5")
    touch(newer / "mask_rcnn_tiny_0002.h5")
    touch(root / "tiny20260103T0000" / "events.out")  # newest run has no checkpoint yet
    touch(root / "coco20300101T0000" / "mask_rcnn_coco_0009.h5")  # another model's run
    assert tiny.find_last() == str(newer / "mask_rcnn_tiny_0002.h5")
