"""Training-step timings behind the README's "Reproducing the paper" estimates (run by hand).

    python benchmarks/bench_training.py [--steps 3] [--coco DIR]
    python benchmarks/bench_training.py --stages [--calls 3] [--threads N] [--coco DIR]

Measures on this machine, with random weights (only the speed matters): one training step
of plain Mask R-CNN (``coco.py``, ``small`` preset, batch 2) and of Siamese Mask R-CNN
(``small`` preset, batch 2) on the COCO images of ``--coco`` (default: the shared val2017
subset), and of the ImageNet classifier (ResNet-50, 224², batch 16) on generated images.
Every ``train()`` call traces its step once, so a 1-step and a (1 + N)-step run are timed
and the difference divided by N.

``--stages`` times instead a matterport-style plain Mask R-CNN training step (ResNet-50,
128² images, batch 2, matterport's defaults ``TRAIN_ROIS_PER_IMAGE`` 200 and
``POST_NMS_ROIS_TRAINING`` 2000; :func:`stage_config`) on one in-memory batch of ``--coco``,
split into stages by timing prefixes of the training graph (see :func:`bench_stages`), each
with its convolution GFLOP and GFLOP/s against a plain ResNet-50 training step on the same
images (the ceiling), so that a stage which is not convolution-bound shows.
"""
import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no TensorFlow start-up and grappler warnings

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_detector(kind, coco_dir, steps, logs):
    """Seconds per training step of ``kind`` ("maskrcnn" or "siamese"), small preset, batch 2."""
    ann = os.path.join(coco_dir, "annotations", "instances_val2017_subset.json")
    images = os.path.join(coco_dir, "images")
    if kind == "maskrcnn":
        from siamese_mask_rcnn.coco_maskrcnn import coco_config, load_coco_dataset
        from siamese_mask_rcnn.mrcnn.model import MaskRCNN as Model
        config = coco_config("small", IMAGES_PER_GPU=2)
        data = load_coco_dataset(annotation_file=ann, image_dir=images)
    else:
        from siamese_mask_rcnn.config import siamese_config
        from siamese_mask_rcnn.datasets.coco import OneShotCocoDataset
        from siamese_mask_rcnn.siamese import SiameseMaskRCNN as Model
        config = siamese_config("small", IMAGES_PER_GPU=2)
        data = OneShotCocoDataset()
        data.load_coco(annotation_file=ann, image_dir=images)
        data.set_split("all")
        data.prepare()
    seconds = []
    for n in (1, 1 + steps):
        model = Model("training", config, model_dir=logs)
        seconds.append(_timed(lambda: model.train(data, None, 0.001, epochs=1, layers="all",
                                                  steps_per_epoch=n, verbose=0)))
    return {"step_s": (seconds[1] - seconds[0]) / steps, "first_step_s": seconds[0], "batch": 2}


def bench_imagenet(steps, logs):
    """Seconds per ResNet-50 classification step (224², batch 16) on generated images."""
    import numpy as np
    from PIL import Image
    from siamese_mask_rcnn import imagenet_pretrain as ip
    root = os.path.join(logs, "fake_imagenet")
    rng = np.random.default_rng(0)
    for k in range(4):
        os.makedirs(os.path.join(root, f"n0000000{k}"), exist_ok=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(
                os.path.join(root, f"n0000000{k}", f"{i}.JPEG"))
    classes = os.path.join(logs, "classes.txt")
    with open(classes, "w") as handle:
        handle.write("\n".join(f"n0000000{k}" for k in range(4)) + "\n")
    seconds = []
    for n in (1, 1 + steps):
        out = os.path.join(logs, f"run{n}")
        seconds.append(_timed(lambda: ip.pretrain(root, out, class_list=classes, image_size=224,
                                                  batch_size=16, epochs=1, steps_per_epoch=n,
                                                  progress=False)))
    return {"step_s": (seconds[1] - seconds[0]) / steps, "first_step_s": seconds[0], "batch": 16}


def stage_config(backbone="resnet50", **overrides):
    """The ``--stages`` configuration: ``coco_config("paper")`` (ResNet-50, matterport's
    defaults) at 128² with 2 images per step, ``TRAIN_ROIS_PER_IMAGE`` 200 and
    ``POST_NMS_ROIS_TRAINING`` 2000 (matterport's defaults, stated here so that they show)."""
    from siamese_mask_rcnn.coco_maskrcnn import coco_config
    settings = dict(IMAGES_PER_GPU=2, IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128, TRAIN_ROIS_PER_IMAGE=200,
                    POST_NMS_ROIS_TRAINING=2000, DATA_WORKERS=1)
    settings.update(overrides)
    return coco_config("paper", backbone=backbone, **settings)


def fastest(fn, calls):
    """Fewest seconds of ``fn()`` over ``calls`` calls after one warm-up (tracing) call."""
    fn()
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


#: Stage boundaries of the training graph: (stage, layer names whose outputs end it). A
#: prefix is the graph up to and including these outputs (and every earlier stage's).
STAGE_OUTPUTS = (
    ("backbone + FPN", ("fpn_p2", "fpn_p3", "fpn_p4", "fpn_p5", "fpn_p6")),
    ("RPN convs", ("rpn_class_logits", "rpn_bbox")),
    ("proposal layer (top-k, NMS to POST_NMS_ROIS_TRAINING)", ("ROI",)),
    ("detection-target layer (ROI sampling, targets)", ("proposal_targets",)),
    ("ROI heads (ROIAlign 7×7, classifier)", ("mrcnn_class_logits_unfold", "mrcnn_bbox")),
    ("mask head (ROIAlign 14×14, 4 convs, deconv)", ("mrcnn_mask_unfold",)),
)


def stage_conv_flops(model, batch_size, mask_on_all_rois=False):
    """Forward convolution / dense FLOPs (2 per multiply-add) of each stage of ``--stages``
    (static shapes: the pyramid from the traced backbone, the heads from the config)."""
    import keras
    import numpy as np
    import tensorflow as tf
    from bench_inference import graph_conv_flops
    from siamese_mask_rcnn.mrcnn.layers import max_positive_rois
    c = model.config
    km = model.keras_model
    backbone_model = keras.Model(km.inputs[0], [km.get_layer(n).output for n in STAGE_OUTPUTS[0][1]])
    shape = [batch_size] + list(c.IMAGE_SHAPE)
    backbone = graph_conv_flops(lambda x: backbone_model(x, training=False), [tf.TensorSpec(shape, tf.float32)])
    depth, anchors = c.TOP_DOWN_PYRAMID_SIZE, len(c.RPN_ANCHOR_RATIOS)
    pixels = sum(int(np.ceil(c.IMAGE_SHAPE[0] / s / c.RPN_ANCHOR_STRIDE)) *
                 int(np.ceil(c.IMAGE_SHAPE[1] / s / c.RPN_ANCHOR_STRIDE)) for s in c.BACKBONE_STRIDES)
    r_conv = c.RPN_CONV_CHANNELS
    rpn = 2 * batch_size * pixels * (9 * depth * r_conv + r_conv * 6 * anchors)
    fc, pool, n = c.FPN_CLASSIF_FC_LAYERS_SIZE, c.POOL_SIZE, c.NUM_CLASSES
    rois = batch_size * c.TRAIN_ROIS_PER_IMAGE
    heads = 2 * rois * (pool * pool * depth * fc + fc * fc + fc * 5 * n)
    mp, mc = c.MASK_POOL_SIZE, c.MASK_CONV_CHANNELS
    mask_rows = batch_size * (max(1, max_positive_rois(c.TRAIN_ROIS_PER_IMAGE, c.ROI_POSITIVE_RATIO))
                              if c.TRAIN_BN is False and not mask_on_all_rois else c.TRAIN_ROIS_PER_IMAGE)
    mask = 2 * mask_rows * (mp * mp * 9 * (depth * mc + 3 * mc * mc) + mp * mp * 4 * mc * mc
                            + 4 * mp * mp * mc * n)
    return [backbone, rpn, 0, 0, heads, mask], mask_rows


def keras_model_prefix(keras_model, outputs):
    """``keras.Model`` from all of ``keras_model``'s inputs to ``outputs``."""
    import keras
    return keras.Model(keras_model.inputs, outputs)


def bench_stages(coco_dir, calls, logs, backbone="resnet50", mask_on_all_rois=False):
    """Per-stage seconds of one training step of :func:`stage_config` on one in-memory batch.

    Method: for each prefix of :data:`STAGE_OUTPUTS` (the graph up to the end of a stage,
    earlier stages' outputs included) the fastest of ``calls`` calls of its forward pass
    and of its forward + backward pass (the gradient of the sum of its float outputs that
    carry a gradient with respect to the training step's variables; the proposal and
    target outputs are computed but carry none) is timed; a stage's time is the difference
    to the previous prefix. Then the whole loss graph (the ``losses`` layer and the
    per-image losses), and the real training step (weight decay, gradient clipping, SGD
    update): the differences are "losses" and "optimizer update". Prefix differences hold
    up to the noise of the machine (a short stage can come out slightly negative: shown as
    measured). ``mask_on_all_rois``: the graph as it was before the mask head ran on the
    positive ROIs only (all ``TRAIN_ROIS_PER_IMAGE`` rows; the same losses, more work), for
    comparison.
    """
    import keras
    import tensorflow as tf
    from siamese_mask_rcnn.coco_maskrcnn import load_coco_dataset
    from siamese_mask_rcnn.mrcnn.losses import reduce_losses
    from siamese_mask_rcnn.mrcnn.model import MaskRCNN
    from siamese_mask_rcnn.mrcnn.pipeline import SkipCounter
    from siamese_mask_rcnn.mrcnn.training import (make_optimizer, make_step_functions, make_training_dataset,
                                                  select_trainable_layers)

    config = stage_config(backbone)
    data = load_coco_dataset(annotation_file=os.path.join(coco_dir, "annotations", "instances_val2017_subset.json"),
                             image_dir=os.path.join(coco_dir, "images"))
    keras.utils.set_random_seed(0)
    if mask_on_all_rois:
        from unittest import mock
        with mock.patch("siamese_mask_rcnn.mrcnn.model.max_positive_rois", lambda rois, ratio: rois):
            model = MaskRCNN("training", config, model_dir=logs)
    else:
        model = MaskRCNN("training", config, model_dir=logs)
    km = model.keras_model
    layers = select_trainable_layers(km, "all")
    optimizer = make_optimizer(config, model.strategy, config.LEARNING_RATE, config.LEARNING_MOMENTUM)
    train_step, _, train_vars = make_step_functions(model, layers, optimizer)
    ds, _ = make_training_dataset(model, data, None, 0, 0, SkipCounter(), config.BATCH_SIZE)
    batch = [tf.identity(t) for t in next(iter(ds))]

    def prefix_functions(outputs, loss_of):
        prefix = keras_model_prefix(km, outputs)
        ids = {id(w) for w in prefix.weights}
        variables = [v for v in train_vars if id(v) in ids]

        @tf.function(autograph=False)
        def forward(inputs):
            return prefix(list(inputs), training=True)

        @tf.function(autograph=False)
        def backward(inputs):
            with tf.GradientTape() as tape:
                outs = tf.nest.flatten(prefix(list(inputs), training=True))
                loss = loss_of(outs)
            grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return [loss] + outs + grads

        return forward, backward

    def fetch(fn):
        return lambda: [t.numpy() for t in tf.nest.flatten(fn(batch))]

    # the proposals and the sampled targets carry no gradient: fetched, not in the summed loss
    no_gradient_layers = {"ROI", "proposal_targets"}
    rows, outputs, flags = [], [], []
    previous = (0.0, 0.0)
    for stage, names in STAGE_OUTPUTS:
        for name in names:
            out = km.get_layer(name).output
            out = list(out) if isinstance(out, (list, tuple)) else [out]
            outputs.extend(out)
            flags.extend([name in no_gradient_layers] * len(out))

        def loss_of(outs, flags=tuple(flags)):
            return tf.add_n([tf.reduce_sum(o) for o, skip in zip(outs, flags)
                             if o.dtype.is_floating and not skip])

        forward, backward = prefix_functions(list(outputs), loss_of)
        times = (fastest(fetch(forward), calls), fastest(fetch(backward), calls))
        rows.append((stage, times[0] - previous[0], times[1] - previous[1]))
        previous = times

    def losses_of(outs):
        return tf.reduce_sum(reduce_losses(outs[0], config.LOSS_NORMALIZATION, config.BATCH_SIZE))

    forward, backward = prefix_functions([km.outputs[0]], losses_of)
    times = (fastest(fetch(forward), calls), fastest(fetch(backward), calls))
    rows.append(("losses", times[0] - previous[0], times[1] - previous[1]))
    step = fastest(lambda: train_step(tuple(batch)).numpy(), calls)
    rows.append(("optimizer update (weight decay, clipping, SGD)", float("nan"), step - times[1]))
    flops, mask_rows = stage_conv_flops(model, config.BATCH_SIZE, mask_on_all_rois)
    return {"rows": rows, "step_s": step, "flops": flops, "mask_rows": mask_rows, "config": config}


def resnet50_training_ceiling(config, calls):
    """Seconds and forward conv FLOPs of a plain Keras ResNet-50 (no top) training step
    (forward + backward, SGD) on ``BATCH_SIZE`` images of the config's size."""
    import keras
    import tensorflow as tf
    from bench_inference import graph_conv_flops
    shape = [config.BATCH_SIZE] + list(config.IMAGE_SHAPE)
    net = keras.applications.ResNet50(weights=None, include_top=False, input_shape=shape[1:])
    flops = graph_conv_flops(lambda x: net(x, training=False), [tf.TensorSpec(shape, tf.float32)])
    optimizer = keras.optimizers.SGD(learning_rate=0.001, momentum=0.9)
    optimizer.build(net.trainable_variables)

    @tf.function(autograph=False)
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(net(x, training=True))
        grads = tape.gradient(loss, net.trainable_variables)
        optimizer.apply_gradients(zip(grads, net.trainable_variables))
        return loss

    x = tf.random.uniform(shape)
    return fastest(lambda: step(x).numpy(), calls), flops


def print_stages(result, ceiling, machine):
    rows, flops = result["rows"], result["flops"] + [0, 0]
    ceiling_s, ceiling_flops = ceiling
    # a training step's conv work is about 3x the forward's (input and kernel gradients)
    ceiling_rate = 3 * ceiling_flops / ceiling_s / 1e9
    c = result["config"]
    print(f"machine: {machine}")
    print(f"plain Mask R-CNN training step, {c.IMAGE_SHAPE[0]}², batch {c.BATCH_SIZE}, "
          f"TRAIN_ROIS_PER_IMAGE {c.TRAIN_ROIS_PER_IMAGE}, POST_NMS_ROIS_TRAINING {c.POST_NMS_ROIS_TRAINING}, "
          f"PRE_NMS_LIMIT {c.PRE_NMS_LIMIT}, mask head on {result['mask_rows']} ROIs: {result['step_s']:.3f} s")
    print(f"ResNet-50 training step on the same {c.BATCH_SIZE} images (ceiling): {ceiling_s:.3f} s, "
          f"{3 * ceiling_flops / 1e9:.1f} GFLOP (3x forward), {ceiling_rate:.1f} GFLOP/s")
    print("| stage | forward s | forward + backward s | share of the step | conv GFLOP (3x forward) | "
          "GFLOP/s | % of ResNet-50 |")
    print("|---|---|---|---|---|---|---|")
    for (stage, fwd, both), f in zip(rows, flops):
        fwd_text = "-" if fwd != fwd else f"{fwd:.3f}"
        if f:
            rate = 3 * f / both / 1e9 if both > 0 else float("nan")
            conv = f"{3 * f / 1e9:.1f} | {rate:.1f} | {100 * rate / ceiling_rate:.0f}"
        else:
            conv = "0 | - | -"
        print(f"| {stage} | {fwd_text} | {both:.3f} | {100 * both / result['step_s']:.0f} % | {conv} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--coco", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                       "shared", "data", "coco_val2017_subset"))
    parser.add_argument("--stages", action="store_true",
                        help="per-stage times of a plain Mask R-CNN training step (see the module docstring)")
    parser.add_argument("--calls", type=int, default=3, help="--stages: timed calls per figure (the fastest counts)")
    parser.add_argument("--threads", type=int, default=None, help="TensorFlow intra-op threads")
    parser.add_argument("--mask-on-all-rois", action="store_true",
                        help="--stages: the mask head on all sampled ROIs, as before it ran on the positive ones")
    parser.add_argument("--backbone", default="resnet50", choices=["resnet50", "tiny"],
                        help="--stages: the backbone (tiny: a quick check of the script only)")
    args = parser.parse_args()
    if args.threads:
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    if args.stages:
        import tensorflow as tf
        from bench_inference import machine_description
        tf.get_logger().setLevel("ERROR")  # one tf.function per prefix: the retracing warnings
        with tempfile.TemporaryDirectory() as logs:
            result = bench_stages(args.coco, args.calls, logs, args.backbone, args.mask_on_all_rois)
        print_stages(result, resnet50_training_ceiling(result["config"], args.calls), machine_description())
        return
    with tempfile.TemporaryDirectory() as logs:
        rows = {"maskrcnn_small": bench_detector("maskrcnn", args.coco, args.steps, logs),
                "siamese_small": bench_detector("siamese", args.coco, args.steps, logs),
                "imagenet_resnet50_224": bench_imagenet(args.steps, logs)}
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
