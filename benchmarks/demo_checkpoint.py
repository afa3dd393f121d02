"""What the benchmarks on demo checkpoints share: a ``siamese-mrcnn demo`` checkpoint checked before
TensorFlow starts, and one fixed reference embedding per one-shot category.

Used by ``open_world_calibration.py``, ``open_world_confusions.py``,
``open_world_verification.py``, ``transfer_errors.py``, ``reference_source.py`` and
``pretrained_backbone.py`` (run by hand); the last two also run the demo through :func:`run_demo`.
"""
import os
import sys

import numpy as np


def add_arguments(parser, threshold=False):
    """The options the benchmarks take: ``--weights``, ``--scenes`` and ``--seed``; with
    ``threshold`` also ``--threshold`` (the score at or above which a detection counts)."""
    parser.add_argument("--weights", required=True, help="a demo checkpoint (.h5) with config.json beside it")
    parser.add_argument("--scenes", type=int, default=150, help="evaluation scenes (default 150)")
    parser.add_argument("--seed", type=int, default=0)
    if threshold:
        parser.add_argument("--threshold", type=float, default=0.5,
                            help="score at or above which a detection counts (default 0.5, the demo's)")


def parse(doc, argv=None, threshold=False):
    """``(parser, args)``: a parser described by the first paragraph of ``doc`` with
    :func:`add_arguments`, its arguments parsed from ``argv`` and checked
    (:func:`check_arguments`; exits with status 2 on a bad one, before TensorFlow starts)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    add_arguments(parser, threshold=threshold)
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    return parser, args


def check_arguments(parser, args):
    """Exit through ``parser.error`` (status 2) on ``--scenes`` < 1, ``--seed`` < 0, a
    ``--threshold`` outside (0, 1] or a bad ``--weights`` (:func:`check_demo_checkpoint`);
    before TensorFlow starts."""
    if args.scenes < 1:
        parser.error(f"--scenes must be >= 1, got {args.scenes}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    threshold = getattr(args, "threshold", None)
    if threshold is not None and not 0.0 < threshold <= 1.0:
        parser.error(f"--threshold must be in (0, 1], got {threshold}")
    check_demo_checkpoint(parser, args.weights)


def check_demo_checkpoint(parser, weights):
    """Exit through ``parser.error`` (status 2, naming the file) unless ``weights`` is an HDF5
    weights file with the run's ``config.json`` beside it whose values are usable. Needs no
    TensorFlow, so a wrong path is reported at once."""
    from siamese_mask_rcnn.predict import InputError, check_demo_checkpoint as check

    try:
        check(weights)
    except InputError as err:
        parser.error(f"--weights: {err}")


def check_dataset_arguments(parser, args):
    """Exit through ``parser.error`` (status 2) on a ``--data-dir`` without ``--dataset
    omniglot``, or ``--dataset omniglot`` without a ``--data-dir`` holding the Omniglot
    archives; before TensorFlow starts."""
    if args.data_dir and args.dataset != "omniglot":
        parser.error("--data-dir is for --dataset omniglot (the embedded data need none)")
    if args.dataset == "omniglot":
        from siamese_mask_rcnn.datasets.omniglot import find_archives
        if not args.data_dir:
            parser.error("--dataset omniglot needs --data-dir")
        try:
            find_archives(args.data_dir)
        except FileNotFoundError as err:
            parser.error(f"--data-dir: {err}")


def load(parser, args, num_train, min_confidence=None, dataset="synthetic", data_dir=None, rendering="paper"):
    """``(train, val, model)``: ``num_train`` training scenes and ``args.scenes`` evaluation
    scenes of ``dataset`` (the embedded data, or Omniglot from ``data_dir``; ``rendering``;
    seed ``args.seed``, as the demo makes them) and the checkpoint ``args.weights`` for
    inference with score floor ``min_confidence`` (None: its config's), on the demo's fixed
    threads; prints the machine. Exits through ``parser.exit(2, ...)`` when the data or the
    checkpoint cannot be loaded, or the checkpoint's run record (``demo_run.json``) names
    another dataset, rendering or seed (``demo.load_run_config``)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_inference import machine_description
    from siamese_mask_rcnn import demo
    from siamese_mask_rcnn.predict import InputError, load_model

    demo.configure_threads(demo.DEFAULT_THREADS)
    try:  # the run's record (demo_run.json, if there) must name this data, as demo --weights checks
        demo.load_run_config(args.weights, dataset=dataset, rendering=rendering, seed=args.seed)
    except (FileNotFoundError, ValueError) as err:
        if not hasattr(args, "dataset"):  # a benchmark of the embedded data's paper look only
            err = f"{err}; {parser.prog} evaluates the embedded data in the paper look only"
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    try:
        train, val = demo.make_datasets(dataset, data_dir, num_train, args.scenes, 128, args.seed,
                                        cache_size=None, rendering=rendering)
        model = load_model(args.weights, min_confidence=min_confidence)
    except (FileNotFoundError, InputError, ValueError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    print(f"machine: {machine_description()}")
    if getattr(args, "threshold", None) is not None:
        print(f"weights: {args.weights}; {args.scenes} evaluation scenes, threshold {args.threshold}, "
              f"seed {args.seed}")
    return train, val, model


def one_shot_embeddings(model, dataset, seed):
    """``{class_id: embedding}`` for every one-shot category of ``dataset`` that has a
    reference: one reference per category, drawn from ``default_rng([seed, 7, class_id])``
    (as a user would give one example), embedded by ``model.embed_category``."""
    embeddings = {}
    for c in (int(c) for c in dataset.oneshot_class_ids):
        try:
            crop = dataset.sample_reference(c, np.random.default_rng([seed, 7, c]))
        except (ValueError, LookupError):
            continue
        embeddings[c] = model.embed_category([crop])
    return embeddings


def run_demo(script, **kwargs):
    """``demo.run_demo(**kwargs)``; returns 0, or 2 after printing ``<script>: error: ...`` for
    the user errors ``siamese-mrcnn demo`` reports the same way (an unwritable output folder,
    missing Omniglot archives, a bad option value) instead of a traceback."""
    from siamese_mask_rcnn import demo
    from siamese_mask_rcnn.mrcnn.fileio import UnwritableOutputError

    try:
        demo.run_demo(**kwargs)
    except (UnwritableOutputError, FileNotFoundError, ValueError) as err:
        print(f"{script}: error: {err}", file=sys.stderr)
        return 2
    return 0
