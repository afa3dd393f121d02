"""The training loop behind ``MaskRCNN.train``.

One step: the model computes each image's loss parts; ``losses.reduce_losses`` turns them
into this replica's share of the five losses (``LOSS_NORMALIZATION="release"``: pooled over
the replica's images, divided by the number of replicas; ``"per_image"``: per-image means
divided by the global batch), weighted by ``LOSS_WEIGHTS``; weight decay is added once per
step (divided by the number of replicas, because replica gradients are summed). Gradients
flow only into the selected layers. Runs unchanged on one device, ``MirroredStrategy`` and
``MultiWorkerMirroredStrategy``.

Gradient clipping must see the gradient of the *global* batch: Keras optimizers clip inside
``apply_gradients`` *before* they sum the replicas' gradients, which under ``tf.distribute``
would clip each replica's partial gradient (up to ``replicas × clipnorm`` after the sum, and
a different update than on one device). The step therefore sums the gradients itself
(``ReplicaContext.all_reduce``), clips the sum with the optimizer's settings (``compile``
sets ``global_clipnorm``: ``tf.clip_by_global_norm`` of all gradients together), and hands
the optimizer ``1/replicas`` of it, which the optimizer's own sum turns back into the clipped
global gradient (its own clipping is then a no-op: every norm is already within bounds).

Several machines (``MultiWorkerMirroredStrategy``): each worker's input pipeline loads only
its replicas' share of every global batch (``distribute_dataset``); only the chief writes
checkpoints, ``config.json``, ``history.jsonl`` and TensorBoard files (``is_chief``); a
worker that dies stops the others with a ``WorkerLostError``. Mixed precision
(``MIXED_PRECISION="mixed_float16"``): the loss is scaled by the ``LossScaleOptimizer``'s
dynamic scale and the summed gradients are unscaled before clipping.
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
from .losses import reduce_losses, weight_decay_loss
from .pipeline import PipelineIterator, SkipCounter, build_dataset

log = logging.getLogger(__name__)

LAYER_PRESETS = {
    # Which layers train; "heads" also covers the FPN, as in matterport, and the Siamese
    # model's presence head (presence_*) and reference classifier (reference_class_*;
    # matterport has no such layers).
    "heads": r"(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)|(presence\_.*)|(reference\_class\_.*)",
    "3+": r"(res3.*)|(bn3.*)|(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)|(presence\_.*)|(reference\_class\_.*)",
    "4+": r"(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)|(presence\_.*)|(reference\_class\_.*)",
    "5+": r"(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)|(presence\_.*)|(reference\_class\_.*)",
    "all": ".*",
}


def _layer_regex(layers):
    """The compiled regex of a :data:`LAYER_PRESETS` name or of a regex string.

    Raises:
        ValueError: ``layers`` is not a valid regex.
    """
    pattern = LAYER_PRESETS.get(layers, layers)
    try:
        return re.compile(pattern)
    except (re.error, TypeError) as err:
        raise ValueError(f"layers={layers!r} is neither a preset {sorted(LAYER_PRESETS)} nor a valid regex: {err}")


def select_trainable_layers(keras_model, layers):
    """The weighted layers whose names fully match a preset of :data:`LAYER_PRESETS` or a regex
    (matterport semantics; layers inside nested models are found too).

    Raises:
        ValueError: ``layers`` is not a valid regex, or it matches no weighted layer.
    """
    regex = _layer_regex(layers)
    chosen = []
    for name, layer in mweights.iter_weighted_layers(keras_model):
        if regex.fullmatch(name):
            chosen.append(layer)
    if not chosen:
        raise ValueError(f"layers={layers!r} matches no weighted layer of the model")
    return chosen


def set_trainable(keras_model, layer_regex, indent=0, verbose=1):
    """Set ``layer.trainable`` of every weighted layer of ``keras_model`` (nested models
    included): True for exactly the layers :func:`select_trainable_layers` picks for
    ``layer_regex`` (a preset name or a regex fully matching layer names), False for the
    others. Sub-model containers keep their own flag (Keras 3 would pass it to all their
    layers). With ``verbose > 0`` prints each nested model (``In model: <name>``) and each
    trainable layer with its class, indented by ``indent`` spaces plus 4 per nesting level.
    Returns the trainable layers.

    ``train(layers=...)`` makes its own selection and sets the flags of the layers it trains
    to True, so flags set here do not stop a later ``train`` from training a layer.

    Raises:
        ValueError: ``layer_regex`` is not a valid regex or matches no weighted layer (no
            flag is changed then).
    """
    chosen = {id(layer) for layer in select_trainable_layers(keras_model, layer_regex)}
    shown = set()
    for parents, layer in mweights._walk_weighted_layers(keras_model):
        layer.trainable = id(layer) in chosen
        if verbose > 0:
            for depth in range(len(parents)):
                if parents[:depth + 1] not in shown:
                    shown.add(parents[:depth + 1])
                    print(" " * (indent + 4 * depth) + f"In model: {parents[depth]}")
            if layer.trainable:
                print(" " * (indent + 4 * len(parents)) + f"{layer.name:20}   ({type(layer).__name__})")
    return [layer for _, layer in mweights.iter_weighted_layers(keras_model) if id(layer) in chosen]


def make_optimizer(config, strategy, learning_rate, momentum):
    """SGD with ``momentum``, created in ``strategy``'s scope, whose gradients' *global* norm is
    clipped to ``config.GRADIENT_CLIP_NORM`` (``tf.clip_by_global_norm``: Keras 2's optimizer
    ``clipnorm`` as matterport and the release used it; Keras 3 calls it ``global_clipnorm``,
    its ``clipnorm`` clips each tensor); with ``MIXED_PRECISION="mixed_float16"`` wrapped in a
    dynamic ``keras.optimizers.LossScaleOptimizer`` (float16 gradients underflow otherwise)."""
    clip = config.GRADIENT_CLIP_NORM
    with strategy.scope():
        optimizer = keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum,
                                         global_clipnorm=clip if clip else None)
        if getattr(config, "MIXED_PRECISION", None) == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer


def make_training_dataset(model, dataset, augmentation, seed, start, counter, global_batch,
                          no_augmentation_sources=None, input_context=None):
    """The infinite batched ``tf.data`` pipeline of ``model``'s training inputs from ``dataset``.

    Examples come from ``model.load_training_example`` over ``model.training_image_ids(dataset)``
    (the hooks a subclass such as the Siamese model overrides); images of the sources in
    ``no_augmentation_sources`` are not augmented. ``input_context`` (a
    ``tf.distribute.InputContext``) makes it this worker's share of every global batch, in
    per-replica batches (see ``pipeline.build_dataset``). Returns ``(dataset, counter)``.
    """
    specs = model.input_specs("training")
    plain_sources = set(no_augmentation_sources or ())

    def load(image_id, rng):
        source = dataset.image_info[image_id].get("source") if plain_sources else None
        return model.load_training_example(dataset, image_id, rng,
                                           None if source in plain_sources else augmentation)

    return build_dataset(load, model.training_image_ids(dataset), specs, global_batch, seed=seed,
                         start=start, workers=getattr(model.config, "DATA_WORKERS", 2), counter=counter,
                         describe=lambda image_id: dataset.image_info[image_id].get("path"),
                         **pipeline_arguments(input_context, global_batch))


def pipeline_arguments(input_context, global_batch):
    """``build_dataset`` keywords of a ``tf.distribute.InputContext`` (none without one)."""
    if input_context is None:
        return {}
    return {"pipeline": input_context.input_pipeline_id,
            "num_pipelines": input_context.num_input_pipelines,
            "replica_batch": input_context.get_per_replica_batch_size(global_batch)}


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


class _ClipSettings:
    """A copy of an optimizer's clipping settings (``clipnorm``, ``global_clipnorm``,
    ``clipvalue``), for :func:`clip_gradients`."""

    def __init__(self, optimizer):
        self.clipnorm = getattr(optimizer, "clipnorm", None)
        self.global_clipnorm = getattr(optimizer, "global_clipnorm", None)
        self.clipvalue = getattr(optimizer, "clipvalue", None)


def make_step_functions(model, trainable_layers, optimizer):
    """Build the distributed train and validation step ``tf.function``s.

    Returns ``(train_step, val_step, train_vars)``; both steps take one element of a
    distributed dataset and return the losses of ``model.loss_names()`` and the total
    (``[n + 1]``), reduced over replicas. Gradients are clipped per group of
    ``model.clip_groups`` (one group, all variables, unless the model says otherwise). The
    optimizer is built here, in the strategy's scope (creating its slots lazily inside a
    ``MirroredStrategy`` replica function fails).
    """
    config = model.config
    strategy = model.strategy
    keras_model = model.keras_model
    global_batch = config.BATCH_SIZE
    weights = tf.constant([float(config.LOSS_WEIGHTS.get(n, 1.0)) for n in model.loss_names()])
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
    # mixed_float16: a LossScaleOptimizer; the tape differentiates the scaled loss, the sum
    # over replicas is unscaled before clipping, and the optimizer gets it scaled again so
    # that it can skip the step and lower the scale when a gradient is not finite.
    loss_scaled = hasattr(optimizer, "scale_loss") and hasattr(optimizer, "inner_optimizer")
    clip_settings = optimizer.inner_optimizer if loss_scaled else optimizer
    clip_groups = model.clip_groups(train_vars)
    if len(clip_groups) > 1:
        # Each group is clipped here by its own norm; the optimizer would clip all of them
        # again by their joint norm (its "no-op" holds for one group only), so its own
        # clipping is switched off and its settings kept for clip_gradients.
        clip_settings = _ClipSettings(clip_settings)
        optimizer_clip = optimizer.inner_optimizer if loss_scaled else optimizer
        optimizer_clip.clipnorm = optimizer_clip.global_clipnorm = optimizer_clip.clipvalue = None

    normalization = config.LOSS_NORMALIZATION

    def losses_of(inputs, training):
        parts = keras_model(list(inputs), training=training)  # [b, 5, 2]
        return reduce_losses(parts, normalization, global_batch, replicas)  # this replica's share

    def train_fn(inputs):
        with tf.GradientTape() as tape:
            losses = losses_of(inputs, True)
            reg = 0.0
            if config.WEIGHT_DECAY:
                reg = weight_decay_loss(train_vars, config.WEIGHT_DECAY) / replicas
            total = tf.reduce_sum(losses * weights) + reg
        grads = tape.gradient(optimizer.scale_loss(total) if loss_scaled else total, train_vars)
        grads = [tf.zeros_like(v) if g is None else tf.cast(g, v.dtype) for g, v in zip(grads, train_vars)]
        # Sum over replicas first, then clip: see the module docstring.
        grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
        if loss_scaled:
            scale = tf.convert_to_tensor(optimizer.dynamic_scale)
            grads = [g / scale for g in grads]
        clipped = list(grads)
        for group in clip_groups:  # each group by its own norm (one group: matterport's clipping)
            for i, g in zip(group, clip_gradients([grads[i] for i in group], clip_settings)):
                clipped[i] = g
        grads = clipped
        if loss_scaled:
            grads = [g * scale for g in grads]
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


def is_chief(strategy):
    """True unless ``strategy`` spans several machines and this is not the chief task
    (``MultiWorkerMirroredStrategy``: the ``chief`` task, or worker 0 without one)."""
    return bool(getattr(strategy.extended, "should_checkpoint", True))


def num_workers(strategy):
    """Machines (worker tasks) the strategy spans: 1 unless ``MultiWorkerMirroredStrategy``."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, len(spec.get("worker", [])) + len(spec.get("chief", [])))


def distribute_dataset(model, dataset, augmentation, seed, start, counter, no_augmentation_sources=None):
    """The training pipeline distributed over the strategy's replicas.

    Every worker builds its own input pipeline (``distribute_datasets_from_function``) that
    loads only its replicas' part of each global batch (``pipeline.build_dataset``); the
    example order is fixed by ``seed`` and the example index, so the global batch of step
    ``s`` holds the same images on one device, on several GPUs and on several machines."""
    strategy = model.strategy
    global_batch = model.config.BATCH_SIZE

    def make(input_context):
        ds, _ = make_training_dataset(model, dataset, augmentation, seed, start, counter, global_batch,
                                      no_augmentation_sources, input_context=input_context)
        return ds

    return strategy.distribute_datasets_from_function(make)


class WorkerLostError(RuntimeError):
    """A multi-machine training step failed because another worker stopped or became
    unreachable; every surviving worker raises it (see ``worker_loss_as_error``)."""


def first_error_line(error, kind):
    """The first line of a TensorFlow error's message (its class name when it has none)."""
    return ((str(getattr(error, "message", "")) or str(error) or kind.__name__).strip()
            .splitlines() or [kind.__name__])[0]


class worker_loss_as_error:
    """Context manager: under ``MultiWorkerMirroredStrategy`` with several workers, turn the
    errors TensorFlow's collectives raise when a peer dies (unavailable, aborted, cancelled,
    deadline exceeded, internal) into a ``WorkerLostError`` naming the epoch, the step and
    the chief's last checkpoint, so the run stops with a clear message."""

    LOST = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
            tf.errors.DeadlineExceededError, tf.errors.InternalError, tf.errors.UnknownError)

    def __init__(self, model, epoch, step):
        self.model, self.epoch, self.step = model, epoch, step

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is None or not issubclass(kind, self.LOST) or num_workers(self.model.strategy) < 2:
            return False
        if self.epoch == 0:
            # Nothing of this run to resume; --weights last would pick an older run of the
            # same --logs (or find nothing), so say so.
            restart = ("no checkpoint of this run was written yet: restart all of them with the "
                       "same command as before (not --weights last, which would resume an older "
                       "run of --logs, or find none)")
        else:
            where = (self.model.checkpoint_path.format(self.epoch) if is_chief(self.model.strategy)
                     else f"epoch {self.epoch}")
            restart = (f"restart all of them with --weights last to resume from the chief's last "
                       f"checkpoint ({where})")
        first_line = first_error_line(error, kind)
        raise WorkerLostError(
            f"lost another worker during epoch {self.epoch + 1}, step {self.step + 1} "
            f"({kind.__name__}: {first_line[:300]}). Every worker must be restarted; {restart}"
        ) from error


def _json_rate(learning_rate):
    """A number, or a Keras ``LearningRateSchedule``'s serialised config (JSON-able)."""
    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        return keras.optimizers.schedules.serialize(learning_rate)
    return float(learning_rate)


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

    Raises:
        ValueError: the global batch is not divisible by the number of replicas.
        checkpoints.TrainingDiverged: a loss or a weight became NaN/inf (the message names the last good checkpoint).
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
    for layer in trainable_layers:  # a layer frozen earlier by set_trainable trains when selected
        layer.trainable = True
    optimizer = model.optimizer = make_optimizer(config, strategy, learning_rate, config.LEARNING_MOMENTUM)
    with strategy.scope():
        train_step, val_step, train_vars = make_step_functions(model, trainable_layers, optimizer)

    # the run folder first (exclusive for a fresh run), then the state of a resumed run.
    # Several machines: only the chief writes (run folder, config.json, checkpoints, history,
    # TensorBoard); every worker restores a resumed run's state (the same optimizer slots).
    chief = is_chief(strategy)
    if chief:
        checkpoints.prepare_run_dir(model)
    schedule = {"layers": str(layers), "learning_rate": _json_rate(learning_rate), "epochs": int(epochs),
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
    # PipelineIterator: a loader error that is not about one example surfaces as
    # DataPipelineError within seconds, and the workers never outlive the interpreter
    train_iter = PipelineIterator(iter(distribute_dataset(model, train_dataset, augmentation, seed, start,
                                                          counter, no_augmentation_sources)), counter)
    val_iter = None
    if val_dataset is not None and val_steps > 0:
        val_counter = SkipCounter()
        val_iter = PipelineIterator(iter(distribute_dataset(model, val_dataset, None, seed + 1, 0, val_counter)),
                                    val_counter)

    if chief:
        writer = tf.summary.create_file_writer(model.log_dir)
    else:
        writer = tf.summary.create_noop_writer()
    log.info("training %d variables of layers=%r from epoch %d to %d, lr=%s, %s",
             len(train_vars), layers, model.epoch + 1, epochs, learning_rate,
             f"in {model.log_dir}" if chief else "writing nothing (not the chief)")
    _call_callbacks(custom_callbacks, "set_model", model.keras_model)
    _call_callbacks(custom_callbacks, "on_train_begin", {})
    history = []
    names = list(model.loss_names()) + ["loss"]
    started = time.time()
    first_epoch = model.epoch
    for epoch in range(model.epoch, epochs):
        _call_callbacks(custom_callbacks, "on_epoch_begin", epoch, {})
        sums = np.zeros(len(names))
        t0 = time.time()
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{epochs}", disable=not verbose, leave=True)
        for step in bar:
            with worker_loss_as_error(model, epoch, step):
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
            _call_callbacks(custom_callbacks, "on_train_batch_end", step, {"loss": float(values[-1])})
        logs = {n: float(v / steps) for n, v in zip(names, sums)}
        if val_iter is not None:
            vsums = np.zeros(len(names))
            for _ in range(val_steps):
                with worker_loss_as_error(model, epoch, steps - 1):
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
            if chief:
                _append_history(model.log_dir, epoch + 1, {**logs, "diverged": message})
            raise checkpoints.TrainingDiverged(message, last_good)
        model.epoch = epoch + 1
        model.data_position = start + (epoch + 1 - first_epoch) * steps * global_batch
        path = model.checkpoint_path.format(model.epoch)
        if chief:
            # the state first: the .h5, written last and atomically, marks a complete checkpoint
            state.save(path, model.epoch, model.data_position)
            mweights.save_weights_by_name(model.keras_model, path)
            _append_history(model.log_dir, epoch + 1, {**logs, "checkpoint": path})
        last_good = path
        if not chief:
            path = None
        logs["checkpoint"] = path
        history.append(logs)
        if verbose:
            shown = ", ".join(f"{k}={v:.4f}" for k, v in logs.items() if isinstance(v, float) and "loss" in k)
            print(f"epoch {epoch + 1}: {shown} ({logs['seconds']:.1f}s) -> {path or 'not saved (not the chief)'}")
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
