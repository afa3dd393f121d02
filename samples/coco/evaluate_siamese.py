"""Evaluate Siamese Mask R-CNN (or a baseline) on COCO with the one-shot protocol.

Paper §5.2 / spec §5: for every image and every category of the chosen set present in it,
references are drawn from other images; predictions get the reference's category;
pycocotools gives AP50 per category and mAP50 (boxes and masks). Optional analyses: the
confusion matrix (§6.4), the effect of clutter (§6.5) and a false-positive test with
categories absent from the query.

Examples::

    # the paper's one-shot numbers for split S1, 5 runs, trained weights
    python samples/coco/evaluate_siamese.py --dataset /data/coco --subset val --year 2017 \\
        --split 1 --weights logs/siamese_coco.h5 --runs 5 --classes both

    # the random-boxes baseline and a ground-truth sanity check need no weights
    python samples/coco/evaluate_siamese.py --dataset /data/coco --split 2 --model random
    python samples/coco/evaluate_siamese.py --annotations ann.json --images imgs/ --model gt

Outputs go to ``--out`` (default ``logs/eval_<timestamp>/``): COCO results JSON (RLE
masks), ``summary.json``, ``table.txt``, per-category AP50 plots and, if requested,
confusion / clutter / absent-category files. The table is printed.
"""
import argparse
import datetime
import logging
import os
import sys

if __package__ in (None, ""):
    # allow `python samples/coco/evaluate_siamese.py` from a source checkout
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

os.environ.setdefault("MPLBACKEND", "Agg")

#: Table row labels per model and category set.
ROW_LABELS = {
    ("siamese", "oneshot"): "one-shot", ("siamese", "background"): "background",
    ("random", "oneshot"): "random boxes", ("random", "background"): "random boxes (background)",
    ("gt", "oneshot"): "ground truth (one-shot)", ("gt", "background"): "ground truth (background)",
}


def build_parser():
    """The command-line parser."""
    parser = argparse.ArgumentParser(
        description="One-shot evaluation of Siamese Mask R-CNN on COCO (paper §5.2).")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", help="COCO root with annotations/ and <subset><year>/")
    data.add_argument("--year", default="2017", help="COCO year (default 2017)")
    data.add_argument("--subset", default="val", help="COCO subset (default val)")
    data.add_argument("--annotations", help="instances JSON file (instead of --dataset)")
    data.add_argument("--images", help="image folder (instead of --dataset)")
    data.add_argument("--split", type=int, choices=[1, 2, 3, 4], default=1,
                      help="one-shot split S1..S4 (default 1)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=["siamese", "gt", "random"], default="siamese",
                       help="siamese (needs --weights), gt (ground truth as predictions) "
                            "or random (the random-boxes baseline)")
    model.add_argument("--weights", help="trained Siamese Mask R-CNN weights (.h5)")
    model.add_argument("--preset", default="small", choices=["small", "paper"],
                       help="model configuration preset (default small)")
    model.add_argument("--allow-partial", action="store_true",
                       help="evaluate even if --weights leaves some layers of the model unfilled")
    protocol = parser.add_argument_group("protocol")
    protocol.add_argument("--runs", type=int, default=1,
                          help="evaluation runs with seeds seed, seed+1, ... (paper: 5)")
    protocol.add_argument("--seed", type=int, default=0, help="seed of the first run")
    protocol.add_argument("--shots", type=int, default=1, help="references per category (k-shot)")
    protocol.add_argument("--limit", type=int, help="evaluate only the first N query images")
    protocol.add_argument("--classes", choices=["oneshot", "background", "both"],
                          default="oneshot", help="which categories to evaluate")
    analyses = parser.add_argument_group("analyses")
    analyses.add_argument("--confusion", action="store_true",
                          help="confusion matrix (paper §6.4, Fig. 7)")
    analyses.add_argument("--clutter", action="store_true",
                          help="mAP50 vs number of instances (paper §6.5, Fig. 8)")
    analyses.add_argument("--absent", action="store_true",
                          help="false positives when the category is absent from the query")
    analyses.add_argument("--score-threshold", type=float, default=0.7,
                          help="score above which a detection counts in --absent (default 0.7)")
    parser.add_argument("--out", help="output folder (default logs/eval_<timestamp>/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def check_args(parser, args):
    """Reject inconsistent arguments with a clear message (exits via argparse)."""
    if args.dataset is None and (args.annotations is None or args.images is None):
        parser.error("give --dataset DIR, or both --annotations FILE and --images DIR")
    if args.model == "siamese" and not args.weights:
        parser.error("--model siamese needs --weights FILE (or use --model gt / random)")
    if args.weights and not os.path.isfile(args.weights):
        parser.error(f"weights file not found: {args.weights}")
    for name in ("runs", "shots"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")


def load_dataset(args):
    """The COCO dataset with the requested split applied."""
    from siamese_mask_rcnn.datasets.coco import OneShotCocoDataset
    dataset = OneShotCocoDataset()
    dataset.load_coco(dataset_dir=args.dataset, subset=args.subset, year=args.year,
                      annotation_file=args.annotations, image_dir=args.images)
    dataset.set_split(args.split)
    dataset.prepare()
    return dataset


def make_predictor_factory(args, dataset):
    """``seed -> predict_fn`` for the chosen model (the model is built only once)."""
    from siamese_mask_rcnn import evaluation
    if args.model == "gt":
        predictor = evaluation.ground_truth_predictor(dataset)
        return lambda seed: predictor
    if args.model == "random":
        return lambda seed: evaluation.random_boxes_predictor(dataset, seed)
    from siamese_mask_rcnn.siamese import build_predictor  # imports TensorFlow
    predictor = build_predictor(args.weights, preset=args.preset, allow_partial=args.allow_partial)
    return lambda seed: predictor


def category_sets(args, dataset):
    """``[(set name, class ids)]`` to evaluate, one-shot first."""
    sets = []
    if args.classes in ("oneshot", "both"):
        sets.append(("oneshot", list(dataset.oneshot_class_ids)))
    if args.classes in ("background", "both"):
        sets.append(("background", list(dataset.train_class_ids)))
    return sets


def default_out_dir():
    """``logs/eval_<timestamp>``."""
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    return os.path.join("logs", f"eval_{stamp}")


def main(argv=None):
    """Run the evaluation; returns the summary dict (row label → numbers)."""
    from siamese_mask_rcnn import evaluation
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    logging.basicConfig(level=logging.WARNING)
    dataset = load_dataset(args)
    factory = make_predictor_factory(args, dataset)
    progress = not args.quiet
    summary = {}
    for set_name, class_ids in category_sets(args, dataset):
        summary[ROW_LABELS[(args.model, set_name)]] = evaluation.evaluate_runs(
            dataset, None, class_ids, runs=args.runs, seed=args.seed, shots=args.shots,
            limit=args.limit, progress=progress, predict_fn_for_seed=factory)
    first_set, first_ids = category_sets(args, dataset)[0]
    first = summary[ROW_LABELS[(args.model, first_set)]]["evaluations"][0]
    confusion = clutter = absent = None
    if args.confusion:
        confusion = evaluation.confusion_matrix(dataset, None, first_ids, evaluation=first)
    if args.clutter and first["coco_gt"] is not None:
        clutter = evaluation.clutter_analysis(dataset, first["results"], first["coco_gt"],
                                              first["class_ids"])
    if args.absent:
        absent = evaluation.absent_category_test(
            dataset, factory(args.seed), first_ids, seed=args.seed,
            score_threshold=args.score_threshold, limit=args.limit, shots=args.shots,
            progress=progress)
    title = (f"model {args.model}, split S{args.split}, {args.shots}-shot, "
             f"{args.runs} run(s) from seed {args.seed}"
             + (f", first {args.limit} images" if args.limit else ""))
    out_dir = args.out or default_out_dir()
    config = {k: v for k, v in vars(args).items()}
    config["out"] = out_dir
    evaluation.write_outputs(out_dir, summary, confusion=confusion, clutter=clutter,
                             absent=absent, config=config, title=title)
    print(evaluation.format_table(summary, title=title), end="")
    if absent is not None:
        print(f"absent categories: {absent['mean_false_positives_per_image']:.2f} false "
              f"positives per image (score >= {absent['score_threshold']}), "
              f"{100 * absent['fraction_images_with_false_positive']:.1f}% of images with one")
    print(f"outputs written to {out_dir}")
    return summary


if __name__ == "__main__":
    try:
        main()
    except ValueError as error:  # bad weights, annotations or images: the message names the file
        print(f"evaluate_siamese.py: error: {error}", file=sys.stderr)
        sys.exit(2)
