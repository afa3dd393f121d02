"""Does a backbone pre-trained on the training categories carry the matching (issue #17)? Run by hand.

The paper pre-trains its ResNet for classification on ImageNet-687, the ImageNet classes
without a COCO counterpart (§5.1), so the backbone's features already tell objects apart
before the Siamese training, with no label of a one-shot category. The demo trains its tiny
backbone from scratch. This benchmark transposes the paper's step: the demo's
``tiny_backbone`` is first trained to classify the demo's *training* categories (never the
held-out one-shot ones) from isolated renders drawn like the demo's references
(``render_reference_image``: one character by one of its drawers, with ``--rendering
randomised`` a randomised look), then the demo runs
from those weights (``demo.run_demo``; same scenes, seed and tables as ``siamese-mrcnn demo``).

Pre-training: ``--renders`` images per category at 48 x 48 px (the render centred on a
square of its mean colour), a held-out set of 2 more renders per category to report the
accuracy, global average pooling of C4 and C5 and a linear classifier, SGD with momentum
0.9 and a cosine learning rate from 0.05 over ``--pretrain-steps`` steps of 128 images,
inputs minus the config's ``MEAN_PIXEL`` as the detector's. The held-out renders are new
looks of the same categories (for Omniglot drawn by any of the character's drawers, so they
are new renders of drawings the training also saw, not new drawers). Every ``tiny_*`` layer's weights
(convolutions and batch normalisation) are then copied by name into the Siamese model before
its training starts.

Usage::

    python benchmarks/pretrained_backbone.py --dataset omniglot --data-dir ../shared/data/omniglot \\
        --rendering randomised --out logs/omni_pretrained
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import demo_checkpoint  # noqa: E402  (the benchmarks' shared checks, TensorFlow-free)

from siamese_mask_rcnn import demo  # noqa: E402  (no TensorFlow until a model is built)

SIZE = 48          # pixels, the classifier's input side
BATCH = 128
HELD_OUT = 2       # renders per category for the reported accuracy
EPOCHS = 5         # the pre-training steps run in this many equal epochs (accuracy after each)


def square(image, size=SIZE):
    """``image`` (uint8 [h, w, 3]) centred on a square of its mean colour, resized to ``size``²."""
    from PIL import Image

    h, w = image.shape[:2]
    side = max(h, w)
    canvas = np.empty((side, side, 3), np.uint8)
    canvas[:] = image.reshape(-1, 3).mean(axis=0).astype(np.uint8)
    canvas[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = image
    return np.asarray(Image.fromarray(canvas).resize((size, size), Image.BILINEAR))


def render(dataset, class_ids, per_class, seed):
    """``(images uint8 [N, SIZE, SIZE, 3], labels int [N])``: ``per_class`` renders of each
    category, labels the categories' positions in ``class_ids``."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, class_id in enumerate(class_ids):
        for _ in range(per_class):
            crop, _ = dataset.render_reference_image(int(class_id), rng)
            images.append(square(np.clip(crop, 0, 255).astype(np.uint8)))
            labels.append(label)
    return np.stack(images), np.asarray(labels)


def pretrain(args):
    """Train the tiny backbone to classify the training categories; ``{layer name: weights}``."""
    train, _ = demo.make_datasets(args.dataset, args.data_dir, num_train=4, num_val=4,
                                  rendering=args.rendering, seed=args.seed)
    class_ids = list(train.train_class_ids)
    t0 = time.time()
    x, y = render(train, class_ids, args.renders, args.seed + 1)
    x_held, y_held = render(train, class_ids, HELD_OUT, args.seed + 2)
    print(f"{len(class_ids)} training categories, {len(x)} renders (+{len(x_held)} held out) "
          f"in {time.time() - t0:.0f} s", flush=True)

    import keras
    import tensorflow as tf

    from siamese_mask_rcnn.mrcnn.backbone import tiny_backbone

    demo.configure_threads(demo.DEFAULT_THREADS)
    tf.config.experimental.enable_op_determinism()  # as the demo's training: the same seed, the same weights
    keras.utils.set_random_seed(args.seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    c = tiny_backbone(inputs, train_bn=True)
    pooled = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(c[3]),
                                         keras.layers.GlobalAveragePooling2D()(c[4])])
    model = keras.Model(inputs, keras.layers.Dense(len(class_ids))(pooled))
    schedule = keras.optimizers.schedules.CosineDecay(0.05, args.pretrain_steps)
    model.compile(keras.optimizers.SGD(schedule, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    mean = np.asarray(demo.demo_config().MEAN_PIXEL, np.float32)
    data = (tf.data.Dataset.from_tensor_slices((x.astype(np.float32) - mean, y))
            .shuffle(len(x), seed=args.seed).repeat().batch(BATCH))
    t0 = time.time()
    model.fit(data, steps_per_epoch=args.pretrain_steps // EPOCHS, epochs=EPOCHS, verbose=2,
              validation_data=(x_held.astype(np.float32) - mean, y_held))
    print(f"pre-training: {args.pretrain_steps} steps in {time.time() - t0:.0f} s", flush=True)
    return {layer.name: layer.get_weights() for layer in model.layers if layer.name.startswith("tiny_")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["synthetic", "omniglot"], default="synthetic",
                        help="the demo's data: the embedded procedural categories or Omniglot")
    parser.add_argument("--data-dir", help="directory with the Omniglot zip archives (--dataset omniglot)")
    parser.add_argument("--rendering", choices=["paper", "randomised", "mixed"], default="paper",
                        help="the demo's --rendering, for the pre-training renders and the demo alike")
    parser.add_argument("--seed", type=int, default=0, help="the demo's --seed (>= 0; renders and weights too)")
    parser.add_argument("--renders", type=int, default=100, help="renders per training category (default 100)")
    parser.add_argument("--pretrain-steps", type=int, default=3000,
                        help=f"classification steps of 128 renders, a multiple of {EPOCHS} (default 3000)")
    parser.add_argument("--out", required=True, help="the demo's output folder (created first)")
    args = parser.parse_args(argv)
    if args.renders < 1:
        parser.error(f"--renders must be >= 1, got {args.renders}")
    if args.pretrain_steps < EPOCHS or args.pretrain_steps % EPOCHS:
        parser.error(f"--pretrain-steps must be a positive multiple of {EPOCHS}, got {args.pretrain_steps}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    demo_checkpoint.check_dataset_arguments(parser, args)
    from siamese_mask_rcnn.mrcnn.fileio import UnwritableOutputError, ensure_writable_dir
    try:  # before the pre-training, as siamese-mrcnn demo does before its work
        ensure_writable_dir(os.path.abspath(args.out))
    except UnwritableOutputError as err:
        parser.error(f"--out: {err}")
    weights = pretrain(args)

    from siamese_mask_rcnn import siamese
    from siamese_mask_rcnn.mrcnn import weights as mweights

    train_from_scratch = siamese.SiameseMaskRCNN.train

    def train_from_pretrained(self, *a, **k):
        copied = 0
        for name, layer in mweights.iter_weighted_layers(self.keras_model):
            if name in weights:
                layer.set_weights(weights[name])
                copied += 1
        if copied != len(weights):
            raise RuntimeError(f"copied {copied} of the {len(weights)} pre-trained backbone layers")
        print(f"the Siamese model starts from the {copied} pre-trained backbone layers", flush=True)
        return train_from_scratch(self, *a, **k)

    siamese.SiameseMaskRCNN.train = train_from_pretrained
    return demo_checkpoint.run_demo("pretrained_backbone.py", out_dir=args.out, dataset=args.dataset,
                                    data_dir=args.data_dir, rendering=args.rendering, seed=args.seed)


if __name__ == "__main__":
    sys.exit(main())
