"""Which rendering factor of the transfer composer costs a trained model its one-shot score?

Run by hand (not part of the tests)::

    python benchmarks/transfer_factors.py --weights logs/demo/checkpoints/<run>/mask_rcnn_demo_0030.h5 \
        [--rendering paper] [--scenes 150] [--no-factors] [--dataset omniglot --data-dir DIR] \
        [--score-rule foreground --min-confidence 0.05 --max-detections 30]

It evaluates the checkpoint (a ``siamese-mrcnn demo`` model, ``config.json`` beside it) with the
paper's one-shot protocol (Section 5.2) on the one-shot categories of:

* the in-distribution evaluation scenes (rendered references, as the demo), and the same scenes
  with references cropped from other scenes (as the transfer protocol draws them);
* the independent composer (``datasets.transfer``) at its default ranges;
* the composer narrowed to ranges like the paper renderer's ("training-like");
* "training-like" with one group of ranges widened back to the composer's defaults (what that
  factor alone costs), and the defaults with one group narrowed (what fixing it alone gains).

``--rendering`` picks the in-distribution scenes' rendering (e.g. ``paper`` for a model trained
with ``--rendering randomised``: its score on the main job's look). ``--no-factors`` stops after
the composer's defaults; the factor groups describe the procedural renderer and run only for
``--dataset synthetic``.

Groups: canvas (size, aspect), background (brightness, saturation, texture), scale, pose
(rotation, stretch, shear), colour (jitter, shading), outline, density (categories, instances,
distractors, occlusion), image (gamma, noise, blur, JPEG). Prints one line per evaluation and
the CPU it ran on; mAP50 in %.
"""
import argparse
import logging
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no TensorFlow start-up and grappler warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

#: Composer ranges like the paper renderer's look (square 128 px canvas, mid-brightness
#: low-saturation backgrounds with faint texture, objects 8-16 % of the side, +-20 degrees,
#: light colour jitter, no outlines, 1-2 categories with 1-3 instances and 2-5 distractors,
#: light noise only).
TRAINING_LIKE = {
    "short_side": (128, 128), "aspect": (1.0, 1.0), "background_value": (70, 185),
    "background_saturation": (0.0, 0.15), "texture_contrast": (4.0, 10.0),
    "object_scale": (0.08, 0.16), "rotation_deg": 20.0, "stretch": (0.85, 1.15), "shear": (0.0, 0.0),
    "brightness": (0.9, 1.1), "colour_shift": 10.0, "shading": (0.0, 0.0), "outline_probability": 0.0,
    "present_categories": (1, 2), "instances": (1, 3), "distractors": (2, 5),
    "min_visible_fraction": 0.5, "gamma": (1.0, 1.0), "noise_std": (4.0, 4.0), "blur_sigma": (0.0, 0.0),
    "jpeg_probability": 0.0,
}

GROUPS = {
    "canvas": ["short_side", "aspect"],
    "background": ["background_value", "background_saturation", "texture_contrast"],
    "scale": ["object_scale"],
    "pose": ["rotation_deg", "stretch", "shear"],
    "colour": ["brightness", "colour_shift", "shading"],
    "outline": ["outline_probability"],
    "density": ["present_categories", "instances", "distractors", "min_visible_fraction"],
    "image": ["gamma", "noise_std", "blur_sigma", "jpeg_probability"],
}


def main(argv=None):
    from siamese_mask_rcnn.mrcnn.config import DETECTION_SCORE_RULES  # numpy only, no TensorFlow

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="a demo checkpoint (.h5) with config.json beside it")
    parser.add_argument("--dataset", choices=["synthetic", "omniglot"], default="synthetic")
    parser.add_argument("--data-dir", help="Omniglot archives (--dataset omniglot)")
    parser.add_argument("--no-factors", action="store_true", help="stop after the composer's defaults")
    parser.add_argument("--rendering", choices=["paper", "randomised", "mixed"], default="paper",
                        help="rendering of the in-distribution evaluation scenes (the model's training one)")
    parser.add_argument("--scenes", type=int, default=150, help="scenes per evaluation (default 150)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--score-rule", choices=list(DETECTION_SCORE_RULES),
                        help="DETECTION_SCORE_RULE for this evaluation (default: the checkpoint's config)")
    parser.add_argument("--min-confidence", type=float, help="DETECTION_MIN_CONFIDENCE (default: the config's)")
    parser.add_argument("--max-detections", type=int, help="DETECTION_MAX_INSTANCES (default: the config's)")
    args = parser.parse_args(argv)
    if not pathlib.Path(args.weights).is_file():
        parser.error(f"--weights: no such file: {args.weights}")
    if args.dataset == "omniglot" and not args.data_dir:
        parser.error("--dataset omniglot needs --data-dir")
    if args.scenes < 1:
        parser.error(f"--scenes must be >= 1, got {args.scenes}")
    from siamese_mask_rcnn.predict import check_detection_arguments  # no TensorFlow yet

    try:  # before the scenes are made; load_model checks the same
        check_detection_arguments(args.min_confidence, args.score_rule, args.max_detections)
    except ValueError as err:
        parser.error(str(err))

    from bench_inference import machine_description
    from siamese_mask_rcnn import demo, evaluation
    from siamese_mask_rcnn.datasets.transfer import transfer_dataset_like
    from siamese_mask_rcnn.predict import load_model

    from siamese_mask_rcnn.predict import InputError

    demo.configure_threads(demo.DEFAULT_THREADS)
    # a row without pairs says so itself (below); the protocol's warning would repeat it
    logging.getLogger("siamese_mask_rcnn.evaluation.protocol").setLevel(logging.ERROR)
    try:
        _, val = demo.make_datasets(args.dataset, args.data_dir, 1, args.scenes, 128, args.seed,
                                    cache_size=None, rendering=args.rendering)
        model = load_model(args.weights, min_confidence=args.min_confidence, score_rule=args.score_rule,
                           max_detections=args.max_detections)
    except (FileNotFoundError, InputError, ValueError) as err:  # user errors: no traceback
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    predict = model.predict_fn()
    print(f"machine: {machine_description()}")
    c = model.config
    print(f"weights: {args.weights}; {args.scenes} scenes, seed {args.seed}; detections: "
          f"{c.DETECTION_SCORE_RULE} rule, score >= {c.DETECTION_MIN_CONFIDENCE:g}, at most "
          f"{c.DETECTION_MAX_INSTANCES}; one-shot mAP50 (%)")

    def show(label, dataset):
        t0 = time.time()
        r = evaluation.evaluate(dataset, predict, dataset.oneshot_class_ids, seed=args.seed, progress=False)
        if not r["n_pairs"]:
            print(f"{label:36s} no evaluation pair in {args.scenes} scenes (raise --scenes)", flush=True)
            return
        print(f"{label:36s} bbox {100 * r['map50_bbox']:5.1f}  segm {100 * r['map50_segm']:5.1f}  "
              f"pairs {r['n_pairs']:4d}  ({time.time() - t0:.0f} s)", flush=True)

    show("in-distribution", val)
    val.render_references = False
    show("in-distribution, cropped references", val)
    val.render_references = True

    def composer(ranges):
        return transfer_dataset_like(val, num_images=args.scenes, seed=args.seed, ranges=ranges)

    show("transfer (composer defaults)", composer(None))
    if args.no_factors or args.dataset != "synthetic":
        return 0
    show("transfer, training-like ranges", composer(TRAINING_LIKE))
    for group, keys in GROUPS.items():
        widened = {k: v for k, v in TRAINING_LIKE.items() if k not in keys}
        show(f"training-like, {group} wide", composer(widened))
    for group, keys in GROUPS.items():
        show(f"defaults, {group} narrow", composer({k: TRAINING_LIKE[k] for k in keys}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
