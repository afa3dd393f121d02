"""Pre-train the ResNet backbone on an ImageNet class subset (paper §5.1, *ImageNet-687*).

Why this exists: the one-shot claim of the paper rests on the model never having seen a
label of a one-shot category. A backbone pre-trained on all of ImageNet-1k has: 313
ImageNet classes correspond to COCO categories. The paper therefore pre-trains ResNet-50
for classification on *ImageNet-687* (the 687 classes without a COCO counterpart), so that
"we do not use any label information about the one-shot classes at any training stage".
The list ships with the package (:data:`IMAGENET_687`, from the official release, MIT
licence in ``data/LICENSE-imagenet-subsets``).

What it does: a ResNet-50/101 (matterport's layer names, ``conv1`` … ``res5c_branch2c``)
with a global-average-pool + softmax head is trained on an ImageNet-format folder (one
sub-folder per WordNet id, e.g. ``train/n01440764/*.JPEG``) restricted to a class list;
standard ImageNet augmentation (random resized crop, area 8–100 %, aspect 3/4–4/3, random
horizontal flip; validation: resize to size/0.875 and centre crop); SGD with momentum 0.9,
learning rate 0.1 × batch/256 divided by 10 at 1/3, 2/3 and 8/9 of training (30/60/80 of
90 epochs), weight decay 1e-4; ``MirroredStrategy`` over several GPUs; resumable
(``tf.train.CheckpointManager`` in ``<out>/checkpoints``). After every epoch the backbone
alone is written in matterport's legacy ``.h5`` layout (``<out>/backbone_<arch>.h5``), which
``train_siamese.py --weights`` and ``coco.py --model imagenet --imagenet-weights`` load by
layer name. Inputs are RGB pixels minus Mask R-CNN's ``MEAN_PIXEL`` (0–255 scale), the same
normalisation the detectors use.

Bad data: a class of the list without a folder is reported (a warning with the count;
an error if none is found); an unreadable image is skipped, counted and named in the log.
"""
import argparse
import logging
import os
import re
import sys
import threading

import numpy as np

from .cliargs import require_at_least

log = logging.getLogger(__name__)

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
#: The shipped ImageNet-687 list: WordNet ids of the ImageNet classes without a COCO counterpart.
IMAGENET_687 = os.path.join(DATA_DIR, "imagenet-687.txt")
#: File endings read as images (case-insensitive).
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp")
#: RGB mean subtracted from the inputs (Mask R-CNN's ``MEAN_PIXEL``).
MEAN_PIXEL = (123.7, 116.8, 103.9)
#: Learning-rate drops (÷10) as fractions of the total steps: epochs 30, 60 and 80 of 90.
LR_DROPS = (1 / 3, 2 / 3, 8 / 9)
_WNID = re.compile(r"^n\d{8}$")


# ------------------------------------------------------------------------- class list and files
def read_class_list(path):
    """WordNet ids of a class-list file (one per line; blank lines and ``#`` comments
    ignored). ``"imagenet-687"`` names the shipped list. Raises ``FileNotFoundError``, or
    ``ValueError`` naming the file and line of a malformed or repeated id, or an empty list.
    """
    if path in (None, "imagenet-687"):
        path = IMAGENET_687
    if not os.path.isfile(path):
        raise FileNotFoundError(f"class list not found: {path}")
    ids, seen = [], {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            if not _WNID.match(text):
                raise ValueError(f"{path}:{number}: {text!r} is not a WordNet id like n01440764")
            if text in seen:
                raise ValueError(f"{path}:{number}: {text} repeats line {seen[text]}")
            seen[text] = number
            ids.append(text)
    if not ids:
        raise ValueError(f"{path}: no WordNet id in the class list")
    return ids


def scan_image_folder(root, class_ids):
    """Image files of the listed classes in an ImageNet-format folder.

    Returns ``(files, labels, classes)``: sorted file paths, their labels (index into
    ``classes``) and ``classes``, the listed ids that have a sub-folder with at least one image
    (list order). Listed classes without a folder or without images are logged as a warning
    with their count; folders of unlisted classes are ignored. Raises ``FileNotFoundError``
    for a missing ``root`` and ``ValueError`` when no listed class has images.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder not found: {root}")
    files, labels, classes, missing, empty = [], [], [], [], []
    for wnid in class_ids:
        folder = os.path.join(root, wnid)
        if not os.path.isdir(folder):
            missing.append(wnid)
            continue
        names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            empty.append(wnid)
            continue
        label = len(classes)
        classes.append(wnid)
        files += [os.path.join(folder, n) for n in names]
        labels += [label] * len(names)
    if missing:
        log.warning("%d of %d listed classes have no folder in %s (first: %s)", len(missing),
                    len(class_ids), root, ", ".join(missing[:5]))
    if empty:
        log.warning("%d listed classes have no image in %s (first: %s)", len(empty), root,
                    ", ".join(empty[:5]))
    if not classes:
        raise ValueError(f"none of the {len(class_ids)} listed classes has images in {root} "
                         "(expected one sub-folder per WordNet id, e.g. n01440764/)")
    return files, np.asarray(labels, np.int32), classes


class UnreadableImages:
    """Thread-safe count of the images that could not be decoded (first ones named)."""

    def __init__(self, keep=20):
        self._lock = threading.Lock()
        self.count = 0
        self.examples = []
        self._keep = keep

    def add(self, path, error):
        with self._lock:
            self.count += 1
            if len(self.examples) < self._keep:
                self.examples.append((path, str(error)))
                log.warning("unreadable image skipped: %s (%s)", path, error)


def _decode_file(path, counter):
    """``(uint8 RGB [H, W, 3], ok)`` of one image file; unreadable → ``(1×1 zeros, False)``."""
    from PIL import Image
    path = path.decode("utf-8") if isinstance(path, bytes) else str(path)
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), np.uint8)
        if array.ndim != 3 or min(array.shape[:2]) < 1:
            raise ValueError(f"bad image shape {array.shape}")
        return array, True
    except Exception as error:  # noqa: BLE001 - any decoding failure means: skip this file
        counter.add(path, error)
        return np.zeros((1, 1, 3), np.uint8), False


# ------------------------------------------------------------------------- tf.data
def make_dataset(files, labels, image_size, batch_size, training, seed=0, epoch=0, counter=None,
                 workers=None):
    """A ``tf.data`` pipeline of ``(images [B, S, S, 3] float32 mean-subtracted, labels [B])``.

    Training: shuffled per epoch (seeded by ``seed`` and ``epoch``), random resized crop and
    horizontal flip, repeated forever, full batches only. Evaluation: resize the shorter
    side to ``S / 0.875``, centre crop, one pass. Unreadable images are dropped and counted
    in ``counter`` (an :class:`UnreadableImages`).
    """
    import tensorflow as tf
    counter = counter if counter is not None else UnreadableImages()
    parallel = workers or tf.data.AUTOTUNE
    size = int(image_size)
    mean = tf.constant(MEAN_PIXEL, tf.float32)
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(files), np.asarray(labels, np.int32)))
    if training:
        ds = ds.shuffle(len(files), seed=int(seed) * 100003 + int(epoch),
                        reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate()

    def load(index, element):
        path, label = element
        image, ok = tf.numpy_function(lambda p: _decode_file(p, counter), [path],
                                      [tf.uint8, tf.bool], stateful=False)
        image.set_shape([None, None, 3])
        ok.set_shape([])
        return index, image, label, ok

    def augment(index, image, label):
        element_seed = tf.stack([tf.cast(seed, tf.int64) * 7919 + tf.cast(epoch, tf.int64), index])
        begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            seed=element_seed, min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.08, 1.0), max_attempts=10, use_image_if_no_bounding_boxes=True)
        crop = tf.slice(image, begin, box_size)
        crop = tf.image.resize(tf.cast(crop, tf.float32), (size, size), method="bilinear")
        crop = tf.image.stateless_random_flip_left_right(crop, seed=element_seed + 1)
        return crop - mean, label

    def centre(index, image, label):
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = (size / 0.875) / tf.reduce_min(shape)
        resized = tf.image.resize(tf.cast(image, tf.float32),
                                  tf.cast(tf.math.ceil(shape * scale), tf.int32), method="bilinear")
        crop = tf.image.resize_with_crop_or_pad(resized, size, size)
        return crop - mean, label

    ds = ds.map(load, num_parallel_calls=parallel)
    ds = ds.filter(lambda index, image, label, ok: ok)
    ds = ds.map(lambda index, image, label, ok: (augment if training else centre)(index, image, label),
                num_parallel_calls=parallel)
    return ds.batch(int(batch_size), drop_remainder=training).prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------------------- model
def build_classifier(backbone, num_classes, image_size):
    """``(classifier, backbone_model)`` sharing weights.

    ``backbone``: "resnet50", "resnet101" (matterport's layer names) or "tiny" (the
    project's small CNN, for tests). The classifier is backbone → global average pool →
    ``imagenet_fc`` logits ``[B, num_classes]``; ``backbone_model`` maps the image
    ``[B, S, S, 3]`` to C5. Batch norm trains (``train_bn=None``: follows ``training``).

    Raises:
        ValueError: ``backbone`` is not ``resnet50``, ``resnet101`` or ``tiny``.
    """
    import keras
    from .mrcnn.backbone import resnet_graph, tiny_backbone
    inputs = keras.Input(shape=(int(image_size), int(image_size), 3), name="input_image")
    if backbone == "tiny":
        c5 = tiny_backbone(inputs, stage5=True, train_bn=None)[-1]
    elif backbone in ("resnet50", "resnet101"):
        c5 = resnet_graph(inputs, backbone, stage5=True, train_bn=None)[-1]
    else:
        raise ValueError(f"unknown backbone {backbone!r}; choose resnet50, resnet101 or tiny")
    pooled = keras.layers.GlobalAveragePooling2D(name="imagenet_avg_pool")(c5)
    logits = keras.layers.Dense(int(num_classes), name="imagenet_fc")(pooled)
    return keras.Model(inputs, logits, name="imagenet_classifier"), keras.Model(inputs, c5, name="backbone")


def learning_rate_at(step, total_steps, base_lr, drops=LR_DROPS):
    """``base_lr`` divided by 10 for every fraction in ``drops`` of ``total_steps`` passed."""
    passed = sum(1 for fraction in drops if step >= int(round(fraction * total_steps)))
    return float(base_lr) * 0.1 ** passed


# ------------------------------------------------------------------------- training
def pretrain(data_dir, out_dir, class_list=None, backbone="resnet50", image_size=224,
             batch_size=64, gpus=1, epochs=90, steps_per_epoch=None, lr=None, weight_decay=1e-4,
             val_dir=None, val_steps=None, seed=0, backbone_file=None, progress=True,
             strategy=None, workers=None):
    """Train the classifier (resuming from ``out_dir/checkpoints`` if present) and write the
    backbone weights after every epoch.

    ``batch_size`` is per replica (global = ``batch_size × replicas``); ``steps_per_epoch``
    defaults to images // global batch; ``lr`` to 0.1 × global batch / 256. Returns
    ``{"backbone_file", "classes", "step", "history", "unreadable", "unreadable_examples"}``.
    Raises ``FileNotFoundError`` / ``ValueError`` for missing folders, bad class lists, or a
    resumed run whose classes differ.
    """
    import keras
    import tensorflow as tf
    from tqdm.auto import tqdm

    from .mrcnn.weights import save_weights_by_name

    class_ids = read_class_list(class_list)
    files, labels, classes = scan_image_folder(data_dir, class_ids)
    os.makedirs(out_dir, exist_ok=True)
    classes_path = os.path.join(out_dir, "classes.txt")
    if os.path.isfile(classes_path):
        with open(classes_path, encoding="utf-8") as handle:
            previous = handle.read().split()
        if previous != classes:
            raise ValueError(f"{out_dir} holds a run on {len(previous)} other classes "
                             f"({classes_path}); use a new --out folder")
    else:
        with open(classes_path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(classes) + "\n")
    log.info("%d images of %d classes in %s", len(files), len(classes), data_dir)

    if strategy is None:
        strategy = tf.distribute.MirroredStrategy() if gpus > 1 else tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    global_batch = int(batch_size) * replicas
    steps_per_epoch = int(steps_per_epoch or max(len(files) // global_batch, 1))
    total_steps = steps_per_epoch * int(epochs)
    base_lr = float(lr) if lr else 0.1 * global_batch / 256
    backbone_file = backbone_file or os.path.join(out_dir, f"backbone_{backbone}.h5")

    keras.utils.set_random_seed(seed)
    with strategy.scope():
        classifier, backbone_model = build_classifier(backbone, len(classes), image_size)
        optimizer = keras.optimizers.SGD(learning_rate=base_lr, momentum=0.9)
        optimizer.build(classifier.trainable_variables)
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    checkpoint = tf.train.Checkpoint(model=classifier, optimizer=optimizer, step=step_var)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(out_dir, "checkpoints"),
                                         max_to_keep=2)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        log.info("resuming %s at step %d", manager.latest_checkpoint, int(step_var.numpy()))

    variables = classifier.trainable_variables
    kernels = [v for v in variables if v.path.endswith("kernel")]

    def replica_step(images, targets):
        with tf.GradientTape() as tape:
            logits = classifier(images, training=True)
            per_image = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
            loss = tf.nn.compute_average_loss(per_image, global_batch_size=global_batch)
            decay = 0.5 * weight_decay * tf.add_n([tf.reduce_sum(tf.square(k)) for k in kernels])
            total = loss + decay / replicas
        grads = tape.gradient(total, variables)
        optimizer.apply_gradients(zip(grads, variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                                 targets), tf.float32))
        return loss, correct

    @tf.function
    def train_step(batch):
        loss, correct = strategy.run(replica_step, args=batch)
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None))

    @tf.function
    def predict_step(images):
        return tf.argmax(classifier(images, training=False), -1, output_type=tf.int32)

    val_files = val_labels = None
    if val_dir:
        val_files, val_labels, val_classes = scan_image_folder(val_dir, classes)
        val_labels = np.asarray([classes.index(val_classes[k]) for k in val_labels], np.int32)

    counter = UnreadableImages()
    history = []
    step = int(step_var.numpy())
    while step < total_steps:
        epoch = step // steps_per_epoch
        ds = make_dataset(files, labels, image_size, global_batch, True, seed, epoch, counter,
                          workers).skip(step - epoch * steps_per_epoch)
        iterator = iter(strategy.experimental_distribute_dataset(ds))
        todo = (epoch + 1) * steps_per_epoch - step
        bar = tqdm(total=todo, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, unit="step")
        losses, correct = [], 0.0
        for _ in range(todo):
            optimizer.learning_rate.assign(learning_rate_at(step, total_steps, base_lr))
            loss, hits = train_step(next(iterator))
            losses.append(float(loss))
            correct += float(hits)
            step += 1
            step_var.assign(step)
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses):.3f}", acc=f"{correct / (len(losses) * global_batch):.3f}")
        bar.close()
        entry = {"epoch": epoch + 1, "step": step, "loss": float(np.mean(losses)),
                 "accuracy": correct / (len(losses) * global_batch),
                 "learning_rate": learning_rate_at(step - 1, total_steps, base_lr),
                 "unreadable": counter.count}
        if val_files is not None:
            hits = seen = 0
            val_ds = make_dataset(val_files, val_labels, image_size, global_batch, False,
                                  counter=counter, workers=workers)
            for index, (images, targets) in enumerate(val_ds):
                if val_steps and index >= val_steps:
                    break
                hits += int(np.sum(predict_step(images).numpy() == targets.numpy()))
                seen += int(targets.shape[0])
            entry["val_accuracy"] = hits / max(seen, 1)
        manager.save(checkpoint_number=step)
        save_weights_by_name(backbone_model, backbone_file)
        history.append(entry)
        log.info("epoch %d: %s; backbone written to %s", epoch + 1, entry, backbone_file)
        if counter.count:
            log.warning("%d unreadable image(s) skipped so far (e.g. %s)", counter.count,
                        counter.examples[0][0])
    if not history and not os.path.isfile(backbone_file):
        save_weights_by_name(backbone_model, backbone_file)
    return {"backbone_file": backbone_file, "classes": classes, "step": step, "history": history,
            "unreadable": counter.count, "unreadable_examples": list(counter.examples)}


# ------------------------------------------------------------------------- command line
def build_parser():
    """The ``pretrain_backbone.py`` parser."""
    parser = argparse.ArgumentParser(
        description="Pre-train the ResNet backbone on ImageNet restricted to a class list "
                    "(default: the shipped ImageNet-687, paper §5.1).")
    parser.add_argument("--data-dir", required=True,
                        help="ImageNet-format training folder: one sub-folder per WordNet id")
    parser.add_argument("--val-dir", help="validation folder in the same format (optional)")
    parser.add_argument("--classes", default="imagenet-687",
                        help="class-list file, one WordNet id per line (default: the shipped "
                             "imagenet-687)")
    parser.add_argument("--backbone", choices=["resnet50", "resnet101", "tiny"], default="resnet50")
    parser.add_argument("--image-size", type=int, default=224, help="crop side (default 224)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per GPU (default 64)")
    parser.add_argument("--gpus", type=int, default=1, help="MirroredStrategy when > 1")
    parser.add_argument("--epochs", type=int, default=90, help="default 90")
    parser.add_argument("--steps-per-epoch", type=int, help="default: images // global batch")
    parser.add_argument("--val-steps", type=int, help="validation batches per epoch (default all)")
    parser.add_argument("--lr", type=float, help="default 0.1 x global batch / 256")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--out", default=os.path.join("logs", "imagenet_pretrain"),
                        help="run folder; an existing run there is resumed "
                             "(default logs/imagenet_pretrain)")
    parser.add_argument("--backbone-file", help="default <out>/backbone_<backbone>.h5")
    parser.add_argument("--workers", type=int, help="parallel decoding calls (default: auto)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    """Entry point of ``samples/imagenet/pretrain_backbone.py``; user errors exit with code 2.

    Raises:
        SystemExit: status 2 for bad arguments or an unreadable input (message on stderr).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    require_at_least(parser, args, 1, "image_size", "batch_size", "gpus", "epochs",
                     "steps_per_epoch", "val_steps", "workers")
    if args.image_size % 32:
        parser.error(f"--image-size must be a multiple of 32, got {args.image_size}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = pretrain(args.data_dir, args.out, class_list=args.classes, backbone=args.backbone,
                          image_size=args.image_size, batch_size=args.batch_size, gpus=args.gpus,
                          epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, lr=args.lr,
                          weight_decay=args.weight_decay, val_dir=args.val_dir,
                          val_steps=args.val_steps, seed=args.seed,
                          backbone_file=args.backbone_file, progress=not args.quiet,
                          workers=args.workers)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"backbone weights ({len(result['classes'])} classes, step {result['step']}): "
          f"{result['backbone_file']}; {result['unreadable']} unreadable image(s) skipped")
    return result
