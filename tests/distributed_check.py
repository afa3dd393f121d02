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
3. Reference, without ``tf.distribute`` or ``training.py``: the per-image losses
   (``keras_model(batch, training=True)``, ``[4, 5]``) and, with a plain ``GradientTape``,
   the gradient ``g`` of ``mean_i sum_k w_k L_ik + weight_decay_loss(train_vars)``.
4. The clip norm is set to the median per-variable norm of ``g``, so that about half of
   the variables are clipped and half are not; the expected first SGD update (zero
   momentum) is ``-lr * g * min(1, clipnorm / |g|)`` per variable.
5. On both models, run ``training.make_step_functions(..)``'s train step once on the same
   batch (distributed with ``experimental_distribute_dataset``) and record the five losses,
   the total and every trainable variable before and after the step.
6. With ``--train``: reload the initial weights into the two-replica model and run
   ``MaskRCNN.train`` for one step (the real loop with its input pipeline); record its
   reported losses and the weights after the step.

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


def tiny_settings(images_per_gpu, gpu_count, weight_decay):
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


def make_mrcnn(images_per_gpu, gpu_count, weight_decay, strategy, model_dir):
    """A tiny training-mode ``MaskRCNN`` (4 classes: background + the three shapes)."""
    from siamese_mask_rcnn.mrcnn.config import Config
    from siamese_mask_rcnn.mrcnn.model import MaskRCNN
    config = Config(NUM_CLASSES=4, **tiny_settings(images_per_gpu, gpu_count, weight_decay))
    return MaskRCNN("training", config, model_dir, strategy=strategy)


def make_siamese(images_per_gpu, gpu_count, weight_decay, strategy, model_dir):
    """A tiny training-mode ``SiameseMaskRCNN`` (32² references, 32 matching channels)."""
    from siamese_mask_rcnn.config import siamese_config
    from siamese_mask_rcnn.siamese import SiameseMaskRCNN
    settings = tiny_settings(images_per_gpu, gpu_count, weight_decay)
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
def reference_gradient(model, batch, train_vars):
    """Per-image losses, weight decay, total and its gradient, without tf.distribute."""
    from siamese_mask_rcnn.mrcnn.losses import LOSS_NAMES, weight_decay_loss
    config = model.config
    weights = tf.constant([float(config.LOSS_WEIGHTS[n]) for n in LOSS_NAMES])
    tensors = [tf.constant(b) for b in batch]
    with tf.GradientTape() as tape:
        per_image = model.keras_model(tensors, training=True)
        reg = weight_decay_loss(train_vars, config.WEIGHT_DECAY)
        total = tf.reduce_mean(tf.reduce_sum(per_image * weights, axis=1)) + reg
    grads = tape.gradient(total, train_vars)
    grads = [np.zeros(v.shape, np.float32) if g is None else g.numpy() for g, v in zip(grads, train_vars)]
    return per_image.numpy(), float(reg.numpy()), float(total.numpy()), grads


def one_step(model, batch, learning_rate, momentum):
    """One train step of ``make_step_functions`` on ``batch``: ``(outputs [6], before, after)``."""
    from siamese_mask_rcnn.mrcnn.model import select_trainable_layers
    from siamese_mask_rcnn.mrcnn.training import make_step_functions
    strategy = model.strategy
    optimizer = model.compile(learning_rate, momentum)
    with strategy.scope():
        train_step, _, train_vars = make_step_functions(
            model, select_trainable_layers(model.keras_model, "all"), optimizer)
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


def variable_rows(variables, grads, clipnorm, learning_rate, runs):
    """Per-variable statistics: expected update from the reference gradient, and each run's."""
    rows = []
    for i, (v, g) in enumerate(zip(variables, grads)):
        g = g.astype(np.float64)
        norm = float(np.linalg.norm(g))
        expected = -learning_rate * g * min(1.0, clipnorm / norm) if norm > 0 else np.zeros_like(g)
        row = {"name": v.path, "size": int(g.size), "grad_norm": norm, "clipped": bool(norm > clipnorm),
               "expected_update_norm": float(np.linalg.norm(expected)),
               "max_abs_expected_update": float(np.abs(expected).max())}
        first = None
        for key, (before, after) in runs.items():
            update = after[i].astype(np.float64) - before[i]
            row[f"{key}_start_equals_one_device"] = bool(np.array_equal(before[i], runs["one_device"][0][i]))
            row[f"{key}_max_abs_weight"] = float(max(np.abs(before[i]).max(), np.abs(after[i]).max()))
            row[f"{key}_update_norm"] = float(np.linalg.norm(update))
            row[f"{key}_max_abs_diff_expected"] = float(np.abs(update - expected).max())
            if first is None:
                first = update
            else:
                row[f"{key}_max_abs_diff_one_device"] = float(np.abs(update - first).max())
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------ main
def run(kind, weight_decay, learning_rate, momentum, clip_quantile, train):
    from siamese_mask_rcnn.mrcnn.losses import LOSS_NAMES
    devices = configure_devices()
    make = make_mrcnn if kind == "mrcnn" else make_siamese
    dataset = make_dataset(kind)
    report = {"kind": kind, "devices": devices, "learning_rate": learning_rate,
              "loss_names": list(LOSS_NAMES) + ["loss"]}
    with tempfile.TemporaryDirectory() as tmp:
        one = make(GLOBAL_BATCH, 1, weight_decay, tf.distribute.get_strategy(), tmp)
        batch = first_training_batch(one, dataset)
        anchors = len(one.get_anchors(one.config.IMAGE_SHAPE))
        if anchors != ANCHORS:
            raise RuntimeError(f"the config yields {anchors} anchors, not {ANCHORS}: update ANCHORS")
        init = os.path.join(tmp, "init.h5")
        one.save_weights(init)
        two = make(GLOBAL_BATCH // 2, 2, weight_decay, tf.distribute.MirroredStrategy(devices[:2]), tmp)
        two.load_weights(init, by_name=True)
        log("built both models")

        variables = unique_train_variables(one)
        per_image, reg, ref_total, grads = reference_gradient(one, batch, variables)
        # A second pass draws other shuffles in the ROI sampling: same losses if nothing is dropped.
        repeat = one.keras_model([tf.constant(b) for b in batch], training=True).numpy()
        norms = [float(np.linalg.norm(g)) for g in grads]
        clipnorm = float(np.quantile([n for n in norms if n > 0], clip_quantile))
        one.config.GRADIENT_CLIP_NORM = two.config.GRADIENT_CLIP_NORM = clipnorm
        log("reference gradient")

        out1, before1, after1 = one_step(one, batch, learning_rate, momentum)
        log("one-device step")
        out2, before2, after2 = one_step(two, batch, learning_rate, momentum)
        log("two-replica step")
        runs = {"one_device": (before1, after1), "two_replicas": (before2, after2)}
        report.update({
            "replicas": [one.strategy.num_replicas_in_sync, two.strategy.num_replicas_in_sync],
            "per_replica_batch": [one.config.IMAGES_PER_GPU, two.config.IMAGES_PER_GPU],
            "global_batch": [one.config.BATCH_SIZE, two.config.BATCH_SIZE],
            "loss_weights": [float(one.config.LOSS_WEIGHTS[n]) for n in LOSS_NAMES],
            "clipnorm": clipnorm,
            "per_image_losses": per_image.tolist(),
            "per_image_losses_repeat": repeat.tolist(),
            "reference_reg": reg,
            "reference_total": ref_total,
            "one_device": out1.tolist(),
            "two_replicas": out2.tolist(),
        })
        if train:
            history, before3, after3 = train_one_step(two, init, dataset, learning_rate)
            runs["train_two_replicas"] = (before3, after3)
            report["train_history"] = history
            log("MaskRCNN.train on two replicas")
        report["variables"] = variable_rows(variables, grads, clipnorm, learning_rate, runs)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mrcnn", "siamese"), default="mrcnn")
    parser.add_argument("--weight-decay", type=float, default=2.0)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--clip-quantile", type=float, default=0.5,
                        help="clip norm = this quantile of the per-variable gradient norms")
    parser.add_argument("--train", action="store_true", help="also run MaskRCNN.train for one step")
    args = parser.parse_args(argv)
    report = run(args.model, args.weight_decay, args.learning_rate, args.momentum,
                 args.clip_quantile, args.train)
    print("REPORT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
