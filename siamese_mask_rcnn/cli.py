"""``siamese-mrcnn`` command line.

* ``demo``: train a small model on embedded data on the CPU and evaluate it (paper §5.2);
* ``predict``: detect the reference's category in your own query image;
* ``train``: train on a COCO one-shot split (paper §5.1), the flags of
  ``samples/coco/train_siamese.py`` (:mod:`siamese_mask_rcnn.train_coco`);
* ``evaluate``: the one-shot evaluation on COCO (paper §5.2), the flags of
  ``samples/coco/evaluate_siamese.py`` (:mod:`siamese_mask_rcnn.evaluation.cli`).
"""
import argparse
import os
import sys
import warnings

from . import demo as demo_job
from . import train_coco
from .cliargs import require_at_least
from .evaluation import cli as evaluation_cli
from .mrcnn.config import DETECTION_SCORE_RULES
from .mrcnn.fileio import UnwritableOutputError, removed_if_failed
from .predict import InputError, SmallImageWarning, check_inputs, predict
from .presets import PRESET_NAMES

#: Subcommands whose own parser takes every argument after the subcommand's name.
DELEGATED = {"train": train_coco.run, "evaluate": evaluation_cli.run}


def build_parser():
    """The ``siamese-mrcnn`` parser (``train`` / ``evaluate`` only listed: :func:`main`
    hands their arguments to their own parsers)."""
    parser = argparse.ArgumentParser(prog="siamese-mrcnn", description="Siamese Mask R-CNN: one-shot "
                                     "instance segmentation by example.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a small model on embedded data on the CPU and evaluate it")
    demo.add_argument("--dataset", choices=["synthetic", "omniglot"], default="synthetic")
    demo.add_argument("--data-dir", help="directory with the Omniglot zip archives (--dataset omniglot)")
    demo.add_argument("--out", default="logs/demo", help="output directory, created if missing (default: logs/demo)")
    demo.add_argument("--steps", type=int, default=demo_job.DEFAULT_STEPS,
                      help=f"training steps (default {demo_job.DEFAULT_STEPS}); the same seed gives the "
                           "same result on the same kind of CPU, whatever its speed")
    demo.add_argument("--minutes", type=float, default=None,
                      help="optional cap on the training time; the result then depends on the machine")
    demo.add_argument("--steps-per-epoch", type=int, default=None,
                      help="steps between checkpoints (default: the preset's, 100)")
    demo.add_argument("--threads", type=int, default=demo_job.DEFAULT_THREADS,
                      help=f"TensorFlow intra-op threads (default {demo_job.DEFAULT_THREADS}, the fastest "
                           "measured on 2 cores)")
    demo.add_argument("--no-deterministic", dest="deterministic", action="store_false",
                      help="let TensorFlow's kernels add in any order (faster on some machines; "
                           "runs of the same seed then differ by rounding that grows over training)")
    demo.add_argument("--train-scenes", type=int, default=2000)
    demo.add_argument("--eval-scenes", type=int, default=150)
    demo.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N scenes only")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--transfer-scenes", type=int, default=demo_job.TRANSFER_SCENES,
                      help="scenes of the independent composer on which the one-shot categories are "
                           f"evaluated again (transfer; default {demo_job.TRANSFER_SCENES}, 0 skips it)")
    demo.add_argument("--rendering", choices=["paper", "randomised", "mixed"], default="paper",
                      help="how the training and evaluation scenes are drawn: paper (one fixed look, the "
                           "default), randomised (any background, wider object size and colour, contours, "
                           "blur, JPEG, letterboxing: domain randomisation for transfer) or mixed (half "
                           "of the scenes and references randomised)")
    demo.add_argument("--negative-pairs", type=float, default=None, metavar="FRACTION",
                      help="fraction of training pairs whose reference category is absent from "
                           "the query (NEGATIVE_PAIR_FRACTION; default: the demo preset's)")
    demo.add_argument("--hard-negatives", type=float, default=None, metavar="FRACTION",
                      help="fraction of each image's negative ROIs taken from the best-scored proposals "
                           "(other objects, near misses) instead of uniformly (HARD_NEGATIVE_FRACTION; "
                           "default: the demo preset's)")
    demo.add_argument("--presence-head", dest="presence_head", action="store_true", default=None,
                      help="train and use the presence head (PRESENCE_HEAD; default: off, the paper's model)")
    demo.add_argument("--no-presence-head", dest="presence_head", action="store_false",
                      help="the paper's model without the presence head")
    demo.add_argument("--no-presence-gradient", dest="presence_gradient", action="store_false",
                      default=None,
                      help="with --presence-head: the presence loss trains only the head, not the encoder "
                           "and the matching (PRESENCE_GRADIENT=False; the demo preset's is True)")
    demo.add_argument("--verify-keep", type=float, default=None, metavar="SHARE",
                      help="verify every detection against the reference (beyond the paper): drop those "
                           "less similar than the threshold that keeps SHARE (0..1] of the training "
                           "categories' objects; calibrated after training and written to the run's "
                           "config.json (default: no verification)")
    demo.add_argument("--config-override", action="append", default=[], metavar="KEY=VALUE",
                      help="set any configuration value after the demo preset and the options above, e.g. "
                           "\"LOSS_WEIGHTS={'reference_class_loss': 3.0}\" (LOSS_WEIGHTS merge loss by loss; "
                           "repeatable; VALUE a Python literal, else a string)")
    demo.add_argument("--weights", metavar="CHECKPOINT",
                      help="evaluate this checkpoint of an earlier demo run (the run's config.json beside "
                           "it gives the model) instead of training: same scenes (--seed, --dataset, "
                           "--rendering as trained), this command's inference options (--verify-keep, --known-margin); "
                           "the run's files are not changed and training options are not allowed")
    demo.add_argument("--known-margin", type=float, default=None, metavar="MARGIN",
                      help="known-category rejection (beyond the paper; needs --reference-loss, or --weights "
                           "trained with it): drop detections closer by more than MARGIN (-2..2) to a known "
                           "category's prototype than to the reference (VERIFY_KNOWN_MARGIN; a trained run "
                           "writes it to its config.json, --weights leaves the run as it was; default: off)")
    demo.add_argument("--reference-loss", action="store_true",
                      help="also train the encoder to classify every training reference into its "
                           "category (REFERENCE_CLASSES, beyond the paper; default: off, the paper's training)")

    pred = sub.add_parser("predict", help="detect the reference's category in your own query image")
    pred.add_argument("--weights", required=True, help="an .h5 checkpoint")
    pred.add_argument("--reference", required=True, action="append",
                      help="reference image (repeat for k-shot: embeddings are averaged)")
    pred.add_argument("--query", required=True, help="query (scene) image")
    pred.add_argument("--out", help="write a picture of the result (format from the extension: .png, .jpg, "
                                    ".pdf, .svg; PNG otherwise; missing folders are created)")
    pred.add_argument("--json", help="write boxes, scores and RLE masks as JSON (missing folders are created)")
    pred.add_argument("--config", help="config JSON (default: config.json beside the weights)")
    pred.add_argument("--preset", choices=list(PRESET_NAMES), default=None,
                      help="used when no config is found (see siamese_mask_rcnn.presets; default: "
                           "inferred from the weights' shapes, e.g. the release's "
                           "small_siamese_mrcnn_0160.h5 -> small)")
    pred.add_argument("--min-confidence", type=float,
                      help="score threshold (default: the config's); with the presence head it applies "
                           "to the scores multiplied by the presence")
    pred.add_argument("--score-rule", choices=list(DETECTION_SCORE_RULES),
                      help="argmax (matterport: a ROI the background outscores is dropped) or foreground "
                           "(every ROI scored by its match probability, kept from --min-confidence on: "
                           "different only with --min-confidence below 0.5); default: the config's "
                           "DETECTION_SCORE_RULE")
    pred.add_argument("--max-detections", type=int, metavar="N",
                      help="at most N detections (default: the config's DETECTION_MAX_INSTANCES)")
    pred.add_argument("--min-similarity", type=_similarity_or_none,
                      help="verify every detection against the reference and drop those whose crop's "
                           "embedding is less similar (cosine, -1..1; default: the config's "
                           "VERIFY_MIN_SIMILARITY, which demo --verify-keep calibrates; 'none' turns it off)")
    pred.add_argument("--known-margin", type=_margin_or_none,
                      help="known-category rejection: drop detections whose crop's embedding is closer by more "
                           "than this (a difference of cosines, -2..2) to a known category's prototype than to "
                           "the reference; needs a checkpoint trained with demo --reference-loss (default: the "
                           "config's VERIFY_KNOWN_MARGIN, which demo --known-margin sets; 'none' turns it off)")
    pred.add_argument("--allow-partial", action="store_true",
                      help="run even if the weights file leaves some layers of the model unfilled")
    demo_job.add_thread_arguments(pred)
    sub.add_parser("train", add_help=False,
                   help="train on a COCO one-shot split (siamese-mrcnn train --help)")
    sub.add_parser("evaluate", add_help=False,
                   help="one-shot evaluation on COCO (siamese-mrcnn evaluate --help)")
    # a bad value is reported with the subcommand's usage line ("siamese-mrcnn demo: error: ...")
    parser.subcommand_parsers = {"demo": demo, "predict": pred}
    return parser


def _number_or_none(low, high, meaning):
    """An argparse type: a float, or ``"none"`` (``meaning`` off); the range [low, high] is
    checked after parsing, naming the flag."""
    def parse(text):
        if text.strip().lower() == "none":
            return "none"
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in [{low}, {high}] or 'none', got {text!r}") from None
    parse.__doc__ = f"a float in [{low}, {high}], or 'none' ({meaning} off)"
    return parse


#: ``predict --known-margin``: a float, or ``"none"`` (known-category rejection off).
_margin_or_none = _number_or_none(-2, 2, "known-category rejection")
#: ``predict --min-similarity``: a float, or ``"none"`` (verification off).
_similarity_or_none = _number_or_none(-1, 1, "verification")


def main(argv=None):
    """Run a subcommand; returns the exit status (0 on success, 2 for a user error, such as
    an output folder that cannot be written, checked before any long work).

    Raises:
        SystemExit: bad arguments or a missing input file (status 2, with a message naming
            the flag or file), and, for ``train``, a bad value found while training (status 1
            with ``error: <message>``).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED:
        DELEGATED[argv[0]](argv[1:], prog=f"siamese-mrcnn {argv[0]}")
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    parser = parser.subcommand_parsers[args.command]
    if args.command == "demo":
        require_at_least(parser, args, 1, "steps", "steps_per_epoch", "threads", "train_scenes",
                         "eval_scenes", "eval_limit")
        if args.minutes is not None and not 0 < args.minutes < float("inf"):
            parser.error(f"--minutes must be a finite number > 0, got {args.minutes}")
        require_at_least(parser, args, 0, "seed")
        require_at_least(parser, args, 0, "transfer_scenes")
        if args.dataset == "omniglot" and not args.data_dir:
            parser.error("--dataset omniglot needs --data-dir (a directory with the Omniglot zip archives)")
        if args.data_dir and not os.path.isdir(args.data_dir):
            parser.error(f"--data-dir: no such directory: {args.data_dir}")
        if args.dataset == "omniglot":  # the archives are found before TensorFlow starts
            from .datasets.omniglot import find_archives
            try:
                find_archives(args.data_dir)
            except FileNotFoundError as err:
                parser.error(f"--data-dir: {err}")
        if args.negative_pairs is not None and not 0 <= args.negative_pairs <= 1:
            parser.error(f"--negative-pairs must be in [0, 1], got {args.negative_pairs}")
        if args.verify_keep is not None and not 0 < args.verify_keep <= 1:
            parser.error(f"--verify-keep must be in (0, 1], got {args.verify_keep}")
        if args.known_margin is not None:
            if not -2 <= args.known_margin <= 2:
                parser.error(f"--known-margin must be in [-2, 2], got {args.known_margin}")
            if args.weights is None and not args.reference_loss:
                parser.error("--known-margin needs --reference-loss (the known categories' prototypes are the "
                             "reference classifier's)")
        if args.hard_negatives is not None and not 0 <= args.hard_negatives <= 1:
            parser.error(f"--hard-negatives must be in [0, 1], got {args.hard_negatives}")
        if args.weights is not None:
            given = [flag for flag, value in (
                ("--steps", None if args.steps == demo_job.DEFAULT_STEPS else args.steps),
                ("--minutes", args.minutes), ("--steps-per-epoch", args.steps_per_epoch),
                ("--negative-pairs", args.negative_pairs), ("--hard-negatives", args.hard_negatives),
                ("--presence-head/--no-presence-head", args.presence_head),
                ("--no-presence-gradient", args.presence_gradient),
                ("--reference-loss", args.reference_loss or None),
                ("--config-override", args.config_override or None)) if value is not None]
            if given:
                parser.error(f"--weights evaluates a trained checkpoint: training options ({', '.join(given)}) "
                             "do not apply (its config.json says how it was trained)")
            from .predict import check_demo_checkpoint
            try:  # before TensorFlow starts
                check_demo_checkpoint(args.weights)
            except InputError as err:
                parser.error(f"--weights: {err}")
        overrides = ({} if args.negative_pairs is None
                     else {"NEGATIVE_PAIR_FRACTION": float(args.negative_pairs)})
        if args.hard_negatives is not None:
            overrides["HARD_NEGATIVE_FRACTION"] = float(args.hard_negatives)
        if args.presence_head is not None:
            overrides["PRESENCE_HEAD"] = bool(args.presence_head)
        try:
            extra = train_coco.parse_overrides(args.config_override)
            if extra:
                from .demo import demo_config
                demo_config(**demo_job.dataset_overrides(args.dataset, {**overrides, **extra}))  # checked now
        except ValueError as err:
            parser.error(str(err))
        overrides.update(extra)
        if args.presence_gradient is not None:
            if not args.presence_head:
                parser.error("--no-presence-gradient needs --presence-head")
            overrides["PRESENCE_GRADIENT"] = False
        try:
            demo_job.run_demo(out_dir=args.out, dataset=args.dataset, data_dir=args.data_dir,
                              steps=args.steps, minutes=args.minutes, threads=args.threads,
                              steps_per_epoch=args.steps_per_epoch, num_train=args.train_scenes,
                              num_val=args.eval_scenes, seed=args.seed, eval_limit=args.eval_limit,
                              config_overrides=overrides, transfer_scenes=args.transfer_scenes,
                              deterministic=args.deterministic, rendering=args.rendering,
                              reference_loss=args.reference_loss, verify_keep=args.verify_keep,
                              weights=args.weights, known_margin=args.known_margin)
        except (UnwritableOutputError, FileNotFoundError, ValueError) as err:
            # user errors (an unwritable --out, missing Omniglot archives, --dataset omniglot
            # without --data-dir) end here, before any training
            print(f"siamese-mrcnn demo: error: {err}", file=sys.stderr)
            return 2
        return 0
    if args.min_confidence is not None and not 0 <= args.min_confidence <= 1:
        parser.error(f"--min-confidence must be in [0, 1], got {args.min_confidence}")
    if args.min_similarity not in (None, "none") and not -1 <= args.min_similarity <= 1:
        parser.error(f"--min-similarity must be in [-1, 1], got {args.min_similarity}")
    if args.known_margin not in (None, "none") and not -2 <= args.known_margin <= 2:
        parser.error(f"--known-margin must be in [-2, 2], got {args.known_margin}")
    require_at_least(parser, args, 1, "threads", "inter_op_threads", "max_detections")  # argument errors first
    try:  # the output files' folders the checks create are removed again if loading fails
        with removed_if_failed(*(os.path.dirname(os.path.abspath(f)) for f in (args.out, args.json) if f)):
            # missing files are reported before TensorFlow is imported (seconds)
            check_inputs(args.weights, args.reference, args.query, args.out, args.json, config_path=args.config,
                         decode=True, known_margin=args.known_margin)
            demo_job.apply_thread_arguments(parser, args)
            caught = []
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", SmallImageWarning)
                    result = predict(args.weights, args.reference, args.query, out_png=args.out,
                                     out_json=args.json, config_path=args.config, preset=args.preset,
                                     min_confidence=args.min_confidence, allow_partial=args.allow_partial,
                                     min_similarity=args.min_similarity, known_margin=args.known_margin,
                                     score_rule=args.score_rule, max_detections=args.max_detections)
            finally:  # shown even when loading then fails
                for item in caught:  # ours one line each, without Python's file:line decoration
                    if issubclass(item.category, SmallImageWarning):
                        print(f"siamese-mrcnn predict: warning: {item.message}", file=sys.stderr)
                    else:
                        warnings.showwarning(item.message, item.category, item.filename, item.lineno)
    except InputError as err:
        print(f"siamese-mrcnn predict: error: {err}", file=sys.stderr)
        return 2
    presence = (f" (presence of the category: {result['presence']:.3f})" if "presence" in result else "")
    if "verification_dropped" in result:
        rules = []
        if result.get("verification_threshold") is not None:
            source = "--min-similarity" if args.min_similarity is not None else "the config"
            rules.append(f"less similar to the reference than {result['verification_threshold']:.3f} ({source})")
        if result.get("known_margin_threshold") is not None:
            source = "--known-margin" if args.known_margin is not None else "the config"
            rules.append(f"closer to a known category than to the reference by more than "
                         f"{result['known_margin_threshold']:.3f} ({source})")
        presence += (f" after verification: {result['verification_dropped']} dropped as " + " or ".join(rules))
    print(f"{len(result['scores'])} detections{presence}"
          + "".join(f"\n  score {s:.3f} box (y1, x1, y2, x2) {list(map(int, b))}"
                    + (f" similarity {result['similarity'][i]:.3f}" if "similarity" in result else "")
                    + (f" known margin {result['known_margin'][i]:.3f}" if "known_margin" in result else "")
                    for i, (s, b) in enumerate(zip(result["scores"], result["rois"]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
