"""The main job on embedded data: train a small Siamese Mask R-CNN on a CPU, evaluate it.

``run_demo`` trains from scratch on the procedural one-shot dataset (or Omniglot scenes),
then runs the evaluation protocol of ``siamese_mask_rcnn.evaluation`` on held-out scenes:
one-shot categories (never used as references or labels in training), background
(training) categories and the random-boxes baseline. It writes to ``out_dir``:
``summary.json``, ``table.txt``, COCO results, per-category plots, ``examples/*.png``
(Fig.-5 style pictures), the checkpoints and the config.

The training length is a number of steps, so the same seed gives the same checkpoint and
the same table on every machine (up to float rounding of its CPU): the scenes, the
reference bank, the example order, the weight initialisation and the in-graph sampling all
come from the seed, and TensorFlow runs a fixed number of threads (``threads``) whatever
the machine has. Before training, every training scene is rendered once (in ``workers``
processes) and kept in memory with a bank of references per training category, so the
training step reads its examples from memory. One progress bar covers the whole job.
"""
import functools
import json
import logging
import math
import os
import pathlib
import time

import numpy as np

from . import evaluation
from .cliargs import require_at_least
from .config import SiameseConfig, siamese_config
from .mrcnn.fileio import ensure_writable_dir, safe_filename
from .predict import config_beside

log = logging.getLogger(__name__)

#: Training steps of the main job (batch 4); see the README's "Benchmarks" section.
DEFAULT_STEPS = 3000
#: TensorFlow intra-op threads, the fastest setting measured on 2 cores (with 2 inter-op
#: threads; see the README's "Benchmarks").
DEFAULT_THREADS = 2
#: TensorFlow inter-op threads (concurrent ops).
INTER_OP_THREADS = 2
#: Rendered references per training category in the reference bank.
REFERENCES_PER_CLASS = 16
#: Processes that render the training scenes and the reference bank.
RENDER_WORKERS = 2
#: Scenes of the independent composer (``datasets.transfer``) on which the one-shot
#: categories are evaluated again ("transfer"); 0 skips that evaluation.
TRANSFER_SCENES = 150
#: Training scenes on which ``--verify-keep`` calibrates the verification threshold.
VERIFY_CALIBRATION_SCENES = 200
#: Learning-rate warm-up: linear from 10 % of the rate over this many steps (at most a
#: tenth of the run), then a cosine decay to 1 % of the rate at the last step.
WARMUP_STEPS = 200

#: Seconds of each unit of work on the machine of the README's benchmark (2-core AMD
#: EPYC): the progress bar's weights, so that its ETA covers every stage ("epoch": the
#: validation steps and the checkpoint after each epoch; "build": the model and the
#: tracing of the training step).
WORK_SECONDS = {"scene": 0.005, "reference": 0.0006, "build": 20.0, "step": 0.17,
                "epoch": 0.5, "query": 0.008, "category": 0.018, "report": 4.0, "example": 0.6,
                "transfer_scene": 0.12}


#: Config settings the demo uses for one dataset before the caller's overrides. Omniglot: the
#: mask loss weighs 3 (the paper's 1 for the embedded data). Measured (docs/transfer.md): with
#: randomised rendering the masks of thin strokes fail at weight 1 (one-shot segmentation 6.0
#: mAP50 against 23.3 detection; a mask head twice as wide did no better, 4.7) and hold at 3
#: (17.1 against 21.3): in 3,000 steps the mask head of the small model is under-trained, not
#: too small.
DATASET_OVERRIDES = {
    "omniglot": {"LOSS_WEIGHTS": {**SiameseConfig.LOSS_WEIGHTS, "mrcnn_mask_loss": 3.0}},
}


def dataset_overrides(dataset, overrides=None):
    """The demo's config overrides for ``dataset``: :data:`DATASET_OVERRIDES` of that dataset
    (if any), then ``overrides``: a key given there wins, except ``LOSS_WEIGHTS``, merged loss by
    loss over the dataset's (or the config's) weights (``{"mrcnn_mask_loss": 2.0}`` changes only
    the mask loss's weight)."""
    base = DATASET_OVERRIDES.get(dataset, {})
    merged = {**base, **dict(overrides or {})}
    if isinstance((overrides or {}).get("LOSS_WEIGHTS"), dict):
        merged["LOSS_WEIGHTS"] = {**base.get("LOSS_WEIGHTS", SiameseConfig.LOSS_WEIGHTS),
                                  **overrides["LOSS_WEIGHTS"]}
    return merged


def demo_config(image_size=128, reference_size=32, preset="demo", **overrides):
    """The CPU demo's settings: the ``demo`` preset (a few-layer backbone and narrow heads on
    128² scenes with 32² references; see :mod:`siamese_mask_rcnn.presets`).

    Args:
        image_size: query side in pixels (``IMAGE_MIN_DIM`` = ``IMAGE_MAX_DIM``).
        reference_size: reference side in pixels (``TARGET_MIN_DIM`` = ``TARGET_MAX_DIM``).
        preset: the preset to start from (``"demo"``, or ``"tiny"`` for the test suite).
        **overrides: config keys applied last.

    Raises:
        ValueError: unknown preset, unknown config key or invalid value.
    """
    sizes = dict(IMAGE_MIN_DIM=image_size, IMAGE_MAX_DIM=image_size,
                 TARGET_MIN_DIM=reference_size, TARGET_MAX_DIM=reference_size)
    return siamese_config(preset, **{**sizes, **overrides})


def make_datasets(dataset="synthetic", data_dir=None, num_train=2000, num_val=150, image_size=128,
                  seed=0, num_categories=400, cache_size=16, workers=1, rendering="paper"):
    """Training scenes and evaluation scenes of the embedded data (or Omniglot), as
    ``(train, val)`` prepared one-shot datasets of ``image_size``² pixel scenes.

    ``cache_size=None`` keeps every scene in memory, rendered on construction in
    ``workers`` processes (the main job's setting; the scenes do not depend on ``workers``).
    ``rendering``: ``"paper"`` (the fixed look), ``"randomised"`` (domain randomisation,
    :mod:`.datasets.randomised`) or ``"mixed"`` (the randomised layout for every scene, the
    randomised look for half of the scenes and references), for training and evaluation
    scenes alike.

    Raises:
        ValueError: unknown ``dataset`` or ``rendering``, or ``"omniglot"`` without ``data_dir``.
        FileNotFoundError: the Omniglot archives are missing from ``data_dir``.
    """
    options = dict(cache_size=cache_size, workers=workers)
    if dataset == "synthetic":
        from .datasets.synthetic import make_train_val
        return make_train_val(num_categories=num_categories, num_train=num_train, num_val=num_val,
                              image_size=image_size, seed=seed, rendering=rendering, **options)
    if dataset == "omniglot":
        from .datasets.omniglot import RANDOMISED_SCENE_OPTIONS, OmniglotOneShotDataset
        from .datasets.synthetic import RENDERINGS
        if not data_dir:
            raise ValueError("--dataset omniglot needs --data-dir (a directory with the Omniglot zip archives)")
        if rendering not in RENDERINGS:
            raise ValueError(f"unknown rendering {rendering!r}; choose one of {RENDERINGS}")
        if rendering != "paper":
            from .datasets.synthetic import MIXED_FRACTION
            options["scene_options"] = {**RANDOMISED_SCENE_OPTIONS,
                                        "randomise": True if rendering == "randomised" else MIXED_FRACTION}
        train = OmniglotOneShotDataset(data_dir, num_images=num_train, image_size=image_size, seed=2 * seed,
                                       **options)
        val = OmniglotOneShotDataset(data_dir, num_images=num_val, image_size=image_size, seed=2 * seed + 1,
                                     **options)
        return train, val
    raise ValueError(f"unknown dataset {dataset!r}: choose 'synthetic' or 'omniglot'")


def save_examples(model, dataset, class_ids, out_dir, count=4, seed=0, top_k=3):
    """Fig.-5-style pictures: query with the ``top_k`` highest-scoring detections for one
    held-out category, reference inset lower-left. Returns the PNG paths written.

    Raises:
        OSError: ``out_dir`` cannot be created or written.
    """
    import matplotlib.pyplot as plt
    from .mrcnn import visualize

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pairs = [(i, c) for i in dataset.image_ids for c in dataset.image_categories.get(i, []) if c in set(class_ids)]
    paths = []
    for k in rng.permutation(len(pairs))[:count]:
        image_id, class_id = pairs[int(k)]
        reference = dataset.sample_reference(class_id, rng, exclude_image_id=image_id)
        image = dataset.load_image(image_id)
        result = model.detect_embeddings(image, {class_id: model.embed_category([reference])})[class_id]
        keep = np.argsort(-result["scores"])[:top_k]
        fig = visualize.display_siamese_instances(
            reference, image, result["rois"][keep], result["masks"][:, :, keep], result["scores"][keep],
            title=f"one-shot: {dataset.class_names[class_id]} (top {len(keep)} of {len(result['scores'])})",
            figsize=(5, 5))
        path = out_dir / f"example_{len(paths)}_{safe_filename(dataset.class_names[class_id])}.png"
        visualize.save_figure(fig, path)
        plt.close(fig)
        paths.append(str(path))
    return paths


def evaluate_transfer(dataset, predict_fn, num_scenes, seed=0):
    """The one-shot categories of ``dataset`` evaluated on ``num_scenes`` scenes of the
    independent composer (:func:`.datasets.transfer.transfer_dataset_like`, scene seed
    ``seed``), with the same protocol (paper Section 5.2): references are crops of instances
    in other composer scenes.

    Returns ``{"one-shot": evaluation, "random boxes": evaluation}`` (dicts of
    :func:`evaluation.evaluate`).

    Raises:
        ValueError: ``dataset`` is neither the procedural data nor Omniglot scenes.
    """
    from .datasets.transfer import transfer_dataset_like

    transfer = transfer_dataset_like(dataset, num_images=num_scenes, seed=seed)
    classes = transfer.oneshot_class_ids
    return {"one-shot": evaluation.evaluate(transfer, predict_fn, classes, seed=seed, progress=False),
            "random boxes": evaluation.evaluate(transfer, evaluation.random_boxes_predictor(transfer, seed=seed),
                                                classes, seed=seed, progress=False)}


def format_transfer_table(rows, transfer_rows, dataset="synthetic"):
    """In-distribution and transfer mAP50 (%) side by side: one line per row label present
    in both (``"one-shot"``, ``"random boxes"``), boxes and masks, and the pair counts."""
    def cell(value):
        return "   n/a" if value is None or not math.isfinite(value) else f"{100 * value:6.1f}"

    lines = [f"one-shot mAP50 (%) on {dataset}: in-distribution scenes vs transfer scenes "
             f"(independent composer)",
             f"{'':14s}{'in-distribution':>22s}{'transfer':>22s}",
             f"{'':14s}{'bbox':>8s}{'segm':>7s}{'pairs':>7s}{'bbox':>8s}{'segm':>7s}{'pairs':>7s}",
             "-" * 58]
    for label in rows:
        if label not in transfer_rows:
            continue
        a, b = rows[label], transfer_rows[label]
        lines.append(f"{label:14s}  {cell(a['map50_bbox'])} {cell(a['map50_segm'])}{a['n_pairs']:7d}"
                     f"  {cell(b['map50_bbox'])} {cell(b['map50_segm'])}{b['n_pairs']:7d}")
    return "\n".join(lines)


def add_thread_arguments(parser):
    """Add ``--threads`` (TensorFlow intra-op threads: the threads one op such as a
    convolution splits over) and ``--inter-op-threads`` (ops run concurrently) to an
    ``argparse`` parser. Both default to TensorFlow's own choice (every core it sees); on a
    small machine ``--threads <cores> --inter-op-threads 2`` is the fastest measured
    (README, "Benchmarks")."""
    parser.add_argument("--threads", type=int, default=None,
                        help="TensorFlow intra-op threads (default: TensorFlow's, every core)")
    parser.add_argument("--inter-op-threads", type=int, default=None,
                        help="TensorFlow inter-op threads, ops run at once (default: TensorFlow's)")


def apply_thread_arguments(parser, args):
    """Apply ``--threads`` / ``--inter-op-threads`` (see :func:`add_thread_arguments`) before
    TensorFlow runs its first op. A value < 1 ends the program through ``parser.error``
    (exit status 2, naming the flag). Returns the ``(intra, inter)`` pair now in force
    (0 = TensorFlow's default)."""
    require_at_least(parser, args, 1, "threads", "inter_op_threads")
    import tensorflow as tf

    threading = tf.config.threading
    for value, setter, getter in ((args.threads, threading.set_intra_op_parallelism_threads,
                                   threading.get_intra_op_parallelism_threads),
                                  (args.inter_op_threads, threading.set_inter_op_parallelism_threads,
                                   threading.get_inter_op_parallelism_threads)):
        if value is None:
            continue
        try:
            setter(int(value))
        except RuntimeError:
            if getter() != int(value):
                log.warning("TensorFlow is already initialised with %d threads; %d not applied",
                            getter(), value)
    return threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads()


def configure_threads(threads, inter_op_threads=INTER_OP_THREADS):
    """Run TensorFlow's ops on ``threads`` threads (intra-op) and ``inter_op_threads``
    concurrent ops. Must run before TensorFlow executes its first op.

    A fixed count, rather than TensorFlow's default of every core it sees, keeps results
    identical across machines (reductions split work by thread count) and avoids
    oversubscription where a container sees more cores than it may use. Returns True if
    applied, False (with a warning) when TensorFlow was already initialised.

    Raises:
        ValueError: ``threads`` or ``inter_op_threads`` < 1.
    """
    import tensorflow as tf

    if int(threads) < 1 or int(inter_op_threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads} and {inter_op_threads}")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(inter_op_threads))
    except RuntimeError:
        current = (tf.config.threading.get_intra_op_parallelism_threads(),
                   tf.config.threading.get_inter_op_parallelism_threads())
        if current != (int(threads), int(inter_op_threads)):
            log.warning("TensorFlow is already initialised with %s intra-/inter-op threads; "
                        "--threads %d not applied", current, threads)
        return current == (int(threads), int(inter_op_threads))
    return True


def epochs_for_steps(steps, steps_per_epoch):
    """``(epochs, steps per epoch)`` running ``steps`` training steps in whole epochs of at
    most ``steps_per_epoch`` (evenly split; the total is rounded up to a multiple of the
    number of epochs when ``steps`` does not divide).

    Raises:
        ValueError: ``steps`` or ``steps_per_epoch`` < 1.
    """
    if int(steps) < 1 or int(steps_per_epoch) < 1:
        raise ValueError(f"steps and steps per epoch must be >= 1, got {steps}, {steps_per_epoch}")
    epochs = math.ceil(int(steps) / int(steps_per_epoch))
    return epochs, math.ceil(int(steps) / epochs)


def learning_rate_schedule(base_rate, steps, warmup_steps=WARMUP_STEPS):
    """The main job's learning rate per step: linear warm-up from ``base_rate / 10`` over
    ``min(warmup_steps, steps // 10)`` steps, then a cosine decay to ``base_rate / 100``
    at step ``steps`` (a Keras ``LearningRateSchedule`` of the optimizer's step count)."""
    import keras

    warmup = min(int(warmup_steps), int(steps) // 10)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=base_rate / 10.0 if warmup else base_rate,
        decay_steps=max(1, int(steps) - warmup), alpha=0.01,
        warmup_target=base_rate if warmup else None, warmup_steps=warmup)


class JobProgress:
    """One progress bar for the whole job: data, model, training, evaluation, report.

    Work is counted in :data:`WORK_SECONDS` units (seconds on the benchmark machine), so
    the bar's rate and ETA cover the remaining stages on any machine. ``enabled=False``
    shows nothing.
    """

    def __init__(self, total_units, enabled=True):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=round(total_units, 1), disable=not enabled, unit="work", mininterval=1.0,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]{postfix}")

    def stage(self, name):
        """Show the current stage's name (and clear the previous stage's postfix, e.g. the
        training loss while evaluating)."""
        self.bar.set_description_str(name, refresh=False)
        self.bar.set_postfix_str("", refresh=True)

    def advance(self, kind, count=1):
        """Count ``count`` units of work of ``kind`` (a key of :data:`WORK_SECONDS`)."""
        self.bar.update(round(WORK_SECONDS[kind] * count, 4))

    def close(self):
        """Fill and close the bar."""
        if self.bar.total is not None and self.bar.n < self.bar.total:
            self.bar.update(self.bar.total - self.bar.n)
        self.bar.close()


class _StepProgress:
    """Training callback: advances the job's bar per step and shows the loss."""

    def __init__(self, progress):
        self.progress = progress
        self.loss = 0.0
        self.seen = 0
        self.traced = False

    def on_train_batch_end(self, step, logs=None):
        if not self.traced:  # the first step also built the training graph
            self.traced = True
            self.progress.advance("build", 0.5)
        self.progress.advance("step")
        if logs and "loss" in logs:
            loss = float(logs["loss"])
            # the mean of the steps so far, then (after 50 steps) a running average over
            # about the last 50: a short run shows what history.jsonl records
            self.seen += 1
            weight = max(0.02, 1.0 / self.seen)
            self.loss = (1.0 - weight) * self.loss + weight * loss  # the first step: weight 1
            if step % 10 == 0:
                self.progress.bar.set_postfix_str(f"loss {self.loss:.3f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        self.progress.advance("epoch")


def _counting(predict_fn, progress):
    """``predict_fn`` that also advances the job's bar per query image and category."""
    @functools.wraps(predict_fn)
    def counted(image, references, *args, **kwargs):
        output = predict_fn(image, references, *args, **kwargs)
        progress.advance("query")
        progress.advance("category", len(references))
        return output
    return counted


#: What a training run records beside its checkpoints (``demo_run.json``), so an evaluation
#: of the checkpoint (``run_demo(weights=...)``) renders the same data.
RUN_RECORD = "demo_run.json"


def write_run_record(checkpoint, **record):
    """Write ``record`` (the data options of the run: dataset, rendering, seed, training
    scenes) as :data:`RUN_RECORD` beside ``checkpoint``, atomically."""
    from .mrcnn.fileio import atomic_write

    with atomic_write(os.path.join(os.path.dirname(os.path.abspath(checkpoint)), RUN_RECORD)) as tmp:
        pathlib.Path(tmp).write_text(json.dumps(record, indent=2) + "\n")


def checkpoint_epoch(checkpoint):
    """The epoch in a checkpoint's name (``mask_rcnn_demo_0030.h5`` → 30), or None."""
    import re

    found = re.search(r"_(\d{4})\.h5$", os.path.basename(checkpoint))
    return int(found.group(1)) if found else None


def load_run_config(weights, dataset="synthetic", rendering="paper", seed=0, verbose=1):
    """The inference config (``IMAGES_PER_GPU`` 1) of the demo checkpoint ``weights``, from
    the run's ``config.json`` beside it, checked against the data options of an evaluation.

    Raises:
        FileNotFoundError: ``weights`` or its ``config.json`` does not exist.
        ValueError: the ``config.json`` cannot be used; its ``SEED`` is not ``seed``; the run's
            :data:`RUN_RECORD` (if there) names another ``dataset``, ``rendering`` or ``seed``
            (the one-shot split and the scenes come from them).

    A checkpoint without :data:`RUN_RECORD` (written since ``demo --weights`` exists) has only
    its seed checked; with ``verbose`` that is printed.
    """
    from .predict import resolve_config

    if not os.path.isfile(weights):
        raise FileNotFoundError(f"weights file not found: {weights}" if not os.path.exists(weights)
                                else f"weights file is a directory, not an .h5 file: {weights}")
    path = config_beside(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config.json beside {weights} (a siamese-mrcnn demo checkpoint keeps "
                                "the run's config.json in its folder)")
    config = resolve_config(weights)
    wrong = []
    if int(config.SEED) != int(seed):
        wrong.append(f"seed {config.SEED} (given {seed}; pass --seed {config.SEED})")
    record_path = os.path.join(os.path.dirname(path), RUN_RECORD)
    if os.path.isfile(record_path):
        try:
            record = json.loads(pathlib.Path(record_path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"{record_path} cannot be read: {err}") from None
        given = {"dataset": dataset, "rendering": rendering, "seed": int(seed)}
        for key, value in given.items():
            if key in record and record[key] != value and not (key == "seed" and wrong):
                wrong.append(f"{key} {record[key]} (given {value}; pass --{key} {record[key]})")
    elif verbose:
        print(f"no {RUN_RECORD} beside {weights} (a run older than demo --weights): only its seed can be "
              f"checked; evaluating with --dataset {dataset} --rendering {rendering}, which must be those it was "
              "trained with")
    if wrong:
        raise ValueError(f"{weights} was trained with " + ", ".join(wrong) + ": its one-shot categories "
                         "and scenes are those of its run")
    return config


def _evaluation_work(val, eval_limit):
    """Work units of the evaluation stage (queries, categories, reports, pictures)."""
    image_ids = sorted(val.image_ids)[:eval_limit] if eval_limit else list(val.image_ids)
    pairs = sum(len(val.image_categories.get(i, [])) for i in image_ids)
    absent_images = len(image_ids)  # open-world search: every scene, 5 absent categories
    return (WORK_SECONDS["query"] * (2 * len(image_ids) + absent_images)
            + WORK_SECONDS["category"] * (pairs + 5 * absent_images)
            + 2 * WORK_SECONDS["report"] + 4 * WORK_SECONDS["example"])


def run_demo(out_dir="logs/demo", dataset="synthetic", data_dir=None, steps=DEFAULT_STEPS,
             minutes=None, num_train=2000, num_val=150, seed=0, eval_limit=None,
             config_overrides=None, verbose=1, threads=DEFAULT_THREADS,
             references_per_class=REFERENCES_PER_CLASS, workers=RENDER_WORKERS,
             steps_per_epoch=None, transfer_scenes=TRANSFER_SCENES, deterministic=True,
             rendering="paper", reference_loss=False, verify_keep=None, weights=None, known_margin=None):
    """Train for ``steps`` steps, evaluate (paper §5.2 protocol, §5.3 baseline), write the
    results; or, with ``weights``, evaluate a trained checkpoint without training.

    Args:
        steps: training steps (of ``IMAGES_PER_GPU`` query/reference pairs each), run in
            epochs of at most ``steps_per_epoch`` (default: the config's
            ``STEPS_PER_EPOCH``), a checkpoint after each.
        minutes: optional cap on the training time; the run then stops after the epoch
            that passes it and **its result depends on the machine** (printed).
        config_overrides: config keys applied on top of the ``demo`` preset and the
            dataset's :data:`DATASET_OVERRIDES` (Omniglot: mask loss weight 3; see
            :func:`dataset_overrides`: ``LOSS_WEIGHTS`` merge loss by loss; printed).
        threads: TensorFlow intra-op threads (see :func:`configure_threads`; None leaves
            TensorFlow's default).
        references_per_class: references rendered once per training category
            (0: render a fresh one for every training pair instead).
        workers: processes rendering the training scenes and references.
        transfer_scenes: scenes of the independent composer (:mod:`.datasets.transfer`:
            other canvases, backgrounds, colours, stroke widths, scales and density) on
            which the one-shot categories are evaluated again; the summary's
            ``"one-shot (transfer)"`` row and ``transfer_table.txt`` put it beside the
            in-distribution ``"one-shot"`` row. 0 skips it.
        verbose: 1 shows one progress bar for the whole job and the table; 0 is silent.
        deterministic: run TensorFlow's ops deterministically
            (``tf.config.experimental.enable_op_determinism``, for the rest of the process).
            Without it, multi-threaded kernels may add in another order from run to run; over
            3,000 steps that rounding grows (a near-tied proposal flips, other ROIs are
            sampled) into runs of the same seed that differ by several mAP50 points. With it,
            the same seed gives the same checkpoint and table on the same kind of CPU; another
            CPU kind (e.g. AVX2 vs AVX-512 kernels) rounds differently and lands elsewhere in
            that spread.
        rendering: how the training and in-distribution evaluation scenes are drawn:
            ``"paper"`` (one fixed look), ``"randomised"`` (beyond the paper: domain
            randomisation, :mod:`.datasets.randomised`, so the model matches objects rather
            than the renderer's look) or ``"mixed"`` (the randomised layout for every scene,
            the randomised look for half of the scenes and references), for the procedural
            data and Omniglot alike.
        reference_loss: train with the reference classification loss (beyond the paper;
            :mod:`.reference_loss`): ``REFERENCE_CLASSES`` is set to the data's number of
            category ids once the data exist.
        verify_keep: verify detections against the reference (beyond the paper;
            :mod:`.verification`): after training, the similarity threshold that keeps this
            share (0 < verify_keep ≤ 1) of the training categories' objects on
            :data:`VERIFY_CALIBRATION_SCENES` training scenes is calibrated, used by the
            evaluation and written as ``VERIFY_MIN_SIMILARITY`` into the run's ``config.json``
            (so ``siamese-mrcnn predict`` verifies too). None (default): no verification.
        known_margin: known-category rejection (beyond the paper; :mod:`.verification`):
            detections closer by more than this margin (a difference of cosines in [-2, 2]) to
            a known category's prototype than to the reference are dropped; needs the reference
            classifier (``reference_loss``, or ``weights`` trained with it); written as
            ``VERIFY_KNOWN_MARGIN`` into a trained run's ``config.json``. None (default): off.
        weights: a checkpoint of an earlier run (``.h5`` with the run's ``config.json``
            beside it): no training; its model (the ``config.json``, whose ``SEED`` must be
            ``seed``) is evaluated on the scenes of ``dataset``, ``rendering``, ``seed``
            and ``num_val`` exactly as after training, with this call's inference options
            (``verify_keep``, ``known_margin``; a ``VERIFY_MIN_SIMILARITY`` or
            ``VERIFY_KNOWN_MARGIN`` in the ``config.json`` is not used,
            and the ``config.json`` is not changed). So one trained model is measured under
            several inference options in minutes instead of a retraining each. Training
            arguments (``steps``, ``minutes``, ``config_overrides``, ``reference_loss`` ...)
            are then ignored; the run's ``demo_run.json`` (written beside every checkpoint
            since this option exists) is compared with ``dataset``, ``rendering`` and
            ``seed``.

    Returns the summary dict (mAP50 per row as fractions, steps, timings, output paths),
    also written as ``demo_summary.json``.

    Raises:
        ValueError: unknown dataset or config key (see :func:`make_datasets`,
            :func:`demo_config`), ``steps < 1``, ``minutes <= 0``, ``transfer_scenes < 0`` or
            ``verify_keep`` outside (0, 1]; ``known_margin`` outside [-2, 2] or without the
            reference classifier; ``weights`` whose run had another seed, dataset
            or rendering, or whose ``config.json`` cannot be used.
        FileNotFoundError: Omniglot archives missing; ``weights`` or its ``config.json`` missing.
        UnwritableOutputError: (an ``OSError``) ``out_dir`` cannot be created or written;
            checked first.
    """
    if minutes is not None and float(minutes) <= 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    if int(transfer_scenes) < 0:
        raise ValueError(f"transfer_scenes must be >= 0, got {transfer_scenes}")
    if verify_keep is not None and not 0.0 < float(verify_keep) <= 1.0:
        raise ValueError(f"verify_keep must be in (0, 1] (the share of true matches verification keeps), "
                         f"got {verify_keep}")
    from .verification import check_known_margin
    known_margin = check_known_margin(known_margin)
    if known_margin is not None and not reference_loss and weights is None:
        raise ValueError("known_margin / --known-margin (known-category rejection) needs the reference classifier: train with "
                         "reference_loss=True (siamese-mrcnn demo --reference-loss)")
    from .datasets.synthetic import RENDERINGS
    if rendering not in RENDERINGS:
        raise ValueError(f"unknown rendering {rendering!r}; choose one of {RENDERINGS}")
    t0 = time.time()
    if weights is not None:  # a refused checkpoint leaves no output folder behind
        trained_config = load_run_config(weights, dataset=dataset, rendering=rendering, seed=seed,
                                         verbose=verbose)
        if known_margin is not None and not int(getattr(trained_config, "REFERENCE_CLASSES", 0)):
            raise ValueError(f"known_margin / --known-margin (known-category rejection) needs the reference classifier, and "
                             f"{weights} was trained without it (REFERENCE_CLASSES 0 in its config.json; "
                             "siamese-mrcnn demo --reference-loss trains one)")
        steps, minutes, reference_loss = 1, None, False  # nothing is trained
    out_dir = pathlib.Path(ensure_writable_dir(out_dir, "demo output folder"))  # before any work
    overrides = dataset_overrides(dataset, config_overrides)
    base = demo_config(**{**overrides, "SEED": seed})  # checks every value first
    if dataset in DATASET_OVERRIDES and verbose and weights is None:
        print(f"{dataset}: mask loss weight {float(base.LOSS_WEIGHTS.get('mrcnn_mask_loss', 1.0)):g} "
              f"(demo.DATASET_OVERRIDES; the paper's is 1)")
    epochs, per_epoch = epochs_for_steps(steps, steps_per_epoch or base.STEPS_PER_EPOCH)
    config = demo_config(**{**overrides, "SEED": seed, "STEPS_PER_EPOCH": per_epoch})
    total_steps = epochs * per_epoch
    if weights is not None:
        config, epochs, total_steps = trained_config, 0, 0
    if total_steps != int(steps) and verbose and weights is None:
        print(f"{steps} steps rounded up to {total_steps} ({epochs} epochs of {per_epoch})")
    if minutes is not None and verbose:
        print(f"training stops after {minutes:g} minutes at most: the result then depends on the "
              "machine's speed (without --minutes it does not)")

    def job_work(train_classes, eval_work):
        """The whole job's work units (the bar's total)."""
        return (WORK_SECONDS["scene"] * (num_train + num_val)
                + WORK_SECONDS["reference"] * train_classes * int(references_per_class) * (weights is None)
                + WORK_SECONDS["build"] + WORK_SECONDS["step"] * total_steps
                + WORK_SECONDS["epoch"] * epochs + eval_work
                + (WORK_SECONDS["transfer_scene"] + 2 * WORK_SECONDS["query"]
                   + 3 * WORK_SECONDS["category"]) * int(transfer_scenes)
                + (WORK_SECONDS["query"] * min(VERIFY_CALIBRATION_SCENES, num_train)
                   if verify_keep is not None else 0.0))

    # a first estimate (3/4 of 400 categories train, 150 scenes evaluated), exact once the data exist
    progress = JobProgress(job_work(300, 50 * WORK_SECONDS["report"] / 4), enabled=bool(verbose))
    progress.stage("rendering scenes")
    train, val = make_datasets(dataset, data_dir, num_train, num_val, config.IMAGE_MAX_DIM, seed,
                               cache_size=None, workers=workers, rendering=rendering)
    if reference_loss and weights is None:  # the classifier's size is the data's, known only now
        config = demo_config(**{**overrides, "SEED": seed, "STEPS_PER_EPOCH": per_epoch,
                                "REFERENCE_CLASSES": int(train.num_classes)})
    bank_count = len(train.train_class_ids) * int(references_per_class) if weights is None else 0
    progress.bar.total = round(job_work(len(train.train_class_ids), _evaluation_work(val, eval_limit)), 1)
    progress.advance("scene", num_train + num_val)
    if references_per_class and weights is None:
        progress.stage("rendering references")
        train.build_reference_bank(train.train_class_ids, int(references_per_class),
                                   config.TARGET_MIN_DIM, config.TARGET_MAX_DIM, seed=seed)
        progress.advance("reference", bank_count)
    data_seconds = time.time() - t0

    progress.stage("building the model")
    if threads is not None:
        configure_threads(threads)
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    import keras
    from .siamese import SiameseMaskRCNN  # imports TensorFlow: only when a model is built

    keras.utils.set_random_seed(int(seed))  # weight initialisation and in-graph sampling
    if weights is None:
        model = SiameseMaskRCNN("training", config, model_dir=str(out_dir / "checkpoints"))
        progress.advance("build", 0.5)
        progress.stage("training")
        t_train = time.time()
        history = model.train(train, val, learning_rate_schedule(config.LEARNING_RATE, total_steps),
                              epochs=epochs, layers="all", verbose=0,
                              max_seconds=None if minutes is None else 60.0 * float(minutes),
                              custom_callbacks=[_StepProgress(progress)])
        train_seconds = time.time() - t_train
        checkpoint = model.find_last()
        write_run_record(checkpoint, dataset=dataset, rendering=rendering, seed=seed, train_scenes=num_train)
        steps_done, epochs_done = model.epoch * config.STEPS_PER_EPOCH, model.epoch
        inference_config = demo_config(**{**overrides, "SEED": seed, "IMAGES_PER_GPU": 1})
    else:
        checkpoint, history, train_seconds = os.path.abspath(weights), [], 0.0
        epochs_done = checkpoint_epoch(checkpoint)
        steps_done = None if epochs_done is None else epochs_done * int(config.STEPS_PER_EPOCH)
        for key, flag in (("VERIFY_MIN_SIMILARITY", "--verify-keep"), ("VERIFY_KNOWN_MARGIN", "--known-margin")):
            saved = getattr(config, key, None)
            if saved is not None and verbose:
                print(f"{config_beside(checkpoint)}: {key} {saved:g} not used (this evaluation "
                      f"uses {flag} of the command)")
            setattr(config, key, None)
        inference_config = config  # load_run_config's: one image per call

    progress.stage("evaluating")
    inference = SiameseMaskRCNN("inference", inference_config, model_dir=str(out_dir / "checkpoints"))
    inference.load_weights(checkpoint, by_name=True)
    if known_margin is not None:
        inference.config.VERIFY_KNOWN_MARGIN = known_margin
        config.VERIFY_KNOWN_MARGIN = known_margin
        if weights is None:  # predict rejects too
            config.save(config_beside(checkpoint))
    verification = None
    if verify_keep is not None:
        from .verification import calibrate_min_similarity
        calibration_scenes = min(VERIFY_CALIBRATION_SCENES, len(train.image_ids))
        threshold, count = calibrate_min_similarity(inference, train, train.train_class_ids, keep=verify_keep,
                                                    scenes=calibration_scenes, seed=seed)
        progress.advance("query", calibration_scenes)
        inference.config.VERIFY_MIN_SIMILARITY = threshold
        config.VERIFY_MIN_SIMILARITY = threshold
        if weights is None:  # predict verifies too; an evaluation of a checkpoint leaves its run as it was
            config.save(config_beside(checkpoint))
        verification = {"keep": float(verify_keep), "min_similarity": round(threshold, 4), "objects": count,
                        "scenes": calibration_scenes}
    predict = _counting(inference.predict_fn(), progress)
    rows = {
        "background": evaluation.evaluate(val, predict, val.train_class_ids, seed=seed, limit=eval_limit,
                                          progress=False),
        "one-shot": evaluation.evaluate(val, predict, val.oneshot_class_ids, seed=seed, limit=eval_limit,
                                        progress=False),
        "random boxes": evaluation.evaluate(val, evaluation.random_boxes_predictor(val, seed=seed),
                                            val.oneshot_class_ids, seed=seed, limit=eval_limit, progress=False),
    }
    progress.advance("report")
    # Open-world search (beyond the paper): every one-shot category searched in every scene,
    # present or not (5 random absent ones per scene), so detections on scenes without the
    # category are false positives.
    open_world = evaluation.evaluate_open_world(
        val, predict, val.oneshot_class_ids, seed=seed, limit=eval_limit, max_absent_per_image=5,
        score_threshold=inference.config.DETECTION_MIN_CONFIDENCE, progress=False)
    open_world_summary = evaluation.open_world_summary(open_world)
    transfer_rows, transfer_seconds = {}, 0.0
    if transfer_scenes:
        progress.stage("evaluating transfer")
        t_transfer = time.time()
        transfer_rows = evaluate_transfer(val, predict, int(transfer_scenes), seed)
        transfer_seconds = time.time() - t_transfer
        progress.advance("transfer_scene", int(transfer_scenes))
    progress.stage("writing results")
    info = {"dataset": dataset, "rendering": rendering, "train_scenes": len(train.image_ids),
            "eval_scenes": len(val.image_ids), "evaluated_only": weights is not None,
            "epochs_trained": epochs_done, "steps": steps_done,
            "steps_requested": None if weights is not None else int(steps),
            "time_capped": minutes is not None, "threads": threads,
            "references_per_class": int(references_per_class),
            "data_seconds": round(data_seconds, 1), "train_seconds": round(train_seconds, 1),
            "seconds_per_step": round(train_seconds / max(1, steps_done or 0), 4) if weights is None else None,
            "checkpoint": checkpoint,
            "final_loss": history[-1]["loss"] if history else None, "verification": verification,
            "known_margin": known_margin,
            "config": config.to_dict()}
    data_label = dataset if rendering == "paper" else f"{dataset}, {rendering} rendering"
    title = f"one-shot instance segmentation on {data_label} (mAP50, %)"
    written = evaluation.write_outputs(out_dir, rows, config=info, title=title)
    written.update(evaluation.write_open_world(open_world, out_dir, prefix="oneshot_open_world"))
    if transfer_rows:
        transfer_table = format_transfer_table(rows, transfer_rows, data_label)
        written["transfer_table"] = out_dir / "transfer_table.txt"
        written["transfer_table"].write_text(transfer_table + "\n")
    progress.advance("report")
    examples = save_examples(inference, val, val.oneshot_class_ids, out_dir / "examples", seed=seed)
    progress.advance("example", len(examples))
    progress.close()
    summary = {label: {"map50_bbox": r["map50_bbox"], "map50_segm": r["map50_segm"], "n_pairs": r["n_pairs"]}
               for label, r in rows.items()}
    for label, r in transfer_rows.items():
        summary[f"{label} (transfer)"] = {"map50_bbox": r["map50_bbox"], "map50_segm": r["map50_segm"],
                                          "n_pairs": r["n_pairs"]}
    summary["transfer"] = {"scenes": int(transfer_scenes), "seconds": round(transfer_seconds, 1)}
    summary.update({"open_world": open_world_summary,
                    "absent_false_positives_per_pair": open_world_summary["fp_per_absent_pair"],
                    "total_seconds": round(time.time() - t0, 1), "examples": examples,
                    "outputs": {k: str(v) for k, v in written.items()}, **{k: info[k] for k in
                    ("dataset", "rendering", "evaluated_only", "epochs_trained", "steps", "time_capped",
                     "data_seconds",
                     "train_seconds",
                     "seconds_per_step", "checkpoint", "verification", "known_margin")}})
    (out_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if verbose:
        print(evaluation.format_table(rows, title=title))
        if verification is not None:
            where = ("written to the run's config.json as VERIFY_MIN_SIMILARITY" if weights is None else
                     f"for siamese-mrcnn predict: --min-similarity {verification['min_similarity']:.4f}")
            print(f"verified: detections less similar to the reference than {verification['min_similarity']:.3f} "
                  f"dropped (keeps {verification['keep'] * 100:.0f} % of {verification['objects']} training "
                  f"objects; {where})")
        if known_margin is not None:
            where = ("written to the run's config.json as VERIFY_KNOWN_MARGIN" if weights is None else
                     f"for siamese-mrcnn predict: --known-margin {known_margin:g}")
            print(f"known-category rejection: detections closer to a known category than to the reference by "
                  f"more than {known_margin:g} dropped ({where})")
        print(evaluation.format_open_world(open_world))
        if transfer_rows:
            print(transfer_table)
        if weights is None:
            print(f"{steps_done} training steps in {train_seconds:.0f} s ({train_seconds / max(1, steps_done):.3f} "
                  f"s/step); results in {out_dir} ({summary['total_seconds']:.0f} s in total)")
            print(f"checkpoint (for siamese-mrcnn predict --weights): {checkpoint}")
        else:
            trained = "" if steps_done is None else f" ({steps_done} training steps)"
            print(f"evaluated {checkpoint}{trained} without training; results in {out_dir} "
                  f"({summary['total_seconds']:.0f} s in total)")
        if minutes is not None:
            print("note: --minutes capped the training; the numbers depend on this machine's speed")
    return summary
