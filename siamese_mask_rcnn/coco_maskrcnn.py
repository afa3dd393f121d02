"""Plain Mask R-CNN on MS-COCO's 80 categories: training schedule, evaluation, and the
``samples/coco/coco.py train|evaluate`` command line (matterport's sample interface).

The paper compares Siamese Mask R-CNN with the original Mask R-CNN trained on all 80 COCO
categories (§5.1, Table 1: 42.5 % detection / 40.1 % segmentation mAP50 on val2017). That
model is trained "for 320,000 steps using the same hyper parameters as for Siamese Mask
R-CNN but without the adjustments to the loss function weights": SGD with momentum 0.9,
learning rate 0.02, batch 12 (3 images on each of 4 GPUs), weight decay 1e-4, gradient clip
5, heads only for the first 1,000 steps, and matterport's loss weights (all 1). The paper
does not say when the learning rate drops for this model; :data:`PAPER_ALL_EPOCHS` divides
it by 10 after 240,000 steps (the Siamese schedule's 3/4 point).

Evaluation is COCO's standard protocol (not the one-shot one): every image of the set, every
category, ``COCOeval`` for boxes and masks; AP50 and AP (IoU .50:.95) are reported. The
results JSON uses the annotation file's own image and category ids, so it can be scored by
any COCO tool. ``--model gt`` turns the ground truth into predictions (a sanity check that
must give AP50 = 100).

TensorFlow is imported only when a model is built.
"""
import argparse
import contextlib
import datetime
import io
import json
import logging
import os
import sys
import time
import warnings

import numpy as np

from .cliargs import check_tf_config, require_at_least, require_file
from .cluster import (check_same_start, finish_together, lost_worker_outside_steps,
                      start_signature)
from .datasets.coco import OneShotCocoDataset
from .mrcnn.config import Config
from .paper_settings import PaperSettings
from .train_coco import Stage  # noqa: F401  (the schedule's stage type, re-exported)
from .train_coco import add_multi_worker_arguments, make_strategy, weights_fingerprint
from .train_coco import schedule_stages as siamese_schedule

log = logging.getLogger(__name__)

#: The paper's schedule in epochs of 1,000 steps: heads to 1, all layers to 240, then ÷10 to 320.
PAPER_HEADS_EPOCHS = 1
PAPER_ALL_EPOCHS = 240
PAPER_TOTAL_EPOCHS = 320
#: The learning rate is divided by this at ``all_epochs``.
LR_DROP = 10.0

#: Model choices of ``--model`` that are not file paths.
MODEL_KEYWORDS = ("imagenet", "last", "gt", "none", "coco")


class CocoConfig(PaperSettings, Config):
    """Mask R-CNN on COCO with the paper's hyper-parameters (the ``paper`` preset).

    1024² "square" images, 81 classes (background + 80), ResNet-50, SGD lr 0.02 / momentum
    0.9 / weight decay 1e-4 / clip 5, 3 images per GPU; ROI, anchor and detection settings as
    the Siamese ``paper`` preset; matterport's loss weights (all 1) and matterport's FPN
    (no ReLU), so matterport's released COCO weights load and behave.
    """

    NAME = "coco"
    BACKBONE = "resnet50"
    NUM_CLASSES = 1 + 80
    IMAGES_PER_GPU = 3
    GPU_COUNT = 1
    STEPS_PER_EPOCH = 1000
    VALIDATION_STEPS = 50


#: Presets: the paper's setting and a 512² one (the Siamese ``small`` preset's sizes).
PRESETS = {
    "paper": {},
    "small": {"IMAGE_MIN_DIM": 512, "IMAGE_MAX_DIM": 512, "FPN_CLASSIF_FC_LAYERS_SIZE": 512,
              "RPN_TRAIN_ANCHORS_PER_IMAGE": 64, "POST_NMS_ROIS_TRAINING": 500,
              "POST_NMS_ROIS_INFERENCE": 500, "TRAIN_ROIS_PER_IMAGE": 100,
              "MAX_GT_INSTANCES": 30, "DETECTION_MAX_INSTANCES": 30},
}

#: ``--backbone tiny``: a CPU smoke configuration (128² images, small heads).
TINY_OVERRIDES = {
    "IMAGE_MIN_DIM": 128, "IMAGE_MAX_DIM": 128, "RPN_ANCHOR_SCALES": (8, 16, 32, 64, 128),
    "TOP_DOWN_PYRAMID_SIZE": 32, "FPN_CLASSIF_FC_LAYERS_SIZE": 64, "RPN_CONV_CHANNELS": 32,
    "MASK_CONV_CHANNELS": 16, "POST_NMS_ROIS_TRAINING": 100, "POST_NMS_ROIS_INFERENCE": 50,
    "PRE_NMS_LIMIT": 500, "TRAIN_ROIS_PER_IMAGE": 32, "MAX_GT_INSTANCES": 20,
    "RPN_TRAIN_ANCHORS_PER_IMAGE": 64, "DETECTION_MAX_INSTANCES": 20,
    "MINI_MASK_SHAPE": (28, 28),
}


def coco_config(preset="paper", backbone="resnet50", **overrides):
    """A :class:`CocoConfig` of ``preset`` ("paper" or "small") and ``backbone``
    ("resnet50", "resnet101" or "tiny"), with ``overrides`` applied last.

    Raises ``ValueError`` for an unknown preset or backbone.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    values = dict(PRESETS[preset])
    if backbone == "tiny":
        from .mrcnn.backbone import tiny_backbone
        values.update(TINY_OVERRIDES, BACKBONE=tiny_backbone)
    elif backbone in ("resnet50", "resnet101"):
        values["BACKBONE"] = backbone
    else:
        raise ValueError(f"unknown backbone {backbone!r}; choose resnet50, resnet101 or tiny")
    values.update(overrides)
    return CocoConfig(**values)


# ------------------------------------------------------------------------- schedule


def schedule_stages(heads_epochs=PAPER_HEADS_EPOCHS, all_epochs=PAPER_ALL_EPOCHS,
                    total_epochs=PAPER_TOTAL_EPOCHS, lr=0.02, lr_drop=LR_DROP):
    """``[Stage(layers, until_epoch, learning_rate)]``: heads to ``heads_epochs`` at ``lr``,
    all layers to ``all_epochs`` at ``lr``, all layers to ``total_epochs`` at
    ``lr / lr_drop``; empty stages are left out. Needs ``0 <= heads_epochs <= all_epochs <=
    total_epochs``, ``total_epochs >= 1`` and positive rates, else ``ValueError``.
    """
    return siamese_schedule(heads_epochs, all_epochs, total_epochs, lr, lr_drop)


# ------------------------------------------------------------------------- data
def load_coco_dataset(dataset_dir=None, subset="val", year="2017", annotation_file=None,
                      image_dir=None):
    """All 80 categories of a COCO instances file as a prepared matterport ``Dataset``.

    Internal class ids 1..80 follow the COCO category ids sorted (matterport's order, so
    matterport's COCO weights give the right classes); crowd regions have negative class ids
    in ``load_mask``. Raises ``FileNotFoundError`` / ``ValueError`` naming the file.
    """
    dataset = OneShotCocoDataset()
    dataset.load_coco(dataset_dir=dataset_dir, subset=subset, year=year,
                      annotation_file=annotation_file, image_dir=image_dir)
    dataset.prepare()
    return dataset


def annotation_path(dataset_dir, subset, year, annotation_file=None):
    """The instances JSON: ``annotation_file`` or ``<dataset>/annotations/instances_<subset><year>.json``."""
    if annotation_file:
        return annotation_file
    return os.path.join(dataset_dir, "annotations", f"instances_{subset}{year}.json")


# ------------------------------------------------------------------------- predictors
def model_predictor(model):
    """``predict(image, image_id) -> {"rois", "class_ids", "scores", "masks"}`` of an
    inference-mode ``MaskRCNN`` (one image per call; ``BATCH_SIZE`` must be 1).

    Raises:
        ValueError: the model's ``BATCH_SIZE`` is not 1.
    """
    if model.config.BATCH_SIZE != 1:
        raise ValueError(f"evaluation needs BATCH_SIZE 1, got {model.config.BATCH_SIZE}")

    def predict(image, image_id=None):
        return model.detect([image])[0]
    return predict


def ground_truth_predictor(dataset):
    """The ground truth as predictions (score 1; boxes from the annotations, masks decoded),
    crowd regions left out. A sanity check: scored by :func:`evaluate_coco` it gives 100 AP50.
    """
    def predict(image, image_id):
        masks, class_ids = dataset.load_mask(image_id)
        anns = dataset.instance_annotations(image_id)
        keep = np.flatnonzero(class_ids > 0)
        boxes = np.array([anns[k]["bbox"] for k in keep], np.int32).reshape(-1, 4)
        return {"rois": boxes, "class_ids": class_ids[keep].astype(np.int32),
                "scores": np.ones(len(keep), np.float32), "masks": masks[:, :, keep]}
    return predict


# ------------------------------------------------------------------------- evaluation
def detections_to_coco_results(dataset, image_id, detections):
    """COCO result entries of one image's detections, in the annotation file's ids.

    ``detections``: ``rois`` [N, (y1, x1, y2, x2)] pixels, ``class_ids`` [N] internal ids
    1..80, ``scores`` [N], ``masks`` [H, W, N] bool. Boxes become ``[x, y, w, h]``, masks
    RLE (``counts`` as str). Raises ``ValueError`` for inconsistent lengths or mask sizes.
    """
    from pycocotools import mask as mask_utils
    info = dataset.image_info[image_id]
    rois = np.asarray(detections["rois"]).reshape(-1, 4)
    class_ids = np.asarray(detections["class_ids"]).reshape(-1)
    scores = np.asarray(detections["scores"]).reshape(-1)
    masks = np.asarray(detections["masks"])
    n = len(rois)
    if not len(class_ids) == len(scores) == n or (n and masks.shape[-1] != n):
        raise ValueError(f"image {info['id']}: {n} boxes, {len(class_ids)} class ids, "
                         f"{len(scores)} scores, masks {masks.shape}: lengths differ")
    if n and tuple(masks.shape[:2]) != (int(info["height"]), int(info["width"])):
        raise ValueError(f"image {info['id']}: masks {masks.shape[:2]} do not match the "
                         f"image size {(info['height'], info['width'])}")
    results = []
    for k in range(n):
        y1, x1, y2, x2 = (float(v) for v in rois[k])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            rle = mask_utils.encode(np.asfortranarray(masks[:, :, k].astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        results.append({
            "image_id": info["id"],
            "category_id": dataset.get_source_class_id(int(class_ids[k]), "coco"),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": float(scores[k]),
            "segmentation": rle,
        })
    return results


def _load_coco_gt(annotation_file):
    """``pycocotools`` COCO of the annotation file (its prints silenced)."""
    from pycocotools.coco import COCO
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(annotation_file))


def coco_scores(coco_gt, results, image_ids, verbose=False):
    """``{"bbox": {"AP", "AP50"}, "segm": {...}}`` in percent from ``COCOeval`` over
    ``image_ids`` (annotation-file ids) and all categories. No results → 0."""
    from pycocotools.cocoeval import COCOeval
    scores = {}
    for iou_type in ("bbox", "segm"):
        if not results:
            scores[iou_type] = {"AP": 0.0, "AP50": 0.0}
            continue
        sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
        with sink, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            coco_dt = coco_gt.loadRes(results)
            evaluator = COCOeval(coco_gt, coco_dt, iou_type)
            evaluator.params.imgIds = sorted(set(image_ids))
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        scores[iou_type] = {"AP": 100.0 * max(float(evaluator.stats[0]), 0.0),
                            "AP50": 100.0 * max(float(evaluator.stats[1]), 0.0)}
    return scores


def evaluate_coco(dataset, predict_fn, annotation_file, limit=None, progress=True, verbose=False):
    """COCO's standard evaluation of ``predict_fn`` on the images of ``dataset``.

    ``predict_fn(image, image_id)`` returns one image's detections (see
    :func:`detections_to_coco_results`). ``limit`` evaluates the first N images (by image
    id); ``annotation_file`` is the instances JSON the dataset was loaded from (scored in its
    own ids). Returns ``{"bbox": {"AP", "AP50"}, "segm": {...}, "results": [...],
    "images": N, "seconds_per_image": s}`` (AP in percent).
    """
    image_ids = list(dataset.image_ids)
    if limit:
        image_ids = image_ids[:int(limit)]
    results, start = [], time.time()
    iterator = image_ids
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(image_ids, desc="evaluate", unit="image")
    for image_id in iterator:
        image = dataset.load_image(image_id)
        results += detections_to_coco_results(dataset, image_id, predict_fn(image, image_id))
    seconds = (time.time() - start) / max(len(image_ids), 1)
    coco_ids = [dataset.image_info[i]["id"] for i in image_ids]
    scores = coco_scores(_load_coco_gt(annotation_file), results, coco_ids, verbose=verbose)
    return {**scores, "results": results, "images": len(image_ids), "seconds_per_image": seconds}


# ------------------------------------------------------------------------- weights
def load_model_weights(model, spec, imagenet_weights=None, strict=False, exclude=None):
    """Load ``spec`` into ``model`` (a ``MaskRCNN``) by layer name; returns the
    ``LoadReport`` (None for ``"none"``).

    ``"last"``: the newest checkpoint under the model directory (resumes its epoch);
    ``"imagenet"``: the backbone file ``imagenet_weights`` (e.g. written by
    ``samples/imagenet/pretrain_backbone.py``); a path: any matterport-layout ``.h5``
    (matterport's COCO weights, a checkpoint). ``strict``: any shape mismatch is an error
    (evaluation), else mismatched layers are skipped with a warning (training from another
    model). Raises ``FileNotFoundError`` / ``ValueError`` with the file named.
    """
    if spec in (None, "none"):
        return None
    if spec == "coco":
        raise ValueError("--model coco: weights cannot be downloaded here; pass the path of "
                         "a local file, e.g. --model mask_rcnn_coco.h5")
    if spec == "last":
        path = model.find_last()
    elif spec == "imagenet":
        if not imagenet_weights:
            raise ValueError("--model imagenet needs --imagenet-weights FILE (an ImageNet(-687) "
                             "backbone, e.g. from samples/imagenet/pretrain_backbone.py)")
        path = imagenet_weights
    else:
        path = spec
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    report = model.load_weights(path, by_name=True, exclude=exclude, skip_mismatch=not strict)
    from .mrcnn.weights import check_load_report  # imports Keras: only when loading
    return check_load_report(report, path, log)


# ------------------------------------------------------------------------- command line
def build_parser():
    """The ``coco.py`` parser (matterport's options plus this project's)."""
    parser = argparse.ArgumentParser(allow_abbrev=False,
        description="Train or evaluate plain Mask R-CNN on MS COCO's 80 categories "
                    "(the paper's Table 1 baseline).")
    parser.add_argument("command", choices=["train", "evaluate"], help="'train' or 'evaluate'")
    parser.add_argument("--dataset", help="COCO root: annotations/instances_<subset><year>.json "
                                          "and images in <subset><year>/")
    parser.add_argument("--year", default="2017", help="COCO year (default 2017)")
    parser.add_argument("--model", required=True,
                        help="'imagenet' (--imagenet-weights FILE), 'last' (newest checkpoint in "
                             "--logs), 'none' (random initialisation, train only), 'gt' "
                             "(ground truth as predictions, evaluate only) or a .h5 path "
                             "(e.g. matterport's mask_rcnn_coco.h5)")
    parser.add_argument("--imagenet-weights", help="backbone file for --model imagenet")
    parser.add_argument("--logs", default="logs", help="logs and checkpoints (default ./logs)")
    parser.add_argument("--limit", type=int, default=0,
                        help="evaluate only the first N images (default 0: all)")
    parser.add_argument("--train-annotations", help="training instances JSON (instead of --dataset)")
    parser.add_argument("--train-images", help="training image folder (instead of --dataset)")
    parser.add_argument("--val-annotations", help="validation/evaluation instances JSON")
    parser.add_argument("--val-images", help="validation/evaluation image folder")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                        help="paper (1024², default) or small (512²)")
    parser.add_argument("--image-size", type=int,
                        help="square image side in pixels, a multiple of 64 (default: the "
                             "preset's); weights do not depend on it")
    parser.add_argument("--backbone", choices=["resnet50", "resnet101", "tiny"], default="resnet50",
                        help="resnet50 (the paper's, default), resnet101 (matterport's released "
                             "COCO model) or tiny (CPU smoke runs, 128²)")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs on this machine (default 1)")
    add_multi_worker_arguments(parser)
    parser.add_argument("--images-per-gpu", type=int, help="default: the preset's 3")
    parser.add_argument("--steps-per-epoch", type=int, default=1000, help="default 1000")
    parser.add_argument("--validation-steps", type=int, default=50, help="default 50 (0: none)")
    parser.add_argument("--heads-epochs", type=int, default=PAPER_HEADS_EPOCHS)
    parser.add_argument("--all-epochs", type=int, default=PAPER_ALL_EPOCHS)
    parser.add_argument("--total-epochs", type=int, default=PAPER_TOTAL_EPOCHS)
    parser.add_argument("--lr", type=float, help="learning rate (default 0.02)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="evaluation output folder (default <logs>/coco_eval_<time>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def check_args(parser, args):
    """Reject bad arguments with a usage error (exit code 2) naming the value."""
    if args.dataset is None:
        needed = ("train_annotations", "train_images") if args.command == "train" \
            else ("val_annotations", "val_images")
        if any(getattr(args, n) is None for n in needed):
            parser.error("give --dataset DIR, or --" + " and --".join(
                n.replace("_", "-") for n in needed))
    elif not os.path.isdir(args.dataset):
        parser.error(f"--dataset: folder not found: {args.dataset}")
    if args.model == "gt" and args.command == "train":
        parser.error("--model gt is an evaluation sanity check; it cannot be trained")
    if args.model == "none" and args.command == "evaluate":
        parser.error("--model none: evaluating random weights is meaningless; pass a file")
    if args.model not in MODEL_KEYWORDS:
        require_file(parser, args.model, "--model: weights")
    if args.model == "imagenet" and not args.imagenet_weights:
        parser.error("--model imagenet needs --imagenet-weights FILE (no downloads here)")
    require_file(parser, args.imagenet_weights, "--imagenet-weights: weights")
    require_at_least(parser, args, 1, "gpus", "steps_per_epoch", "images_per_gpu")
    require_at_least(parser, args, 0, "validation_steps", "limit")
    if args.image_size is not None and (args.image_size < 64 or args.image_size % 64):
        parser.error(f"--image-size must be a positive multiple of 64, got {args.image_size}")
    try:
        schedule_stages(args.heads_epochs, args.all_epochs, args.total_epochs, args.lr or 0.02)
    except ValueError as err:
        parser.error(f"schedule: {err}")
    args.cluster = check_tf_config(parser, args.command == "train" and args.multi_worker)


def _data_paths(args, subset):
    """``(annotation file, image folder)`` of ``subset`` ("train"/"val") from the arguments."""
    ann = args.train_annotations if subset == "train" else args.val_annotations
    images = args.train_images if subset == "train" else args.val_images
    if args.dataset is not None:
        ann = ann or os.path.join(args.dataset, "annotations", f"instances_{subset}{args.year}.json")
        images = images or os.path.join(args.dataset, f"{subset}{args.year}")
    return ann, images


def _size_overrides(args):
    """``IMAGE_MIN_DIM`` / ``IMAGE_MAX_DIM`` of ``--image-size`` (none when not given)."""
    if args.image_size is None:
        return {}
    return {"IMAGE_MIN_DIM": args.image_size, "IMAGE_MAX_DIM": args.image_size}


def train(args):
    """``coco.py train``: returns ``{"log_dir", "epoch", "stages", "history"}``."""
    logs = args.logs  # every machine resolves --weights last here; only the chief writes
    strategy = make_strategy(args)  # the same checks and messages as train_siamese.py
    import keras
    from .mrcnn.model import MaskRCNN
    keras.utils.set_random_seed(args.seed)
    overrides = {"GPU_COUNT": strategy.num_replicas_in_sync if strategy else args.gpus,
                 "STEPS_PER_EPOCH": args.steps_per_epoch, "VALIDATION_STEPS": args.validation_steps,
                 "SEED": args.seed, **_size_overrides(args)}
    if args.images_per_gpu:
        overrides["IMAGES_PER_GPU"] = args.images_per_gpu
    if args.lr:
        overrides["LEARNING_RATE"] = args.lr
    config = coco_config(args.preset, args.backbone, **overrides)
    train_ann, train_images = _data_paths(args, "train")
    train_set = load_coco_dataset(annotation_file=train_ann, image_dir=train_images)
    val_set = None
    if args.validation_steps > 0 and (args.dataset or args.val_annotations):
        val_ann, val_images = _data_paths(args, "val")
        val_set = load_coco_dataset(annotation_file=val_ann, image_dir=val_images)
    model = MaskRCNN("training", config, model_dir=logs, strategy=strategy)
    load_model_weights(model, args.model, imagenet_weights=args.imagenet_weights)
    stages = schedule_stages(args.heads_epochs, args.all_epochs, args.total_epochs,
                             config.LEARNING_RATE)
    if strategy is not None and args.cluster.workers > 1:
        settings = {"stages": [list(stage) for stage in stages], "images": len(train_set.image_ids),
                    "classes": int(train_set.num_classes), "steps_per_epoch": args.steps_per_epoch,
                    "validation_steps": args.validation_steps}
        with lost_worker_outside_steps(True, "before the first step"):
            check_same_start(strategy, start_signature(model.epoch, weights_fingerprint(model),
                                                       config.to_dict(), settings), args.cluster)
    todo = [s for s in stages if s.until_epoch > model.epoch]
    print(f"Mask R-CNN on {train_set.num_classes - 1} categories, {len(train_set.image_ids)} "
          f"training images; batch {config.BATCH_SIZE}; starting after epoch {model.epoch}; "
          "stages: " + (", ".join(f"{s.layers} to epoch {s.until_epoch} at lr {s.learning_rate:g}"
                                  for s in todo) or "none (already finished)"))
    history = []
    for stage in todo:
        history += model.train(train_set, val_set, learning_rate=stage.learning_rate,
                               epochs=stage.until_epoch, layers=stage.layers,
                               steps_per_epoch=args.steps_per_epoch,
                               validation_steps=args.validation_steps,
                               verbose=0 if args.quiet else 1)
    fingerprint = weights_fingerprint(model)
    if strategy is not None and args.cluster.workers > 1:
        with lost_worker_outside_steps(True, "after the last step (the chief's checkpoints are complete)"):
            finish_together(strategy)
    print(f"finished at epoch {model.epoch}; weights sha256 {fingerprint}", flush=True)
    return {"log_dir": model.log_dir, "epoch": model.epoch, "stages": todo, "history": history}


def evaluate(args):
    """``coco.py evaluate``: scores, writes ``results.json`` and ``summary.json`` to the
    output folder and returns the summary dict."""
    ann, images = _data_paths(args, "val")
    dataset = load_coco_dataset(annotation_file=ann, image_dir=images)
    report = None
    if args.model == "gt":
        predict = ground_truth_predictor(dataset)
    else:
        from .mrcnn.model import MaskRCNN
        config = coco_config(args.preset, args.backbone, GPU_COUNT=1, IMAGES_PER_GPU=1,
                             DETECTION_MIN_CONFIDENCE=0.0, **_size_overrides(args))
        model = MaskRCNN("inference", config, model_dir=args.logs)
        report = load_model_weights(model, args.model, imagenet_weights=args.imagenet_weights,
                                    strict=True)
        predict = model_predictor(model)
    outcome = evaluate_coco(dataset, predict, ann, limit=args.limit, progress=not args.quiet)
    out_dir = args.out or os.path.join(
        args.logs, f"coco_eval_{datetime.datetime.now():%Y%m%dT%H%M%S}")
    os.makedirs(out_dir, exist_ok=True)
    summary = {"model": args.model, "annotations": ann, "images": outcome["images"],
               "bbox": outcome["bbox"], "segm": outcome["segm"],
               "seconds_per_image": outcome["seconds_per_image"],
               "layers_loaded": len(report.loaded) if report else None,
               "layers_missing_in_file": list(report.missing_in_file) if report else None}
    with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(outcome["results"], handle)
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    print(f"{outcome['images']} images, model {args.model}")
    for kind, name in (("bbox", "detection"), ("segm", "segmentation")):
        print(f"{name:>12}: AP50 {outcome[kind]['AP50']:5.1f}   AP {outcome[kind]['AP']:5.1f}")
    print(f"outputs written to {out_dir}")
    summary["out"] = out_dir
    summary["report"] = report
    return summary


def main(argv=None):
    """Entry point of ``samples/coco/coco.py``; returns the command's result. User errors
    (missing files, bad values) exit with code 2 and a one-line message.

    ``train --multi-worker`` that loses another machine ends with ``error: ...`` and exit
    status 3; one whose machines do not all start within ``--worker-start-timeout`` is ended
    by its watchdog (``error: ...``, exit status 137; see ``cluster.multi_worker_strategy``).

    Raises:
        SystemExit: status 2 for bad arguments or an unreadable input (message on stderr).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return train(args) if args.command == "train" else evaluate(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except RuntimeError as error:
        from .mrcnn.training import WorkerLostError  # imports TensorFlow: only when needed
        if not isinstance(error, WorkerLostError):
            raise
        print(f"error: {error}", file=sys.stderr, flush=True)
        # TensorFlow's collective threads may still wait on the lost peer: leave at once.
        os._exit(3)
