"""The training loop behind ``MaskRCNN.train``.

One step: the model computes the five per-image losses; each is summed over the replica's
images and divided by the **global** batch, weighted by ``LOSS_WEIGHTS``; weight decay is
added once per step (divided by the number of replicas, because replica gradients are
summed). Gradients flow only into the selected layers. Runs unchanged on one device,
``MirroredStrategy`` and ``MultiWorkerMirroredStrategy``.

Gradient clipping must see the gradient of the *global* batch: Keras optimizers clip inside
``apply_gradients`` *before* they sum the replicas' gradients, which under ``tf.distribute``
would clip each replica's partial gradient (up to ``replicas × clipnorm`` after the sum, and
a different update than on one device). The step therefore sums the gradients itself
(``ReplicaContext.all_reduce``), clips the sum with the optimizer's settings, and hands the
optimizer ``1/replicas`` of it, which the optimizer's own sum turns back into the clipped
global gradient (its own clipping is then a no-op: every norm is already within bounds).
"""
import json
import logging
import os
import re
import time

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from . import checkpoints
from . import weights as mweights
from .losses import LOSS_NAMES, weight_decay_loss
from .pipeline import SkipCounter, build_dataset

log = logging.getLogger(__name__)

LAYER_PRESETS = {
    # Which layers train; "heads" also covers the FPN, as in matterport.
    "heads": r"(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "3+": r"(res3.*)|(bn3.*)|(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "4+": r"(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "5+": r"(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "all": ".*",
}


def select_trainable_layers(keras_model, layers):
    """The weighted layers whose names fully match a preset of :data:`LAYER_PRESETS` or a regex
    (matterport semantics; layers inside nested models are found too).

    Raises:
        ValueError: ``layers`` is not a valid regex, or it matches no weighted layer.
    """
    pattern = LAYER_PRESETS.get(layers, layers)
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise ValueError(f"layers={layers!r} is neither a preset {sorted(LAYER_PRESETS)} nor a valid regex: {err}")
    chosen = []
    for name, layer in mweights.iter_weighted_layers(keras_model):
        if regex.fullmatch(name):
            chosen.append(layer)
    if not chosen:
        raise ValueError(f"layers={layers!r} matches no weighted layer of the model")
    return chosen


def make_optimizer(config, strategy, learning_rate, momentum):
    """SGD with ``momentum`` and gradient clipping by ``config.GRADIENT_CLIP_NORM``, created in
    ``strategy``'s scope."""
    with strategy.scope():
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum,
                                    clipnorm=config.GRADIENT_CLIP_NORM)


def make_training_dataset(model, dataset, augmentation, seed, start, counter, global_batch,
                          no_augmentation_sources=None):
    """The infinite batched ``tf.data`` pipeline of ``model``'s training inputs from ``dataset``.

    Examples come from ``model.load_training_example`` over ``model.training_image_ids(dataset)``
    (the hooks a subclass such as the Siamese model overrides); images of the sources in
    ``no_augmentation_sources`` are not augmented. Returns ``(dataset, counter)``.
    """
    specs = model.input_specs("training")
    plain_sources = set(no_augmentation_sources or ())

    def load(image_id, rng):
        source = dataset.image_info[image_id].get("source") if plain_sources else None
        return model.load_training_example(dataset, image_id, rng,
                                           None if source in plain_sources else augmentation)

    return build_dataset(load, model.training_image_ids(dataset), specs, global_batch, seed=seed,
                         start=start, workers=getattr(model.config, "DATA_WORKERS", 2), counter=counter)


def clip_gradients(grads, optimizer):
    """Apply ``optimizer``'s clipping (``clipnorm`` per tensor, ``global_clipnorm`` or
    ``clipvalue``, as Keras does) to ``grads``, which must be the global-batch gradients."""
    clipnorm = getattr(optimizer, "clipnorm", None)
    global_clipnorm = getattr(optimizer, "global_clipnorm", None)
    clipvalue = getattr(optimizer, "clipvalue", None)
    if clipnorm and clipnorm > 0:
        return [tf.clip_by_norm(g, clipnorm) for g in grads]
    if global_clipnorm and global_clipnorm > 0:
        return tf.clip_by_global_norm(grads, global_clipnorm)[0]
    if clipvalue and clipvalue > 0:
        return [tf.clip_by_value(g, -clipvalue, clipvalue) for g in grads]
    return list(grads)


def make_step_functions(model, trainable_layers, optimizer):
    """Build the distributed train and validation step ``tf.function``s.

    Returns ``(train_step, val_step, train_vars)``; both steps take one element of a
    distributed dataset and return the five losses and the total (``[6]``), reduced over
    replicas. The optimizer is built here, in the strategy's scope (creating its slots
    lazily inside a ``MirroredStrategy`` replica function fails).
    """
    config = model.config
    strategy = model.strategy
    keras_model = model.keras_model
    global_batch = config.BATCH_SIZE
    weights = tf.constant([float(config.LOSS_WEIGHTS.get(n, 1.0)) for n in LOSS_NAMES])
    train_vars = []
    for layer in trainable_layers:
        train_vars.extend(layer.trainable_weights)
    seen, unique = set(), []
    for v in train_vars:  # a shared layer (the Siamese encoder) must appear once
        if id(v) not in seen:
            seen.add(id(v))
            unique.append(v)
    train_vars = unique
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        if not optimizer.built:
            optimizer.build(train_vars)

    def losses_of(inputs, training):
        per_image = keras_model(list(inputs), training=training)  # [b, 5]
        return tf.reduce_sum(per_image, axis=0) / global_batch  # this replica's share

    def train_fn(inputs):
        with tf.GradientTape() as tape:
            losses = losses_of(inputs, True)
            reg = 0.0
            if config.WEIGHT_DECAY:
                reg = weight_decay_loss(train_vars, config.WEIGHT_DECAY) / replicas
            total = tf.reduce_sum(losses * weights) + reg
        grads = tape.gradient(total, train_vars)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, train_vars)]
        # Sum over replicas first, then clip: see the module docstring.
        grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
        grads = clip_gradients(grads, optimizer)
        optimizer.apply_gradients(zip([g / replicas for g in grads], train_vars))
        return tf.concat([losses, tf.reshape(total, [1])], axis=0)

    def val_fn(inputs):
        losses = losses_of(inputs, False)
        return tf.concat([losses, tf.reshape(tf.reduce_sum(losses * weights), [1])], axis=0)

    @tf.function(autograph=False)
    def train_step(inputs):
        out = strategy.run(train_fn, args=(inputs,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)

    @tf.function(autograph=False)
    def val_step(inputs):
        out = strategy.run(val_fn, args=(inputs,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)

    return train_step, val_step, train_vars


def _call_callbacks(callbacks, method, *args):
    for cb in callbacks or []:
        fn = getattr(cb, method, None)
        if fn is not None:
            fn(*args)


def run_training(model, train_dataset, val_dataset, learning_rate, epochs, layers,
                 augmentation=None, custom_callbacks=None, no_augmentation_sources=None, steps_per_epoch=None,
                 validation_steps=None, verbose=1, max_seconds=None):
    """Train ``model`` from ``model.epoch`` to ``epochs`` (see ``MaskRCNN.train``).

    ``max_seconds``: stop after the first epoch that ends past this wall-clock budget.
    """
    config = model.config
    steps = int(steps_per_epoch or config.STEPS_PER_EPOCH)
    val_steps = int(validation_steps if validation_steps is not None else config.VALIDATION_STEPS)
    if model.epoch >= epochs:
        log.info("already at epoch %d >= %d: nothing to train", model.epoch, epochs)
        return []
    seed = int(config.SEED) if getattr(config, "SEED", None) is not None else 0
    strategy = model.strategy
    global_batch = config.BATCH_SIZE
    if global_batch % strategy.num_replicas_in_sync:
        raise ValueError(f"batch {global_batch} is not divisible by {strategy.num_replicas_in_sync} replicas")

    trainable_layers = select_trainable_layers(model.keras_model, layers)
    optimizer = model.optimizer = make_optimizer(config, strategy, learning_rate, config.LEARNING_MOMENTUM)
    with strategy.scope():
        train_step, val_step, train_vars = make_step_functions(model, trainable_layers, optimizer)

    # the run folder first (exclusive for a fresh run), then the state of a resumed run
    checkpoints.prepare_run_dir(model)
    schedule = {"layers": str(layers), "learning_rate": float(learning_rate), "epochs": int(epochs),
                "momentum": float(config.LEARNING_MOMENTUM), "steps_per_epoch": steps,
                "batch": int(global_batch), "seed": seed}
    state = checkpoints.TrainingState(model, optimizer, schedule)
    last_good = getattr(model, "resumed_from", None)
    if getattr(model, "pending_resume", None):
        log.info("resuming run %s from %s (epoch %d)", model.log_dir, model.pending_resume, model.epoch)
        position = state.restore(model.pending_resume)
        model.pending_resume = None
        if position is not None:
            model.data_position = position
    if model.epoch and os.path.isfile(model.checkpoint_path.format(model.epoch)):
        last_good = model.checkpoint_path.format(model.epoch)
    start = getattr(model, "data_position", None)
    if start is None:
        start = model.epoch * steps * global_batch

    counter = SkipCounter()
    train_ds, _ = make_training_dataset(model, train_dataset, augmentation, seed, start, counter, global_batch,
                                        no_augmentation_sources)
    train_iter = iter(strategy.experimental_distribute_dataset(train_ds))
    val_iter = None
    if val_dataset is not None and val_steps > 0:
        val_ds, _ = make_training_dataset(model, val_dataset, None, seed + 1, 0, SkipCounter(), global_batch)
        val_iter = iter(strategy.experimental_distribute_dataset(val_ds))

    writer = tf.summary.create_file_writer(model.log_dir)
    log.info("training %d variables of layers=%r from epoch %d to %d, lr=%g, in %s",
             len(train_vars), layers, model.epoch + 1, epochs, learning_rate, model.log_dir)
    _call_callbacks(custom_callbacks, "set_model", model.keras_model)
    _call_callbacks(custom_callbacks, "on_train_begin", {})
    history = []
    names = list(LOSS_NAMES) + ["loss"]
    started = time.time()
    first_epoch = model.epoch
    for epoch in range(model.epoch, epochs):
        _call_callbacks(custom_callbacks, "on_epoch_begin", epoch, {})
        sums = np.zeros(len(names))
        t0 = time.time()
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{epochs}", disable=not verbose, leave=True)
        for step in bar:
            values = train_step(next(train_iter)).numpy()
            if not np.all(np.isfinite(values)):
                writer.flush()
                raise checkpoints.TrainingDiverged(
                    f"non-finite loss at epoch {epoch + 1} step {step + 1}: {dict(zip(names, values))}; "
                    + checkpoints.last_good_message(last_good), last_good)
            sums += values
            bar.set_postfix(loss=f"{sums[-1] / (step + 1):.4f}")
            global_step = epoch * steps + step + 1
            with writer.as_default(step=global_step):
                for n, v in zip(names, values):
                    tf.summary.scalar(f"train/{n}", v)
        logs = {n: float(v / steps) for n, v in zip(names, sums)}
        if val_iter is not None:
            vsums = np.zeros(len(names))
            for _ in range(val_steps):
                vsums += val_step(next(val_iter)).numpy()
            logs.update({f"val_{n}": float(v / val_steps) for n, v in zip(names, vsums)})
        logs["seconds"] = time.time() - t0
        logs.update(counter.summary())
        with writer.as_default(step=(epoch + 1) * steps):
            for n, v in logs.items():
                tf.summary.scalar(f"epoch/{n}", v)
        writer.flush()
        # a checkpoint only of finite weights and losses (validation's too, when it runs)
        bad = checkpoints.non_finite_losses(logs) + checkpoints.non_finite_weights(model.keras_model)
        if bad:
            message = (f"non-finite values after epoch {epoch + 1} ({', '.join(bad)}): no checkpoint "
                       "written; " + checkpoints.last_good_message(last_good))
            _append_history(model.log_dir, epoch + 1, {**logs, "diverged": message})
            raise checkpoints.TrainingDiverged(message, last_good)
        model.epoch = epoch + 1
        model.data_position = start + (epoch + 1 - first_epoch) * steps * global_batch
        path = model.checkpoint_path.format(model.epoch)
        # the state first: the .h5, written last and atomically, marks a complete checkpoint
        state.save(path, model.epoch, model.data_position)
        mweights.save_weights_by_name(model.keras_model, path)
        last_good = path
        logs["checkpoint"] = path
        history.append(logs)
        _append_history(model.log_dir, epoch + 1, logs)
        if verbose:
            shown = ", ".join(f"{k}={v:.4f}" for k, v in logs.items() if isinstance(v, float) and "loss" in k)
            print(f"epoch {epoch + 1}: {shown} ({logs['seconds']:.1f}s) -> {path}")
        _call_callbacks(custom_callbacks, "on_epoch_end", epoch, logs)
        if max_seconds is not None and time.time() - started > max_seconds and model.epoch < epochs:
            log.info("time budget of %.0f s used: stopping after epoch %d", max_seconds, model.epoch)
            if verbose:
                print(f"time budget of {max_seconds:.0f} s used: stopping after epoch {model.epoch}")
            break
    _call_callbacks(custom_callbacks, "on_train_end", {})
    return history


def _append_history(log_dir, epoch, logs):
    """Append one JSON line per epoch to ``history.jsonl`` (survives crashes)."""
    with open(os.path.join(log_dir, "history.jsonl"), "a") as f:
        f.write(json.dumps({"epoch": epoch, **{k: v for k, v in logs.items()
                                               if isinstance(v, (int, float, str))}}) + "\n")
