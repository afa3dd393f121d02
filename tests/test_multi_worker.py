"""Two real ``MultiWorkerMirroredStrategy`` workers on this machine (loopback only).

``samples/coco/train_siamese.py --multi-worker`` runs in two processes, each with its own
``TF_CONFIG`` (two workers on free 127.0.0.1 ports; worker 0 is the chief), on the shared
COCO subset with the tiny CPU config, one image per worker (global batch 2) and one step
per epoch, towards epoch 6; worker 1 is killed after the chief's checkpoint 4 and the chief
must stop with a clear error; a single process trains the same global batch of 2 on two
replicas of one image each (``MirroredStrategy`` over two logical CPU devices) for 2 epochs;
then both workers are restarted with ``--weights last`` and finish.

Why two replicas in the single process: with the default (release) loss normalisation each
replica pools its own images' losses (sum of sums / sum of counts) and the replicas are
averaged, so two workers of one image each equal one device with both images only when the
two images have the same positive-anchor / positive-ROI counts. What must hold for any data
is that machines change nothing: two workers equal one process with the same replicas.

Determinism: the data order is fixed by the seed and the example index, and each worker
loads its own half of every global batch (``pipeline.build_dataset``), so worker ``w`` sees
exactly the images of slice ``w`` of the one-device batch. ROI sampling shuffles proposals
(a stateless shuffle whose seed is split over the images of a replica's batch), so its draws
depend on the batch layout; the runs therefore set ``--config-override`` values that keep
every proposal (8 proposals, 64 training ROIs, positive ratio 1/8: the caps are never
reached, the shuffle only permutes ROIs, and the losses and gradients are
permutation-invariant up to float rounding). The gradient that ROIAlign sends back to the
feature maps is computed race-free on a CPU (``layers.roi_align_crops``): TensorFlow's own
CPU kernel lets threads add into the same pixels without synchronisation and loses some
contributions of overlapping ROIs at random, which made one process and two workers differ
after step 1 (by up to 4.7 % of a step) although their inputs and losses were identical.

Every process runs under a hard time limit and all processes are killed on any failure.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPT = os.path.join(ROOT, "samples", "coco", "train_siamese.py")
SUBSET = os.path.join(os.path.dirname(ROOT), "shared", "data", "coco_val2017_subset")
ANNOTATIONS = os.path.join(SUBSET, "annotations", "instances_val2017_subset.json")
# Hang guards, not speed limits: generous enough for the slowest 2-core machine (a training
# step there takes ~5x as long as on an AVX-512 one) with the other test process on the cores.
RUN_TIMEOUT = 900  # seconds for one run of the workers (~30 s on an idle AVX-512 2-core machine)
LOSS_DETECTION_TIMEOUT = 300  # seconds for the surviving worker to stop after the kill
NO_DROP = ["--config-override", "POST_NMS_ROIS_TRAINING=8", "--config-override", "TRAIN_ROIS_PER_IMAGE=64",
           "--config-override", "ROI_POSITIVE_RATIO=0.125"]



def free_ports(count):
    """``count`` distinct free TCP ports on 127.0.0.1."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def train_args(logs, *extra):
    return [SCRIPT, "--train-annotations", ANNOTATIONS, "--train-images", os.path.join(SUBSET, "images"),
            "--split", "1", "--backbone", "tiny", "--steps-per-epoch", "1", "--validation-steps", "0",
            "--heads-epochs", "0", "--lr", "0.01", "--seed", "3", "--logs", str(logs), "--quiet",
            *NO_DROP, *extra]


def environment(tf_config=None):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0", CUDA_VISIBLE_DEVICES="-1",
               NO_ALBUMENTATIONS_UPDATE="1", PYTHONUNBUFFERED="1")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


class Cluster:
    """Two worker processes of one ``train_siamese.py --multi-worker`` run."""

    def __init__(self, tmp, name, logs, *extra, extra_per_worker=([], [])):
        self.procs, self.out, self.err = [], [], []
        ports = free_ports(2)
        workers = [f"127.0.0.1:{p}" for p in ports]
        for index in range(2):
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            out = open(tmp / f"{name}_worker{index}.out", "w+")
            err = open(tmp / f"{name}_worker{index}.err", "w+")
            self.out.append(out)
            self.err.append(err)
            self.procs.append(subprocess.Popen(
                [sys.executable, *train_args(logs, "--multi-worker", "--images-per-gpu", "1", *extra,
                                             *extra_per_worker[index])],
                cwd=ROOT, env=environment(tf_config), stdout=out, stderr=err, stdin=subprocess.DEVNULL))

    def wait(self, timeout):
        """Wait for both processes; returns their exit codes (None: still running at the end)."""
        deadline = time.time() + timeout
        codes = []
        for p in self.procs:
            try:
                codes.append(p.wait(timeout=max(0.1, deadline - time.time())))
            except subprocess.TimeoutExpired:
                codes.append(None)
        return codes

    def wait_for_checkpoint(self, logs, epoch):
        """Wait until the chief has written checkpoint ``epoch`` in ``logs`` (fails the test
        if a process ends first or ``RUN_TIMEOUT`` passes)."""
        deadline = time.time() + RUN_TIMEOUT
        name = f"mask_rcnn_siamese_{epoch:04d}.h5"
        while not (os.path.isdir(logs) and run_dirs(logs) and (logs / run_dirs(logs)[0] / name).exists()):
            if time.time() > deadline or any(p.poll() is not None for p in self.procs):
                pytest.fail(f"checkpoint {epoch} never appeared:\n{self.describe()}")
            time.sleep(0.05)

    def text(self, index, stream="out"):
        f = (self.out if stream == "out" else self.err)[index]
        f.flush()
        f.seek(0)
        return f.read()

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for f in self.out + self.err:
            f.close()

    def describe(self):
        return "\n".join(f"--- worker {i} (exit {p.poll()}) stdout:\n{self.text(i)[-2000:]}\n"
                         f"--- stderr:\n{self.text(i, 'err')[-3000:]}" for i, p in enumerate(self.procs))


# One process, two replicas on this CPU: ``train_coco.run`` with a ``MirroredStrategy`` over two
# logical CPU devices in place of the multi-worker strategy (``make_strategy``).
TWO_CPU_REPLICAS = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from siamese_mask_rcnn import train_coco
train_coco.make_strategy = lambda args: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
sys.exit(train_coco.run(sys.argv[1:]))
"""


def run_single(tmp, logs, *extra, timeout=RUN_TIMEOUT):
    """``train_siamese.py`` in one process on two replicas of one image each (global batch 2)."""
    args = train_args(logs, "--images-per-gpu", "1", *extra)[1:]  # without the script
    with open(tmp / "single.out", "w+") as out, open(tmp / "single.err", "w+") as err:
        try:
            code = subprocess.run([sys.executable, "-c", TWO_CPU_REPLICAS, *args],
                                  cwd=ROOT, env=environment(), stdout=out, stderr=err,
                                  stdin=subprocess.DEVNULL, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = None
        out.seek(0)
        err.seek(0)
        text, error = out.read(), err.read()
    if code != 0:
        pytest.fail(f"single-process run exited with {code}:\n{text[-2000:]}\n{error[-4000:]}")
    return text


def fingerprint(stdout):
    lines = [line for line in stdout.splitlines() if "weights sha256" in line]
    assert lines, f"no 'weights sha256' line in:\n{stdout[-2000:]}"
    return lines[-1].split()[-1]


def run_dirs(logs):
    return sorted(d for d in os.listdir(logs) if os.path.isdir(os.path.join(logs, d)))


def h5_weights(path):
    from siamese_mask_rcnn.mrcnn import weights as mweights
    return {(layer, name): np.asarray(value, np.float64)
            for layer, items in mweights.read_h5_weights(str(path)).items() for name, value in items}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two workers train towards epoch 6 and worker 1 is killed once the chief has written
    checkpoint 4; one process trains 2 epochs on the same global batch; then both workers
    are restarted with ``--weights last`` and finish."""
    if not os.path.isfile(ANNOTATIONS):
        pytest.skip(f"shared COCO subset not found at {SUBSET} (only present next to the project checkout)")
    tmp = tmp_path_factory.mktemp("multi_worker")
    logs, single_logs = tmp / "logs", tmp / "single"
    report = {"logs": logs, "single_logs": single_logs}
    clusters = []
    try:
        first = Cluster(tmp, "first", logs, "--all-epochs", "6", "--total-epochs", "6")
        clusters.append(first)
        first.wait_for_checkpoint(logs, 4)
        first.procs[1].send_signal(signal.SIGKILL)
        killed = time.time()
        codes = first.wait(LOSS_DETECTION_TIMEOUT)
        report["loss_detection_seconds"] = time.time() - killed
        report["first_codes"] = codes
        report["first_chief_err"] = first.text(0, "err")
        report["first_describe"] = first.describe()
        run_dir = logs / run_dirs(logs)[0]
        report["run_dir"] = run_dir
        report["checkpoints_after_kill"] = sorted(f for f in os.listdir(run_dir) if f.endswith(".h5"))

        report["single"] = run_single(tmp, single_logs, "--all-epochs", "2", "--total-epochs", "2")

        second = Cluster(tmp, "second", logs, "--weights", "last", "--all-epochs", "6", "--total-epochs", "6")
        clusters.append(second)
        codes = second.wait(RUN_TIMEOUT)
        if codes != [0, 0]:
            pytest.fail(f"restarted run exited with {codes}:\n{second.describe()}")
        report["second"] = [second.text(0), second.text(1)]
        yield report
    finally:
        for cluster in clusters:
            cluster.kill()


def test_chief_alone_writes_checkpoints_and_config(runs):
    logs = runs["logs"]
    assert run_dirs(logs) == [runs["run_dir"].name], "one run directory, nothing from worker 1"
    files = sorted(os.listdir(runs["run_dir"]))
    assert "config.json" in files
    assert len([f for f in files if f.startswith("events.out.tfevents")]) == 2  # the chief's of 2 runs
    config = json.load(open(runs["run_dir"] / "config.json"))
    assert (config["GPU_COUNT"], config["IMAGES_PER_GPU"], config["BATCH_SIZE"]) == (2, 1, 2)
    # One history line per epoch, written by the chief alone: 1-4 (or 5), then the rest to 6.
    epochs = [json.loads(line)["epoch"] for line in open(runs["run_dir"] / "history.jsonl")]
    assert epochs == [1, 2, 3, 4, 5, 6], epochs
    assert [f for f in files if f.endswith(".h5")] == [f"mask_rcnn_siamese_{e:04d}.h5" for e in range(1, 7)]
    assert "not saved (not the chief)" not in runs["second"][0]


def test_workers_end_with_identical_weights(runs):
    for text in runs["second"]:
        assert "finished at epoch 6" in text
    assert fingerprint(runs["second"][0]) == fingerprint(runs["second"][1])


def test_two_workers_equal_one_process_on_the_same_global_batch(runs):
    """Two workers of one replica each give the weights of one process with two replicas of
    one image each (the same per-replica loss pooling) after steps 1 and 2, to float rounding."""
    run_dir = runs["run_dir"]
    (single_run,) = run_dirs(runs["single_logs"])
    config = json.load(open(runs["single_logs"] / single_run / "config.json"))
    assert (config["GPU_COUNT"], config["IMAGES_PER_GPU"], config["BATCH_SIZE"]) == (2, 1, 2)
    assert config["LOSS_NORMALIZATION"] == "release"
    single = h5_weights(runs["single_logs"] / single_run / "mask_rcnn_siamese_0002.h5")
    two = h5_weights(run_dir / "mask_rcnn_siamese_0002.h5")
    after_one = h5_weights(run_dir / "mask_rcnn_siamese_0001.h5")
    assert single.keys() == two.keys() and len(two) > 50
    kernels = [key for key in two if key[1] == "kernel"]
    moved = [key for key in kernels if np.abs(two[key] - after_one[key]).max() > 0]
    # (with 8 untrained proposals the box and mask heads may see no positive ROI)
    assert len(moved) >= 0.6 * len(kernels) and ("tiny_conv1", "kernel") in moved, moved
    single_one = h5_weights(runs["single_logs"] / single_run / "mask_rcnn_siamese_0001.h5")
    worst = 0.0
    for key in two:
        update = np.abs(two[key] - after_one[key]).max()  # the size of step 2 on this weight
        # Float rounding: the replicas' gradients summed in another order (relative 1e-6)
        # and the float32 weight itself (a few units in its last place). Measured on 2 cores
        # (AMD EPYC), 5 runs of this test and 3 of the same commands stopped after step 2:
        # 0.0 at both steps in every run. Before the race-free ROIAlign gradient
        # (layers.roi_align_crops) TensorFlow's CPU kernel lost contributions of
        # overlapping ROIs at random: step 1 was up to 4.7 % of a step apart, step 2 26 %.
        # A wrong reduction (e.g. replicas averaged where the release pools) moves a step by
        # its whole size.
        ulps = 4 * float(np.spacing(np.float32(np.abs(two[key]).max())))
        for step, (workers, one_process) in enumerate([(after_one, single_one), (two, single)], 1):
            diff = np.abs(workers[key] - one_process[key]).max()
            assert diff <= ulps + 1e-5 * update, (f"step {step}", key, diff, update)
            worst = max(worst, diff / max(update, 1e-12))
    print(f"largest |two workers - one process| after steps 1 and 2 / |update of step 2|: {worst:.2e}")


def test_killed_worker_stops_the_survivor_and_restart_resumes(runs):
    codes = runs["first_codes"]
    print(f"the chief stopped {runs['loss_detection_seconds']:.1f} s after worker 1 was killed")
    assert codes[1] == -signal.SIGKILL
    assert codes[0] is not None, f"the chief did not stop within {LOSS_DETECTION_TIMEOUT} s of the kill"
    assert codes[0] == 3, runs["first_describe"]
    err = runs["first_chief_err"]
    assert "error: lost another worker during epoch" in err and "--weights last" in err, err[-3000:]
    assert "Traceback" not in err
    # The chief saved 4 (maybe 5: worker 1 may have sent its part of step 5) checkpoints
    # before it stopped; the restart resumed after the last one and finished the schedule.
    last = int(runs["checkpoints_after_kill"][-1][-7:-3])
    assert last in (4, 5), runs["checkpoints_after_kill"]
    assert f"({runs['run_dir'] / f'mask_rcnn_siamese_{last:04d}.h5'})" in err
    for text in runs["second"]:
        assert f"starting after epoch {last}" in text and "finished at epoch 6" in text


def test_each_input_pipeline_loads_its_slice_of_every_global_batch():
    """Two input pipelines (workers) with two replicas each rebuild the one-pipeline global
    batches exactly: pipeline ``p``'s ``r``-th batch of a step is global replica ``2p + r``."""
    from siamese_mask_rcnn.mrcnn.pipeline import build_dataset

    def load(image_id, rng):  # the image id and a draw of the example's own generator
        return (np.array([image_id, rng.integers(1 << 30)]),)

    specs = [("x", [2], "int64")]
    ids = list(range(7))
    one, _ = build_dataset(load, ids, specs, batch_size=4, seed=5, start=8, workers=1)
    full = [batch[0].numpy() for batch, _ in zip(one, range(3))]
    parts = []
    for pipeline in range(2):
        ds, _ = build_dataset(load, ids, specs, batch_size=4, seed=5, start=8, workers=1,
                              pipeline=pipeline, num_pipelines=2, replica_batch=1)
        parts.append([batch[0].numpy() for batch, _ in zip(ds, range(6))])
    for step in range(3):
        rebuilt = np.concatenate([parts[0][2 * step], parts[0][2 * step + 1],
                                  parts[1][2 * step], parts[1][2 * step + 1]])
        np.testing.assert_array_equal(rebuilt, full[step])
    assert len({tuple(row) for batch in full for row in batch}) == 12  # 12 distinct examples
    with pytest.raises(ValueError, match="multiple of the global batch"):
        build_dataset(load, ids, specs, batch_size=4, start=6, pipeline=0, num_pipelines=2)
    with pytest.raises(ValueError, match="does not split"):
        build_dataset(load, ids, specs, batch_size=5, pipeline=0, num_pipelines=2)


def test_killed_chief_stops_the_other_worker(tmp_path):
    """The chief dies after its first checkpoint: the other worker stops with the lost-worker
    error (exit 3), pointing at the chief's checkpoints through --weights last."""
    if not os.path.isfile(ANNOTATIONS):
        pytest.skip(f"shared COCO subset not found at {SUBSET}")
    logs = tmp_path / "logs"
    cluster = Cluster(tmp_path, "chief_killed", logs, "--all-epochs", "6", "--total-epochs", "6")
    try:
        cluster.wait_for_checkpoint(logs, 1)
        cluster.procs[0].send_signal(signal.SIGKILL)
        killed = time.time()
        codes = cluster.wait(LOSS_DETECTION_TIMEOUT)
        seconds = time.time() - killed
        assert codes[0] == -signal.SIGKILL
        assert codes[1] == 3, f"worker 1 did not stop with status 3 within {LOSS_DETECTION_TIMEOUT} s:\n" \
                              + cluster.describe()
        err = cluster.text(1, "err")
        assert "error: lost another worker during epoch" in err and "Traceback" not in err, err[-3000:]
        assert "restart all of them with --weights last to resume from the chief's last checkpoint (epoch" in err
        print(f"worker 1 stopped {seconds:.1f} s after the chief was killed")
    finally:
        cluster.kill()


def test_a_machine_that_never_starts_ends_the_wait(tmp_path):
    """Worker 0 alone (worker 1 never starts): TensorFlow would wait without limit (measured:
    more than 10 minutes, deaf to SIGTERM); after --worker-start-timeout the watchdog names
    the address of the machine that is missing and ends the process (SIGKILL)."""
    if not os.path.isfile(ANNOTATIONS):
        pytest.skip(f"shared COCO subset not found at {SUBSET}")
    ports = free_ports(2)
    workers = [f"127.0.0.1:{p}" for p in ports]
    tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": 0}}
    started = time.time()
    done = subprocess.run([sys.executable, *train_args(tmp_path / "logs", "--multi-worker", "--images-per-gpu", "1",
                                                       "--worker-start-timeout", "3")],
                          cwd=ROOT, env=environment(tf_config), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=RUN_TIMEOUT)
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stdout[-2000:], done.stderr[-3000:])
    assert "worker 0 of 2 machines (the chief, writes checkpoints)" in done.stdout
    assert "error: --multi-worker: not all 2 machines of TF_CONFIG started within" in done.stderr
    assert f"(not answering: {workers[1]})" in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert not os.path.exists(tmp_path / "logs") or not run_dirs(tmp_path / "logs")
    print(f"worker 0 alone gave up {time.time() - started:.1f} s after it started "
          f"(--worker-start-timeout 3, TensorFlow's import and start included)")


def test_machines_that_start_from_different_weights_stop_before_training(runs, tmp_path):
    """Worker 0 loads a checkpoint, worker 1 starts from the initial weights (as with
    --weights last on one machine only): both stop before the first step, naming the
    weights, instead of summing gradients of replicas that hold different weights."""
    checkpoint = runs["run_dir"] / "mask_rcnn_siamese_0002.h5"
    logs = tmp_path / "logs"
    cluster = Cluster(tmp_path, "split_start", logs, "--all-epochs", "2", "--total-epochs", "2",
                      extra_per_worker=[["--weights", str(checkpoint)], []])
    try:
        codes = cluster.wait(RUN_TIMEOUT)
        assert codes == [1, 1], cluster.describe()
        for index in range(2):
            err = cluster.text(index, "err")
            # (a checkpoint's file name sets the epoch it resumes after: 2 on worker 0)
            assert ("error: --multi-worker: the 2 machines do not start from the same epoch and weights "
                    f"(this one, worker {index} of 2 machines: epoch {2 if index == 0 else 0},") in err, err[-3000:]
            assert "Nothing was trained" in err and "Traceback" not in err
        assert not any(f.endswith(".h5") for d in run_dirs(logs) for f in os.listdir(logs / d))
    finally:
        cluster.kill()


def test_empty_tf_config_trains_on_this_machine(tmp_path):
    """``TF_CONFIG=`` (set but empty) with --multi-worker: one machine, with a warning (TensorFlow
    alone would fail to parse the empty value)."""
    if not os.path.isfile(ANNOTATIONS):
        pytest.skip(f"shared COCO subset not found at {SUBSET}")
    env = environment()
    env["TF_CONFIG"] = ""
    done = subprocess.run([sys.executable, *train_args(tmp_path / "logs", "--multi-worker", "--images-per-gpu", "1",
                                                       "--all-epochs", "1", "--total-epochs", "1")],
                          cwd=ROOT, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=RUN_TIMEOUT)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    assert "--multi-worker without TF_CONFIG: training on this machine only" in done.stderr
    assert "finished at epoch 1" in done.stdout


def test_machines_with_different_splits_stop_before_training(tmp_path):
    """--split 1 on one machine and --split 2 on the other (not a Config value): the start
    check names the schedule or data and nothing is trained (it trained silently, leaking
    held-out categories, before)."""
    if not os.path.isfile(ANNOTATIONS):
        pytest.skip(f"shared COCO subset not found at {SUBSET}")
    logs = tmp_path / "logs"
    cluster = Cluster(tmp_path, "splits", logs, "--all-epochs", "1", "--total-epochs", "1",
                      extra_per_worker=[[], ["--split", "2"]])
    try:
        codes = cluster.wait(RUN_TIMEOUT)
        assert codes == [1, 1], cluster.describe()
        for index in range(2):
            err = cluster.text(index, "err")
            assert "do not start from the same schedule or data" in err and "Traceback" not in err, err[-3000:]
            # every machine names the one unlike the chief (the machine numbers come through the all-gather)
            assert "Unlike the chief (worker 0): worker 1 in schedule or data. " in err, err[-3000:]
        assert not any(f.endswith(".h5") for d in run_dirs(logs) for f in os.listdir(logs / d))
    finally:
        cluster.kill()
