"""Run directories and checkpoint names (matterport's layout, no TensorFlow).

A training run of a model named ``NAME`` writes into ``<model_dir>/<name><YYYYmmddTHHMM>/``
the checkpoints ``mask_rcnn_<name>_<epoch:04d>.h5`` (``name`` is ``NAME`` lower-cased,
``"model"`` when ``NAME`` is None).
"""
import datetime
import os
import re

_CHECKPOINT_PATH = re.compile(
    r".*[/\\][\w-]+(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})[/\\]mask\_rcnn\_[\w-]+(\d{4})\.h5$")


def run_name(config):
    """The lower-case name runs and checkpoints of ``config`` are filed under."""
    return (config.NAME or "model").lower()


def find_last_checkpoint(model_dir, name):
    """Path of the last checkpoint of the newest run directory of ``name`` in ``model_dir``.

    Raises:
        FileNotFoundError: ``model_dir`` does not exist or holds no checkpoint of ``name``.
    """
    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"no model directory {model_dir}")
    runs = sorted(d for d in os.listdir(model_dir)
                  if d.startswith(name) and os.path.isdir(os.path.join(model_dir, d)))
    for run in reversed(runs):
        run_dir = os.path.join(model_dir, run)
        checkpoints = sorted(f for f in os.listdir(run_dir)
                             if f.startswith(f"mask_rcnn_{name}_") and f.endswith(".h5"))
        if checkpoints:
            return os.path.join(run_dir, checkpoints[-1])
    raise FileNotFoundError(f"no checkpoint of '{name}' under {model_dir}")


def run_location(model_dir, name, model_path=None, now=None):
    """``(log_dir, checkpoint_pattern, epoch)`` of a run.

    A fresh run gets a directory stamped with ``now`` (default: the current minute) and
    starts at epoch 0. When ``model_path`` is a checkpoint of this layout, the run resumes
    in that checkpoint's directory after its epoch. ``checkpoint_pattern`` has a ``{:04d}``
    placeholder for the epoch.
    """
    epoch = 0
    now = now or datetime.datetime.now()
    if model_path:
        match = _CHECKPOINT_PATH.match(str(model_path))
        if match:
            now = datetime.datetime(*map(int, match.groups()[:5]))
            epoch = int(match.group(6))
    log_dir = os.path.join(os.fspath(model_dir), f"{name}{now:%Y%m%dT%H%M}")
    pattern = os.path.join(log_dir, f"mask_rcnn_{name}_*epoch*.h5").replace("*epoch*", "{:04d}")
    return log_dir, pattern, epoch
