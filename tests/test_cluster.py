"""``TF_CONFIG`` for ``--multi-worker`` (``siamese_mask_rcnn.cluster``), checked before
TensorFlow starts: which machine is the chief, and a clear exit-2 error for every
description that cannot work, in both training programs; the message a surviving worker
prints when another is lost (``mrcnn.training.worker_loss_as_error``)."""
import json
import logging
import types

import pytest

from siamese_mask_rcnn import cluster
from siamese_mask_rcnn import coco_maskrcnn
from siamese_mask_rcnn import train_coco

TWO = ["a:1", "b:2"]


@pytest.mark.parametrize("tf_config, expected", [
    (None, (None, 0, True, 1)),
    ("", (None, 0, True, 1)),
    ({"cluster": {"worker": TWO}, "task": {"type": "worker", "index": 0}}, ("worker", 0, True, 2)),
    ({"cluster": {"worker": TWO}, "task": {"type": "worker", "index": 1}}, ("worker", 1, False, 2)),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}},
     ("worker", 0, False, 2)),
    ({"cluster": {"chief": ["c:1"], "worker": TWO}, "task": {"type": "chief", "index": 0}},
     ("chief", 0, True, 3)),
    ({"cluster": {"worker": ["[::1]:8000"]}, "task": {"type": "worker"}}, ("worker", 0, True, 1)),
])
def test_chief_and_workers(tf_config, expected):
    text = tf_config if tf_config in (None, "") else json.dumps(tf_config)
    task = cluster.read_tf_config(text)
    assert tuple(task)[:4] == expected
    assert ("writes checkpoints" in cluster.describe(task)) == (expected[0] is not None and expected[2])
    if text and "chief" in text and task.task_type == "chief":
        assert task.peers == tuple(TWO)  # the other machines, not this one


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('["a:1"]', "must be a JSON object, got list"),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster"'),
    ('{"cluster": {}, "task": {"type": "worker", "index": 0}}', 'no "cluster"'),
    ('{"cluster": ["a:1"], "task": {"type": "worker", "index": 0}}', "must be an object of job"),
    ('{"cluster": {"ps": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}',
     "job 'ps' is not supported"),
    ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}', "non-empty list"),
    ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', "non-empty list"),
    ('{"cluster": {"worker": ["a:1", "hostB"]}, "task": {"type": "worker", "index": 0}}',
     "'hostB' is not a \"host:port\""),
    ('{"cluster": {"chief": ["a:1", "b:1"]}, "task": {"type": "chief", "index": 0}}', "2 chiefs"),
    ('{"cluster": {"worker": ["a:1", "b:0"]}, "task": {"type": "worker", "index": 0}}',
     "the port of 'b:0' is not between 1 and 65535"),
    ('{"cluster": {"worker": ["a:1", "b:99999"]}, "task": {"type": "worker", "index": 0}}',
     "the port of 'b:99999'"),
    ('{"cluster": {"chief": ["a:1"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
     "lists a:1 more than once"),
    # one machine's host:port spelled two ways (loopback names, case of host names)
    ('{"cluster": {"worker": ["127.0.0.1:5001", "localhost:5001"]}, "task": {"type": "worker", "index": 0}}',
     "lists 127.0.0.1:5001 (also as localhost:5001) more than once; localhost, 127.x.x.x and [::1] "
     "all name this machine"),
    ('{"cluster": {"chief": ["LOCALHOST:5001"], "worker": ["localhost:5001"]}, "task": {"type": "chief"}}',
     "lists LOCALHOST:5001 (also as localhost:5001) more than once"),
    ('{"cluster": {"worker": ["HostA:7", "b:7", "hosta:7"]}, "task": {"type": "worker", "index": 0}}',
     "lists HostA:7 (also as hosta:7) more than once"),
    ('{"cluster": {"worker": ["[::1]:9", "127.0.0.2:9", "a:1", "a:1"]}, "task": {"type": "worker"}}',
     "lists 127.0.0.2:9 (also as [::1]:9), a:1 more than once"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"index": 1}}', '"task" has no "type"'),
    ('{"cluster": {"worker": ["a:1"]}}', 'no "task"'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
     "task type 'chief' is not a job of the cluster (worker)"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": "1"}}',
     "index must be an integer, got '1'"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": true}}',
     "index must be an integer"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}',
     "index 2 is outside job 'worker', which has 2 address(es)"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": -1}}',
     "index -1 is outside"),
])
def test_bad_tf_config_names_the_problem(text, message):
    with pytest.raises(ValueError) as err:
        cluster.read_tf_config(text)
    assert str(err.value).startswith("TF_CONFIG") and message in str(err.value), str(err.value)


SUBSET_ARGS = ["--train-annotations", __file__, "--train-images", "."]


@pytest.mark.parametrize("program", ["train_siamese", "coco_train"])
def test_multi_worker_with_bad_tf_config_exits_2(program, monkeypatch, capsys, tmp_path):
    """Both training programs stop before TensorFlow with the message (exit 2), also for a
    TF_CONFIG without "cluster", which TensorFlow itself would run as one machine."""
    monkeypatch.setenv("TF_CONFIG", json.dumps({"task": {"type": "worker", "index": 1}}))
    with pytest.raises(SystemExit) as exit_info:
        if program == "train_siamese":
            parser = train_coco.build_parser()
            args = parser.parse_args([*SUBSET_ARGS, "--logs", str(tmp_path), "--multi-worker"])
            train_coco.check_args(parser, args)
        else:
            coco_maskrcnn.main(["train", "--model", "none", *SUBSET_ARGS, "--logs", str(tmp_path),
                                "--multi-worker"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert '--multi-worker: TF_CONFIG has no "cluster"' in err, err


def test_worker_start_timeout_is_listed_with_the_other_machine_flags():
    """``--help`` shows --worker-start-timeout in the group of --multi-worker (it stood
    apart, among the general options, before)."""
    parser = train_coco.build_parser()
    group = next(g for g in parser._action_groups
                 if any("--multi-worker" in a.option_strings for a in g._group_actions))
    assert any("--worker-start-timeout" in a.option_strings for a in group._group_actions), group.title
    help_text = parser.format_help()
    section = help_text[help_text.index(f"\n{group.title}:"):]
    section = section[:section.index("\n\n", 1)]
    assert "--multi-worker" in section and "--worker-start-timeout SECONDS" in section, section
    args = parser.parse_args(SUBSET_ARGS)
    assert args.worker_start_timeout == cluster.DEFAULT_START_TIMEOUT
    assert parser.parse_args([*SUBSET_ARGS, "--worker-start-timeout", "3"]).worker_start_timeout == 3.0


def test_one_machine_spelled_two_ways_exits_2(monkeypatch, capsys, tmp_path):
    """Two tasks at 127.0.0.1:5001 and localhost:5001 would both start TensorFlow's server on
    port 5001 of this machine: refused before TensorFlow, like an address written twice.
    Different ports of this machine, or different hosts, stay accepted (no DNS lookup)."""
    parser = train_coco.build_parser()
    args = parser.parse_args([*SUBSET_ARGS, "--logs", str(tmp_path), "--multi-worker"])
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:5001", "localhost:5001"]},
                                                "task": {"type": "worker", "index": 1}}))
    with pytest.raises(SystemExit) as exit_info:
        train_coco.check_args(parser, args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--multi-worker: TF_CONFIG lists 127.0.0.1:5001 (also as localhost:5001) more than once" in err, err
    for addresses in (["localhost:5001", "127.0.0.1:5002", "[::1]:5003"], ["hosta:1", "hostb:1", "10.0.0.1:1"]):
        task = cluster.read_tf_config(json.dumps({"cluster": {"worker": addresses},
                                                  "task": {"type": "worker", "index": 0}}))
        assert task.workers == 3 and task.peers == tuple(addresses[1:])


def test_tf_config_is_checked_only_with_multi_worker(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    parser = train_coco.build_parser()
    args = parser.parse_args([*SUBSET_ARGS, "--logs", str(tmp_path)])
    train_coco.check_args(parser, args)
    assert args.cluster == cluster.SINGLE_MACHINE
    with caplog.at_level(logging.WARNING):
        assert train_coco.make_strategy(args) is None
    assert "TF_CONFIG is set but --multi-worker was not given" in caplog.text


def test_good_tf_config_is_kept_for_the_run(monkeypatch, tmp_path):
    spec = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 1}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(spec))
    parser = train_coco.build_parser()
    args = parser.parse_args([*SUBSET_ARGS, "--logs", str(tmp_path), "--multi-worker"])
    train_coco.check_args(parser, args)
    assert args.cluster == ("worker", 1, False, 2, ("127.0.0.1:1",))


class _FakeStrategy:
    """Stands for a two-machine ``MultiWorkerMirroredStrategy`` (what the context manager reads)."""

    def __init__(self, chief):
        self.extended = types.SimpleNamespace(should_checkpoint=chief)
        spec = types.SimpleNamespace(as_dict=lambda: {"worker": TWO})
        self.cluster_resolver = types.SimpleNamespace(cluster_spec=lambda: spec)


@pytest.mark.parametrize("epoch, chief, expected, not_expected", [
    (0, True, "no checkpoint of this run was written yet: restart all of them with the same "
              "command as before (not --weights last", "resume from the chief's"),
    (3, True, "restart all of them with --weights last to resume from the chief's last checkpoint "
              "(/run/mask_rcnn_siamese_0003.h5)", "not --weights last"),
    (3, False, "--weights last to resume from the chief's last checkpoint (epoch 3)", "same command"),
])
def test_lost_worker_message_says_how_to_restart(epoch, chief, expected, not_expected):
    import tensorflow as tf

    from siamese_mask_rcnn.mrcnn.training import WorkerLostError, worker_loss_as_error
    model = types.SimpleNamespace(strategy=_FakeStrategy(chief),
                                  checkpoint_path="/run/mask_rcnn_siamese_{:04d}.h5")
    with pytest.raises(WorkerLostError) as err:
        with worker_loss_as_error(model, epoch, 6):
            raise tf.errors.UnavailableError(None, None, "socket closed\nmore detail")
    text = str(err.value)
    assert text.startswith(f"lost another worker during epoch {epoch + 1}, step 7 "
                           f"(UnavailableError: socket closed)")
    assert expected in text and not_expected not in text, text
    # Other errors pass through unchanged.
    with pytest.raises(ValueError):
        with worker_loss_as_error(model, epoch, 6):
            raise ValueError("not a lost worker")


def test_listening_tells_a_started_machine_from_a_missing_one():
    import socket
    live = socket.socket()
    live.bind(("127.0.0.1", 0))
    live.listen()
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()
    try:
        assert cluster.listening(f"127.0.0.1:{live.getsockname()[1]}")
        assert not cluster.listening(f"127.0.0.1:{dead_port}")
        assert not cluster.listening("no-port")
    finally:
        live.close()


def test_the_command_line_programs_start_without_tensorflow():
    """Arguments and TF_CONFIG are checked, and --help answers, before TensorFlow is imported
    (``--help`` took 5 s when the weights module was imported at start)."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys\n"
            "import siamese_mask_rcnn.cli, siamese_mask_rcnn.train_coco, siamese_mask_rcnn.coco_maskrcnn\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=dict(os.environ, PYTHONPATH=root),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_start_signature_tells_what_differs():
    """Machines that resumed from different checkpoints, or got different flags, schedules or
    data, are told apart by the element-wise min and max of their signatures (what the
    all-gather gives)."""
    config = {"LEARNING_RATE": 0.01, "GPU_COUNT": 2, "BATCH_SIZE": 2, "SEED": 3}
    run = {"stages": [["all", 2, 0.01]], "split": "1", "train_class_ids": [1, 2], "images": [5, 7]}
    sha = "ab12cd" + "0" * 58
    base = cluster.start_signature(4, sha, config, run)
    assert base[:2] == [4, 0xab12cd] and all(0 <= v < 2 ** 24 for v in base)
    # GPU_COUNT / BATCH_SIZE come from the strategy: not compared
    assert cluster.start_signature(4, sha, {**config, "GPU_COUNT": 4, "BATCH_SIZE": 4}, run) == base
    other_lr = cluster.start_signature(4, sha, {**config, "LEARNING_RATE": 0.02}, run)
    other_split = cluster.start_signature(4, sha, config, {**run, "split": "2", "train_class_ids": [1, 3]})
    other_schedule = cluster.start_signature(4, sha, config, {**run, "stages": [["all", 3, 0.01]]})
    fresh = cluster.start_signature(0, "00ff00" + "0" * 58, config, run)
    for others, expected in [([base], []), ([other_lr], ["configuration"]),
                             ([other_split], ["schedule or data"]), ([other_schedule], ["schedule or data"]),
                             ([fresh], ["epoch", "weights"]),
                             ([fresh, other_lr], ["epoch", "weights", "configuration"])]:
        signatures = [base] + others
        smallest = [min(column) for column in zip(*signatures)]
        largest = [max(column) for column in zip(*signatures)]
        assert cluster.start_mismatch(smallest, largest) == expected


@pytest.mark.parametrize("where_error, converted", [("unavailable", True), ("value", False)])
def test_a_worker_lost_around_the_steps_is_named(where_error, converted):
    """A collective error while the model is built, at the start check or at the end becomes
    the lost-worker error (exit 3 in the programs); other errors pass unchanged."""
    import tensorflow as tf

    from siamese_mask_rcnn.mrcnn.training import WorkerLostError
    error = (tf.errors.UnavailableError(None, None, "peer gone\ndetail") if where_error == "unavailable"
             else ValueError("bad value"))
    with pytest.raises(WorkerLostError if converted else ValueError) as caught:
        with cluster.lost_worker_outside_steps(True, "while the model was built"):
            raise error
    if converted:
        assert str(caught.value).startswith("lost another worker while the model was built "
                                            "(UnavailableError: peer gone). Every worker must be restarted")
    with pytest.raises(tf.errors.UnavailableError):  # one machine: nothing to convert
        with cluster.lost_worker_outside_steps(False, "while the model was built"):
            raise tf.errors.UnavailableError(None, None, "x")


def test_start_check_names_the_machines_unlike_the_chief(monkeypatch):
    """The all-gather brings every machine's signature, led by its number (chief -1, else
    the worker index): the error names which machines differ from the chief and in what,
    beside this machine's own values, on every machine alike."""
    import numpy as np
    sha = "ab12cd" + "0" * 58
    config = {"LEARNING_RATE": 0.01}
    run = {"stages": [["all", 2, 0.01]], "split": "1"}
    base = cluster.start_signature(2, sha, config, run)
    fresh = cluster.start_signature(0, "00ff00" + "0" * 58, config, run)
    other_lr = cluster.start_signature(2, sha, {"LEARNING_RATE": 0.02}, run)
    other_split = cluster.start_signature(2, sha, config, {**run, "split": "2"})
    # two replicas per machine, as on machines with two GPUs; rows in any order
    rows = [[1, *fresh], [0, *base], [2, *other_lr], [0, *base], [1, *fresh], [2, *other_lr], [3, *base],
            [3, *base]]
    assert cluster.start_differences(np.array(rows, np.float32)) == (
        "worker 0", [("worker 1", ["epoch", "weights"]), ("worker 2", ["configuration"])])
    with_chief = [[-1, *base], [0, *other_split], [1, *base]]
    assert cluster.start_differences(np.array(with_chief, np.float32)) == (
        "chief", [("worker 0", ["schedule or data"])])
    assert cluster.start_differences(np.array([[0, *base], [1, *base]], np.float32)) == ("worker 0", [])

    gathered = []

    def fake_gather(strategy, values):
        gathered.append(list(values))
        return np.array(rows if values[0] != 5 else [[0, *base], [5, *base]], np.float32)

    monkeypatch.setattr(cluster, "_gather_all", fake_gather)
    this = cluster.ClusterTask("worker", 2, False, 4)
    with pytest.raises(ValueError) as err:
        cluster.check_same_start(None, other_lr, this)
    assert gathered == [[2, *other_lr]]
    text = str(err.value)
    assert text.startswith("--multi-worker: the 4 machines do not start from the same epoch and weights and "
                           "configuration (this one, worker 2 of 4 machines: epoch 2, weights ab12cd, "), text
    assert ("). Unlike the chief (worker 0): worker 1 in epoch and weights; worker 2 in configuration. "
            "Give every machine the same command") in text, text
    assert text.endswith("Nothing was trained")
    # all alike: no error
    cluster.check_same_start(None, base, cluster.ClusterTask("worker", 5, False, 2))
