"""The machines of a multi-machine training run, read from ``TF_CONFIG`` without TensorFlow.

``--multi-worker`` (``train_siamese.py``, ``coco.py train``, ``siamese-mrcnn train``) trains
with ``tf.distribute.MultiWorkerMirroredStrategy``, which takes the cluster from the
``TF_CONFIG`` environment variable, a JSON object such as::

    {"cluster": {"worker": ["hostA:12345", "hostB:12345"]},
     "task": {"type": "worker", "index": 0}}

TensorFlow accepts some descriptions that cannot work for this strategy (no ``"cluster"``:
it silently trains on one machine) and reports others with its own internal messages;
:func:`read_tf_config` checks the description first and names what is wrong. The chief
(the ``chief`` task, or worker 0 when there is none) is the one machine that writes
checkpoints, ``config.json``, ``history.jsonl`` and TensorBoard files; the other workers
write nothing (see ``mrcnn.training``).
"""
import collections
import ipaddress
import json
import os
import re
import socket
import time

#: Job names ``MultiWorkerMirroredStrategy`` trains with (an ``evaluator`` or ``ps`` task
#: would need another training loop, which this project does not have).
TRAINING_JOBS = ("chief", "worker")

ClusterTask = collections.namedtuple("ClusterTask", "task_type index is_chief workers peers",
                                     defaults=((),))
ClusterTask.__doc__ = """This process's place in the cluster: ``task_type`` ("chief",
"worker" or None on a single machine), ``index`` (in its job), ``is_chief``, ``workers``
(the number of training machines, chief included) and ``peers`` (the other machines'
``"host:port"`` addresses)."""

SINGLE_MACHINE = ClusterTask(None, 0, True, 1)

#: Seconds a ``--multi-worker`` process waits for every machine of the cluster to start
#: before it gives up (``--worker-start-timeout``).
DEFAULT_START_TIMEOUT = 600.0

_EXAMPLE = ('{"cluster": {"worker": ["hostA:12345", "hostB:12345"]}, '
            '"task": {"type": "worker", "index": 0}}')
_ADDRESS = re.compile(r"^\S+:\d{1,5}$")


def read_tf_config(text):
    """The :class:`ClusterTask` of a ``TF_CONFIG`` string (empty or None: one machine).

    Raises:
        ValueError: the text is not a JSON object; ``"cluster"`` is missing, empty or not an
            object of ``job: ["host:port", ...]`` lists; a job other than ``chief`` and
            ``worker``; a port outside 1 to 65535; one host:port listed twice (also when
            spelled differently: ``localhost:5001`` and ``127.0.0.1:5001``, or host names
            that differ only in case); more than one chief; ``"task"`` missing, or its ``type`` not a job
            of the cluster, or its ``index`` not an integer within that job's list. The
            message starts with ``TF_CONFIG`` and names the offending value.
    """
    if text is None or not str(text).strip():
        return SINGLE_MACHINE
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err}); expected e.g. {_EXAMPLE}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object, got {type(spec).__name__} {text!r}; "
                         f"expected e.g. {_EXAMPLE}")
    cluster = spec.get("cluster")
    if not cluster:
        raise ValueError(f"TF_CONFIG has no \"cluster\" (the address of every machine): without "
                         f"it TensorFlow would train on this machine alone; expected e.g. {_EXAMPLE}")
    if not isinstance(cluster, dict):
        raise ValueError(f"TF_CONFIG \"cluster\" must be an object of job: [\"host:port\", ...], "
                         f"got {cluster!r}")
    for job, addresses in cluster.items():
        if job not in TRAINING_JOBS:
            raise ValueError(f"TF_CONFIG job {job!r} is not supported: MultiWorkerMirroredStrategy "
                             f"trains with the jobs {' and '.join(TRAINING_JOBS)}")
        if not isinstance(addresses, list) or not addresses:
            raise ValueError(f"TF_CONFIG job {job!r} must be a non-empty list of \"host:port\", "
                             f"got {addresses!r}")
        for address in addresses:
            if not isinstance(address, str) or not _ADDRESS.match(address):
                raise ValueError(f"TF_CONFIG job {job!r}: {address!r} is not a \"host:port\" address")
            if not 1 <= int(address.rpartition(":")[2]) <= 65535:
                raise ValueError(f"TF_CONFIG job {job!r}: the port of {address!r} is not between 1 and 65535")
    spellings = {}
    for address in (address for addresses in cluster.values() for address in addresses):
        spellings.setdefault(_endpoint(address), []).append(address)
    repeated = sorted(sorted(set(written)) for written in spellings.values() if len(written) > 1)
    if repeated:
        named = [written[0] + (f" (also as {', '.join(written[1:])})" if len(written) > 1 else "")
                 for written in repeated]
        note = ("; localhost, 127.x.x.x and [::1] all name this machine and host names ignore case"
                if any(len(written) > 1 for written in repeated) else "")
        raise ValueError(f"TF_CONFIG lists {', '.join(named)} more than once{note}: every machine "
                         f"(task) needs its own host:port")
    if len(cluster.get("chief", [])) > 1:
        raise ValueError(f"TF_CONFIG has {len(cluster['chief'])} chiefs; a cluster has at most one")
    task = spec.get("task")
    if not isinstance(task, dict):
        raise ValueError(f"TF_CONFIG has no \"task\" object (which machine this is), got {task!r}; "
                         f"expected e.g. {_EXAMPLE}")
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type is None:
        raise ValueError(f"TF_CONFIG \"task\" has no \"type\" (one of the cluster's jobs: "
                         f"{', '.join(sorted(cluster))}), got {task!r}")
    if task_type not in cluster:
        raise ValueError(f"TF_CONFIG task type {task_type!r} is not a job of the cluster "
                         f"({', '.join(sorted(cluster))})")
    if isinstance(index, bool) or not isinstance(index, int):
        raise ValueError(f"TF_CONFIG task index must be an integer, got {index!r}")
    if not 0 <= index < len(cluster[task_type]):
        raise ValueError(f"TF_CONFIG task index {index} is outside job {task_type!r}, which has "
                         f"{len(cluster[task_type])} address(es) (indices 0 to {len(cluster[task_type]) - 1})")
    chief = task_type == "chief" or (task_type == "worker" and index == 0 and "chief" not in cluster)
    workers = sum(len(cluster[job]) for job in TRAINING_JOBS if job in cluster)
    peers = tuple(address for job in TRAINING_JOBS for i, address in enumerate(cluster.get(job, []))
                  if (job, i) != (task_type, index))
    return ClusterTask(task_type, index, chief, workers, peers)


def _endpoint(address):
    """``(host, port)`` of a ``"host:port"`` address, spelled one way so that one machine
    listed twice is found: host names in lower case (they ignore case), IP addresses in
    their standard form, and every loopback spelling (``localhost``, ``127.x.x.x``,
    ``[::1]``) as ``"localhost"`` (a task's TensorFlow server listens on its port at every
    address of its machine). No DNS lookup: two different names of one machine stay apart."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]").lower().rstrip(".")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host, int(port)
    return ("localhost" if ip.is_loopback else str(ip)), int(port)


def describe(task):
    """One line for the log: which machine of how many this process is."""
    if task.task_type is None:
        return "one machine"
    role = "the chief, writes checkpoints" if task.is_chief else "not the chief, writes nothing"
    return f"{task.task_type} {task.index} of {task.workers} machines ({role})"


def listening(address, timeout=1.0):
    """Whether something accepts TCP connections at ``"host:port"`` (a started worker does)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def multi_worker_strategy(task, start_timeout=DEFAULT_START_TIMEOUT):
    """``tf.distribute.MultiWorkerMirroredStrategy`` over the cluster of ``TF_CONFIG`` (``task``
    from :func:`read_tf_config`). Creating it blocks until every machine has started, and
    TensorFlow waits without limit inside a call that holds Python's interpreter lock (no
    Python thread, Ctrl-C or SIGTERM gets through: measured, more than 10 minutes). So a
    small watchdog process (:func:`watch`) waits beside it: if the strategy does not exist
    after ``start_timeout`` seconds (None or <= 0: no watchdog), the watchdog prints
    ``error: --multi-worker: not all N machines of TF_CONFIG started within T s (not
    answering: host:port, ...)`` on this process's stderr and ends this process (SIGKILL:
    exit status 137 in a shell, -9 in Python's ``subprocess``).
    """
    import subprocess
    import sys

    if "TF_CONFIG" in os.environ and not os.environ["TF_CONFIG"].strip():
        del os.environ["TF_CONFIG"]  # TensorFlow would fail to parse an empty one
    import tensorflow as tf
    if not start_timeout or start_timeout <= 0 or task.workers < 2:
        return tf.distribute.MultiWorkerMirroredStrategy()
    watchdog = subprocess.Popen(
        [sys.executable, "-c", "import sys; from siamese_mask_rcnn.cluster import watch; watch(sys.argv[1:])",
         str(os.getpid()), repr(float(start_timeout)), str(task.workers), *task.peers],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=_watchdog_environment())
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    finally:
        try:
            watchdog.stdin.close()  # "started": the watchdog leaves quietly
        except OSError:
            pass
        watchdog.wait()


def _watchdog_environment():
    """This process's environment, with this package importable by the watchdog."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p))


def watch(argv):
    """The watchdog of :func:`multi_worker_strategy`: ``argv`` is ``[pid, timeout, workers,
    peer, ...]``. Returns when its stdin closes (the strategy exists, or its process ended)
    within ``timeout`` seconds; otherwise prints the error naming the peers that do not
    answer and kills ``pid``."""
    import select
    import signal
    import sys
    pid, timeout, workers, peers = int(argv[0]), float(argv[1]), int(argv[2]), argv[3:]
    started = time.monotonic()
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    if ready:
        return
    silent = [address for address in peers if not listening(address)]
    where = (f"not answering: {', '.join(silent)}" if silent else
             "every address answers: is each machine's TF_CONFIG task index its own?")
    print(f"error: --multi-worker: not all {workers} machines of TF_CONFIG started within "
          f"{time.monotonic() - started:.0f} s ({where}); start the same command on every "
          f"machine with its own TF_CONFIG task, or raise --worker-start-timeout",
          file=sys.stderr, flush=True)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


#: What every machine of a run must share before its first step, in the order compared.
START_PARTS = ("epoch", "weights", "configuration", "schedule or data")


def _hash24(value):
    import hashlib
    text = json.dumps(value, sort_keys=True, default=str)
    return int(hashlib.sha256(text.encode()).hexdigest()[:6], 16)


def start_signature(epoch, weights_sha256, config_dict, run_settings=None):
    """``[epoch, weights, configuration, schedule or data]`` as four whole numbers below
    2**24 (exact in float32, the dtype the collective gathers): the epoch training starts
    after, and 24-bit hashes of the weights (their SHA-256), of the configuration
    (``Config.to_dict`` without ``GPU_COUNT``/``BATCH_SIZE``, which the strategy sets) and
    of ``run_settings`` (a JSON-able dict: schedule, split, training data by id)."""
    settings = {k: v for k, v in config_dict.items() if k not in ("GPU_COUNT", "BATCH_SIZE")}
    return [int(epoch), int(weights_sha256[:6], 16), _hash24(settings), _hash24(run_settings or {})]


def start_mismatch(smallest, largest):
    """The :data:`START_PARTS` on which the machines disagree, given the element-wise
    minimum and maximum of their :func:`start_signature` over all machines."""
    return [name for name, low, high in zip(START_PARTS, smallest, largest) if int(low) != int(high)]


def _machine_number(task):
    """This machine's number in the start check's all-gather: -1 for the ``chief`` task,
    else its index in the ``worker`` job (0 on a single machine); exact in float32."""
    return -1 if task.task_type == "chief" else int(task.index)


def _machine_name(number):
    """``"chief"`` or ``"worker N"`` for a :func:`_machine_number`."""
    return "chief" if number < 0 else f"worker {number}"


def start_differences(rows):
    """Which machines start unlike the chief, and in what, from the gathered rows
    ``[machine number, *start_signature]`` (one row per replica; a machine's replicas hold
    one row). The chief is the ``chief`` task, else worker 0. Returns ``(chief name,
    [(machine name, [START_PARTS that differ]), ...])`` for the machines that differ,
    chief first then by worker index; ``(chief name, [])`` when all agree."""
    first = {}
    for row in rows:
        first.setdefault(int(row[0]), [int(v) for v in row[1:]])
    chief = -1 if -1 in first else min(first)
    # start_mismatch only tests its two rows for inequality, element by element
    differ = [(_machine_name(number), start_mismatch(first[chief], values))
              for number, values in sorted(first.items()) if number != chief]
    return _machine_name(chief), [(name, parts) for name, parts in differ if parts]


def check_same_start(strategy, signature, task):
    """Compare this machine's :func:`start_signature` with every other machine's (one
    all-gather, each row led by the :func:`_machine_number`) before the first step:
    machines that resumed from different checkpoints (e.g. ``--weights last`` on one
    machine only, or ``--logs`` folders that are not the same shared storage), or were
    given different flags, would otherwise train on silently: a collective sums gradients
    of replicas that hold different weights.

    Raises:
        ValueError: on every machine alike, naming what differs, this machine's values and
            which machines differ from the chief in what (:func:`start_differences`).
    """
    every = _gather_all(strategy, [_machine_number(task), *signature])  # [replicas of all machines, 5]
    differ = start_mismatch(every[:, 1:].min(axis=0), every[:, 1:].max(axis=0))
    if differ:
        chief, machines = start_differences(every)
        against = "; ".join(f"{name} in {' and '.join(parts)}" for name, parts in machines)
        raise ValueError(
            f"--multi-worker: the {task.workers} machines do not start from the same "
            f"{' and '.join(differ)} (this one, {describe(task).split(' (')[0]}: epoch {signature[0]}, "
            f"weights {signature[1]:06x}, configuration {signature[2]:06x}, schedule and data "
            f"{signature[3]:06x}). Unlike the chief ({chief}): {against}. Give every machine "
            f"the same command and --weights; with --weights last, --logs must be one folder "
            f"that all machines share. Nothing was trained")


def finish_together(strategy):
    """A last collective (an all-gather of one number) so that every machine of the run
    reaches the end before any of them exits: a chief that exits first takes TensorFlow's
    coordination service with it, and the others then wait for it and log UNAVAILABLE
    errors for several seconds (seen in 4 of 7 two-worker runs) before they exit."""
    _gather_all(strategy, [0.0])


def _gather_all(strategy, values):
    """``values`` (a list of numbers) of every replica of every machine, ``[replicas, n]``
    float32, through one all-gather run as a ``tf.function`` (eagerly, TensorFlow warns
    about the overhead of collectives)."""
    import tensorflow as tf
    row = tf.constant([values], tf.float32)
    def same_row():
        return tf.identity(row)

    def gather():
        return strategy.gather(strategy.run(same_row), axis=0)

    return tf.function(gather, autograph=False)().numpy()


class lost_worker_outside_steps:
    """Context manager for the collective work around the training steps (building the
    model, the start check, setting up a stage, the final meeting): when several machines
    train and one of them is lost there, TensorFlow raises an internal error; this turns it
    into ``mrcnn.training.WorkerLostError`` (``error: lost another worker ...``, exit
    status 3), saying where it happened and how to restart (``restart``: the advice; by
    default --weights last if the chief has written a checkpoint, else the same command)."""

    def __init__(self, several, where, restart=None):
        self.several, self.where = several, where
        self.restart = restart or ("with --weights last if the chief has written a checkpoint "
                                   "of this run, else with the same command as before")

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is None or not self.several:
            return False
        from .mrcnn.training import WorkerLostError, first_error_line, worker_loss_as_error
        if not issubclass(kind, worker_loss_as_error.LOST):
            return False
        first = first_error_line(error, kind)
        raise WorkerLostError(
            f"lost another worker {self.where} ({kind.__name__}: {first[:300]}). Every worker must "
            f"be restarted: {self.restart}") from error
