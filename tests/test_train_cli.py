"""siamese_mask_rcnn.train_coco (samples/coco/train_siamese.py): the schedule, argument
handling, weight loading and an end-to-end tiny run with resumption (``--weights last``) on
the real COCO subset; the sample script and ``siamese-mrcnn train`` as thin wrappers."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from siamese_mask_rcnn import train_coco as cli

ROOT = pathlib.Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- schedule
def test_paper_schedule_defaults():
    stages = cli.schedule_stages()
    assert [(s.layers, s.until_epoch) for s in stages] == [("heads", 1), ("all", 120), ("all", 160)]
    assert [s.learning_rate for s in stages] == pytest.approx([0.02, 0.02, 0.002])
    assert stages == [("heads", 1, pytest.approx(0.02)), ("all", 120, pytest.approx(0.02)),
                      ("all", 160, pytest.approx(0.002))]


def test_schedule_from_cli_defaults_is_the_papers():
    args = cli.build_parser().parse_args(["--dataset", "."])
    assert (args.steps_per_epoch, args.heads_epochs, args.all_epochs, args.total_epochs) == (1000, 1, 120, 160)
    assert args.preset == "paper" and args.backbone == "resnet50" and args.logs == "logs"


def test_schedule_drops_empty_stages():
    assert cli.schedule_stages(0, 5, 5, 0.1) == [("all", 5, 0.1)]
    assert cli.schedule_stages(2, 2, 4, 0.1) == [("heads", 2, 0.1), ("all", 4, pytest.approx(0.01))]
    assert cli.schedule_stages(1, 2, 2, 0.5) == [("heads", 1, 0.5), ("all", 2, 0.5)]
    assert cli.schedule_stages(3, 3, 3, 0.5) == [("heads", 3, 0.5)]


@pytest.mark.parametrize("heads, all_, total, lr, message", [
    (2, 1, 5, 0.1, "heads_epochs <= all_epochs"),
    (1, 6, 5, 0.1, "all_epochs <= total_epochs"),
    (0, 0, 0, 0.1, "total_epochs must be >= 1"),
    (-1, 2, 5, 0.1, "heads_epochs"),
    (1, 2, 5, 0.0, "learning rate"),
])
def test_schedule_rejects_bad_values(heads, all_, total, lr, message):
    with pytest.raises(ValueError, match=message):
        cli.schedule_stages(heads, all_, total, lr)


@pytest.mark.parametrize("epoch, first", [
    (0, ("heads", 1, 0.02)),
    (1, ("all", 120, 0.02)),      # heads done: all layers at the full rate
    (57, ("all", 120, 0.02)),
    (119, ("all", 120, 0.02)),
    (120, ("all", 160, 0.002)),   # past the drop: the reduced rate
    (159, ("all", 160, 0.002)),
])
def test_resume_picks_stage_and_rate(epoch, first):
    todo = cli.remaining_stages(cli.schedule_stages(), epoch)
    assert todo[0] == (first[0], first[1], pytest.approx(first[2]))
    assert all(s.until_epoch > epoch for s in todo)
    assert todo[-1].until_epoch == 160


def test_resume_after_the_end_has_nothing_to_do():
    assert cli.remaining_stages(cli.schedule_stages(), 160) == []
    assert cli.remaining_stages(cli.schedule_stages(), 170) == []
    with pytest.raises(ValueError):
        cli.remaining_stages(cli.schedule_stages(), -1)


# --------------------------------------------------------------------------- arguments
def _parse_and_check(argv):
    parser = cli.build_parser()
    args = parser.parse_args(argv)
    cli.check_args(parser, args)
    return args


def test_missing_weights_file_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "resnet50_imagenet687.h5"
    with pytest.raises(SystemExit) as exc:
        cli.main(["--dataset", str(tmp_path), "--weights", str(missing)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "weights file not found" in err and str(missing) in err


def test_weights_imagenet_keyword_asks_for_a_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _parse_and_check(["--dataset", str(tmp_path), "--weights", "imagenet"])
    assert "local ImageNet" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    ([], "--dataset DIR, or both --train-annotations"),
    (["--train-annotations", "x.json"], "--dataset DIR, or both --train-annotations"),
    (["--dataset", "{tmp}", "--val-images", "{tmp}"], "both --val-annotations and --val-images"),
    (["--dataset", "{tmp}/missing"], "folder not found"),
    (["--dataset", "{tmp}", "--heads-epochs", "3", "--all-epochs", "2"], "heads_epochs <= all_epochs"),
    (["--dataset", "{tmp}", "--gpus", "0"], "--gpus must be >= 1"),
    (["--dataset", "{tmp}", "--lr", "-1"], "learning rate must be > 0"),
])
def test_bad_arguments(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit):
        _parse_and_check(argv)
    assert message in capsys.readouterr().err


def test_config_batch_is_images_per_gpu_times_gpus(tmp_path):
    args = _parse_and_check(["--dataset", str(tmp_path), "--gpus", "4"])
    config = cli.build_config(args)
    assert (config.GPU_COUNT, config.IMAGES_PER_GPU, config.BATCH_SIZE) == (4, 3, 12)
    assert config.LEARNING_RATE == pytest.approx(0.02) and config.STEPS_PER_EPOCH == 1000
    assert list(config.IMAGE_SHAPE) == [1024, 1024, 3] and list(config.TARGET_SHAPE) == [192, 192, 3]
    args = _parse_and_check(["--dataset", str(tmp_path), "--gpus", "4", "--images-per-gpu", "2",
                             "--preset", "small", "--lr", "0.01", "--seed", "5"])
    config = cli.build_config(args)
    assert config.BATCH_SIZE == 8 and config.LEARNING_RATE == pytest.approx(0.01) and config.SEED == 5
    assert list(config.IMAGE_SHAPE) == [512, 512, 3] and list(config.TARGET_SHAPE) == [96, 96, 3]
    # multi-worker: the replica count over all machines sets the global batch
    assert cli.build_config(args, replicas=8).BATCH_SIZE == 16


def test_config_override_and_mixed_precision_options(tmp_path):
    args = _parse_and_check(["--dataset", str(tmp_path), "--config-override", "TRAIN_BN=True",
                             "--config-override", "TRAIN_ROIS_PER_IMAGE=64", "--config-override", "NAME=mine",
                             "--mixed-precision", "mixed_bfloat16"])
    config = cli.build_config(args)
    assert config.TRAIN_BN is True and config.TRAIN_ROIS_PER_IMAGE == 64 and config.NAME == "mine"
    assert config.MIXED_PRECISION == "mixed_bfloat16"
    assert cli.build_config(_parse_and_check(["--dataset", str(tmp_path)])).MIXED_PRECISION is None
    # 'auto' on this GPU-less machine: bfloat16
    auto = cli.build_config(_parse_and_check(["--dataset", str(tmp_path), "--mixed-precision"]))
    assert auto.MIXED_PRECISION == "mixed_bfloat16"


@pytest.mark.parametrize("argv, message", [
    (["--config-override", "NOT_A_KEY=1"], "Unknown config attribute 'NOT_A_KEY'"),
    (["--config-override", "train_bn=True"], "expected KEY=VALUE with an UPPER_CASE key"),
    (["--config-override", "TRAIN_BN"], "expected KEY=VALUE"),
    (["--mixed-precision", "float8"], "invalid choice: 'float8'"),
])
def test_bad_config_override_or_precision(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _parse_and_check(["--dataset", str(tmp_path), *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_tiny_backbone_config(tmp_path):
    from siamese_mask_rcnn.mrcnn.backbone import tiny_backbone
    config = cli.build_config(_parse_and_check(["--dataset", str(tmp_path), "--backbone", "tiny"]))
    assert config.BACKBONE is tiny_backbone
    assert list(config.IMAGE_SHAPE) == [128, 128, 3] and list(config.TARGET_SHAPE) == [32, 32, 3]
    assert config.NUM_CLASSES == 2


# --------------------------------------------------------------------------- weights
@pytest.fixture(scope="module")
def tiny_model_factory(tmp_path_factory):
    """``make(seed, **config_overrides)`` → a tiny inference model (the CLI's tiny settings)."""
    import keras
    from siamese_mask_rcnn.config import siamese_config
    from siamese_mask_rcnn.siamese import SiameseMaskRCNN
    logs = str(tmp_path_factory.mktemp("logs"))

    def make(seed, **overrides):
        keras.utils.set_random_seed(seed)
        config = siamese_config("smoke", **{"IMAGES_PER_GPU": 1, **overrides})
        return SiameseMaskRCNN("inference", config, model_dir=logs)
    return make


def _weight(model, path):
    return np.asarray([w for w in model.keras_model.weights if w.path == path][0])


def test_backbone_file_loads_by_name(tiny_model_factory, tmp_path):
    from siamese_mask_rcnn.mrcnn import weights as mweights
    source, target = tiny_model_factory(10), tiny_model_factory(11)
    path = str(tmp_path / "backbone.h5")
    mweights.save_weights_by_name(source.encoder, path)  # backbone + FPN only
    heads_before = _weight(target, "mrcnn_class_logits/kernel").copy()
    assert cli.load_initial_weights(target, path) == path
    np.testing.assert_array_equal(_weight(target, "tiny_conv1/kernel"), _weight(source, "tiny_conv1/kernel"))
    np.testing.assert_array_equal(_weight(target, "fpn_c5p5/kernel"), _weight(source, "fpn_c5p5/kernel"))
    np.testing.assert_array_equal(_weight(target, "mrcnn_class_logits/kernel"), heads_before)
    assert target.epoch == 0  # a pretrained file does not resume anything


def test_mismatched_head_is_skipped_not_fatal(tiny_model_factory, tmp_path, caplog):
    source = tiny_model_factory(12, FPN_CLASSIF_FC_LAYERS_SIZE=96)
    target = tiny_model_factory(13)  # FC 64: the classifier layers have other shapes
    path = str(tmp_path / "other.h5")
    source.save_weights(path)
    with caplog.at_level("WARNING"):
        cli.load_initial_weights(target, path)
    assert "mrcnn_class_logits" in caplog.text
    np.testing.assert_array_equal(_weight(target, "tiny_conv1/kernel"), _weight(source, "tiny_conv1/kernel"))
    assert _weight(target, "mrcnn_class_logits/kernel").shape == (64, 2)
    np.testing.assert_array_equal(_weight(target, "mrcnn_mask/kernel"), _weight(source, "mrcnn_mask/kernel"))


def test_file_without_matching_layers_is_an_error(tiny_model_factory, tmp_path):
    import keras
    from siamese_mask_rcnn.mrcnn import weights as mweights
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="conv1_conv")])
    path = str(tmp_path / "keras_style_names.h5")
    mweights.save_weights_by_name(other, path)
    with pytest.raises(ValueError, match="no layer name matches"):
        cli.load_initial_weights(tiny_model_factory(14), path)


# --------------------------------------------------------------------------- end to end
def _subset_args(coco_subset_annotations, coco_subset_dir, logs, *extra):
    images = str(coco_subset_dir / "images")
    return ["--train-annotations", str(coco_subset_annotations), "--train-images", images,
            "--val-annotations", str(coco_subset_annotations), "--val-images", images,
            "--split", "1", "--backbone", "tiny", "--images-per-gpu", "1",
            "--steps-per-epoch", "2", "--validation-steps", "1", "--lr", "0.002",
            "--logs", str(logs), "--quiet", *extra]


def test_cli_trains_and_resumes(coco_subset_annotations, coco_subset_dir, tmp_path):
    from siamese_mask_rcnn.config import SiameseConfig
    from siamese_mask_rcnn.mrcnn import weights as mweights
    logs = tmp_path / "logs"
    args = lambda *extra: _subset_args(coco_subset_annotations, coco_subset_dir, logs, *extra)  # noqa: E731

    # run 1: stage 1 only (heads to epoch 1)
    first = cli.main(args("--heads-epochs", "1", "--all-epochs", "1", "--total-epochs", "1"))
    assert first["epoch"] == 1
    assert first["stages"] == [("heads", 1, pytest.approx(0.002))]
    run_dir = first["log_dir"]
    ckpt1 = os.path.join(run_dir, "mask_rcnn_siamese_0001.h5")
    assert os.path.isfile(ckpt1)
    config = SiameseConfig.load(os.path.join(run_dir, "config.json"), strict=False)
    assert config.STEPS_PER_EPOCH == 2 and config.BATCH_SIZE == 1 and config.NUM_CLASSES == 2
    assert config.LEARNING_RATE == pytest.approx(0.002) and config.SEED == 0
    assert np.isfinite(first["history"][0]["val_loss"])
    # the heads stage trains RPN, matching, heads and FPN but not the backbone: compare with
    # the initial weights (same seed, same config)
    import keras
    from siamese_mask_rcnn.siamese import SiameseMaskRCNN
    keras.utils.set_random_seed(0)
    initial = SiameseMaskRCNN("training", cli.build_config(cli.build_parser().parse_args(args())),
                              model_dir=str(tmp_path / "unused"))
    w1 = mweights.read_h5_weights(ckpt1)
    np.testing.assert_array_equal(dict(w1["tiny_conv1"])["kernel"], _weight(initial, "tiny_conv1/kernel"))
    assert not np.array_equal(dict(w1["fpn_distance_P2"])["kernel"], _weight(initial, "fpn_distance_P2/kernel"))

    # run 2: --weights last resumes after epoch 1 in the same run directory, in the third
    # stage (all layers) at lr / 10
    second = cli.main(args("--weights", "last", "--heads-epochs", "1", "--all-epochs", "1",
                           "--total-epochs", "2", "--validation-steps", "0"))
    assert second["log_dir"] == run_dir and second["epoch"] == 2
    assert second["stages"] == [("all", 2, pytest.approx(0.0002))]
    assert len(second["history"]) == 1
    ckpt2 = os.path.join(run_dir, "mask_rcnn_siamese_0002.h5")
    assert os.path.isfile(ckpt2)
    with open(os.path.join(run_dir, "history.jsonl")) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2]
    w2 = mweights.read_h5_weights(ckpt2)
    assert not np.array_equal(dict(w1["tiny_conv1"])["kernel"], dict(w2["tiny_conv1"])["kernel"])  # "all"

    # run 3: nothing left to do
    third = cli.main(args("--weights", "last", "--heads-epochs", "1", "--all-epochs", "1",
                          "--total-epochs", "2"))
    assert third["epoch"] == 2 and third["stages"] == [] and third["history"] == []
    assert sorted(f for f in os.listdir(run_dir) if f.endswith(".h5")) == [
        "mask_rcnn_siamese_0001.h5", "mask_rcnn_siamese_0002.h5"]


def test_weights_last_without_checkpoint(coco_subset_annotations, coco_subset_dir, tmp_path):
    argv = _subset_args(coco_subset_annotations, coco_subset_dir, tmp_path / "empty", "--weights", "last")
    with pytest.raises(FileNotFoundError, match="--weights last"):
        cli.main(argv)


# --------------------------------------------------------------------------- thin wrappers
def test_tiny_backbone_is_the_smoke_preset_whatever_the_preset(tmp_path):
    from siamese_mask_rcnn.presets import preset_settings
    smoke = preset_settings("smoke")
    for preset in ("paper", "small"):
        config = cli.build_config(_parse_and_check(["--dataset", str(tmp_path), "--backbone", "tiny",
                                                    "--preset", preset]))
        for key, value in smoke.items():
            got = getattr(config, key)
            assert (list(got) if isinstance(value, tuple) else got) == (
                list(value) if isinstance(value, tuple) else value), (preset, key)


def test_sample_script_is_a_thin_wrapper_that_still_runs():
    script = ROOT / "samples" / "coco" / "train_siamese.py"
    assert "def " not in script.read_text()  # argument parsing and training live in the package
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                          env=env, check=True)
    assert "--heads-epochs" in done.stdout and "usage: train_siamese.py" in done.stdout
    failed = subprocess.run([sys.executable, str(script), "--dataset", str(ROOT / "missing")],
                            capture_output=True, text=True, env=env)
    assert failed.returncode == 2 and "folder not found" in failed.stderr


def test_siamese_mrcnn_train_subcommand(capsys, tmp_path):
    from siamese_mask_rcnn import cli as main_cli
    with pytest.raises(SystemExit) as exc:
        main_cli.main(["train", "--help"])
    assert exc.value.code == 0
    assert "usage: siamese-mrcnn train" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main_cli.main(["train", "--dataset", str(tmp_path), "--gpus", "0"])
    assert exc.value.code == 2 and "--gpus must be >= 1" in capsys.readouterr().err


def test_run_turns_data_errors_into_a_message(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit) as exc:
        cli.run(["--train-annotations", str(bad), "--train-images", str(tmp_path)])
    assert str(exc.value.code).startswith("error: ") and str(bad) in str(exc.value.code)
