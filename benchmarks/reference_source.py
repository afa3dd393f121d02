"""Does the reference source explain the transfer gap (issue #17)? Run by hand.

The demo's in-distribution column draws rendered references (an isolated instance on its
own background); the transfer column crops references from other composer scenes. Two
measurements, each through ``demo.run_demo`` (same scenes, seed and table as
``siamese-mrcnn demo``):

* ``evaluate --weights W``: a trained demo checkpoint evaluated with the in-distribution
  references cropped from other evaluation scenes instead (``render_references=False``);
* ``train --crop-fraction P``: the main job's training with each training pair's references
  cropped from other training scenes with probability ``P`` (else the rendered bank),
  evaluated as usual.

Usage::

    python benchmarks/reference_source.py evaluate --weights RUN/mask_rcnn_demo_0030.h5 \\
        --dataset omniglot --data-dir ../shared/data/omniglot --rendering randomised --out logs/refsrc_eval
    python benchmarks/reference_source.py train --crop-fraction 0.5 \\
        --dataset omniglot --data-dir ../shared/data/omniglot --rendering randomised --out logs/refsrc_train
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import demo_checkpoint  # noqa: E402  (the benchmarks' shared checks, TensorFlow-free)

from siamese_mask_rcnn import demo  # noqa: E402  (no TensorFlow until a model is built)
from siamese_mask_rcnn.datasets import scenes  # noqa: E402
from siamese_mask_rcnn.datasets.base import OneShotDataset  # noqa: E402

_rendered_references = scenes.GeneratedSceneDataset.sample_references
_make_datasets = demo.make_datasets


def _sample_references(self, class_id, k, rng, exclude_image_id=None, return_info=False):
    """Crops of instances in other scenes with probability ``self.reference_crop_fraction``."""
    fraction = getattr(self, "reference_crop_fraction", 0.0)
    if fraction > 0 and rng.random() < fraction:
        return OneShotDataset.sample_references(self, class_id, k, rng, exclude_image_id, return_info)
    return _rendered_references(self, class_id, k, rng, exclude_image_id, return_info)


def _patch(train_fraction=0.0, crop_evaluation=False):
    """Make ``run_demo``'s datasets draw references as asked (also in worker processes,
    which import this module)."""
    def make_datasets(*args, **kwargs):
        train, val = _make_datasets(*args, **kwargs)
        train.reference_crop_fraction = float(train_fraction)
        if crop_evaluation:
            val.render_references = False
        return train, val

    scenes.GeneratedSceneDataset.sample_references = _sample_references
    demo.make_datasets = make_datasets


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["evaluate", "train"])
    parser.add_argument("--weights", help="evaluate: a siamese-mrcnn demo checkpoint")
    parser.add_argument("--crop-fraction", type=float, default=None,
                        help="train: probability that a pair's references are crops (default 0.5)")
    parser.add_argument("--dataset", choices=["synthetic", "omniglot"], default="synthetic")
    parser.add_argument("--data-dir")
    parser.add_argument("--rendering", choices=["paper", "randomised", "mixed"], default="paper")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.mode == "evaluate" and not args.weights:
        parser.error("evaluate needs --weights")
    if args.mode == "evaluate" and args.crop_fraction is not None:
        parser.error("--crop-fraction is for train (evaluate crops every in-distribution reference)")
    if args.mode == "train" and args.weights:
        parser.error("--weights is for evaluate (train starts from the demo's initial weights)")
    if args.mode == "train":
        args.crop_fraction = 0.5 if args.crop_fraction is None else args.crop_fraction
        if not 0 < args.crop_fraction <= 1:
            parser.error(f"--crop-fraction must be in (0, 1], got {args.crop_fraction}")
    demo_checkpoint.check_dataset_arguments(parser, args)
    from siamese_mask_rcnn.mrcnn.fileio import UnwritableOutputError, check_folder_possible
    try:
        check_folder_possible(os.path.abspath(args.out))
    except UnwritableOutputError as err:
        parser.error(f"--out: {err}")
    if args.mode == "evaluate":
        demo_checkpoint.check_demo_checkpoint(parser, args.weights)
        _patch(crop_evaluation=True)
    else:
        _patch(train_fraction=args.crop_fraction)
    return demo_checkpoint.run_demo("reference_source.py", out_dir=args.out, dataset=args.dataset,
                                    data_dir=args.data_dir, rendering=args.rendering,
                                    weights=args.weights if args.mode == "evaluate" else None)


if __name__ == "__main__":
    sys.exit(main())
