"""One training step on one device vs. two mirrored CPU replicas; prints a JSON report.

Run by ``tests/test_distributed.py`` in a subprocess, because the two logical CPU devices
must be configured before TensorFlow initialises::

    python tests/distributed_check.py --model mrcnn --clipnorm 1000

What it does (the test asserts on the report):

1. Build a tiny training model on the default (single-device) strategy, draw one global
   batch of 4 images with ``model.load_training_example`` and save the initial weights.
2. Build the same model under ``MirroredStrategy(["/cpu:0", "/cpu:1"])`` with half the
   images per replica (same global batch) and load the saved weights into it.
3. On both, run ``training.make_step_functions(..)``'s train step once on the *same* batch
   arrays (distributed with ``experimental_distribute_dataset``) and record the five losses,
   the total and every trainable variable before and after the SGD step.
4. Reference values computed without ``tf.distribute``: the per-image losses of the batch
   (``keras_model(batch, training=True)``) and the gradient of
   ``mean_i sum_k w_k L_ik + weight_decay_loss`` taken with a plain ``GradientTape``.
5. Optionally (``--train``) run ``MaskRCNN.train`` for one step + one validation step on
   both models from the same initial weights and report the per-epoch history.

Determinism: ROI sampling (``DetectionTargetLayer``) shuffles proposals with
``tf.random.shuffle``. The config keeps *every* proposal: with ``N`` proposals per image,
``ROI_POSITIVE_RATIO = 1/N`` and ``TRAIN_ROIS_PER_IMAGE = N*N``, the positive cap
``int(N*N/N) = N`` and the negative budget ``floor(P*N) - P >= N - P`` (P >= 1 positives)
are never reached, so the shuffle only permutes the ROIs; every loss is a mean over ROIs
and every gradient a sum over them, hence permutation-invariant (up to float rounding).
The objects are large, so every image has positive proposals and all five losses are
exercised (the report includes the per-image losses so the test can check that).
"""
import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # same kernels whatever the batch size

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

GLOBAL_BATCH = 4
PROPOSALS = 8  # every one of them becomes a training ROI (see the module docstring)
LOSS_WEIGHTS = {"rpn_class_loss": 2.0, "rpn_bbox_loss": 0.5, "mrcnn_class_loss": 1.5,
                "mrcnn_bbox_loss": 0.7, "mrcnn_mask_loss": 1.2}


def configure_devices():
    """Split the physical CPU into two logical devices (before TF initialises)."""
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    tf.random.set_seed(0)
    tf.config.experimental.enable_op_determinism()
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def tiny_settings(images_per_gpu, gpu_count, clipnorm, weight_decay):
    """Config overrides shared by both models: tiny backbone/heads, 64² images, keep-all ROIs."""
    from siamese_mask_rcnn.mrcnn.backbone import tiny_backbone
    return dict(
        NAME="distcheck", BACKBONE=tiny_backbone, IMAGES_PER_GPU=images_per_gpu, GPU_COUNT=gpu_count,
        IMAGE_RESIZE_MODE="square", IMAGE_MIN_DIM=64, IMAGE_MAX_DIM=64,
        RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128), TOP_DOWN_PYRAMID_SIZE=32, FPN_CLASSIF_FC_LAYERS_SIZE=64,
        RPN_TRAIN_ANCHORS_PER_IMAGE=32, PRE_NMS_LIMIT=200, POST_NMS_ROIS_TRAINING=PROPOSALS,
        POST_NMS_ROIS_INFERENCE=PROPOSALS, RPN_NMS_THRESHOLD=0.7,
        TRAIN_ROIS_PER_IMAGE=PROPOSALS * PROPOSALS, ROI_POSITIVE_RATIO=1.0 / PROPOSALS,
        MAX_GT_INSTANCES=4, DETECTION_MAX_INSTANCES=4, MINI_MASK_SHAPE=(14, 14),
        POOL_SIZE=5, MASK_POOL_SIZE=5, MASK_SHAPE=[10, 10],
        WEIGHT_DECAY=weight_decay, GRADIENT_CLIP_NORM=clipnorm, LOSS_WEIGHTS=dict(LOSS_WEIGHTS),
        SEED=0, DATA_WORKERS=1, STEPS_PER_EPOCH=1, VALIDATION_STEPS=1,
    )


# ------------------------------------------------------------------------------ models
def big_shapes_dataset(count, seed, size=64):
    """A ShapesDataset whose 1-2 shapes per image are large (boxes 24-40 px of 64), so the
    untrained RPN's proposals overlap them and every image has positive ROIs."""
    from siamese_mask_rcnn.mrcnn.shapes import ShapesDataset, SHAPES
    dataset = ShapesDataset(count, size, size, seed=seed)
    rng = np.random.default_rng(seed)
    for info in dataset.image_info:
        specs = []
        n = int(rng.integers(1, 3))
        for k in range(n):
            half = int(rng.integers(12, 17)) if n == 1 else int(rng.integers(10, 13))
            cy = int(rng.integers(half + 1, size - half - 1))
            cx = (size // 2 if n == 1 else (half + 1 if k == 0 else size - half - 1))
            colour = tuple(int(v) for v in rng.integers(60, 256, 3))
            specs.append((SHAPES[int(rng.integers(len(SHAPES)))], colour, (cy, cx, half)))
        info["shapes"] = specs
    return dataset


def make_mrcnn(images_per_gpu, gpu_count, clipnorm, weight_decay, strategy, model_dir):
    from siamese_mask_rcnn.mrcnn.config import Config
    from siamese_mask_rcnn.mrcnn.model import MaskRCNN
    config = Config(NUM_CLASSES=4, **tiny_settings(images_per_gpu, gpu_count, clipnorm, weight_decay))
    return MaskRCNN("training", config, model_dir, strategy=strategy)


def make_siamese(images_per_gpu, gpu_count, clipnorm, weight_decay, strategy, model_dir):
    from siamese_mask_rcnn.config import siamese_config
    from siamese_mask_rcnn.siamese import SiameseMaskRCNN
    settings = tiny_settings(images_per_gpu, gpu_count, clipnorm, weight_decay)
    settings.update(NUM_CLASSES=2, TARGET_MIN_DIM=24, TARGET_MAX_DIM=32, MATCHING_CHANNELS=32,
                    FPN_RELU=False)
    config = siamese_config("small", **settings)
    return SiameseMaskRCNN("training", config, model_dir, strategy=strategy)


def make_dataset(kind, count=12, seed=3):
    if kind == "mrcnn":
        return big_shapes_dataset(count, seed)
    from siamese_mask_rcnn.datasets.synthetic import SyntheticOneShotDataset
    return SyntheticOneShotDataset(num_categories=12, num_images=count, image_size=64, seed=seed,
                                   scene_options={"radius_range": (0.22, 0.3), "distractor_range": (0, 1),
                                                  "present_range": (1, 1), "instances_range": (1, 2)})


def build_batch(model, dataset, count, seed=0):
    """``count`` training examples stacked into one batch (numpy arrays, input order)."""
    from siamese_mask_rcnn.mrcnn.pipeline import SkipExample
    examples = []
    ids = list(model.training_image_ids(dataset))
    for k, image_id in enumerate(ids):
        try:
            examples.append(model.load_training_example(dataset, image_id, np.random.default_rng([seed, k])))
        except SkipExample:
            continue
        if len(examples) == count:
            break
    if len(examples) < count:
        raise RuntimeError(f"only {len(examples)} usable examples")
    return [np.stack(parts) for parts in zip(*examples)]


# ------------------------------------------------------------------------------ steps
def train_variables(model):
    from siamese_mask_rcnn.mrcnn.model import select_trainable_layers
    from siamese_mask_rcnn.mrcnn.training import make_step_functions
    layers = select_trainable_layers(model.keras_model, "all")
    return layers, make_step_functions


def one_step(model, batch, learning_rate, momentum):
    """Run the train step once on ``batch``; returns (outputs [6], names, before, after)."""
    from siamese_mask_rcnn.mrcnn.training import make_step_functions
    from siamese_mask_rcnn.mrcnn.model import select_trainable_layers
    strategy = model.strategy
    layers = select_trainable_layers(model.keras_model, "all")
    optimizer = model.compile(learning_rate, momentum)
    with strategy.scope():
        train_step, _, train_vars = make_step_functions(model, layers, optimizer)
    dataset = tf.data.Dataset.from_tensors(tuple(batch))
    inputs = next(iter(strategy.experimental_distribute_dataset(dataset)))
    before = [np.array(v.numpy()) for v in train_vars]
    out = train_step(inputs).numpy()
    after = [np.array(v.numpy()) for v in train_vars]
    return out, [v.path for v in train_vars], before, after


def reference_gradient(model, batch, train_vars):
    """Per-image losses and the gradient of the global-batch objective, no tf.distribute."""
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


def compare_updates(names, before1, after1, before2, after2, grads, learning_rate):
    """Per-variable statistics of the two updates and of the reference gradient."""
    rows = []
    for name, b1, a1, b2, a2, g in zip(names, before1, after1, before2, after2, grads):
        d1 = a1.astype(np.float64) - b1
        d2 = a2.astype(np.float64) - b2
        rows.append({
            "name": name,
            "same_start": bool(np.array_equal(b1, b2)),
            "max_abs_weight": float(max(np.abs(b1).max(), np.abs(a1).max())),
            "max_abs_update": float(np.abs(d1).max()),
            "max_abs_update_diff": float(np.abs(d2 - d1).max()),
            "update_norm_1": float(np.linalg.norm(d1)),
            "update_norm_2": float(np.linalg.norm(d2)),
            "grad_norm": float(np.linalg.norm(g)),
            # first SGD step from zero momentum: update = -lr * (clipped) gradient
            "max_abs_update_vs_grad": float(np.abs(d1 + learning_rate * g.astype(np.float64)).max()),
        })
    return rows


# ------------------------------------------------------------------------------ main
def run(kind, clipnorm, weight_decay, learning_rate, momentum, train):
    devices = configure_devices()
    make = make_mrcnn if kind == "mrcnn" else make_siamese
    dataset = make_dataset(kind)
    report = {"devices": devices, "kind": kind, "clipnorm": clipnorm, "learning_rate": learning_rate}
    with tempfile.TemporaryDirectory() as tmp:
        one = make(GLOBAL_BATCH, 1, clipnorm, weight_decay, tf.distribute.get_strategy(), tmp)
        batch = build_batch(one, dataset, GLOBAL_BATCH)
        init = os.path.join(tmp, "init.h5")
        one.save_weights(init)
        mirrored = tf.distribute.MirroredStrategy(devices[:2])
        two = make(GLOBAL_BATCH // 2, 2, clipnorm, weight_decay, mirrored, tmp)
        two.load_weights(init, by_name=True)
        report["replicas"] = [one.strategy.num_replicas_in_sync, two.strategy.num_replicas_in_sync]

        from siamese_mask_rcnn.mrcnn.losses import LOSS_NAMES
        from siamese_mask_rcnn.mrcnn.model import select_trainable_layers
        layers = select_trainable_layers(one.keras_model, "all")
        seen, ref_vars = set(), []
        for layer in layers:
            for v in layer.trainable_weights:
                if id(v) not in seen:
                    seen.add(id(v))
                    ref_vars.append(v)
        per_image, reg, ref_total, grads = reference_gradient(one, batch, ref_vars)

        out1, names1, before1, after1 = one_step(one, batch, learning_rate, momentum)
        out2, names2, before2, after2 = one_step(two, batch, learning_rate, momentum)
        if names1 != names2 or names1 != [v.path for v in ref_vars]:
            raise RuntimeError("the two models train different variables")
        report.update({
            "loss_names": list(LOSS_NAMES) + ["loss"],
            "loss_weights": [float(one.config.LOSS_WEIGHTS[n]) for n in LOSS_NAMES],
            "per_image_losses": per_image.tolist(),
            "reference_reg": reg,
            "reference_total": ref_total,
            "one_device": out1.tolist(),
            "two_replicas": out2.tolist(),
            "variables": compare_updates(names1, before1, after1, before2, after2, grads, learning_rate),
        })
        if train:
            report["history"] = train_both(one, two, init, dataset, learning_rate)
    return report


def train_both(one, two, init, dataset, learning_rate):
    """``MaskRCNN.train`` for one step + one validation step on each model from ``init``."""
    history = {}
    for key, model in (("one_device", one), ("two_replicas", two)):
        model.load_weights(init, by_name=True)
        logs = model.train(dataset, dataset, learning_rate, epochs=1, layers="all",
                           steps_per_epoch=1, validation_steps=1, verbose=0)
        history[key] = {k: v for k, v in logs[0].items() if isinstance(v, float)}
    return history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mrcnn", "siamese"), default="mrcnn")
    parser.add_argument("--clipnorm", type=float, default=1000.0)
    parser.add_argument("--weight-decay", type=float, default=0.5)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--train", action="store_true", help="also compare MaskRCNN.train for one step")
    args = parser.parse_args(argv)
    report = run(args.model, args.clipnorm, args.weight_decay, args.learning_rate, args.momentum, args.train)
    print("REPORT " + json.dumps(report))


if __name__ == "__main__":
    main()
