"""A training run never loses or mixes its state: unique run folders, finite-only checkpoints,
exact resume (optimizer, data position, random generators, schedule), removal of partial
files, and output folders checked writable before any long work (issue 15)."""
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import types

import numpy as np
import pytest

from siamese_mask_rcnn.mrcnn import fileio, run_dirs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def unwritable(tmp_path):
    """A folder path even root cannot create: its parent is a regular file."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    return blocker / "out"


# --------------------------------------------------------------------------- run folders (no TF)
def _create(model_dir):
    return run_dirs.create_run_dir(model_dir, "siamese")


def test_two_processes_started_together_get_two_folders(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        folders = pool.map(_create, [str(tmp_path)] * 2)
    assert len(set(folders)) == 2
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(f) for f in folders)


def test_threads_in_one_second_get_distinct_folders_even_when_names_collide(tmp_path, monkeypatch):
    import datetime
    now = datetime.datetime(2026, 11, 30, 1, 53, 7)
    results, barrier = [], threading.Barrier(8)

    def worker():
        barrier.wait()
        results.append(run_dirs.create_run_dir(tmp_path, "siamese", now=now))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 8
    assert all(os.path.basename(r).startswith("siamese20261130T015307-") for r in results)

    # a name that is taken is never reused: creation is exclusive and tries another name
    names = iter(["siamese20261130T015307-0001", "siamese20261130T015307-0001", "siamese20261130T015307-0002"])
    monkeypatch.setattr(run_dirs, "new_run_dir_name", lambda name, now=None: next(names))
    first = run_dirs.create_run_dir(tmp_path / "x", "siamese")
    second = run_dirs.create_run_dir(tmp_path / "x", "siamese")
    assert (os.path.basename(first), os.path.basename(second)) == (
        "siamese20261130T015307-0001", "siamese20261130T015307-0002")


def test_run_folder_names_parse_and_sort_with_matterports(tmp_path):
    import datetime
    name = run_dirs.new_run_dir_name("coco_2", datetime.datetime(2026, 1, 2, 3, 4, 5))
    assert name.startswith("coco_220260102T030405-") and len(name) == len("coco_220260102T030405-") + 4
    for folder, epoch in ((name, 7), ("coco_220260102T0304", 3)):  # ours and matterport's
        path = tmp_path / folder / f"mask_rcnn_coco_2_{epoch:04d}.h5"
        assert run_dirs.checkpoint_epoch(path) == epoch
        log_dir, pattern, got = run_dirs.run_location(tmp_path, "coco_2", path)
        assert (log_dir, got) == (str(tmp_path / folder), epoch)
        assert pattern.format(epoch + 1) == str(tmp_path / folder / f"mask_rcnn_coco_2_{epoch + 1:04d}.h5")
    assert run_dirs.checkpoint_epoch(tmp_path / "weights.h5") is None
    # the newest run with a checkpoint wins, whatever the naming; partial files are not checkpoints
    for folder, files in (("coco_220260102T0304", ["mask_rcnn_coco_2_0003.h5"]),
                          ("coco_220260102T030405-beef", ["mask_rcnn_coco_2_0001.h5",
                                                          ".mask_rcnn_coco_2_0002.h5.partial-x1.h5"]),
                          ("coco_220260102T030406-0a0a", ["config.json"])):  # killed before epoch 1
        (tmp_path / "logs" / folder).mkdir(parents=True)
        for f in files:
            (tmp_path / "logs" / folder / f).write_bytes(b"")
    assert run_dirs.find_last_checkpoint(tmp_path / "logs", "coco_2") == str(
        tmp_path / "logs" / "coco_220260102T030405-beef" / "mask_rcnn_coco_2_0001.h5")


_KILLED_WRITER = """
import os, sys
from siamese_mask_rcnn.mrcnn.fileio import atomic_write
with atomic_write(sys.argv[1], suffix=".h5") as tmp:
    with open(tmp, "wb") as f:
        f.write(b"half a checkpoint")
    os._exit(9)  # killed mid-write: no cleanup runs
"""


def test_partial_files_of_a_killed_write_are_recognised_and_removed(tmp_path):
    target = tmp_path / "run" / "mask_rcnn_x_0002.h5"
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(target)], env=env)
    assert proc.returncode == 9
    left = [f for f in os.listdir(target.parent)]
    assert len(left) == 1 and left[0].startswith(".mask_rcnn_x_0002.h5.partial-") and not target.exists()
    (target.parent / "mask_rcnn_x_0002.state_temp").mkdir()  # TensorFlow's unfinished state write
    (target.parent / "mask_rcnn_x_0002.state_temp" / "part-00000-of-00001").write_bytes(b"")
    for keep in ("mask_rcnn_x_0001.h5", "mask_rcnn_x_0001.state.index", ".hidden_but_mine", "config.json"):
        (target.parent / keep).write_bytes(b"")
    removed = fileio.remove_partial_files(target.parent)
    assert len(removed) == 2
    assert sorted(os.listdir(target.parent)) == [".hidden_but_mine", "config.json", "mask_rcnn_x_0001.h5",
                                                 "mask_rcnn_x_0001.state.index"]


def test_ensure_writable_dir(tmp_path):
    assert fileio.ensure_writable_dir(tmp_path / "new" / "deep") == str(tmp_path / "new" / "deep")
    assert os.listdir(tmp_path / "new" / "deep") == []  # the probe file is gone
    bad = unwritable(tmp_path)
    with pytest.raises(fileio.UnwritableOutputError, match=f"cannot create the --out folder {bad}"):
        fileio.ensure_writable_dir(bad, "--out folder")
    # a regular file where the folder should be is named as such
    with pytest.raises(fileio.UnwritableOutputError, match=f"the --out folder {bad.parent} is a file, not a folder"):
        fileio.ensure_writable_dir(bad.parent, "--out folder")


def test_ensure_writable_dir_says_a_folder_is_not_writable(tmp_path, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # root writes everywhere: simulate it
    with pytest.raises(fileio.UnwritableOutputError,
                       match=f"the output folder {tmp_path} is not writable .*Permission denied"):
        fileio.ensure_writable_dir(tmp_path)


# --------------------------------------------------------------------------- output folders of every command
def test_evaluation_with_unwritable_out_exits_2_before_predicting(tmp_path, monkeypatch, capsys):
    from siamese_mask_rcnn.evaluation import cli as ecli
    calls = []
    monkeypatch.setattr(ecli, "load_dataset", lambda args: calls.append("load_dataset"))
    monkeypatch.setattr(ecli, "evaluate_runs", lambda *a, **k: calls.append("evaluate_runs"))
    monkeypatch.setattr(ecli, "make_predictor_factory", lambda *a: calls.append("predictor"))
    bad = unwritable(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        ecli.main(["--annotations", "ann.json", "--images", "imgs", "--model", "gt", "--out", str(bad)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err
    assert calls == []
    # a writable --out passes the check and is created before any work
    good = tmp_path / "eval_out"
    args = ecli.build_parser().parse_args(["--annotations", "a", "--images", "i", "--model", "gt",
                                           "--out", str(good)])
    ecli.check_args(ecli.build_parser(), args)
    assert good.is_dir()


def test_training_with_unwritable_logs_exits_2_before_reading_data(tmp_path, monkeypatch, capsys):
    from siamese_mask_rcnn import cli, train_coco
    calls = []
    monkeypatch.setattr(train_coco, "load_datasets", lambda args: calls.append("load"))
    bad = unwritable(tmp_path)
    (tmp_path / "imgs").mkdir()
    (tmp_path / "ann.json").write_text("{}")
    argv = ["train", "--train-annotations", str(tmp_path / "ann.json"), "--train-images", str(tmp_path / "imgs"),
            "--logs", str(bad)]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err and calls == []


def test_demo_and_predict_with_unwritable_output_exit_2_first(tmp_path, monkeypatch, capsys):
    from siamese_mask_rcnn import cli, demo, predict
    calls = []
    monkeypatch.setattr(demo, "make_datasets", lambda *a, **k: calls.append("data"))
    monkeypatch.setattr(predict, "load_model", lambda *a, **k: calls.append("model"))
    monkeypatch.setattr(predict, "read_user_image", lambda *a, **k: calls.append("image"))
    bad = unwritable(tmp_path)
    assert cli.main(["demo", "--out", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
    for flag in ("--out", "--json"):
        assert cli.main(["predict", "--weights", "w.h5", "--reference", "r.png", "--query", "q.png",
                         flag, str(bad / "result.file")]) == 2
        err = capsys.readouterr().err
        assert str(bad) in err and "Traceback" not in err
    folder = tmp_path / "a_folder"  # an existing directory given as the output file
    folder.mkdir()
    for flag in ("--out", "--json"):
        assert cli.main(["predict", "--weights", "w.h5", "--reference", "r.png", "--query", "q.png",
                         flag, str(folder)]) == 2
        err = capsys.readouterr().err
        assert f"{flag}) '{folder}' is a directory" in err and "Traceback" not in err
    assert calls == []


def test_diverged_training_cli_message_without_traceback(monkeypatch, capsys):
    from siamese_mask_rcnn import train_coco
    from siamese_mask_rcnn.mrcnn.checkpoints import TrainingDiverged, last_good_message

    def diverge(argv, prog):
        raise TrainingDiverged("non-finite loss; " + last_good_message("/l/run/mask_rcnn_siamese_0004.h5"))

    monkeypatch.setattr(train_coco, "main", diverge)
    with pytest.raises(SystemExit) as exit_info:
        train_coco.run([])
    assert "error:" in str(exit_info.value.code) and "mask_rcnn_siamese_0004.h5" in str(exit_info.value.code)
    assert "--weights last" in str(exit_info.value.code)


# --------------------------------------------------------------------------- config.json of a run
def _fake_model(model_dir, epoch=0, model_path=None, **overrides):
    from siamese_mask_rcnn.demo import demo_config
    config = demo_config(preset="tiny", **overrides)
    model = types.SimpleNamespace(config=config, model_dir=str(model_dir))
    model.log_dir, model.checkpoint_path, model.epoch = run_dirs.run_location(
        model_dir, run_dirs.run_name(config), model_path)
    return model


def test_run_folders_and_config_json_are_never_shared(tmp_path):
    from siamese_mask_rcnn.mrcnn.checkpoints import prepare_run_dir
    first, second = _fake_model(tmp_path), _fake_model(tmp_path, SEED=5)
    second.log_dir, second.checkpoint_path = first.log_dir, first.checkpoint_path  # same second, same name
    prepare_run_dir(first)
    prepare_run_dir(second)
    assert first.log_dir != second.log_dir and os.path.dirname(second.checkpoint_path) == second.log_dir
    for model, seed in ((first, 0), (second, 5)):
        assert json.load(open(os.path.join(model.log_dir, "config.json")))["SEED"] == seed
    prepare_run_dir(first)  # a later stage of the same run keeps its folder
    assert os.path.dirname(first.checkpoint_path) == first.log_dir

    # resuming the first run with another config keeps its config.json and says so beside it
    checkpoint = os.path.join(first.log_dir, "mask_rcnn_demo_0001.h5")
    open(checkpoint, "wb").close()
    resumed = _fake_model(tmp_path, model_path=checkpoint, SEED=9)
    assert resumed.epoch == 1 and resumed.log_dir == first.log_dir
    stale = os.path.join(first.log_dir, ".mask_rcnn_demo_0002.h5.partial-k1ll.h5")
    open(stale, "wb").close()
    prepare_run_dir(resumed)
    assert json.load(open(os.path.join(first.log_dir, "config.json")))["SEED"] == 0
    assert json.load(open(os.path.join(first.log_dir, "config_resumed_0001.json")))["SEED"] == 9
    assert not os.path.exists(stale)
    # resuming with the run's own config writes nothing new
    same = _fake_model(tmp_path, model_path=checkpoint, SEED=0)
    os.remove(os.path.join(first.log_dir, "config_resumed_0001.json"))
    prepare_run_dir(same)
    assert not os.path.exists(os.path.join(first.log_dir, "config_resumed_0001.json"))


# --------------------------------------------------------------------------- training (TensorFlow)
keras = pytest.importorskip("keras")


def _config(**overrides):
    from siamese_mask_rcnn.demo import demo_config
    return demo_config(preset="tiny", IMAGES_PER_GPU=1, STEPS_PER_EPOCH=2, VALIDATION_STEPS=1, SEED=0,
                       DATA_WORKERS=1, **overrides)


@pytest.fixture(scope="module")
def scenes():
    from siamese_mask_rcnn.demo import make_datasets
    return make_datasets("synthetic", num_train=8, num_val=4, image_size=128, seed=0, num_categories=20)


def _model(model_dir, seed=0):
    from siamese_mask_rcnn.siamese import SiameseMaskRCNN
    keras.utils.set_random_seed(seed)
    return SiameseMaskRCNN("training", _config(), model_dir=str(model_dir))


def _weights(path):
    from siamese_mask_rcnn.mrcnn import weights as mweights
    return {(layer, name): array for layer, entries in mweights.read_h5_weights(path).items()
            for name, array in entries}


def _max_difference(a, b):
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) if a[k].size else 0.0 for k in a)


class _InterruptAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt  # as Ctrl-C (or a kill) after epoch 1's checkpoint


@pytest.fixture(scope="module")
def uninterrupted(scenes, tmp_path_factory):
    train, val = scenes
    model = _model(tmp_path_factory.mktemp("uninterrupted"))
    history = model.train(train, val, 0.01, epochs=2, layers="all", verbose=0)
    return model, history


def test_interrupted_and_resumed_run_ends_with_the_same_weights(uninterrupted, scenes, tmp_path):
    from siamese_mask_rcnn.mrcnn import run_dirs as rd
    train, val = scenes
    reference, history = uninterrupted
    assert len(history) == 2 and all(np.isfinite(h["val_loss"]) for h in history)

    killed = _model(tmp_path / "logs")
    with pytest.raises(KeyboardInterrupt):
        killed.train(train, val, 0.01, epochs=2, layers="all", verbose=0,
                     custom_callbacks=[_InterruptAfterFirstEpoch()])
    first = killed.checkpoint_path.format(1)
    # the .h5 stays a complete matterport-layout file, the state is beside it
    assert os.path.isfile(first) and os.path.isfile(rd.state_prefix(first) + ".index")
    # same seed, same data: equal up to float rounding of multi-threaded reductions
    # (a different seed differs by > 1e-4, see the stateless test below)
    assert _max_difference(_weights(first), _weights(reference.checkpoint_path.format(1))) < 1e-6
    # a write killed during epoch 2 left partial files behind
    stale = [os.path.join(killed.log_dir, ".mask_rcnn_demo_0002.h5.partial-abc123.h5"),
             os.path.join(killed.log_dir, "mask_rcnn_demo_0002.state_temp")]
    open(stale[0], "wb").close()
    os.mkdir(stale[1])

    resumed = _model(tmp_path / "logs", seed=123)  # another process: other initial weights and RNG
    last = resumed.find_last()
    assert last == first
    resumed.load_weights(last, by_name=True)
    assert resumed.epoch == 1 and resumed.log_dir == killed.log_dir
    rest = resumed.train(train, val, 0.01, epochs=2, layers="all", verbose=0)
    assert not any(os.path.exists(p) for p in stale)
    assert rest[0]["loss"] == pytest.approx(history[1]["loss"], rel=1e-5)
    assert int(resumed.optimizer.iterations.numpy()) == 4  # 2 steps restored + 2 run
    final = _weights(resumed.checkpoint_path.format(2))
    expected = _weights(reference.checkpoint_path.format(2))
    assert _max_difference(final, expected) < 1e-5
    with open(os.path.join(killed.log_dir, "history.jsonl")) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2]

    # without the saved state (momentum, iteration, ROI sampler) the resume drifts: the state matters
    for name in os.listdir(killed.log_dir):
        if ".state." in name:
            os.remove(os.path.join(killed.log_dir, name))
    os.remove(resumed.checkpoint_path.format(2))
    stateless = _model(tmp_path / "logs", seed=123)
    stateless.load_weights(stateless.find_last(), by_name=True)
    stateless.train(train, val, 0.01, epochs=2, layers="all", verbose=0)
    assert _max_difference(_weights(stateless.checkpoint_path.format(2)), expected) > 1e-4


def test_absurd_learning_rate_keeps_the_last_good_checkpoint(uninterrupted, scenes):
    from siamese_mask_rcnn.mrcnn import run_dirs as rd
    from siamese_mask_rcnn.mrcnn.checkpoints import TrainingDiverged
    train, val = scenes
    model, _ = uninterrupted
    good = model.checkpoint_path.format(2)
    assert model.find_last() == good
    # one step at an absurd rate: the loss (computed before the update) is finite, the weights are not
    with pytest.raises(TrainingDiverged) as info:
        model.train(train, val, 1e38, epochs=3, layers="all", steps_per_epoch=1, verbose=0)
    message = str(info.value)
    assert good in message and "--weights last" in message and "no checkpoint written" in message
    assert info.value.last_checkpoint == good and isinstance(info.value, FloatingPointError)
    assert not os.path.exists(model.checkpoint_path.format(3))
    assert not os.path.exists(rd.state_prefix(model.checkpoint_path.format(3)) + ".index")
    with open(os.path.join(model.log_dir, "history.jsonl")) as f:
        assert "diverged" in json.loads(f.readlines()[-1])

    # --weights last: the newest run's last good checkpoint, whose weights are finite
    resumed = _model(model.model_dir, seed=7)
    last = resumed.find_last()
    assert last == good
    resumed.load_weights(last, by_name=True)
    assert all(np.all(np.isfinite(w.numpy())) for w in resumed.keras_model.weights)
    history = resumed.train(train, val, 0.01, epochs=3, layers="all", steps_per_epoch=1, verbose=0)
    assert np.isfinite(history[0]["loss"]) and os.path.isfile(model.checkpoint_path.format(3))
