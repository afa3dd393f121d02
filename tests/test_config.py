"""Tests for siamese_mask_rcnn.mrcnn.config.Config."""
import json
import os
import re

import numpy as np
import pytest

from siamese_mask_rcnn.mrcnn.config import Config, is_callable_placeholder


class ShapesConfig(Config):
    NAME = "shapes"
    NUM_CLASSES = 4
    IMAGES_PER_GPU = 3
    IMAGE_MAX_DIM = 256
    IMAGE_MIN_DIM = 128


def my_backbone(inputs):
    return inputs


def my_shapes(image_shape):
    return np.array([[image_shape[0] // s, image_shape[1] // s] for s in (4, 8, 16, 32, 64)])


def test_defaults_match_matterport():
    c = Config()
    assert c.NAME is None
    assert c.BACKBONE == "resnet101"
    assert c.BACKBONE_STRIDES == [4, 8, 16, 32, 64]
    assert c.RPN_ANCHOR_SCALES == (32, 64, 128, 256, 512)
    assert c.RPN_ANCHOR_RATIOS == [0.5, 1, 2]
    assert c.PRE_NMS_LIMIT == 6000
    assert c.MINI_MASK_SHAPE == (56, 56)
    np.testing.assert_allclose(c.MEAN_PIXEL, [123.7, 116.8, 103.9])
    np.testing.assert_allclose(c.BBOX_STD_DEV, [0.1, 0.1, 0.2, 0.2])
    assert c.LOSS_WEIGHTS["mrcnn_mask_loss"] == 1.0
    assert c.SEED is None and c.DATA_WORKERS == 2
    # derived
    assert c.BATCH_SIZE == 2
    assert c.IMAGE_SHAPE.tolist() == [1024, 1024, 3]
    assert c.IMAGE_META_SIZE == 1 + 3 + 3 + 4 + 1 + 1


def test_subclass_and_overrides_rederive():
    c = ShapesConfig()
    assert c.BATCH_SIZE == 3
    assert c.IMAGE_SHAPE.tolist() == [256, 256, 3]
    assert c.IMAGE_META_SIZE == 16
    c2 = ShapesConfig(GPU_COUNT=2, NUM_CLASSES=7, IMAGE_RESIZE_MODE="crop", IMAGE_CHANNEL_COUNT=1)
    assert c2.BATCH_SIZE == 6
    assert c2.IMAGE_META_SIZE == 19
    assert c2.IMAGE_SHAPE.tolist() == [128, 128, 1]  # crop uses IMAGE_MIN_DIM
    assert ShapesConfig(IMAGE_RESIZE_MODE="pad64").IMAGE_SHAPE.tolist() == [256, 256, 3]
    # the class itself is untouched
    assert ShapesConfig.NUM_CLASSES == 4


def test_unknown_override_names_key():
    with pytest.raises(ValueError, match="IMAGES_PER_GUP"):
        Config(IMAGES_PER_GUP=4)
    with pytest.raises(ValueError, match="images_per_gpu"):
        Config(images_per_gpu=4)
    with pytest.raises(ValueError, match="BATCH_SIZE"):
        Config(BATCH_SIZE=4)


def test_mutable_defaults_not_shared():
    a, b = Config(), Config()
    a.LOSS_WEIGHTS["rpn_class_loss"] = 5.0
    a.MEAN_PIXEL[0] = 0
    assert b.LOSS_WEIGHTS["rpn_class_loss"] == 1.0
    assert Config.LOSS_WEIGHTS["rpn_class_loss"] == 1.0
    assert b.MEAN_PIXEL[0] == pytest.approx(123.7)


def test_display_prints_sorted_upper_case(capsys):
    ShapesConfig().display()
    out = capsys.readouterr().out
    keys = [line.split()[0] for line in out.splitlines() if line and line.split()[0].isupper()]
    assert "NUM_CLASSES" in keys and "BATCH_SIZE" in keys and "SEED" in keys
    assert keys == sorted(keys)


def test_to_dict_is_json_safe_and_round_trips():
    c = ShapesConfig(LEARNING_RATE=0.02, SEED=7)
    d = c.to_dict()
    text = json.dumps(d)  # must not raise
    assert d["MEAN_PIXEL"] == [123.7, 116.8, 103.9]
    assert d["RPN_ANCHOR_SCALES"] == [32, 64, 128, 256, 512]
    assert d["IMAGE_SHAPE"] == [256, 256, 3]
    c2 = ShapesConfig.from_dict(json.loads(text))
    assert isinstance(c2, ShapesConfig)
    assert c2.to_dict() == d
    for key in ("MEAN_PIXEL", "RPN_BBOX_STD_DEV", "BBOX_STD_DEV"):
        assert isinstance(getattr(c2, key), np.ndarray)
    assert c2.RPN_ANCHOR_SCALES == (32, 64, 128, 256, 512)
    assert c2.MINI_MASK_SHAPE == (56, 56)
    assert c2.LEARNING_RATE == 0.02 and c2.SEED == 7
    # from_dict on the base class gives a base Config with the same values
    c3 = Config.from_dict(d)
    assert type(c3) is Config and c3.to_dict() == d


def test_from_dict_unknown_key_strict_and_lenient():
    d = Config().to_dict()
    d["EXTRA_SETTING"] = 3
    with pytest.raises(ValueError, match="EXTRA_SETTING"):
        Config.from_dict(d)
    c = Config.from_dict(d, strict=False)
    assert c.EXTRA_SETTING == 3
    assert c.to_dict()["EXTRA_SETTING"] == 3


def test_callables_become_placeholders():
    c = Config(BACKBONE=my_backbone, COMPUTE_BACKBONE_SHAPE=my_shapes)
    d = c.to_dict()
    assert d["BACKBONE"] == "<callable:my_backbone>"
    assert is_callable_placeholder(d["COMPUTE_BACKBONE_SHAPE"])
    json.dumps(d)
    restored = Config.from_dict(d)
    assert restored.BACKBONE == "<callable:my_backbone>"  # cannot be restored
    substituted = Config.from_dict(d, backbone=my_backbone, compute_backbone_shape=my_shapes)
    assert substituted.BACKBONE is my_backbone
    assert substituted.COMPUTE_BACKBONE_SHAPE is my_shapes
    assert substituted.to_dict() == d


def test_save_load_atomic(tmp_path):
    c = ShapesConfig(WEIGHT_DECAY=0.5)
    path = tmp_path / "sub" / "config.json"
    c.save(path)
    assert sorted(os.listdir(path.parent)) == ["config.json"]  # no temp file left
    loaded = ShapesConfig.load(path)
    assert loaded.WEIGHT_DECAY == 0.5
    assert loaded.to_dict() == c.to_dict()
    # overwrite in place
    ShapesConfig(WEIGHT_DECAY=0.25).save(path)
    assert ShapesConfig.load(str(path)).WEIGHT_DECAY == 0.25


def test_load_bad_file_names_path(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        Config.load(bad)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"NOPE": 1}))
    with pytest.raises(ValueError, match="unknown.json.*NOPE"):
        Config.load(unknown)


@pytest.mark.parametrize("key, value, message", [
    ("IMAGES_PER_GPU", -3, "IMAGES_PER_GPU must be a whole number >= 1, got -3"),
    ("GPU_COUNT", 0, "GPU_COUNT must be a whole number >= 1"),
    ("DETECTION_MAX_INSTANCES", 2.5, "DETECTION_MAX_INSTANCES must be a whole number >= 1, got 2.5"),
    ("VALIDATION_STEPS", -1, "VALIDATION_STEPS must be a whole number >= 0"),
    ("DETECTION_MIN_CONFIDENCE", 1.5, "DETECTION_MIN_CONFIDENCE must be between 0 and 1, got 1.5"),
    ("RPN_NMS_THRESHOLD", "high", "RPN_NMS_THRESHOLD must be a finite number, got 'high'"),
    ("DETECTION_MIN_CONFIDENCE", "0.5", "DETECTION_MIN_CONFIDENCE must be a finite number, got '0.5'"),
    ("ROI_POSITIVE_RATIO", True, "ROI_POSITIVE_RATIO must be a finite number, got True"),
    ("IMAGES_PER_GPU", True, "IMAGES_PER_GPU must be a finite number, got True"),
    ("DETECTION_MAX_INSTANCES", float("nan"), "DETECTION_MAX_INSTANCES must be a finite number, got nan"),
    ("IMAGE_MAX_DIM", float("inf"), "IMAGE_MAX_DIM must be a finite number, got inf"),
    ("LEARNING_MOMENTUM", float("nan"), "LEARNING_MOMENTUM must be a finite number, got nan"),
    ("LEARNING_RATE", 0, "LEARNING_RATE must be > 0, got 0"),
    ("WEIGHT_DECAY", -1e-4, "WEIGHT_DECAY must be >= 0"),
    ("TRAIN_BN", "false", "TRAIN_BN must be True, False or None, got 'false'"),  # reads as true
    ("USE_MINI_MASK", 0, "USE_MINI_MASK must be True or False, got 0"),
    ("GRADIENT_CLIP_NORM", -1, "GRADIENT_CLIP_NORM must be > 0 (or 0 / None: no clipping), got -1"),
    ("GRADIENT_CLIP_NORM", float("nan"), "GRADIENT_CLIP_NORM must be a finite number, got nan"),
    ("SEED", -1, "SEED must be a whole number >= 0, got -1"),
])
def test_values_no_model_can_use_are_rejected_by_name(tmp_path, key, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Config(**{key: value})
    # a config.json edited by hand: the message names the file and the key
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**Config().to_dict(), key: value}))
    with pytest.raises(ValueError, match=re.escape(f"'{path}': {message}")):
        Config.load(path)
    # an edit after construction: checked by validate(), which every model calls when built
    edited = Config()
    setattr(edited, key, value)
    with pytest.raises(ValueError, match=re.escape(message)):
        edited.validate()


def test_edits_after_construction_are_rederived_and_checked_when_a_model_is_built(tmp_path):
    config = Config(IMAGES_PER_GPU=1)
    config.IMAGE_MAX_DIM, config.IMAGES_PER_GPU, config.NUM_CLASSES = 256, 3, 5
    assert config.validate() is config
    assert list(config.IMAGE_SHAPE) == [256, 256, 3] and config.BATCH_SIZE == 3
    assert config.IMAGE_META_SIZE == Config(NUM_CLASSES=5).IMAGE_META_SIZE
    pytest.importorskip("tensorflow")
    from siamese_mask_rcnn.mrcnn.model import MaskRCNN
    config.DETECTION_MIN_CONFIDENCE = 7  # fails before any graph is built
    with pytest.raises(ValueError, match="DETECTION_MIN_CONFIDENCE must be between 0 and 1, got 7"):
        MaskRCNN("inference", config, str(tmp_path))


def test_edge_values_that_models_use_are_accepted():
    config = Config(VALIDATION_STEPS=0, DETECTION_MIN_CONFIDENCE=0, DETECTION_NMS_THRESHOLD=1.0,
                    WEIGHT_DECAY=0, IMAGE_MIN_DIM=None)
    assert config.VALIDATION_STEPS == 0 and config.DETECTION_MIN_CONFIDENCE == 0
    for clip in (0, None):  # no clipping
        assert Config(GRADIENT_CLIP_NORM=clip).GRADIENT_CLIP_NORM == clip
    assert Config(TRAIN_BN=None, SEED=0, USE_MINI_MASK=np.bool_(False)).TRAIN_BN is None


@pytest.mark.parametrize("key, value, message", [
    ("NEGATIVE_PAIR_FRACTION", 2, "NEGATIVE_PAIR_FRACTION must be between 0 and 1, got 2"),
    ("NEGATIVE_PAIR_FRACTION", "0.5", "NEGATIVE_PAIR_FRACTION must be a finite number, got '0.5'"),
    ("NEGATIVE_PAIR_FRACTION", None, "NEGATIVE_PAIR_FRACTION must be a number between 0 and 1, got None"),
    ("PAIR_AUGMENTATION", "false", "PAIR_AUGMENTATION must be True or False, got 'false'"),
    ("PRESENCE_HEAD", "yes", "PRESENCE_HEAD must be True or False, got 'yes'"),
])
def test_siamese_switches_and_fractions_are_checked(key, value, message):
    from siamese_mask_rcnn.config import SiameseConfig
    with pytest.raises(ValueError, match=re.escape(message)):
        SiameseConfig(**{key: value})


def test_validate_refuses_a_misspelt_key_and_a_bad_resize_mode_but_keeps_lenient_loads(tmp_path):
    config = Config()
    config.DETECTON_MIN_CONFIDENCE = 0.3  # misspelt: would silently do nothing
    with pytest.raises(ValueError, match=r"Unknown config attribute\(s\) \['DETECTON_MIN_CONFIDENCE'\]"):
        config.validate()
    with pytest.raises(ValueError, match="IMAGE_RESIZE_MODE must be 'none', 'square', 'pad64' or 'crop', got 'bogus'"):
        Config(IMAGE_RESIZE_MODE="bogus")
    # a lenient load keeps another version's keys, and validates
    lenient = Config.from_dict({**Config().to_dict(), "OLD_KEY": 1}, strict=False)
    assert lenient.OLD_KEY == 1 and lenient.validate() is lenient


def test_save_and_display_show_derived_values_after_edits(tmp_path, capsys):
    config = Config()
    config.IMAGE_MAX_DIM = 256
    config.save(tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text())["IMAGE_SHAPE"] == [256, 256, 3]
    config.IMAGE_MAX_DIM = 320
    config.display()
    assert "[320 320   3]" in capsys.readouterr().out
