"""``siamese-mrcnn`` command line: ``demo`` (train + evaluate on embedded data) and ``predict``."""
import argparse
import sys


def build_parser():
    parser = argparse.ArgumentParser(prog="siamese-mrcnn", description="Siamese Mask R-CNN: one-shot "
                                     "instance segmentation by example.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a small model on embedded data on the CPU and evaluate it")
    demo.add_argument("--dataset", choices=["synthetic", "omniglot"], default="synthetic")
    demo.add_argument("--data-dir", help="directory with the Omniglot zip archives (--dataset omniglot)")
    demo.add_argument("--out", default="logs/demo", help="output directory (default: logs/demo)")
    demo.add_argument("--minutes", type=float, default=15.0, help="training time budget (default 15)")
    demo.add_argument("--epochs", type=int, default=40, help="at most this many epochs")
    demo.add_argument("--steps-per-epoch", type=int, default=100)
    demo.add_argument("--train-scenes", type=int, default=2000)
    demo.add_argument("--eval-scenes", type=int, default=150)
    demo.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N scenes only")
    demo.add_argument("--seed", type=int, default=0)

    pred = sub.add_parser("predict", help="detect the reference's category in your own query image")
    pred.add_argument("--weights", required=True, help="an .h5 checkpoint")
    pred.add_argument("--reference", required=True, action="append",
                      help="reference image (repeat for k-shot: embeddings are averaged)")
    pred.add_argument("--query", required=True, help="query (scene) image")
    pred.add_argument("--out", help="write a picture of the result (PNG)")
    pred.add_argument("--json", help="write boxes, scores and RLE masks as JSON")
    pred.add_argument("--config", help="config JSON (default: config.json beside the weights)")
    pred.add_argument("--preset", choices=["paper", "small"], default="small",
                      help="used when no config is found")
    pred.add_argument("--min-confidence", type=float, help="score threshold (default: the config's)")
    pred.add_argument("--allow-partial", action="store_true",
                      help="run even if the weights file leaves some layers of the model unfilled")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo
        run_demo(out_dir=args.out, dataset=args.dataset, data_dir=args.data_dir, minutes=args.minutes,
                 epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, num_train=args.train_scenes,
                 num_val=args.eval_scenes, seed=args.seed, eval_limit=args.eval_limit)
        return 0
    from .predict import InputError, predict
    try:
        result = predict(args.weights, args.reference, args.query, out_png=args.out, out_json=args.json,
                         config_path=args.config, preset=args.preset, min_confidence=args.min_confidence,
                         allow_partial=args.allow_partial)
    except InputError as err:
        print(f"siamese-mrcnn predict: error: {err}", file=sys.stderr)
        return 2
    print(f"{len(result['scores'])} detections"
          + "".join(f"\n  score {s:.3f} box (y1, x1, y2, x2) {list(map(int, b))}"
                    for s, b in zip(result["scores"], result["rois"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
