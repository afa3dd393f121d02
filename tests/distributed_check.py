"""One training step on one device vs. two mirrored CPU replicas; prints a JSON report.

Run by ``tests/test_distributed.py`` in a subprocess, because the two logical CPU devices
must be configured before TensorFlow initialises::

    python tests/distributed_check.py --model mrcnn [--train]

The last stdout line is ``REPORT {json}``. Steps:

1. Build a tiny training model on the default (single-device) strategy with a global batch
   of 4 images per device, take the first batch of its training pipeline
   (``training.make_training_dataset``, exactly what ``MaskRCNN.train`` would draw first) and save the
   initial weights with ``model.save_weights``.
2. Build the same model under ``MirroredStrategy(["/cpu:0", "/cpu:1"])`` with 2 images per
   replica (same global batch of 4) and ``load_weights`` the saved file into it.
3. Reference, without ``tf.distribute``, ``training.py`` or ``losses.reduce_losses``: the
   per-image loss parts (``keras_model(batch, training=True)``, ``[4, 5, 2]``: sum and count
   of each loss) and, with a plain ``GradientTape``, the gradient ``g`` of the objective
   written out by hand from the definition of ``--normalization``:
   ``per_image``: ``mean_i sum_k w_k sum_ik / count_ik + weight_decay_loss(train_vars)``, the
   same for both runs; ``release``: ``mean_g sum_k w_k (Σ_{i in g} sum_ik) / (Σ_{i in g}
   count_ik) + weight_decay``, with the groups ``g`` = the replicas' image sets ({0,1,2,3} on
   one device, {0,1} and {2,3} on two replicas), so each run has its own reference.
4. The clip norm is set to ``--clip-fraction`` of the global norm of the one-device ``g``,
   so that the global norm of every run's gradient is clipped; the expected first SGD update
   (zero momentum) is ``-lr * g * min(1, clipnorm / |g|_global)``.
5. On both models, run ``training.make_step_functions(..)``'s train step once on the same
   batch (distributed with ``experimental_distribute_dataset``) and record the five losses,
   the total and every trainable variable before and after the step.
6. With ``--train``: reload the initial weights into the two-replica model and run
   ``MaskRCNN.train`` for one step (the real loop with its input pipeline); record its
   reported losses and the weights after the step.
7. ``release`` only: from the initial weights again, one step of both models on a batch whose
   two halves are the same two images (``[a, b, a, b]``): pooling over the global batch and
   averaging the replicas' pools then agree, so both runs must apply the same update.

Determinism: ROI sampling (``DetectionTargetLayer``) shuffles proposals with
``tf.random.shuffle``, whose stream differs between a batch of 4 on one device and two
batches of 2 on two replicas. The config keeps *every* proposal: with ``N`` proposals per
image, ``ROI_POSITIVE_RATIO = 1/N`` and ``TRAIN_ROIS_PER_IMAGE = N*N``, the positive cap
``int(N*N/N) = N`` and the negative budget ``floor(P*N) - P >= N - P`` (for P >= 1
positives; an image without positives gets no ROI at all) are never reached, so the
shuffle only permutes the ROIs; every loss is a mean
over ROIs and every gradient a sum over them, hence permutation-invariant up to float
rounding. The objects are large, so the untrained RPN's whole-image proposal is positive
(always for the shapes, for most of the procedural scenes) and all five losses are
exercised; the per-image losses are reported, twice (two passes draw different shuffles),
so the test can check both.
"""
import argparse
import json
import os
import sys
import tempfile
import time

START = time.time()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # same CPU kernels whatever the batch size

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

GLOBAL_BATCH = 4
ANCHORS = 23  # with the settings below; every anchor becomes a proposal and then a ROI
POSITIVE_CAP = ANCHORS  # ROI sampling keeps up to this many positives (and all negatives)
LOSS_WEIGHTS = {"rpn_class_loss": 2.0, "rpn_bbox_loss": 0.5, "mrcnn_class_loss": 1.5,
                "mrcnn_bbox_loss": 0.7, "mrcnn_mask_loss": 1.2}


def log(message):
    """Progress on stderr (the report goes to stdout)."""
    print(f"[{time.time() - START:6.1f}s] {message}", file=sys.stderr, flush=True)


def configure_devices():
    """Split the physical CPU into two logical devices (must run before TF initialises)."""
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    import keras
    keras.utils.set_random_seed(0)  # the same initial weights on every run
    tf.config.experimental.enable_op_determinism()
    # Grappler's graph rewrites take longer than this tiny step itself.
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def tiny_settings(images_per_gpu, gpu_count, weight_decay, normalization="per_image"):
    """Config overrides shared by both models: tiny backbone and heads, 64² images, a few
    anchors that all become proposals, and ROI sampling that keeps every proposal."""
    from siamese_mask_rcnn.mrcnn.backbone import tiny_backbone
    return dict(
        NAME="distcheck", BACKBONE=tiny_backbone, IMAGES_PER_GPU=images_per_gpu, GPU_COUNT=gpu_count,
        IMAGE_RESIZE_MODE="square", IMAGE_MIN_DIM=64, IMAGE_MAX_DIM=64,
        TOP_DOWN_PYRAMID_SIZE=32, FPN_CLASSIF_FC_LAYERS_SIZE=64, RPN_CONV_CHANNELS=32,
        MASK_CONV_CHANNELS=32,
        # One square anchor every 4 feature cells: 16 + 4 + 1 + 1 + 1 = 23 anchors; the P6
        # anchor, clipped to the image, is the whole image (IoU >= 0.5 with a big object).
        RPN_ANCHOR_SCALES=(16, 32, 48, 64, 128), RPN_ANCHOR_RATIOS=[1], RPN_ANCHOR_STRIDE=4,
        RPN_TRAIN_ANCHORS_PER_IMAGE=16, PRE_NMS_LIMIT=ANCHORS, RPN_NMS_THRESHOLD=0.9,
        POST_NMS_ROIS_TRAINING=ANCHORS, POST_NMS_ROIS_INFERENCE=ANCHORS,
        TRAIN_ROIS_PER_IMAGE=POSITIVE_CAP * ANCHORS, ROI_POSITIVE_RATIO=1.0 / ANCHORS,
        MAX_GT_INSTANCES=3, DETECTION_MAX_INSTANCES=3, MINI_MASK_SHAPE=(14, 14),
        POOL_SIZE=3, MASK_POOL_SIZE=3, MASK_SHAPE=[6, 6],
        WEIGHT_DECAY=weight_decay, GRADIENT_CLIP_NORM=1e6, LOSS_WEIGHTS=dict(LOSS_WEIGHTS),
        SEED=0, DATA_WORKERS=1, STEPS_PER_EPOCH=1, VALIDATION_STEPS=0,
        LOSS_NORMALIZATION=normalization,
    )


# ------------------------------------------------------------------------------ models, data
def big_shapes_dataset(count, seed, size=64):
    """A ``ShapesDataset`` with one big shape per image (box 48-56 px of 64): its IoU with
    the whole-image proposal is >= 0.56, so every image has a positive ROI."""
    from siamese_mask_rcnn.mrcnn.shapes import SHAPES, ShapesDataset
    dataset = ShapesDataset(count, size, size, seed=seed)
    rng = np.random.default_rng(seed)
    for info in dataset.image_info:
        half = int(rng.integers(24, 29))
        cy, cx = (int(rng.integers(half + 1, size - half)) for _ in range(2))
        colour = tuple(int(v) for v in rng.integers(60, 256, 3))
        info["shapes"] = [(SHAPES[int(rng.integers(len(SHAPES)))], colour, (cy, cx, half))]
    return dataset


def make_mrcnn(images_per_gpu, gpu_count, weight_decay, strategy, model_dir, normalization):
    """A tiny training-mode ``MaskRCNN`` (4 classes: background + the three shapes)."""
    from siamese_mask_rcnn.mrcnn.config import Config
    from siamese_mask_rcnn.mrcnn.model import MaskRCNN
    config = Config(NUM_CLASSES=4, **tiny_settings(images_per_gpu, gpu_count, weight_decay, normalization))
    return MaskRCNN("training", config, model_dir, strategy=strategy)


def make_siamese(images_per_gpu, gpu_count, weight_decay, strategy, model_dir, normalization):
    """A tiny training-mode ``SiameseMaskRCNN`` (32² references, 32 matching channels)."""
    from siamese_mask_rcnn.config import siamese_config
    from siamese_mask_rcnn.siamese import SiameseMaskRCNN
    settings = tiny_settings(images_per_gpu, gpu_count, weight_decay, normalization)
    settings.update(NUM_CLASSES=2, TARGET_MIN_DIM=24, TARGET_MAX_DIM=32, MATCHING_CHANNELS=32,
                    FPN_RELU=False)
    return SiameseMaskRCNN("training", siamese_config("small", **settings), model_dir, strategy=strategy)


def make_dataset(kind, count=12, seed=3):
    """Training data: big shapes (Mask R-CNN) or procedural one-shot scenes (Siamese)."""
    if kind == "mrcnn":
        return big_shapes_dataset(count, seed)
    from siamese_mask_rcnn.datasets.synthetic import SyntheticOneShotDataset
    return SyntheticOneShotDataset(num_categories=12, num_images=count, image_size=64, seed=seed,
                                   scene_options={"radius_range": (0.42, 0.47), "distractor_range": (0, 0),
                                                  "present_range": (1, 1), "instances_range": (1, 1)})


def first_training_batch(model, dataset):
    """The first global batch ``MaskRCNN.train`` draws (same seed, start 0), as numpy arrays."""
    from siamese_mask_rcnn.mrcnn.pipeline import SkipCounter
    from siamese_mask_rcnn.mrcnn.training import make_training_dataset
    ds, _ = make_training_dataset(model, dataset, None, int(model.config.SEED), 0, SkipCounter(),
                                  model.config.BATCH_SIZE)
    return [t.numpy() for t in next(iter(ds))]


def unique_train_variables(model, layers="all"):
    """The trainable variables of ``layers``, in the order ``make_step_functions`` uses."""
    from siamese_mask_rcnn.mrcnn.model import select_trainable_layers
    seen, out = set(), []
    for layer in select_trainable_layers(model.keras_model, layers):
        for v in layer.trainable_weights:
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
    return out


# ------------------------------------------------------------------------------ steps
def objective(parts, weights, normalization, groups):
    """The loss objective written out from its definition (``[B, 5, 2]`` parts -> scalar and
    the five losses): see the module docstring, step 3."""
    def ratio(num, den):
        return tf.math.divide_no_nan(num, den)

    if normalization == "per_image":
        losses = tf.reduce_mean(ratio(parts[..., 0], parts[..., 1]), axis=0)
    else:
        losses = tf.add_n([ratio(tf.reduce_sum(tf.gather(parts[..., 0], g), axis=0),
                                 tf.reduce_sum(tf.gather(parts[..., 1], g), axis=0))
                           for g in groups]) / len(groups)
    return tf.reduce_sum(losses * weights), losses


def reference_gradient(model, batch, train_vars, groups):
    """Per-image loss parts, weight decay, losses, total and its gradient, without tf.distribute."""
    from siamese_mask_rcnn.mrcnn.losses import LOSS_NAMES, weight_decay_loss
    config = model.config
    weights = tf.constant([float(config.LOSS_WEIGHTS[n]) for n in LOSS_NAMES])
    tensors = [tf.constant(b) for b in batch]
    with tf.GradientTape() as tape:
        parts = model.keras_model(tensors, training=True)
        reg = weight_decay_loss(train_vars, config.WEIGHT_DECAY)
        weighted, losses = objective(parts, weights, config.LOSS_NORMALIZATION, groups)
        total = weighted + reg
    grads = tape.gradient(total, train_vars)
    grads = [np.zeros(v.shape, np.float32) if g is None else g.numpy() for g, v in zip(grads, train_vars)]
    return parts.numpy(), losses.numpy(), float(reg.numpy()), float(total.numpy()), grads


def one_step(model, batch, learning_rate, momentum):
    """One train step of ``make_step_functions`` on ``batch``: ``(outputs [6], before, after)``.

    The step function is built (and traced) once per model; a later call zeroes the
    optimizer's slots and step counter first, so every call applies a first SGD update
    (zero momentum), as a freshly compiled optimizer would."""
    from siamese_mask_rcnn.mrcnn.model import select_trainable_layers
    from siamese_mask_rcnn.mrcnn.training import make_step_functions
    strategy = model.strategy
    if not hasattr(model, "_check_step"):
        optimizer = model.compile(learning_rate, momentum)
        with strategy.scope():
            model._check_step = (optimizer,) + tuple(make_step_functions(
                model, select_trainable_layers(model.keras_model, "all"), optimizer))
    else:
        optimizer = model._check_step[0]
        slots = [v for v in optimizer.variables if "learning_rate" not in v.path]
        for v in slots:
            v.assign(tf.zeros(v.shape, v.dtype))
        log(f"reset {len(slots)} optimizer variables")
    _, train_step, _, train_vars = model._check_step
    inputs = next(iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(tuple(batch)))))
    before = [v.numpy().copy() for v in train_vars]
    out = train_step(inputs).numpy()
    after = [v.numpy().copy() for v in train_vars]
    return out, before, after


def train_one_step(model, init, dataset, learning_rate):
    """``MaskRCNN.train`` for one step from the weights in ``init``: ``(history, after)``."""
    model.load_weights(init, by_name=True)
    before = [v.numpy().copy() for v in unique_train_variables(model)]
    logs = model.train(dataset, None, learning_rate, epochs=1, layers="all",
                       steps_per_epoch=1, validation_steps=0, verbose=0)
    after = [v.numpy().copy() for v in unique_train_variables(model)]
    return {k: v for k, v in logs[0].items() if isinstance(v, float)}, before, after


def global_norm(grads):
    return float(np.sqrt(sum(float(np.sum(np.square(g.astype(np.float64)))) for g in grads)))


def expected_updates(grads, clipnorm, learning_rate):
    """``-lr * g * min(1, c / |g|_global)`` per variable (first SGD step, zero momentum)."""
    norm = global_norm(grads)
    scale = min(1.0, clipnorm / norm) if norm > 0 else 1.0
    return [-learning_rate * g.astype(np.float64) * scale for g in grads]


def variable_rows(variables, expected, runs):
    """Per-variable statistics of every run: its update vs its expected update and vs the
    one-device update of the same batch. ``expected[run]`` is the list of expected updates."""
    rows = []
    for i, v in enumerate(variables):
        row = {"name": v.path, "size": int(v.shape.num_elements())}
        updates = {key: after[i].astype(np.float64) - before[i] for key, (before, after) in runs.items()}
        for key, (before, after) in runs.items():
            exp = expected[key][i]
            update = updates[key]
            row[f"{key}_max_abs_expected_update"] = float(np.abs(exp).max())
            row[f"{key}_start_equals_one_device"] = bool(np.array_equal(before[i], runs["one_device"][0][i]))
            row[f"{key}_max_abs_weight"] = float(max(np.abs(before[i]).max(), np.abs(after[i]).max()))
            row[f"{key}_update_sq"] = float(np.sum(update ** 2))
            row[f"{key}_max_abs_diff_expected"] = float(np.abs(update - exp).max())
            # the one-device run of the same batch: "same_halves_*" runs have their own
            baseline = "same_halves_one_device" if key.startswith("same_halves_") else "one_device"
            if key != baseline:
                row[f"{key}_max_abs_diff_one_device"] = float(np.abs(update - updates[baseline]).max())
        row["max_abs_expected_update"] = row["one_device_max_abs_expected_update"]
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------ main
def run(kind, weight_decay, learning_rate, momentum, clip_fraction, train, normalization):
    from siamese_mask_rcnn.mrcnn.losses import LOSS_NAMES
    devices = configure_devices()
    make = make_mrcnn if kind == "mrcnn" else make_siamese
    dataset = make_dataset(kind)
    report = {"kind": kind, "devices": devices, "learning_rate": learning_rate, "normalization": normalization,
              "loss_names": list(LOSS_NAMES) + ["loss"]}
    one_groups, two_groups = [[0, 1, 2, 3]], [[0, 1], [2, 3]]
    with tempfile.TemporaryDirectory() as tmp:
        one = make(GLOBAL_BATCH, 1, weight_decay, tf.distribute.get_strategy(), tmp, normalization)
        batch = first_training_batch(one, dataset)
        anchors = len(one.get_anchors(one.config.IMAGE_SHAPE))
        if anchors != ANCHORS:
            raise RuntimeError(f"the config yields {anchors} anchors, not {ANCHORS}: update ANCHORS")
        init = os.path.join(tmp, "init.h5")
        one.save_weights(init)
        two = make(GLOBAL_BATCH // 2, 2, weight_decay, tf.distribute.MirroredStrategy(devices[:2]), tmp,
                   normalization)
        two.load_weights(init, by_name=True)
        log("built both models")

        variables = unique_train_variables(one)
        parts, losses1, reg, total1, grads1 = reference_gradient(one, batch, variables, one_groups)
        _, losses2, _, total2, grads2 = reference_gradient(one, batch, variables, two_groups)
        # A second pass draws other shuffles in the ROI sampling: same parts if nothing is dropped.
        repeat = one.keras_model([tf.constant(b) for b in batch], training=True).numpy()
        clipnorm = clip_fraction * global_norm(grads1)
        one.config.GRADIENT_CLIP_NORM = two.config.GRADIENT_CLIP_NORM = clipnorm
        log("reference gradients")

        out1, before1, after1 = one_step(one, batch, learning_rate, momentum)
        log("one-device step")
        out2, before2, after2 = one_step(two, batch, learning_rate, momentum)
        log("two-replica step")
        runs = {"one_device": (before1, after1), "two_replicas": (before2, after2)}
        expected = {"one_device": expected_updates(grads1, clipnorm, learning_rate),
                    "two_replicas": expected_updates(grads2, clipnorm, learning_rate)}
        report.update({
            "replicas": [one.strategy.num_replicas_in_sync, two.strategy.num_replicas_in_sync],
            "per_replica_batch": [one.config.IMAGES_PER_GPU, two.config.IMAGES_PER_GPU],
            "global_batch": [one.config.BATCH_SIZE, two.config.BATCH_SIZE],
            "loss_weights": [float(one.config.LOSS_WEIGHTS[n]) for n in LOSS_NAMES],
            "clipnorm": clipnorm,
            "grad_global_norm": [global_norm(grads1), global_norm(grads2)],
            "per_image_parts": parts.tolist(),
            "per_image_parts_repeat": repeat.tolist(),
            "reference_losses": [losses1.tolist(), losses2.tolist()],
            "reference_reg": reg,
            "reference_total": [total1, total2],
            "one_device": out1.tolist(),
            "two_replicas": out2.tolist(),
        })
        if train:
            history, before3, after3 = train_one_step(two, init, dataset, learning_rate)
            runs["train_two_replicas"] = (before3, after3)
            expected["train_two_replicas"] = expected["two_replicas"]
            report["train_history"] = history
            log("MaskRCNN.train on two replicas")
        if normalization == "release":
            same = [np.concatenate([b[:2], b[:2]]) for b in batch]
            one.load_weights(init, by_name=True)
            two.load_weights(init, by_name=True)
            _, same_losses, _, same_total, same_grads = reference_gradient(one, same, variables, one_groups)
            out3, before4, after4 = one_step(one, same, learning_rate, momentum)
            two.load_weights(init, by_name=True)
            out4, before5, after5 = one_step(two, same, learning_rate, momentum)
            runs["same_halves_one_device"] = (before4, after4)
            runs["same_halves_two_replicas"] = (before5, after5)
            expected["same_halves_one_device"] = expected["same_halves_two_replicas"] = expected_updates(
                same_grads, clipnorm, learning_rate)
            report.update({"same_halves_one_device": out3.tolist(), "same_halves_two_replicas": out4.tolist(),
                           "same_halves_reference_losses": same_losses.tolist(),
                           "same_halves_reference_total": same_total,
                           "same_halves_grad_global_norm": global_norm(same_grads)})
            log("same-halves steps")
        report["variables"] = variable_rows(variables, expected, runs)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mrcnn", "siamese"), default="mrcnn")
    parser.add_argument("--weight-decay", type=float, default=2.0)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--clip-fraction", type=float, default=0.3,
                        help="clip norm = this fraction of the global norm of the one-device gradient")
    parser.add_argument("--normalization", choices=("release", "per_image"), default="release",
                        help="LOSS_NORMALIZATION of both models")
    parser.add_argument("--train", action="store_true", help="also run MaskRCNN.train for one step")
    args = parser.parse_args(argv)
    report = run(args.model, args.weight_decay, args.learning_rate, args.momentum,
                 args.clip_fraction, args.train, args.normalization)
    print("REPORT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
