"""Training Siamese Mask R-CNN on COCO with a one-shot class split (paper §5.1, §3).

Only the split's 60 background (training) categories are ever used as references or
ground-truth targets; the 20 held-out categories of the split are background. The default
schedule is the paper's (§5.1): an epoch is ``STEPS_PER_EPOCH`` = 1,000 steps; the heads
(RPN, matching, classifier, mask head and FPN) train alone to epoch 1, then all layers to
epoch 120 at the learning rate, then all layers to epoch 160 at a tenth of it.

This module holds the logic of ``samples/coco/train_siamese.py`` and of
``siamese-mrcnn train`` (same flags): :func:`main` parses the arguments and trains.
Arguments, files and ``TF_CONFIG`` are checked before any TensorFlow work runs, and
``--multi-worker``'s strategy is created before any other (TensorFlow requires it).

Checkpoints (``mask_rcnn_siamese_NNNN.h5`` with the training state beside them),
``config.json``, ``history.jsonl`` and TensorBoard scalars go to a new folder
``<logs>/siamese<YYYYmmddTHHMMSS>-<suffix>/``; ``--weights last`` resumes the newest run of
``--logs`` that has a checkpoint, in its folder (see :mod:`.mrcnn.checkpoints`).
"""
import collections
import logging
import os
import sys

from .cliargs import check_tf_config, coco_parser, flag_name, require_at_least, require_file
from .cluster import (DEFAULT_START_TIMEOUT, check_same_start, finish_together, lost_worker_outside_steps,
                      multi_worker_strategy, start_signature)
from .cluster import describe as describe_task
from .config import siamese_config
from .mrcnn.fileio import UnwritableOutputError, ensure_writable_dir
from .datasets.coco import OneShotCocoDataset, split_label
from .presets import preset_changes

log = logging.getLogger(__name__)

#: The paper's schedule in epochs of 1,000 steps (paper §5.1): heads to 1, all to 120, all to 160.
PAPER_HEADS_EPOCHS = 1
PAPER_ALL_EPOCHS = 120
PAPER_TOTAL_EPOCHS = 160
#: The learning rate is divided by this at ``all_epochs``.
LR_DROP = 10.0

#: One training stage: layers (preset or regex), the epoch it ends at, its learning rate.
Stage = collections.namedtuple("Stage", ["layers", "until_epoch", "learning_rate"])


# ------------------------------------------------------------------------- schedule
def schedule_stages(heads_epochs=PAPER_HEADS_EPOCHS, all_epochs=PAPER_ALL_EPOCHS,
                    total_epochs=PAPER_TOTAL_EPOCHS, lr=0.02, lr_drop=LR_DROP):
    """The training stages as ``[Stage(layers, until_epoch, learning_rate)]``.

    Stage 1 trains ``"heads"`` up to epoch ``heads_epochs`` at ``lr``; stage 2 trains
    ``"all"`` layers up to ``all_epochs`` at ``lr``; stage 3 trains ``"all"`` up to
    ``total_epochs`` at ``lr / lr_drop``. Stages of zero length are left out, so e.g.
    ``heads_epochs=0`` starts with all layers and ``all_epochs == total_epochs`` never
    drops the rate. Requires ``0 <= heads_epochs <= all_epochs <= total_epochs`` and
    ``total_epochs >= 1``; raises ``ValueError`` naming the offending value otherwise.
    """
    for name, value in (("heads_epochs", heads_epochs), ("all_epochs", all_epochs),
                        ("total_epochs", total_epochs)):
        if isinstance(value, bool) or int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if total_epochs < 1:
        raise ValueError(f"total_epochs must be >= 1, got {total_epochs}")
    if not heads_epochs <= all_epochs <= total_epochs:
        raise ValueError(f"need heads_epochs <= all_epochs <= total_epochs, got "
                         f"{heads_epochs}, {all_epochs}, {total_epochs}")
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0, got {lr!r}")
    if not lr_drop > 0:
        raise ValueError(f"lr_drop must be > 0, got {lr_drop!r}")
    stages = []
    start = 0
    for layers, until, rate in (("heads", heads_epochs, lr), ("all", all_epochs, lr),
                                ("all", total_epochs, lr / lr_drop)):
        if until > start:
            stages.append(Stage(layers, int(until), float(rate)))
            start = until
    return stages


def remaining_stages(stages, epoch):
    """The stages still to run when ``epoch`` epochs are finished (``model.epoch``).

    A stage ending at or before ``epoch`` is done; the first remaining stage is the one
    training resumes in, with that stage's layers and learning rate.

    Raises:
        ValueError: ``epoch`` is negative.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return [s for s in stages if s.until_epoch > epoch]


# ------------------------------------------------------------------------- arguments
#: The data flags' texts (``cliargs.coco_parser``), then the files that replace --dataset.
DATA_TEXTS = (
    "Train Siamese Mask R-CNN on a COCO one-shot split (paper §5.1).",
    "COCO root: annotations/instances_{train,val}<year>.json and images in {train,val}<year>/",
    "one-shot split S1..S4: its 20 held-out categories are never trained on; 'all': no "
    "held-out categories, all 80 are trained on (paper Table 1)")
FILE_FLAGS = {
    "--train-annotations": "training instances JSON (instead of --dataset)",
    "--train-images": "training image folder (instead of --dataset)",
    "--val-annotations": "validation instances JSON (instead of --dataset)",
    "--val-images": "validation image folder (instead of --dataset)",
}


def build_parser(prog=None):
    """The command-line parser (the flags of ``samples/coco/train_siamese.py``);
    ``prog`` names the program in messages (default: the script's name)."""
    parser, data = coco_parser(prog, *DATA_TEXTS, FILE_FLAGS)
    model = parser.add_argument_group("model")
    model.add_argument("--preset", choices=["paper", "small"], default="paper",
                       help="configuration preset (default paper: 1024² query, 192² reference)")
    model.add_argument("--backbone", choices=["resnet50", "resnet101", "tiny"], default="resnet50",
                       help="backbone; 'tiny' is a few-layer CNN with 128² images for CPU "
                            "smoke runs (default resnet50)")
    model.add_argument("--weights", default=None,
                       help="'last' (resume the newest run in --logs that has a checkpoint), "
                            "a checkpoint of this model, or a pretrained file loaded by layer name (e.g. an "
                            "ImageNet-687 ResNet-50 or Keras' ResNet-50 'notop' h5). "
                            "Default: random initialisation")
    model.add_argument("--exclude", action="append", default=None, metavar="LAYER_REGEX",
                       help="layers not to load from --weights (repeatable; regex on layer names)")
    model.add_argument("--logs", default="logs", help="run directory root (default ./logs)")
    dist = parser.add_argument_group("hardware")
    dist.add_argument("--gpus", type=int, default=1,
                      help="GPUs on this machine (MirroredStrategy when > 1; default 1)")
    add_multi_worker_arguments(dist)
    dist.add_argument("--images-per-gpu", type=int, default=None,
                      help="images per GPU (default: the preset's 3); batch = this x replicas")
    dist.add_argument("--mixed-precision", nargs="?", const="auto", default=None,
                      choices=["auto", "mixed_float16", "mixed_bfloat16"],
                      help="mixed precision (float32 weights, losses, box decoding, NMS and "
                           "matching distance): mixed_float16 with dynamic loss scaling on "
                           "GPUs, mixed_bfloat16 on TPUs and recent CPUs; 'auto' (the default "
                           "when given without a value) picks mixed_float16 if a GPU is visible, "
                           "else mixed_bfloat16")
    sched = parser.add_argument_group("schedule (epochs of --steps-per-epoch steps)")
    sched.add_argument("--steps-per-epoch", type=int, default=1000, help="default 1000")
    sched.add_argument("--validation-steps", type=int, default=50,
                       help="validation batches after every epoch (0: none; default 50)")
    sched.add_argument("--heads-epochs", type=int, default=PAPER_HEADS_EPOCHS,
                       help=f"train the heads only up to this epoch (default {PAPER_HEADS_EPOCHS})")
    sched.add_argument("--all-epochs", type=int, default=PAPER_ALL_EPOCHS,
                       help=f"then all layers up to this epoch at --lr (default {PAPER_ALL_EPOCHS})")
    sched.add_argument("--total-epochs", type=int, default=PAPER_TOTAL_EPOCHS,
                       help=f"then all layers up to this epoch at --lr/10 (default {PAPER_TOTAL_EPOCHS})")
    sched.add_argument("--lr", type=float, default=None,
                       help="learning rate (default: the preset's, 0.02)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of weight initialisation and data sampling (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--config-override", action="append", default=[], metavar="KEY=VALUE",
                        help="set any configuration value after the preset and the options "
                             "above, e.g. TRAIN_BN=True or TRAIN_ROIS_PER_IMAGE=64 (repeatable; "
                             "VALUE is a Python literal, else a string)")
    return parser


def parse_overrides(items):
    """``{"KEY": value}`` of ``--config-override KEY=VALUE`` items (VALUE a Python literal,
    else a string).

    Raises:
        ValueError: an item without ``=`` or with a key that is not UPPER_CASE.
    """
    import ast
    out = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not key.isupper():
            raise ValueError(f"--config-override {item!r}: expected KEY=VALUE with an UPPER_CASE key")
        try:
            out[key] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            out[key] = text.strip()
    return out


def check_args(parser, args):
    """Reject inconsistent arguments with a clear message naming the flag and value.

    Raises:
        SystemExit: (status 2, via ``parser.error``) missing data paths, files or folders
            not found, non-positive counts, an impossible schedule or learning rate, or a
            ``--logs`` folder that cannot be written (checked before any data are read),
            or with ``--multi-worker`` a ``TF_CONFIG`` that does not describe a cluster
            (see ``cluster.read_tf_config``; the result is kept as ``args.cluster``).
    """
    if args.dataset is None and (args.train_annotations is None or args.train_images is None):
        parser.error("give --dataset DIR, or both --train-annotations FILE and --train-images DIR")
    if (args.val_annotations is None) != (args.val_images is None):
        parser.error("give both --val-annotations and --val-images (or neither)")
    for name in ("train_annotations", "val_annotations"):
        require_file(parser, getattr(args, name), flag_name(name) + ": annotation")
    for name in ("train_images", "val_images", "dataset"):
        path = getattr(args, name)
        if path is not None and not os.path.isdir(path):
            parser.error(f"--{name.replace('_', '-')}: folder not found: {path}")
    if args.weights not in (None, "last") and not os.path.isfile(args.weights):
        if args.weights == "imagenet":
            parser.error("--weights imagenet: weights cannot be downloaded here; pass the path "
                         "of a local ImageNet(-687) backbone file")
        require_file(parser, args.weights, "--weights: weights")
    require_at_least(parser, args, 1, "gpus", "steps_per_epoch", "images_per_gpu")
    require_at_least(parser, args, 0, "validation_steps")
    try:
        schedule_stages(args.heads_epochs, args.all_epochs, args.total_epochs, args.lr or 0.02)
    except ValueError as err:
        parser.error(f"schedule: {err}")
    if args.lr is not None and not args.lr > 0:
        parser.error(f"--lr must be > 0, got {args.lr}")
    args.cluster = check_tf_config(parser, args.multi_worker)  # before --logs is created
    try:
        ensure_writable_dir(args.logs, "--logs folder")
    except UnwritableOutputError as err:
        parser.error(str(err))
    try:
        overrides = parse_overrides(args.config_override)
        if overrides:
            siamese_config("paper", **overrides)
    except ValueError as err:
        parser.error(str(err))


# ------------------------------------------------------------------------- pieces
def add_multi_worker_arguments(parser):
    """``--multi-worker`` and ``--worker-start-timeout`` (read by :func:`make_strategy`), for
    this script and ``samples/coco/coco.py`` alike."""
    parser.add_argument("--multi-worker", action="store_true",
                        help="MultiWorkerMirroredStrategy over the machines of TF_CONFIG")
    parser.add_argument("--worker-start-timeout", type=float, default=DEFAULT_START_TIMEOUT,
                        metavar="SECONDS",
                        help="with --multi-worker: give up (naming the machines that do not "
                             f"answer; exit status 137) when not all have started after this long (default "
                             f"{DEFAULT_START_TIMEOUT:g}; 0 waits forever)")


def make_strategy(args):
    """``MultiWorkerMirroredStrategy`` for ``--multi-worker``, else None (the model then uses
    ``MirroredStrategy`` over ``GPU_COUNT`` GPUs, or the default strategy for one).

    ``TF_CONFIG`` was checked by :func:`check_args` (``args.cluster``); without
    ``--multi-worker`` a ``TF_CONFIG`` is ignored, with a warning.
    """
    if not args.multi_worker:
        if os.environ.get("TF_CONFIG", "").strip():
            log.warning("TF_CONFIG is set but --multi-worker was not given: training on this "
                        "machine only")
        return None
    if args.gpus != 1:
        log.warning("--gpus is ignored with --multi-worker: each machine's replicas are the "
                    "GPUs it sees")
    if not os.environ.get("TF_CONFIG", "").strip():
        log.warning("--multi-worker without TF_CONFIG: training on this machine only")
    else:
        print(f"--multi-worker: this process is {describe_task(args.cluster)}; every machine "
              f"waits here until all {args.cluster.workers} have started (--worker-start-timeout "
              f"{args.worker_start_timeout:g} s)", flush=True)
    return multi_worker_strategy(args.cluster, args.worker_start_timeout)


def build_config(args, replicas=None):
    """The ``SiameseConfig`` of the arguments; ``replicas`` (the strategy's replica count,
    for multi-worker) sets ``GPU_COUNT`` so that ``BATCH_SIZE`` is the global batch.
    ``--backbone tiny`` applies the ``smoke`` preset's changes (see :mod:`.presets`).

    Raises:
        ValueError: an invalid configuration value (from ``Config``).
    """
    overrides = {"GPU_COUNT": int(replicas or args.gpus),
                 "STEPS_PER_EPOCH": args.steps_per_epoch,
                 "VALIDATION_STEPS": args.validation_steps,
                 "SEED": args.seed}
    if args.images_per_gpu is not None:
        overrides["IMAGES_PER_GPU"] = args.images_per_gpu
    if args.lr is not None:
        overrides["LEARNING_RATE"] = args.lr
    if args.mixed_precision:
        overrides["MIXED_PRECISION"] = mixed_precision_policy(args.mixed_precision)
    if args.backbone == "tiny":
        # the "smoke" preset's changes: small's structure at 128² with tiny_backbone
        overrides.update(preset_changes("smoke"))
    else:
        overrides["BACKBONE"] = args.backbone
    overrides.update(parse_overrides(args.config_override))
    return siamese_config(args.preset, **overrides)


def mixed_precision_policy(choice):
    """The Keras dtype policy of ``--mixed-precision CHOICE``: ``auto`` is ``mixed_float16``
    when TensorFlow sees a GPU, else ``mixed_bfloat16``."""
    if choice != "auto":
        return choice
    import tensorflow as tf  # TensorFlow only once training is asked for
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


def weights_fingerprint(model):
    """SHA-256 of all the model's weights (float32 bytes, in layer order): equal on every
    worker of a multi-machine run whose replicas stayed in sync."""
    import hashlib

    import numpy as np
    digest = hashlib.sha256()
    for w in model.keras_model.weights:
        digest.update(np.ascontiguousarray(np.asarray(w, dtype=np.float32)).tobytes())
    return digest.hexdigest()


def load_split_dataset(dataset_dir, subset, year, annotation_file, image_dir, split):
    """A prepared ``OneShotCocoDataset`` with one-shot split ``split`` (1-4 or "all") applied.

    Raises:
        FileNotFoundError: the annotation file or image folder does not exist.
        ValueError: the annotation file is not a valid COCO instances file (named).
    """
    dataset = OneShotCocoDataset()
    dataset.load_coco(dataset_dir=dataset_dir, subset=subset, year=year,
                      annotation_file=annotation_file, image_dir=image_dir)
    dataset.set_split(split)
    dataset.prepare()
    return dataset


def load_datasets(args):
    """``(train, val)`` datasets; ``val`` is None when no validation data are given.

    Raises:
        FileNotFoundError: an annotation file or image folder does not exist.
        ValueError: an invalid annotation file, or no training image holds a training
            category of the split.
    """
    train = load_split_dataset(args.dataset, "train", args.year, args.train_annotations,
                               args.train_images, args.split)
    val = None
    if args.val_annotations is not None or args.dataset is not None:
        val = load_split_dataset(args.dataset, "val", args.year, args.val_annotations,
                                 args.val_images, args.split)
    if not train.query_image_ids():
        raise ValueError(f"the training set has no image with a reference-able training "
                         f"category of split {split_label(args.split)}")
    return train, val


def load_initial_weights(model, weights, exclude=None):
    """Load ``weights`` into ``model``: ``"last"`` resumes the newest checkpoint (strict, sets
    epoch and run directory); a path is loaded by layer name, layers whose shapes differ
    (e.g. another model's class heads) are skipped with a warning. Returns the path or None.

    Raises:
        FileNotFoundError: ``"last"`` without any checkpoint in the model's directory.
        ValueError: no layer name of the file matches the model.
    """
    if weights is None:
        return None
    if weights == "last":
        try:
            path = model.find_last()
        except FileNotFoundError as err:
            raise FileNotFoundError(f"--weights last: {err}") from None
        model.load_weights(path, by_name=True)
        print(f"--weights last: resuming run {model.log_dir} from {os.path.basename(path)} "
              f"(after epoch {model.epoch}; the newest run of {model.model_dir} with a checkpoint)")
        return path
    report = model.load_weights(weights, by_name=True, exclude=exclude, skip_mismatch=True)
    from .mrcnn.weights import check_load_report  # imports Keras: only when loading
    check_load_report(report, weights, log)
    return weights


# ------------------------------------------------------------------------- main
def main(argv=None, prog=None):
    """Parse ``argv`` (default ``sys.argv[1:]``) and train; returns ``{"log_dir", "epoch",
    "stages", "history"}`` (the stages actually run).

    Raises:
        SystemExit: bad arguments (status 2, see :func:`check_args`).
        FileNotFoundError: missing data or ``--weights last`` without a checkpoint.
        ValueError: invalid data or weights (see :func:`load_datasets`,
            :func:`load_initial_weights`).
        FloatingPointError: (``TrainingDiverged``) a loss or weight became NaN or infinite;
            the message names the last good checkpoint, which ``--weights last`` resumes.
    """
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    check_args(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    strategy = make_strategy(args)  # first: MultiWorkerMirroredStrategy must precede other TF work
    # TensorFlow work starts here, after the strategy exists
    import keras
    from .siamese import SiameseMaskRCNN

    keras.utils.set_random_seed(args.seed)
    config = build_config(args, replicas=strategy.num_replicas_in_sync if strategy else None)
    train_set, val_set = load_datasets(args)
    several = strategy is not None and args.cluster.workers > 1
    with lost_worker_outside_steps(several, "while the model was built",
                                   restart="with the same command as before (nothing of this run was written)"):
        # Every worker resolves run directory and --weights last in --logs (storage shared by
        # the machines); only the chief writes there (see mrcnn.training).
        model = SiameseMaskRCNN("training", config, model_dir=args.logs, strategy=strategy)
        load_initial_weights(model, args.weights, exclude=args.exclude)
    stages = schedule_stages(args.heads_epochs, args.all_epochs, args.total_epochs,
                             config.LEARNING_RATE)
    if several:
        with lost_worker_outside_steps(several, "before the first step"):
            check_same_start(strategy, start_signature(
                model.epoch, weights_fingerprint(model), config.to_dict(),
                run_settings(stages, train_set, args)), args.cluster)
    todo = remaining_stages(stages, model.epoch)
    summary = train_set.index_summary()
    print(f"training set: {summary['pairs']} (query, category) pairs in {summary['images']} images; "
          f"{summary['same_image_reference_pairs']} of them take the reference from the query itself "
          f"(the category has no usable instance in another image); annotations dropped on load: "
          f"{summary['dropped_annotations'].get('invalid', 0)} invalid, "
          f"{summary['dropped_annotations'].get('degenerate', 0)} degenerate")
    if getattr(config, "MIXED_PRECISION", None):
        print(f"mixed precision: {config.MIXED_PRECISION} (weights, losses, box decoding and NMS "
              f"in float32)")
    if config.TRAIN_BN:
        print("BatchNorm: trained" + (f", statistics synchronised over the {config.GPU_COUNT} replicas"
                                      if config.GPU_COUNT > 1 else ""))
    print(f"split {split_label(args.split)}: {len(train_set.train_class_ids)} training categories, "
          f"{len(train_set.oneshot_class_ids)} held out; batch {config.BATCH_SIZE}; "
          f"starting after epoch {model.epoch}; stages to run: "
          + (", ".join(f"{s.layers} to epoch {s.until_epoch} at lr {s.learning_rate:g}" for s in todo)
             or "none (already finished)"))
    history = []
    for stage in todo:
        # (a worker lost during a step is reported by the training loop itself)
        with lost_worker_outside_steps(several, f"while stage '{stage.layers}' was set up"):
            history += model.train(train_set, val_set if args.validation_steps > 0 else None,
                                   learning_rate=stage.learning_rate, epochs=stage.until_epoch,
                                   layers=stage.layers, steps_per_epoch=args.steps_per_epoch,
                                   validation_steps=args.validation_steps, verbose=0 if args.quiet else 1)
    fingerprint = weights_fingerprint(model)
    if several:
        with lost_worker_outside_steps(several, "after the last step (the chief's checkpoints are complete)"):
            finish_together(strategy)
    print(f"finished at epoch {model.epoch}; weights sha256 {fingerprint}", flush=True)
    return {"log_dir": model.log_dir, "epoch": model.epoch, "stages": todo, "history": history,
            "weights_sha256": fingerprint}


def run_settings(stages, train_set, args):
    """What a run's machines must share besides the config: the schedule, the split's
    training categories and the training images (by id, not path: machines may mount the
    data at different paths)."""
    return {"stages": [list(stage) for stage in stages], "split": str(args.split),
            "train_class_ids": sorted(int(c) for c in train_set.train_class_ids),
            "images": sorted(int(i) for i in train_set.query_image_ids()),
            "steps_per_epoch": args.steps_per_epoch, "validation_steps": args.validation_steps}


def run(argv=None, prog=None):
    """:func:`main` for the command line: a missing file or a bad value ends the program
    with ``error: <message>`` on stderr (exit status 1) instead of a traceback, and so does a
    diverging run (the message names the last good checkpoint); argument errors and an
    unwritable ``--logs`` exit with status 2 (argparse). Multi-machine training that loses a
    worker ends every surviving worker with ``error: lost another worker ...`` and exit
    status 3. When not all machines of the cluster start within ``--worker-start-timeout``,
    a watchdog prints ``error: --multi-worker: not all N machines ...`` and kills the
    process (exit status 137; see ``cluster.multi_worker_strategy``). A loader error that stops the input
    pipeline (``DataPipelineError``, naming the image, its file and the original exception)
    ends training with ``error: ...`` and exit status 1.

    Raises:
        SystemExit: with the statuses above.
        RuntimeError: an unexpected runtime error (a bug) is re-raised with its traceback.
    """
    try:
        main(argv, prog)
    except (FileNotFoundError, ValueError, FloatingPointError) as error:
        sys.exit(f"error: {error}")
    except RuntimeError as error:
        from .mrcnn.pipeline import DataPipelineError  # imports TensorFlow: only when needed
        from .mrcnn.training import WorkerLostError
        if isinstance(error, DataPipelineError):
            sys.exit(f"error: {error}")
        if not isinstance(error, WorkerLostError):
            raise
        print(f"error: {error}", file=sys.stderr, flush=True)
        # TensorFlow's collective threads may still wait on the lost peer: leave at once.
        os._exit(3)
    return 0
