"""The one-shot evaluation as a command line (paper §5.2, §5.3, §6.4, §6.5).

The logic of ``samples/coco/evaluate_siamese.py`` and ``siamese-mrcnn evaluate`` (same
flags): for every image and every category of the chosen set present in it, references
are drawn from other images; predictions get the reference's category; pycocotools gives
AP50 per category and mAP50 (boxes and masks). Optional analyses: the confusion matrix
(§6.4), the effect of clutter (§6.5) and a false-positive test with categories absent
from the query. Models: a trained Siamese Mask R-CNN (imports TensorFlow), the ground
truth (a sanity check) or the random-boxes baseline (§5.3).

By default every row is the mean of 5 runs with different reference draws (``--runs``),
as the official release reported its numbers, and references are drawn from every non-crowd
instance (``--reference-min-size`` 0, as in the paper and the release).

Outputs go to ``--out`` (default ``logs/eval_<timestamp>/``): COCO results JSON (RLE
masks; the annotation file's own image and category ids, so plain pycocotools scores them
against that file), ``summary.json``, ``table.txt``, per-category AP50 plots and, if
requested, confusion / clutter / absent-category files. The table is printed.
"""
import datetime
import logging
import math
import os
import sys

from ..cliargs import coco_parser, require_at_least, require_file
from ..datasets.coco import SPLIT_ALL, split_label
from ..mrcnn.config import DETECTION_SCORE_RULES
from ..mrcnn.fileio import UnwritableOutputError, ensure_writable_dir, removed_if_failed
from ..presets import PRESET_NAMES
from ..train_coco import load_split_dataset
from .analyses import (absent_category_test, clutter_analysis, confusion_matrix, error_breakdown,
                       format_error_breakdown, format_recall_by)
from .baselines import ground_truth_predictor, random_boxes_predictor
from .openworld import RESULTS_FILE, evaluate_open_world, format_open_world, write_open_world
from .protocol import evaluate_runs
from .report import format_table, write_outputs

#: Table row labels per model and category set.
ROW_LABELS = {
    ("siamese", "oneshot"): "one-shot", ("siamese", "background"): "background",
    ("random", "oneshot"): "random boxes", ("random", "background"): "random boxes (background)",
    ("gt", "oneshot"): "ground truth (one-shot)", ("gt", "background"): "ground truth (background)",
    ("siamese", "all"): "all categories", ("random", "all"): "random boxes (all categories)",
    ("gt", "all"): "ground truth (all categories)",
}


#: The data flags' texts (``cliargs.coco_parser``), then the annotation files that replace --dataset.
DATA_TEXTS = ("One-shot evaluation of Siamese Mask R-CNN on COCO (paper §5.2).",
              "COCO root with annotations/ and <subset><year>/",
              "one-shot split S1..S4, or 'all' (no held-out categories: every category present is "
              "evaluated, --classes is ignored; paper Table 1)")
FILE_FLAGS = {"--annotations": "instances JSON file (instead of --dataset)",
              "--images": "image folder (instead of --dataset)"}


def build_parser(prog=None):
    """The parser of ``samples/coco/evaluate_siamese.py`` (``prog``: its name in messages)."""
    parser, data = coco_parser(prog, *DATA_TEXTS, FILE_FLAGS)
    data.add_argument("--subset", default="val", help="COCO subset (default val)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=["siamese", "gt", "random"], default="siamese",
                       help="siamese (needs --weights), gt (ground truth as predictions) "
                            "or random (the random-boxes baseline)")
    model.add_argument("--weights", help="trained Siamese Mask R-CNN weights (.h5)")
    model.add_argument("--preset", default=None, choices=list(PRESET_NAMES),
                       help="model configuration preset when no config.json is beside the "
                            "weights (default: inferred from the weights' shapes)")
    model.add_argument("--allow-partial", action="store_true",
                       help="evaluate even if --weights leaves some layers of the model unfilled")
    detections = parser.add_argument_group("detections (--model siamese; default: the config's)")
    detections.add_argument("--min-confidence", type=float, metavar="P",
                            help="detection score floor 0..1 (DETECTION_MIN_CONFIDENCE)")
    detections.add_argument("--score-rule", choices=list(DETECTION_SCORE_RULES),
                            help="argmax (matterport: a ROI the background outscores is dropped) or "
                                 "foreground (every ROI scored by its match probability, kept from "
                                 "--min-confidence on; DETECTION_SCORE_RULE)")
    detections.add_argument("--max-detections", type=int, metavar="N",
                            help="detections per (query, category) (DETECTION_MAX_INSTANCES)")
    protocol = parser.add_argument_group("protocol")
    protocol.add_argument("--protocol", choices=["paper", "open-world"], default="paper",
                          help="paper: search each query only for categories present in it "
                               "(paper §5.2); open-world: search every category in every query, "
                               "so detections on images without the category are false positives")
    protocol.add_argument("--max-absent-per-image", type=int, default=None,
                          help="open-world: search at most N random absent categories per query "
                               "(seeded; present ones always); default: all")
    protocol.add_argument("--runs", type=int, default=5,
                          help="evaluation runs with seeds seed, seed+1, ..., each with new "
                               "reference draws; rows give their mean and 95%% interval "
                               "(default 5, the official release's protocol)")
    protocol.add_argument("--reference-min-size", type=int, default=0, metavar="PX",
                          help="draw references only from instances whose shorter box side "
                               "has at least PX pixels (default 0: every non-crowd instance, "
                               "as in the paper and the release); smaller instances stay "
                               "ground truth")
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
    analyses.add_argument("--errors", action="store_true",
                          help="what each detection hit: the target, a duplicate, another "
                               "category's instance, a near miss (IoU 0.3-0.5) or background "
                               "(beyond the paper; first run, first category set of --classes; "
                               "errors.json)")
    analyses.add_argument("--score-threshold", type=float, default=0.7,
                          help="score above which a detection counts in --absent and in the "
                               "open-world false positives per absent pair (default 0.7, the "
                               "paper preset's DETECTION_MIN_CONFIDENCE)")
    parser.add_argument("--out", help="output folder (default logs/eval_<timestamp>/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    from ..demo import add_thread_arguments
    add_thread_arguments(parser)
    return parser


def check_args(parser, args):
    """Reject inconsistent arguments with a clear message.

    Raises:
        SystemExit: (status 2, via ``parser.error``) no data, ``--model siamese`` without
            weights, a weights file not found, a non-positive count, a ``--score-threshold``
            that is not finite, a ``--min-confidence`` outside [0, 1], detection flags
            (``--min-confidence``, ``--score-rule``, ``--max-detections``) with ``--model gt`` or
            ``random``, or an output folder
            (``--out``, default ``logs/eval_<timestamp>``) that cannot be written: checked
            (and created) here, before any prediction, so no evaluation is lost.
    """
    if args.dataset is None and (args.annotations is None or args.images is None):
        parser.error("give --dataset DIR, or both --annotations FILE and --images DIR")
    if args.model == "siamese" and not args.weights:
        parser.error("--model siamese needs --weights FILE (or use --model gt / random)")
    require_file(parser, args.weights, "weights")
    require_at_least(parser, args, 1, "runs", "shots", "limit", "max_detections")
    if args.min_confidence is not None and not 0.0 <= args.min_confidence <= 1.0:  # nan fails too
        parser.error(f"--min-confidence must be in [0, 1], got {args.min_confidence}")
    if args.model != "siamese":
        given = [flag for flag, value in (("--min-confidence", args.min_confidence),
                                          ("--score-rule", args.score_rule),
                                          ("--max-detections", args.max_detections)) if value is not None]
        if given:
            verb = "sets" if len(given) == 1 else "set"
            parser.error(f"{', '.join(given)} {verb} the Siamese model's detections; --model {args.model} has none")
    require_at_least(parser, args, 0, "max_absent_per_image", "reference_min_size")
    if not math.isfinite(args.score_threshold):  # nan would count no false positive at all
        parser.error(f"--score-threshold must be a finite number, got {args.score_threshold}")
    if args.protocol == "open-world" and (args.confusion or args.clutter or args.absent or args.errors):
        parser.error("--confusion, --clutter, --absent and --errors belong to the paper protocol; "
                     "the open-world protocol reports false positives on absent categories itself")
    args.out = args.out or default_out_dir()
    try:
        ensure_writable_dir(args.out, "--out folder")
    except UnwritableOutputError as err:
        parser.error(str(err))


def load_dataset(args):
    """The COCO dataset with the requested split applied and its reference index built
    with ``--reference-min-size`` (``REFERENCE_MIN_SIZE``).

    Raises:
        FileNotFoundError: the annotation file or image folder does not exist.
        ValueError: the annotation file is not a valid COCO instances file (named).
    """
    dataset = load_split_dataset(args.dataset, args.subset, args.year, args.annotations,
                                 args.images, args.split)
    min_size = getattr(args, "reference_min_size", 0)
    if dataset.REFERENCE_MIN_SIZE != min_size:
        dataset.REFERENCE_MIN_SIZE = min_size
        dataset.build_index()
    return dataset


def make_predictor_factory(args, dataset):
    """``seed -> predict_fn`` for the chosen model (the model is built only once).

    Raises:
        InputError: (a ``ValueError``) the weights or their config cannot be used.
    """
    if args.model == "gt":
        predictor = ground_truth_predictor(dataset)
        return lambda seed: predictor
    if args.model == "random":
        return lambda seed: random_boxes_predictor(dataset, seed)
    # imported here so that the baselines run without TensorFlow
    from ..predict import build_predictor
    predictor = build_predictor(args.weights, preset=args.preset, allow_partial=args.allow_partial,
                                min_confidence=args.min_confidence, score_rule=args.score_rule,
                                max_detections=args.max_detections)
    config = predictor.config  # the settings in effect, recorded in summary.json and the title
    args.min_confidence = float(config.DETECTION_MIN_CONFIDENCE)
    args.score_rule = str(config.DETECTION_SCORE_RULE)
    args.max_detections = int(config.DETECTION_MAX_INSTANCES)
    return lambda seed: predictor


def category_sets(args, dataset):
    """``[(set name, class ids)]`` to evaluate, one-shot first (``--split all``: every
    category, as the single set ``"all"``)."""
    if args.split == SPLIT_ALL:
        return [("all", list(dataset.train_class_ids))]
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


def main(argv=None, prog=None):
    """Parse ``argv`` (default ``sys.argv[1:]``), evaluate, write the outputs and print the
    table; returns the summary dict (row label → numbers).

    Raises:
        SystemExit: bad arguments (status 2, see :func:`check_args`).
        FileNotFoundError, ValueError: unusable data or weights (the message names them);
            the output folder and the parents this call created are removed again while
            empty.
    """
    os.environ.setdefault("MPLBACKEND", "Agg")  # plots are written to files, never shown
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    args.out = args.out or default_out_dir()
    with removed_if_failed(args.out):  # no empty logs/eval_<timestamp> left by a failed load
        check_args(parser, args)
        return _evaluate(parser, args)


def _evaluate(parser, args):
    """:func:`main` after the argument checks."""
    if args.model == "siamese":  # the baselines (gt, random) run without TensorFlow
        from ..demo import apply_thread_arguments
        apply_thread_arguments(parser, args)
    else:
        require_at_least(parser, args, 1, "threads", "inter_op_threads")
    logging.basicConfig(level=logging.WARNING)
    dataset = load_dataset(args)
    factory = make_predictor_factory(args, dataset)
    progress = not args.quiet
    if args.protocol == "open-world":
        return run_open_world(args, dataset, factory, progress)
    summary = {}
    for set_name, class_ids in category_sets(args, dataset):
        summary[ROW_LABELS[(args.model, set_name)]] = evaluate_runs(
            dataset, None, class_ids, runs=args.runs, seed=args.seed, shots=args.shots,
            limit=args.limit, progress=progress, predict_fn_for_seed=factory)
    first_set, first_ids = category_sets(args, dataset)[0]
    first = summary[ROW_LABELS[(args.model, first_set)]]["evaluations"][0]
    confusion = clutter = absent = errors = None
    if args.confusion:
        confusion = confusion_matrix(dataset, None, first_ids, evaluation=first)
    if args.clutter and first["coco_gt"] is not None:
        clutter = clutter_analysis(dataset, first["results"], first["coco_gt"],
                                              first["class_ids"])
    if args.absent:
        absent = absent_category_test(
            dataset, factory(args.seed), first_ids, seed=args.seed,
            score_threshold=args.score_threshold, limit=args.limit, shots=args.shots,
            progress=progress)
    if args.errors:
        errors = error_breakdown(dataset, factory(args.seed), first_ids, seed=args.seed, shots=args.shots,
                                 limit=args.limit, progress=progress)
        errors.update(model=args.model, split=split_label(args.split), categories=first_set)
    title = (f"model {args.model}, split {split_label(args.split)}, {args.shots}-shot, "
             f"{args.runs} run(s) from seed {args.seed}"
             + (f", first {args.limit} images" if args.limit else "")
             + (f"; detections: {args.score_rule} rule, score >= {args.min_confidence:g}, at most "
                f"{args.max_detections}" if args.model == "siamese" else ""))
    out_dir = args.out  # checked writable by check_args
    config = {k: v for k, v in vars(args).items()}
    config["out"] = out_dir
    write_outputs(out_dir, summary, confusion=confusion, clutter=clutter,
                             absent=absent, errors=errors, config=config, title=title)
    print(format_table(summary, title=title), end="")
    if absent is not None:
        print(f"absent categories: {absent['mean_false_positives_per_image']:.2f} false "
              f"positives per image (score >= {absent['score_threshold']}), "
              f"{100 * absent['fraction_images_with_false_positive']:.1f}% of images with one")
    if errors is not None:
        print(format_error_breakdown(errors, f"detections ({first_set} categories, seed {args.seed}): "))
        print(format_recall_by(errors, "  "))
    print(f"outputs written to {out_dir}")
    return summary


def run(argv=None, prog=None):
    """:func:`main` for the command line: unusable data or weights (a bad annotation file, an
    image whose size differs from its JSON, a truncated, foreign or partial weights file)
    end the program with ``<prog>: error: <message naming the file>`` on stderr and exit
    status 2 instead of a traceback. Returns 0."""
    try:
        main(argv, prog)
    except (FileNotFoundError, ValueError) as error:
        print(f"{prog or 'evaluate_siamese.py'}: error: {error}", file=sys.stderr)
        sys.exit(2)
    return 0


def run_open_world(args, dataset, factory, progress):
    """The open-world protocol for each chosen category set: results stream to
    ``<out>/<set>_open_world_results.jsonl`` (an interrupted run started again with the same
    ``--out`` resumes), then the summary, curve CSV and PNG are written and printed.
    Returns ``{set name: open-world result}``.

    Raises:
        ValueError: a results file in ``--out`` written with other settings (named).
    """
    out_dir = args.out or default_out_dir()
    if progress:
        print(f"results stream to {out_dir}; if interrupted, run again with --out {out_dir} to resume")
    outcome = {}
    for set_name, class_ids in category_sets(args, dataset):
        result = evaluate_open_world(
            dataset, factory(args.seed), class_ids, seed=args.seed, shots=args.shots,
            limit=args.limit, max_absent_per_image=args.max_absent_per_image,
            score_threshold=args.score_threshold,
            results_path=os.path.join(out_dir, f"{set_name}_{RESULTS_FILE}"), progress=progress)
        write_open_world(result, out_dir, prefix=f"{set_name}_open_world", threshold_label="--score-threshold")
        print(f"[{ROW_LABELS[(args.model, set_name)]}] "
              + format_open_world(result, threshold_origin="--score-threshold"))
        outcome[set_name] = result
    if args.model in ("gt", "random"):
        print(f"note: --model {args.model} reads the ground truth of the searched category, so it "
              "answers absent categories with nothing: its false positives per absent pair are 0 "
              "by construction, not a baseline for them")
    print(f"outputs written to {out_dir}")
    return outcome
