"""Run directories and checkpoint names (matterport's layout, no TensorFlow).

A training run of a model named ``NAME`` writes into
``<model_dir>/<name><YYYYmmddTHHMMSS>-<suffix>/`` the checkpoints
``mask_rcnn_<name>_<epoch:04d>.h5`` (``name`` is ``NAME`` lower-cased, ``"model"`` when
``NAME`` is None). The folder name keeps matterport's ``<name><YYYYmmddTHHMM>`` prefix, so
sorting names still sorts runs by start time; the seconds and the short random suffix make
two runs started together get two folders, and the folder is created exclusively
(:func:`create_run_dir`), so no two processes ever share one. Folders of matterport's
minute-stamped layout (``<name><YYYYmmddTHHMM>``) are still recognised when resuming.

Beside each ``.h5`` checkpoint, the training state needed for an exact resume is kept as a
TensorFlow checkpoint with the prefix :func:`state_prefix` (see :mod:`.training`).
"""
import datetime
import os
import re
import secrets

_CHECKPOINT_PATH = re.compile(
    r".*[/\\][\w-]+?(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})?(?:-[0-9a-z]+)?[/\\]"
    r"mask\_rcnn\_[\w-]+(\d{4})\.h5$")

#: Attempts at a fresh run folder name before giving up (names carry a random suffix).
_CREATE_ATTEMPTS = 100


def run_name(config):
    """The lower-case name runs and checkpoints of ``config`` are filed under."""
    return (config.NAME or "model").lower()


def checkpoint_epoch(path):
    """The epoch of a checkpoint path of this layout, or None for any other path."""
    match = _CHECKPOINT_PATH.match(os.fspath(path))
    return int(match.group(7)) if match else None


def state_prefix(checkpoint_path):
    """Prefix of the TensorFlow training-state checkpoint kept beside the ``.h5`` checkpoint
    ``checkpoint_path`` (``mask_rcnn_x_0003.h5`` → ``mask_rcnn_x_0003.state``, written as
    ``.state.index`` and ``.state.data-*`` files)."""
    path = os.fspath(checkpoint_path)
    return (path[:-3] if path.endswith(".h5") else path) + ".state"


def run_checkpoints(run_dir, name):
    """Paths of the ``.h5`` checkpoints of ``name`` in ``run_dir``, by epoch (hidden partial
    files of an interrupted write are not checkpoints)."""
    try:
        files = os.listdir(run_dir)
    except OSError:
        return []
    pattern = re.compile(rf"mask\_rcnn\_{re.escape(name)}\_(\d{{4}})\.h5$")
    return [os.path.join(run_dir, f) for f in sorted(files) if pattern.match(f)]


def find_last_checkpoint(model_dir, name):
    """Path of the last checkpoint of the newest run directory of ``name`` in ``model_dir``
    that holds a checkpoint (a run killed before its first checkpoint is passed over).

    Raises:
        FileNotFoundError: ``model_dir`` does not exist or holds no checkpoint of ``name``.
    """
    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"no model directory {model_dir}")
    runs = sorted(d for d in os.listdir(model_dir)
                  if d.startswith(name) and os.path.isdir(os.path.join(model_dir, d)))
    for run in reversed(runs):
        checkpoints = run_checkpoints(os.path.join(model_dir, run), name)
        if checkpoints:
            return checkpoints[-1]
    raise FileNotFoundError(f"no checkpoint of '{name}' under {model_dir}")


def new_run_dir_name(name, now=None):
    """``<name><YYYYmmddTHHMMSS>-<4 random hex digits>`` (``now``: default the current time)."""
    now = now or datetime.datetime.now()
    return f"{name}{now:%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


def create_run_dir(model_dir, name, now=None):
    """Create a fresh run folder for ``name`` in ``model_dir`` and return its path.

    The folder is created with ``os.mkdir`` (exclusive: it fails if the name exists), so two
    runs never get the same folder, even when started in the same second by two processes.

    Raises:
        OSError: ``model_dir`` cannot be created or written.

    Raises:
        FileExistsError: no free run folder name was found after many attempts.
    """
    model_dir = os.fspath(model_dir)
    os.makedirs(model_dir, exist_ok=True)
    for _ in range(_CREATE_ATTEMPTS):
        path = os.path.join(model_dir, new_run_dir_name(name, now))
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free run folder name for '{name}' in {model_dir}")


def run_location(model_dir, name, model_path=None, now=None):
    """``(log_dir, checkpoint_pattern, epoch)`` of a run.

    A fresh run gets a new folder name (:func:`new_run_dir_name`; the folder itself is
    created exclusively when training starts) and starts at epoch 0. When ``model_path`` is
    a checkpoint of this layout, the run resumes in that checkpoint's folder after its
    epoch. ``checkpoint_pattern`` has a ``{:04d}`` placeholder for the epoch.
    """
    epoch = 0
    log_dir = None
    if model_path:
        epoch = checkpoint_epoch(model_path) or 0
        if epoch:
            log_dir = os.path.join(os.fspath(model_dir),
                                   os.path.basename(os.path.dirname(os.path.abspath(os.fspath(model_path)))))
    if log_dir is None:
        log_dir = os.path.join(os.fspath(model_dir), new_run_dir_name(name, now))
    pattern = os.path.join(log_dir, f"mask_rcnn_{name}_*epoch*.h5").replace("*epoch*", "{:04d}")
    return log_dir, pattern, epoch
