"""``run_demo`` end to end with a tiny model, and the ``siamese-mrcnn demo`` command line."""
import json
import math

import numpy as np
import pytest

from siamese_mask_rcnn import cli
from siamese_mask_rcnn.demo import demo_config, make_datasets
from siamese_mask_rcnn.presets import preset_changes

#: CPU-sized model settings on top of ``demo_config``: the "tiny" preset's changes to "demo".
TINY_MODEL = preset_changes("tiny")
ROWS = ["background", "one-shot", "random boxes"]


#: The tiny main job: 4 training steps in 2 epochs, evaluation on the first 6 of 12 scenes and
#: on 10 scenes of the independent transfer composer.
TINY_JOB = dict(steps=4, steps_per_epoch=2, num_train=60, num_val=12, seed=0, eval_limit=6,
                config_overrides=TINY_MODEL, references_per_class=2, workers=1, transfer_scenes=10)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One tiny main job (see ``TINY_JOB``), silent."""
    from siamese_mask_rcnn.demo import run_demo

    out_dir = tmp_path_factory.mktemp("demo")
    summary = run_demo(out_dir=str(out_dir), verbose=0, **TINY_JOB)
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
    with pytest.raises(ValueError, match="'oil'"):
        make_datasets("synthetic", num_train=2, num_val=2, num_categories=8, rendering="oil")
    # randomised rendering reaches both sets; the split stays
    train, val = make_datasets("synthetic", num_train=2, num_val=2, num_categories=8, rendering="randomised")
    assert train.scene_options["randomise"] and val.scene_options == train.scene_options
    assert train.oneshot_class_ids == [1, 5]


def test_run_demo_refuses_an_unknown_rendering_before_any_work(tmp_path):
    from siamese_mask_rcnn.demo import run_demo

    with pytest.raises(ValueError, match="'oil'"):
        run_demo(out_dir=str(tmp_path / "out"), rendering="oil", verbose=0)
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_demo_command_line_defaults():
    from siamese_mask_rcnn.demo import DEFAULT_STEPS, DEFAULT_THREADS

    args = cli.build_parser().parse_args(["demo"])
    # a number of steps, no time budget unless asked for
    assert (args.dataset, args.out, args.steps, args.minutes, args.steps_per_epoch, args.threads) == (
        "synthetic", "logs/demo", DEFAULT_STEPS, None, None, DEFAULT_THREADS)
    assert (args.train_scenes, args.eval_scenes, args.eval_limit, args.seed, args.data_dir) == (
        2000, 150, None, 0, None)
    assert args.transfer_scenes == 150
    assert args.deterministic is True
    assert args.rendering == "paper"


def test_demo_command_line_passes_arguments_to_run_demo(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("siamese_mask_rcnn.demo.run_demo", lambda **kw: calls.append(kw) or {})
    (tmp_path / "images_background.zip").write_bytes(b"")  # found by name before run_demo
    code = cli.main(["demo", "--out", str(tmp_path), "--steps", "40", "--minutes", "0.5",
                     "--steps-per-epoch", "3", "--threads", "1", "--train-scenes", "60",
                     "--eval-scenes", "12", "--eval-limit", "6", "--seed", "7", "--dataset", "omniglot",
                     "--data-dir", str(tmp_path), "--transfer-scenes", "20", "--no-deterministic",
                     "--rendering", "randomised"])
    assert code == 0
    assert calls == [dict(out_dir=str(tmp_path), dataset="omniglot", data_dir=str(tmp_path), steps=40,
                          minutes=0.5, threads=1, steps_per_epoch=3, num_train=60, num_val=12, seed=7, eval_limit=6,
                          config_overrides={}, transfer_scenes=20, deterministic=False,
                          rendering="randomised", reference_loss=False, verify_keep=None, weights=None,
                          known_margin=None)]


def test_demo_command_line_open_world_flags(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("siamese_mask_rcnn.demo.run_demo", lambda **kw: calls.append(kw) or {})
    assert cli.main(["demo", "--out", str(tmp_path), "--reference-loss", "--verify-keep", "0.8"]) == 0
    assert calls[0]["reference_loss"] is True and calls[0]["verify_keep"] == 0.8
    assert cli.main(["demo", "--out", str(tmp_path), "--reference-loss", "--known-margin", "-0.2"]) == 0
    assert calls[1]["known_margin"] == -0.2


@pytest.mark.parametrize("flag, overrides", [([], {}), (["--presence-head"], {"PRESENCE_HEAD": True}),
                                               (["--no-presence-head"], {"PRESENCE_HEAD": False}),
                                               (["--config-override", "LOSS_WEIGHTS={'reference_class_loss': 3.0}",
                                                 "--config-override", "TRAIN_ROIS_PER_IMAGE=16"],
                                                {"LOSS_WEIGHTS": {"reference_class_loss": 3.0},
                                                 "TRAIN_ROIS_PER_IMAGE": 16}),
                                               (["--presence-head", "--no-presence-gradient"],
                                                {"PRESENCE_HEAD": True, "PRESENCE_GRADIENT": False}),
                                               (["--hard-negatives", "0.5", "--negative-pairs", "0.25"],
                                                {"HARD_NEGATIVE_FRACTION": 0.5, "NEGATIVE_PAIR_FRACTION": 0.25})])
def test_demo_command_line_presence_head_flags(flag, overrides, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("siamese_mask_rcnn.demo.run_demo", lambda **kw: calls.append(kw) or {})
    assert cli.main(["demo", "--out", str(tmp_path)] + flag) == 0
    assert calls[0]["config_overrides"] == overrides


@pytest.mark.parametrize("argv, message", [
    (["demo", "--dataset", "coco"], "invalid choice"), (["demo", "--steps", "two"], "invalid int"),
    (["demo", "--steps", "0"], "--steps must be >= 1, got 0"),
    (["demo", "--minutes", "0"], "--minutes must be a finite number > 0, got 0.0"),
    (["demo", "--minutes", "nan"], "--minutes must be a finite number > 0, got nan"),
    (["demo", "--seed", "-1"], "--seed must be >= 0, got -1"),
    (["demo", "--threads", "-1"], "--threads must be >= 1"),
    (["demo", "--transfer-scenes", "-1"], "--transfer-scenes must be >= 0"),
    (["demo", "--rendering", "oil"], "invalid choice"), ([], "required"),
    (["demo", "--hard-negatives", "1.5"], "--hard-negatives must be in [0, 1], got 1.5"),
    (["demo", "--verify-keep", "0"], "--verify-keep must be in (0, 1], got 0.0"),
    (["demo", "--verify-keep", "nan"], "--verify-keep must be in (0, 1], got nan"),
    (["demo", "--no-presence-gradient"], "--no-presence-gradient needs --presence-head"),
    (["demo", "--known-margin", "0.1"], "--known-margin needs --reference-loss"),
    (["demo", "--reference-loss", "--known-margin", "2.5"], "--known-margin must be in [-2, 2], got 2.5"),
    (["demo", "--config-override", "seed=3"], "expected KEY=VALUE with an UPPER_CASE key"),
    (["demo", "--config-override", "NO_SUCH_KEY=3"], "NO_SUCH_KEY"),
    (["demo", "--config-override", "LOSS_WEIGHTS={'no_such_loss': 1.0}"], "no_such_loss")])
def test_demo_command_line_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: siamese-mrcnn" in err and message in err


def test_steps_split_into_epochs():
    from siamese_mask_rcnn.demo import epochs_for_steps

    assert epochs_for_steps(3000, 100) == (30, 100)
    assert epochs_for_steps(7, 100) == (1, 7)
    assert epochs_for_steps(250, 100) == (3, 84)  # 252 steps: rounded up, evenly split
    with pytest.raises(ValueError, match="steps"):
        epochs_for_steps(0, 100)


def test_learning_rate_warms_up_then_decays():
    from siamese_mask_rcnn.demo import learning_rate_schedule

    schedule = learning_rate_schedule(0.01, 3000, warmup_steps=200)
    rate = [float(schedule(s)) for s in (0, 100, 200, 1600, 3000)]
    assert rate[0] == pytest.approx(0.001) and rate[1] == pytest.approx(0.0055)
    assert rate[2] == pytest.approx(0.01) and rate[2] > rate[3] > rate[4]
    assert rate[4] == pytest.approx(0.0001)
    # short runs: the warm-up is at most a tenth of the run
    assert float(learning_rate_schedule(0.01, 20, warmup_steps=200)(2)) == pytest.approx(0.01)


# ----------------------------------------------------------------------------- tiny run
def test_demo_writes_summary_table_and_examples(demo_run):
    out_dir, summary = demo_run
    for label in ROWS:
        row = summary[label]
        assert row["n_pairs"] > 0, label
        for key in ("map50_bbox", "map50_segm"):
            assert math.isfinite(row[key]) and 0.0 <= row[key] <= 1.0, (label, key, row[key])
    assert (summary["epochs_trained"], summary["steps"], summary["time_capped"]) == (2, 4, False)
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


def test_demo_reports_in_distribution_and_transfer_side_by_side(demo_run):
    """The tiny job evaluates the one-shot categories on its own held-out scenes and on
    scenes of the independent composer; both rows are in the summary and in one table."""
    out_dir, summary = demo_run
    assert summary["transfer"]["scenes"] == 10
    for label in ("one-shot", "one-shot (transfer)", "random boxes (transfer)"):
        row = summary[label]
        assert row["n_pairs"] > 0, label
        for key in ("map50_bbox", "map50_segm"):
            assert math.isfinite(row[key]) and 0.0 <= row[key] <= 1.0, (label, key, row[key])
    lines = (out_dir / "transfer_table.txt").read_text().splitlines()
    assert "in-distribution" in lines[1] and "transfer" in lines[1]
    body = {line[:14].strip(): line[14:].split() for line in lines[4:]}
    assert sorted(body) == ["one-shot", "random boxes"]
    bbox, segm, pairs, t_bbox, t_segm, t_pairs = body["one-shot"]
    assert float(bbox) == pytest.approx(100 * summary["one-shot"]["map50_bbox"], abs=0.051)
    assert float(t_bbox) == pytest.approx(100 * summary["one-shot (transfer)"]["map50_bbox"], abs=0.051)
    assert float(t_segm) == pytest.approx(100 * summary["one-shot (transfer)"]["map50_segm"], abs=0.051)
    assert (int(pairs), int(t_pairs)) == (summary["one-shot"]["n_pairs"],
                                          summary["one-shot (transfer)"]["n_pairs"])


def test_demo_checkpoint_and_config(demo_run):
    from siamese_mask_rcnn.config import SiameseConfig

    out_dir, summary = demo_run
    checkpoints = sorted(out_dir.glob("checkpoints/demo*/mask_rcnn_demo_*.h5"))
    assert [p.name for p in checkpoints] == ["mask_rcnn_demo_0001.h5", "mask_rcnn_demo_0002.h5"]
    assert summary["checkpoint"] == str(checkpoints[-1])
    saved = SiameseConfig.load(checkpoints[0].parent / "config.json", strict=False)
    assert (saved.IMAGES_PER_GPU, saved.MATCHING_CHANNELS, saved.STEPS_PER_EPOCH) == (2, 24, 2)
    assert saved.BACKBONE == "<callable:tiny_backbone>"


def test_demo_runs_on_real_omniglot_archives(omniglot_dir, tmp_path):
    """``--dataset omniglot --data-dir`` goes through the same training and evaluation code:
    held-out alphabets are evaluated as one-shot categories, the others as background."""
    from siamese_mask_rcnn.config import SiameseConfig
    from siamese_mask_rcnn.demo import run_demo

    summary = run_demo(out_dir=str(tmp_path), dataset="omniglot", data_dir=str(omniglot_dir), steps=2,
                       num_train=30, num_val=16, seed=0, eval_limit=None, config_overrides=TINY_MODEL,
                       references_per_class=2, workers=1, verbose=0, transfer_scenes=6)
    assert summary["dataset"] == "omniglot"
    assert summary["one-shot"]["n_pairs"] > 0 and summary["background"]["n_pairs"] > 0
    assert summary["one-shot (transfer)"]["n_pairs"] > 0  # composer scenes of held-out characters
    for row in ROWS:
        assert 0.0 <= summary[row]["map50_bbox"] <= 1.0
    written = json.loads((tmp_path / "summary.json").read_text())
    assert set(ROWS) <= set(written["rows"])
    # the Omniglot demo's mask loss weight (DATASET_OVERRIDES) reached the trained config
    saved = SiameseConfig.load(next(tmp_path.glob("checkpoints/*/config.json")), strict=False)
    assert saved.LOSS_WEIGHTS["mrcnn_mask_loss"] == 3.0
    assert saved.LOSS_WEIGHTS["mrcnn_class_loss"] == SiameseConfig.LOSS_WEIGHTS["mrcnn_class_loss"]


def test_dataset_overrides_come_before_the_callers():
    from siamese_mask_rcnn.config import SiameseConfig
    from siamese_mask_rcnn.demo import DATASET_OVERRIDES, dataset_overrides

    assert dataset_overrides("synthetic") == {}
    assert dataset_overrides("synthetic", {"SEED": 3}) == {"SEED": 3}
    omniglot = dataset_overrides("omniglot", {"SEED": 3})
    assert omniglot["SEED"] == 3 and omniglot["LOSS_WEIGHTS"]["mrcnn_mask_loss"] == 3.0
    mine = {"LOSS_WEIGHTS": dict(SiameseConfig.LOSS_WEIGHTS)}
    assert dataset_overrides("omniglot", mine)["LOSS_WEIGHTS"]["mrcnn_mask_loss"] == 1.0
    # LOSS_WEIGHTS merge loss by loss: one weight changes, the others stay the dataset's
    partial = dataset_overrides("omniglot", {"LOSS_WEIGHTS": {"mrcnn_mask_loss": 2.0}})["LOSS_WEIGHTS"]
    assert partial == {**DATASET_OVERRIDES["omniglot"]["LOSS_WEIGHTS"], "mrcnn_mask_loss": 2.0}
    assert DATASET_OVERRIDES["omniglot"]["LOSS_WEIGHTS"]["mrcnn_mask_loss"] == 3.0  # not mutated
    # only the mask loss differs from the Siamese defaults
    differs = {k for k, v in DATASET_OVERRIDES["omniglot"]["LOSS_WEIGHTS"].items()
               if SiameseConfig.LOSS_WEIGHTS[k] != v}
    assert differs == {"mrcnn_mask_loss"}
    # without dataset weights, LOSS_WEIGHTS merge over the config's
    synthetic = dataset_overrides("synthetic", {"LOSS_WEIGHTS": {"reference_class_loss": 3.0}})["LOSS_WEIGHTS"]
    assert synthetic == {**SiameseConfig.LOSS_WEIGHTS, "reference_class_loss": 3.0}


def test_same_seed_gives_the_same_checkpoint_and_table(demo_run, tmp_path, capsys):
    """The main job is a function of its seed: a second run (here shown with its progress
    bar and a generous --minutes cap, which it announces) gives the same weights and table."""
    import h5py
    from siamese_mask_rcnn.demo import run_demo

    first_dir, first = demo_run
    second = run_demo(out_dir=str(tmp_path), verbose=1, minutes=60, **TINY_JOB)
    out = capsys.readouterr()
    assert "depends on the machine" in out.out
    assert "training: " in out.err or "evaluating: " in out.err  # the job's progress bar
    for label in ROWS:
        assert second[label] == first[label], label
    assert second["absent_false_positives_per_pair"] == first["absent_false_positives_per_pair"]
    assert (first_dir / "table.txt").read_text() == (tmp_path / "table.txt").read_text()

    def weights(path):
        arrays = {}

        def keep(name, obj):  # must return None, or visititems stops
            if isinstance(obj, h5py.Dataset):
                arrays[name] = obj[()]

        with h5py.File(path, "r") as f:
            f.visititems(keep)
        return arrays

    a, b = weights(first["checkpoint"]), weights(second["checkpoint"])
    assert len(a) > 20 and sorted(a) == sorted(b)
    # the main job runs TensorFlow's ops deterministically (deterministic=True, the default):
    # the same seed gives the very same weights (another seed moves them by > 1e-2, below)
    worst = max(float(np.max(np.abs(a[name].astype(np.float64) - b[name]))) for name in a)
    assert worst == 0.0, worst


def test_a_different_seed_gives_a_different_model(demo_run, tmp_path):
    """The check above can fail: another seed changes the weights."""
    import h5py
    from siamese_mask_rcnn.demo import run_demo

    _, first = demo_run
    # fewer steps and scenes than TINY_JOB: another seed already changes the initial weights
    other = run_demo(out_dir=str(tmp_path), verbose=0, **{**TINY_JOB, "seed": 1, "eval_limit": 1, "steps": 2,
                                                           "num_train": 20, "num_val": 4, "transfer_scenes": 0})
    with h5py.File(first["checkpoint"], "r") as f, h5py.File(other["checkpoint"], "r") as g:
        names = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        worst = max(float(np.max(np.abs(f[n][()].astype(np.float64) - g[n][()]))) for n in names)
    # (the same-seed test above finds exactly 0)
    assert worst > 1e-2, worst


@pytest.mark.parametrize("extra, message", [
    ([], "--dataset omniglot needs --data-dir"),
    (["--data-dir", "/nonexistent/omniglot"], "/nonexistent/omniglot")])
def test_omniglot_demo_without_its_archives_exits_2_naming_what_is_missing(extra, message, tmp_path,
                                                                          capsys):
    # checked with the arguments: before TensorFlow loads and before --out is created
    with pytest.raises(SystemExit) as info:
        cli.main(["demo", "--dataset", "omniglot", "--steps", "1", "--out", str(tmp_path / "o")] + extra)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "siamese-mrcnn demo: error:" in err and message in err and "Traceback" not in err
    assert "usage: siamese-mrcnn demo" in err  # the subcommand's usage, not the top-level one
    assert not (tmp_path / "o").exists()


def test_omniglot_demo_with_a_folder_without_archives_exits_2(tmp_path, capsys, monkeypatch):
    def no_demo(**kwargs):
        raise AssertionError("run_demo (TensorFlow) started before the missing archives were reported")
    monkeypatch.setattr("siamese_mask_rcnn.demo.run_demo", no_demo)
    with pytest.raises(SystemExit) as info:
        cli.main(["demo", "--dataset", "omniglot", "--data-dir", str(tmp_path), "--steps", "1",
                  "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "siamese-mrcnn demo: error: --data-dir: no Omniglot zip archive" in err and str(tmp_path) in err
    assert "usage: siamese-mrcnn demo" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_progress_bar_stage_clears_the_training_loss(capsys):
    from siamese_mask_rcnn.demo import JobProgress
    progress = JobProgress(10.0)
    progress.stage("training")
    progress.bar.set_postfix_str("loss 0.123")
    assert "loss 0.123" in str(progress.bar)
    progress.stage("evaluating")
    text = str(progress.bar)
    assert "evaluating" in text and "loss" not in text
    progress.close()


def test_progress_bar_loss_is_the_mean_of_a_short_run(capsys):
    """The bar's loss is the mean of the steps so far (what history.jsonl records for a short
    epoch), then a running average over about 50 steps, not dominated by the first step."""
    from siamese_mask_rcnn.demo import JobProgress, _StepProgress
    progress = JobProgress(1000.0)
    progress.stage("training")
    callback = _StepProgress(progress)
    losses = [40.0] + [2.0] * 10  # step 0: the huge first loss, then the model settles
    for step, loss in enumerate(losses):
        callback.on_train_batch_end(step, {"loss": loss})
    assert callback.loss == pytest.approx(np.mean(losses))
    assert "loss 5.455" in str(progress.bar)  # shown at step 10
    for step in range(len(losses), 400):
        callback.on_train_batch_end(step, {"loss": 1.0})
    assert callback.loss == pytest.approx(1.0, abs=1e-3)  # the old steps are forgotten
    progress.close()


def test_reference_loss_and_verification_in_a_tiny_job(tmp_path):
    """``--reference-loss``: the classifier's size is the data's and its loss is logged;
    ``--verify-keep``: the calibrated threshold is printed into the summary and the run's
    config.json (what ``predict`` reads); a bad share is refused before any work."""
    import os

    from siamese_mask_rcnn.demo import run_demo

    with pytest.raises(ValueError, match="verify_keep must be in"):
        run_demo(out_dir=str(tmp_path / "bad"), verify_keep=0, verbose=0)
    assert not (tmp_path / "bad" / "checkpoints").exists()
    with pytest.raises(ValueError, match="known_margin .* needs the reference classifier"):
        run_demo(out_dir=str(tmp_path / "bad"), known_margin=0.1, verbose=0)
    summary = run_demo(out_dir=str(tmp_path), verbose=0, reference_loss=True, verify_keep=0.8, known_margin=0.0,
                       **{**TINY_JOB, "steps": 2, "num_train": 20, "num_val": 4, "eval_limit": 1,
                          "transfer_scenes": 0})
    assert summary["known_margin"] == 0.0
    saved = json.loads((tmp_path / "demo_summary.json").read_text())
    verification = saved["verification"]
    assert verification == summary["verification"]
    assert verification["keep"] == 0.8 and verification["objects"] > 0
    assert -1.0 <= verification["min_similarity"] <= 1.0
    run_config = json.loads(open(os.path.join(os.path.dirname(summary["checkpoint"]), "config.json")).read())
    _, val = make_datasets("synthetic", num_train=1, num_val=1, seed=0)
    assert run_config["REFERENCE_CLASSES"] == val.num_classes
    assert run_config["VERIFY_MIN_SIMILARITY"] == pytest.approx(verification["min_similarity"], abs=1e-4)
    assert run_config["VERIFY_KNOWN_MARGIN"] == 0.0  # predict rejects as the evaluation did
    from siamese_mask_rcnn.predict import load_model
    loaded = load_model(summary["checkpoint"])
    assert loaded.config.VERIFY_KNOWN_MARGIN == 0.0
    assert loaded.known_prototypes.shape == (5 * loaded.config.TOP_DOWN_PYRAMID_SIZE, val.num_classes)
    history = [json.loads(line) for line in open(os.path.join(os.path.dirname(summary["checkpoint"]),
                                                              "history.jsonl"))]
    assert all(np.isfinite(h["reference_class_loss"]) for h in history)


def test_evaluating_a_checkpoint_without_training_gives_the_runs_table(demo_run, tmp_path, capsys):
    """``run_demo(weights=...)`` (``siamese-mrcnn demo --weights``): the trained run's model on
    the same scenes gives the same table without training; ``verify_keep`` then measures an
    inference option on it and leaves the run's config.json as it was; a checkpoint of
    another seed or rendering is refused naming the option to pass."""
    import os

    from siamese_mask_rcnn.demo import RUN_RECORD, run_demo

    out_dir, trained = demo_run
    checkpoint = trained["checkpoint"]
    record = json.loads(open(os.path.join(os.path.dirname(checkpoint), RUN_RECORD)).read())
    assert record == {"dataset": "synthetic", "rendering": "paper", "seed": 0, "train_scenes": 60}
    config_path = os.path.join(os.path.dirname(checkpoint), "config.json")
    config_text = open(config_path).read()
    job = {k: v for k, v in TINY_JOB.items() if k in ("num_train", "num_val", "seed", "eval_limit", "workers",
                                                      "references_per_class")}
    again = run_demo(out_dir=str(tmp_path / "again"), weights=checkpoint, transfer_scenes=0, verbose=1, **job)
    printed = capsys.readouterr().out
    assert "without training" in printed and "training steps in" not in printed
    for row in ROWS:
        assert again[row]["map50_bbox"] == pytest.approx(trained[row]["map50_bbox"], abs=1e-6)
        assert again[row]["map50_segm"] == pytest.approx(trained[row]["map50_segm"], abs=1e-6)
    assert again["evaluated_only"] is True and again["steps"] == 4 and again["train_seconds"] == 0.0
    assert not (tmp_path / "again" / "checkpoints").exists()  # nothing trained, nothing written there

    verified = run_demo(out_dir=str(tmp_path / "verified"), weights=checkpoint, transfer_scenes=0, verbose=1,
                        verify_keep=0.8, **job)
    assert "--min-similarity" in capsys.readouterr().out
    assert verified["verification"]["keep"] == 0.8
    assert open(config_path).read() == config_text  # the run is left as it was

    with pytest.raises(ValueError, match="pass --seed 0"):
        run_demo(out_dir=str(tmp_path / "seed"), weights=checkpoint, verbose=0, **{**job, "seed": 1})
    with pytest.raises(ValueError, match="pass --rendering paper"):
        run_demo(out_dir=str(tmp_path / "look"), weights=checkpoint, verbose=0, rendering="mixed", **job)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        run_demo(out_dir=str(tmp_path / "gone"), weights=str(tmp_path / "none.h5"), verbose=0, **job)
    with pytest.raises(ValueError, match="--known-margin .* was trained without it"):
        run_demo(out_dir=str(tmp_path / "known"), weights=checkpoint, verbose=0, known_margin=0.0, **job)
    assert not (tmp_path / "seed").exists() and not (tmp_path / "known").exists()  # refused: no folder left
    os.remove(os.path.join(os.path.dirname(checkpoint), RUN_RECORD))  # a run older than the record
    try:
        with pytest.raises(ValueError, match="pass --seed 0"):
            run_demo(out_dir=str(tmp_path / "old"), weights=checkpoint, verbose=1, **{**job, "seed": 1})
        assert f"no {RUN_RECORD} beside" in capsys.readouterr().out
    finally:
        with open(os.path.join(os.path.dirname(checkpoint), RUN_RECORD), "w") as f:
            json.dump(record, f)


def test_demo_command_line_weights_checks_before_any_work(demo_run, monkeypatch, tmp_path, capsys):
    """``--weights`` is checked before TensorFlow starts: training options are refused, a
    missing file or a checkpoint without its config.json is named; a good one reaches
    ``run_demo``."""
    import shutil

    calls = []
    monkeypatch.setattr("siamese_mask_rcnn.demo.run_demo", lambda **kw: calls.append(kw) or {})
    checkpoint = demo_run[1]["checkpoint"]
    assert cli.main(["demo", "--out", str(tmp_path), "--weights", checkpoint, "--verify-keep", "0.5"]) == 0
    assert calls[0]["weights"] == checkpoint and calls[0]["verify_keep"] == 0.5
    lonely = tmp_path / "lonely.h5"
    shutil.copy(checkpoint, lonely)
    for argv, message in ((["--weights", checkpoint, "--reference-loss", "--negative-pairs", "0.5"],
                           "training options (--negative-pairs, --reference-loss) do not apply"),
                          (["--weights", str(tmp_path / "none.h5")], "--weights: weights file not found"),
                          (["--weights", checkpoint, "--steps", "500"], "training options (--steps) do not apply"),
                          (["--weights", str(lonely)], "no config.json beside")):
        with pytest.raises(SystemExit) as info:
            cli.main(["demo", "--out", str(tmp_path)] + argv)
        assert info.value.code == 2 and message in capsys.readouterr().err
    assert len(calls) == 1
