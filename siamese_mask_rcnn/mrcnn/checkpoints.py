"""Run folders, checkpoints and exact resume for the training loop (:mod:`.training`).

Each epoch's checkpoint is two things side by side in the run folder:

* ``mask_rcnn_<name>_<epoch:04d>.h5``: the weights in matterport's layout, loadable alone
  (``MaskRCNN.load_weights``); written last, atomically, so it marks a complete checkpoint;
* ``mask_rcnn_<name>_<epoch:04d>.state.{index,data-*}``: a ``tf.train.Checkpoint`` with
  what an exact resume needs besides the weights: the optimizer's state (momentum slots,
  iteration count, learning rate), the data position (index of the next training example:
  examples are drawn from ``(SEED, index)``, see :mod:`.pipeline`), the state of the
  model's random generators (the ROI subsampling) and the learning-rate schedule of the
  ``train`` call (layers, learning rate, momentum, final epoch, steps per epoch, batch).

A checkpoint is written only when the weights are finite and so are the epoch's losses
(training and, when validation runs, validation): a diverging run stops with
:class:`TrainingDiverged` naming the last good checkpoint, which ``find_last`` (``--weights
last``) then returns.

Resuming (``load_weights`` of a checkpoint, then ``train``) restores the random generators
and the data position; the optimizer's state is restored when the ``train`` call has the
same schedule as the one that wrote the checkpoint (the same stage). Otherwise the call
starts a new stage, and like an uninterrupted run, whose every ``train`` call creates a
new optimizer, it starts with fresh momentum.
"""
import json
import logging
import os

import numpy as np
import tensorflow as tf

from . import run_dirs
from .fileio import remove_partial_files

log = logging.getLogger(__name__)


class TrainingDiverged(FloatingPointError):
    """A loss or a weight became NaN or infinite; ``last_checkpoint`` is the last good one
    (None when the run wrote none)."""

    def __init__(self, message, last_checkpoint=None):
        super().__init__(message)
        self.last_checkpoint = last_checkpoint


def last_good_message(last_checkpoint):
    """The sentence of a divergence message that names the checkpoint to resume from."""
    if last_checkpoint:
        return (f"the last good checkpoint is {last_checkpoint} (no checkpoint was written from "
                "non-finite values; '--weights last' resumes from it: lower the learning rate)")
    return "no checkpoint was written by this run (lower the learning rate and start again)"


def non_finite_weights(keras_model, limit=5):
    """Names of (at most ``limit``) weights of ``keras_model`` holding NaN or infinity."""
    bad = []
    for variable in keras_model.weights:
        if not np.all(np.isfinite(np.asarray(variable.numpy()))):
            bad.append(variable.path if hasattr(variable, "path") else variable.name)
            if len(bad) >= limit:
                break
    return bad


def non_finite_losses(logs):
    """Names of the loss entries of an epoch's ``logs`` that are NaN or infinite."""
    return [k for k, v in logs.items() if "loss" in k and isinstance(v, float) and not np.isfinite(v)]


def seed_variables(keras_model):
    """The state variables of the random generators of ``keras_model``'s layers (not weights:
    they are not in the ``.h5`` files), in a stable order."""
    weights = {id(v) for v in keras_model.weights}
    return [v for v in keras_model.variables if id(v) not in weights and "seed_generator_state" in v.path]


def _config_json(config):
    return json.loads(json.dumps(config.to_dict(), sort_keys=True, default=str))


def prepare_run_dir(model):
    """Make ``model.log_dir`` the folder of this run before training writes anything.

    * a fresh run (``model.epoch == 0``) gets a new folder, created exclusively (a name
      taken by another run is never reused), and its ``config.json``;
    * a resumed run (a checkpoint was loaded) continues in the checkpoint's folder. Its
      ``config.json`` belongs to the run and is not rewritten: when the current config
      differs, the differing keys are logged and the current config is written beside it as
      ``config_resumed_<epoch>.json``;
    * a second ``train`` call of the same model continues in the folder it created.

    Partial files of an earlier interrupted write in the folder are removed.

    Raises:
        OSError: the folder cannot be created or written.
    """
    config = model.config
    config_path = os.path.join(model.log_dir, "config.json") if model.log_dir else None
    if model.log_dir and model.log_dir == getattr(model, "_owned_log_dir", None) and os.path.isdir(model.log_dir):
        write_config = True  # a later stage of the run this model started
    elif model.epoch == 0:
        try:
            os.makedirs(os.path.dirname(model.log_dir), exist_ok=True)
            os.mkdir(model.log_dir)  # exclusive: never a folder another run uses
        except FileExistsError:
            model.log_dir = run_dirs.create_run_dir(model.model_dir, run_dirs.run_name(config))
        model.checkpoint_path = os.path.join(model.log_dir, os.path.basename(model.checkpoint_path))
        config_path = os.path.join(model.log_dir, "config.json")
        write_config = True
    else:
        os.makedirs(model.log_dir, exist_ok=True)
        write_config = not os.path.isfile(config_path)
        if not write_config:
            _mention_config_change(config, config_path, model.epoch)
    model._owned_log_dir = model.log_dir
    for path in remove_partial_files(model.log_dir):
        log.warning("removed %s, left over from an interrupted write", path)
    if write_config:
        config.save(config_path)


def _mention_config_change(config, config_path, epoch):
    """Keep a resumed run's ``config.json``; when ``config`` differs, log the keys and write
    ``config`` beside it as ``config_resumed_<epoch>.json``."""
    try:
        with open(config_path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        saved = {}
    current = _config_json(config)
    if saved == current:
        return
    keys = sorted(k for k in set(current) | set(saved) if saved.get(k) != current.get(k))
    extra = os.path.join(os.path.dirname(config_path), f"config_resumed_{epoch:04d}.json")
    log.warning("resuming %s with a config that differs from its config.json in %s; config.json "
                "is kept, the current config is written to %s", os.path.dirname(config_path),
                ", ".join(keys), extra)
    config.save(extra)


class TrainingState:
    """The training state saved beside each ``.h5`` checkpoint (see the module docstring).

    ``schedule`` is a JSON-able dict describing the ``train`` call (its stage).
    """

    def __init__(self, model, optimizer, schedule):
        self.model = model
        self.optimizer = optimizer
        self.schedule = dict(schedule)
        self.seeds = seed_variables(model.keras_model)
        self.examples = tf.Variable(0, dtype=tf.int64, trainable=False, name="examples")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.schedule_text = tf.Variable(json.dumps(self.schedule, sort_keys=True), dtype=tf.string,
                                         trainable=False, name="schedule")

    def _progress_checkpoint(self):
        return tf.train.Checkpoint(examples=self.examples, epoch=self.epoch, schedule=self.schedule_text,
                                   seeds=list(self.seeds))

    def save(self, checkpoint_path, epoch, examples):
        """Write the state of ``epoch`` (``examples`` consumed) beside ``checkpoint_path``."""
        self.examples.assign(int(examples))
        self.epoch.assign(int(epoch))
        self.schedule_text.assign(json.dumps(self.schedule, sort_keys=True))
        ckpt = tf.train.Checkpoint(examples=self.examples, epoch=self.epoch, schedule=self.schedule_text,
                                   seeds=list(self.seeds), optimizer=self.optimizer)
        return ckpt.write(run_dirs.state_prefix(checkpoint_path))

    def restore(self, checkpoint_path):
        """Restore the state saved beside ``checkpoint_path``; returns the data position
        (examples consumed) or None when no state was saved (a checkpoint of another tool
        or an older version: the caller falls back to ``epoch × steps × batch``).

        The optimizer state is restored only when the saved schedule equals this call's.
        """
        prefix = run_dirs.state_prefix(checkpoint_path)
        if not tf.io.gfile.exists(prefix + ".index"):
            log.warning("%s has no training state (%s.*): optimizer momentum and random "
                        "generators restart, the resume is not exact", checkpoint_path, prefix)
            return None
        self._progress_checkpoint().read(prefix).expect_partial().assert_existing_objects_matched()
        saved = json.loads(self.schedule_text.numpy().decode())
        if saved == self.schedule:
            tf.train.Checkpoint(optimizer=self.optimizer).read(prefix).expect_partial()
            log.info("restored optimizer state (iteration %d) from %s", int(self.optimizer.iterations.numpy()),
                     prefix)
        else:
            log.info("new stage %s (the checkpoint's was %s): the optimizer starts afresh", self.schedule, saved)
        self.schedule_text.assign(json.dumps(self.schedule, sort_keys=True))
        return int(self.examples.numpy())
