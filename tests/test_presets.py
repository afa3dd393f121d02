"""siamese_mask_rcnn.presets: one table of named configurations used by the config, the demo,
the command lines and the tests."""
import subprocess
import sys

import pytest

from siamese_mask_rcnn import presets
from siamese_mask_rcnn.config import SiameseConfig, siamese_config


def test_presets_inherit_from_their_parent():
    assert presets.preset_settings("paper") == {}
    small, demo, tiny = (presets.preset_settings(n) for n in ("small", "demo", "tiny"))
    assert small["IMAGE_MAX_DIM"] == 512 and small["TRAIN_ROIS_PER_IMAGE"] == 100
    assert demo["IMAGE_MAX_DIM"] == 128 and demo["MAX_GT_INSTANCES"] == 12
    assert demo["RPN_TRAIN_ANCHORS_PER_IMAGE"] == 64
    assert tiny["MATCHING_CHANNELS"] == 24 and tiny["MAX_GT_INSTANCES"] == 12  # from demo
    assert tiny["NAME"] == "demo" and tiny["DETECTION_MIN_CONFIDENCE"] == 0.5
    for name in ("demo", "tiny"):
        changes = presets.preset_changes(name)
        parent = presets.preset_settings(presets.PRESETS[name][0])
        assert presets.preset_settings(name) == {**parent, **changes}


def test_cpu_presets_use_the_tiny_backbone_and_configs_stay_light():
    from siamese_mask_rcnn.mrcnn.backbone import tiny_backbone
    for name in ("demo", "tiny", "smoke"):
        assert siamese_config(name).BACKBONE is tiny_backbone
    assert siamese_config("small").BACKBONE == SiameseConfig.BACKBONE == "resnet50"
    code = ("import sys, siamese_mask_rcnn.config, siamese_mask_rcnn.presets; "
            "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_siamese_config_applies_overrides_last_and_names_unknown_presets():
    config = siamese_config("tiny", IMAGES_PER_GPU=1, MATCHING_CHANNELS=8)
    assert (config.IMAGES_PER_GPU, config.MATCHING_CHANNELS, config.TOP_DOWN_PYRAMID_SIZE) == (1, 8, 16)
    with pytest.raises(ValueError, match=r"unknown preset 'huge'.*'paper'"):
        siamese_config("huge")
    with pytest.raises(ValueError, match="unknown preset"):
        presets.preset_changes("huge")


def test_demo_config_is_the_demo_preset():
    from siamese_mask_rcnn.demo import demo_config
    assert demo_config().to_dict() == siamese_config("demo").to_dict()
    assert demo_config(preset="tiny").to_dict() == siamese_config("tiny").to_dict()
    assert list(demo_config(image_size=64, reference_size=16, preset="tiny").IMAGE_SHAPE) == [64, 64, 3]


def test_predict_command_line_offers_every_preset():
    from siamese_mask_rcnn import cli
    action = next(a for a in cli.build_parser()._subparsers._group_actions[0].choices["predict"]._actions
                  if a.dest == "preset")
    assert tuple(action.choices) == presets.PRESET_NAMES
