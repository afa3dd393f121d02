"""Where do a checkpoint's detections go on transfer scenes (issue #17)? Run by hand.

Usage::

    python benchmarks/transfer_errors.py --weights RUN/mask_rcnn_demo_0030.h5 \\
        --dataset omniglot --data-dir ../shared/data/omniglot --rendering randomised

For a trained ``siamese-mrcnn demo`` checkpoint (``config.json`` beside it), on the one-shot
categories, with the protocol's pairs (paper Section 5.2; the demo's evaluation scenes and
seed), four rows, each with one-shot mAP50 (boxes / masks) and
:func:`siamese_mask_rcnn.evaluation.error_breakdown` (what every detection hit: the target, a
duplicate, an instance of another category, a near miss with IoU 0.3-0.5, background; target
and any-object recall; how often the top detection is a target; any-object recall by box
size, by the number of instances in the query and by overlap with another instance,
``evaluation.format_recall_by``; and the recall of the RPN's proposals before the heads,
``evaluation.proposal_recall``):

1. the in-distribution evaluation scenes (``--rendering``, the training's), as the demo;
2. the independent composer's scenes (``datasets.transfer``, the demo's transfer column);
3. the composer's scenes with references cropped from composer scenes holding one instance
   and nothing else (``present_categories`` 1, ``instances`` 1, ``distractors`` 0): clean
   references in the composer's look;
4. the in-distribution scenes with references cropped from the composer's scenes.

Rows 3 and 4 separate the references from the query scenes: if the transfer gap were the
cluttered reference crops, row 3 would recover and row 4 would fall (their categories are
those with an instance in the reference scenes; with few ``--scenes`` some have none). A
checkpoint whose run record (``demo_run.json``) names another dataset, rendering or seed is
refused, as ``siamese-mrcnn demo --weights`` refuses it. Prints the CPU it ran on.
"""
import argparse
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no TensorFlow start-up and grappler warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import demo_checkpoint  # noqa: E402  (the benchmarks' shared checks and loading)

#: Most scenes per set (all are rendered up front and kept in memory).
MAX_SCENES = 10000

#: Composer ranges of the clean-reference scenes (row 3): one instance alone.
ALONE = {"present_categories": (1, 1), "instances": (1, 1), "distractors": (0, 0)}


def references_from(query_dataset, source_dataset):
    """Make ``query_dataset`` draw its references from ``source_dataset`` (same class ids):
    crops as ``source_dataset.sample_references`` cuts them, kept as images (their info has
    no box, so the protocol does not re-cut them from the query dataset's images)."""
    def sample_references(class_id, k, rng, exclude_image_id=None, return_info=False):
        crops, infos = source_dataset.sample_references(class_id, k, rng, None, return_info=True)
        infos = [dict(info, bbox=None, source="other dataset") for info in infos]
        return (crops, infos) if return_info else crops

    query_dataset.sample_references = sample_references
    return query_dataset


def check_args(parser, args):
    """Every argument error before TensorFlow starts (``parser.error``: exit 2)."""
    if not 1 <= args.scenes <= MAX_SCENES:
        parser.error(f"--scenes must be in [1, {MAX_SCENES}] (every scene is kept in memory), got {args.scenes}")
    demo_checkpoint.check_dataset_arguments(parser, args)
    demo_checkpoint.check_arguments(parser, args)  # --seed, and --weights a demo checkpoint


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    demo_checkpoint.add_arguments(parser)  # --weights, --scenes (per set), --seed
    parser.add_argument("--dataset", choices=["synthetic", "omniglot"], default="synthetic")
    parser.add_argument("--data-dir", help="Omniglot archives (--dataset omniglot)")
    parser.add_argument("--rendering", choices=["paper", "randomised", "mixed"], default="paper",
                        help="the in-distribution scenes' rendering (the checkpoint's training one)")
    args = parser.parse_args(argv)
    check_args(parser, args)

    from siamese_mask_rcnn import demo, evaluation
    from siamese_mask_rcnn.datasets.transfer import transfer_dataset_like

    logging.getLogger("siamese_mask_rcnn.evaluation.protocol").setLevel(logging.ERROR)
    _, val, model = demo_checkpoint.load(parser, args, 1, dataset=args.dataset, data_dir=args.data_dir,
                                         rendering=args.rendering)
    predict = model.predict_fn()
    transfer = transfer_dataset_like(val, num_images=args.scenes, seed=args.seed)
    alone = transfer_dataset_like(val, num_images=2 * len(val.oneshot_class_ids), seed=args.seed + 1,
                                  ranges=ALONE)
    print(f"weights: {args.weights}; {args.dataset}, {args.rendering} rendering, {args.scenes} scenes, "
          f"seed {args.seed}; one-shot categories", flush=True)

    rows = [("in-distribution", val, None),
            ("transfer", transfer, None),
            ("transfer, references alone in composer scenes",
             transfer_dataset_like(val, num_images=args.scenes, seed=args.seed), alone),
            ("in-distribution, references from transfer scenes",
             demo.make_datasets(args.dataset, args.data_dir, 1, args.scenes, 128, args.seed, cache_size=None,
                                rendering=args.rendering)[1], transfer)]
    for label, dataset, source in rows:
        t0 = time.time()
        classes = [c for c in dataset.oneshot_class_ids if source is None or c in source.category_index]
        if source is not None:
            references_from(dataset, source)
        try:
            scores = evaluation.evaluate(dataset, predict, classes, seed=args.seed, progress=False)
            breakdown = evaluation.error_breakdown(dataset, predict, classes, seed=args.seed, progress=False)
            proposals = evaluation.proposal_recall(dataset, model.proposal_fn(), classes, seed=args.seed,
                                                   progress=False)
        except ValueError as err:  # e.g. no category with a pair in a handful of scenes
            print(f"{label}: not evaluated ({err})", flush=True)
            continue
        if not breakdown["n_pairs"]:
            print(f"{label}: no evaluation pair in {args.scenes} scenes (raise --scenes)", flush=True)
            continue
        print(f"{label}: mAP50 {100 * scores['map50_bbox']:.1f} / {100 * scores['map50_segm']:.1f} "
              f"({time.time() - t0:.0f} s)\n    {evaluation.format_error_breakdown(breakdown)}\n"
              f"{evaluation.format_recall_by(breakdown, '    ')}\n"
              f"    {evaluation.format_proposal_recall(proposals)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
