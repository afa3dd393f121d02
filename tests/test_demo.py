"""``run_demo`` end to end with a tiny model, and the ``siamese-mrcnn demo`` command line."""
import json
import math

import pytest

from siamese_mask_rcnn import cli
from siamese_mask_rcnn.demo import demo_config, make_datasets
from siamese_mask_rcnn.presets import preset_changes

#: CPU-sized model settings on top of ``demo_config``: the "tiny" preset's changes to "demo".
TINY_MODEL = preset_changes("tiny")
ROWS = ["background", "one-shot", "random boxes"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One tiny demo: 3 training steps, evaluation on the first 6 scenes."""
    from siamese_mask_rcnn.demo import run_demo

    out_dir = tmp_path_factory.mktemp("demo")
    summary = run_demo(out_dir=str(out_dir), minutes=None, epochs=1, steps_per_epoch=3, num_train=60,
                       num_val=12, seed=0, eval_limit=6, config_overrides=TINY_MODEL, verbose=0)
    return out_dir, summary


# --------------------------------------------------------------------------- fast checks
def test_demo_config_overrides_and_sizes():
    config = demo_config(IMAGES_PER_GPU=2, MATCHING_CHANNELS=24)
    assert (config.IMAGES_PER_GPU, config.BATCH_SIZE, config.MATCHING_CHANNELS) == (2, 2, 24)
    assert list(config.IMAGE_SHAPE) == [128, 128, 3]
    assert list(config.TARGET_SHAPE) == [32, 32, 3]
    assert config.NUM_CLASSES == 2
    assert list(demo_config(image_size=64, reference_size=16).IMAGE_SHAPE) == [64, 64, 3]


def test_make_datasets_split_and_errors():
    train, val = make_datasets("synthetic", num_train=5, num_val=3, num_categories=8, seed=1)
    assert (len(train.image_ids), len(val.image_ids)) == (5, 3)
    # split 1 holds out categories 1, 5 (every 4th one, 25 %); both sets share the split
    assert train.oneshot_class_ids == val.oneshot_class_ids == [1, 5]
    assert train.train_class_ids == [2, 3, 4, 6, 7, 8]
    with pytest.raises(ValueError, match="data-dir"):
        make_datasets("omniglot")
    with pytest.raises(ValueError, match="'coco'"):
        make_datasets("coco")


def test_demo_command_line_defaults():
    args = cli.build_parser().parse_args(["demo"])
    assert (args.dataset, args.out, args.minutes, args.epochs, args.steps_per_epoch) == (
        "synthetic", "logs/demo", 15.0, 40, 100)
    assert (args.train_scenes, args.eval_scenes, args.eval_limit, args.seed, args.data_dir) == (
        2000, 150, None, 0, None)


def test_demo_command_line_passes_arguments_to_run_demo(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("siamese_mask_rcnn.demo.run_demo", lambda **kw: calls.append(kw) or {})
    code = cli.main(["demo", "--out", str(tmp_path), "--minutes", "0.5", "--epochs", "2",
                     "--steps-per-epoch", "3", "--train-scenes", "60", "--eval-scenes", "12",
                     "--eval-limit", "6", "--seed", "7", "--dataset", "omniglot", "--data-dir", "/data"])
    assert code == 0
    assert calls == [dict(out_dir=str(tmp_path), dataset="omniglot", data_dir="/data", minutes=0.5, epochs=2,
                          steps_per_epoch=3, num_train=60, num_val=12, seed=7, eval_limit=6)]


@pytest.mark.parametrize("argv", [["demo", "--dataset", "coco"], ["demo", "--epochs", "two"], []])
def test_demo_command_line_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert "usage: siamese-mrcnn" in capsys.readouterr().err


# ----------------------------------------------------------------------------- tiny run
def test_demo_writes_summary_table_and_examples(demo_run):
    out_dir, summary = demo_run
    for label in ROWS:
        row = summary[label]
        assert row["n_pairs"] > 0, label
        for key in ("map50_bbox", "map50_segm"):
            assert math.isfinite(row[key]) and 0.0 <= row[key] <= 1.0, (label, key, row[key])
    assert (summary["epochs_trained"], summary["steps"]) == (1, 3)
    # the saved summary is the returned one
    assert json.loads((out_dir / "demo_summary.json").read_text()) == json.loads(json.dumps(summary, default=str))

    numbers = json.loads((out_dir / "summary.json").read_text())
    assert list(numbers["rows"]) == ROWS
    assert numbers["config"]["train_scenes"] == 60 and numbers["config"]["eval_scenes"] == 12
    table = (out_dir / "table.txt").read_text().splitlines()
    body = table[[i for i, line in enumerate(table) if set(line) == {"-"}][0] + 1:]
    assert [line[:12].strip() for line in body] == ROWS
    for line, label in zip(body, ROWS):
        bbox, segm = (float(v) for v in line[len(label):].split()[:2])
        assert bbox == pytest.approx(100 * summary[label]["map50_bbox"], abs=0.051)
        assert segm == pytest.approx(100 * summary[label]["map50_segm"], abs=0.051)

    examples = [out_dir / "examples" / p.split("/")[-1] for p in summary["examples"]]
    assert len(examples) == 4
    for path in examples:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_checkpoint_and_config(demo_run):
    from siamese_mask_rcnn.config import SiameseConfig

    out_dir, summary = demo_run
    checkpoints = sorted(out_dir.glob("checkpoints/demo*/mask_rcnn_demo_*.h5"))
    assert [p.name for p in checkpoints] == ["mask_rcnn_demo_0001.h5"]
    assert summary["checkpoint"] == str(checkpoints[0])
    saved = SiameseConfig.load(checkpoints[0].parent / "config.json", strict=False)
    assert (saved.IMAGES_PER_GPU, saved.MATCHING_CHANNELS, saved.STEPS_PER_EPOCH) == (2, 24, 3)
    assert saved.BACKBONE == "<callable:tiny_backbone>"


def test_demo_runs_on_real_omniglot_archives(omniglot_dir, tmp_path):
    """``--dataset omniglot --data-dir`` goes through the same training and evaluation code:
    held-out alphabets are evaluated as one-shot categories, the others as background."""
    from siamese_mask_rcnn.demo import run_demo

    summary = run_demo(out_dir=str(tmp_path), dataset="omniglot", data_dir=str(omniglot_dir), minutes=None,
                       epochs=1, steps_per_epoch=2, num_train=30, num_val=16, seed=0, eval_limit=None,
                       config_overrides=TINY_MODEL, verbose=0)
    assert summary["dataset"] == "omniglot"
    assert summary["one-shot"]["n_pairs"] > 0 and summary["background"]["n_pairs"] > 0
    for row in ROWS:
        assert 0.0 <= summary[row]["map50_bbox"] <= 1.0
    written = json.loads((tmp_path / "summary.json").read_text())
    assert set(ROWS) <= set(written["rows"])
