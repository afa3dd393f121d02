"""The main job on embedded data: train a small Siamese Mask R-CNN on a CPU, evaluate it.

``run_demo`` trains from scratch on the procedural one-shot dataset (or Omniglot scenes),
then runs the evaluation protocol of ``siamese_mask_rcnn.evaluation`` on held-out scenes:
one-shot categories (never used as references or labels in training), background
(training) categories and the random-boxes baseline. It writes to ``out_dir``:
``summary.json``, ``table.txt``, COCO results, per-category plots, ``examples/*.png``
(Fig.-5 style pictures), the checkpoints and the config.
"""
import json
import logging
import pathlib
import time

import numpy as np

from .config import siamese_config
from .mrcnn.backbone import tiny_backbone
from .mrcnn.fileio import safe_filename

log = logging.getLogger(__name__)


def demo_config(image_size=128, reference_size=32, **overrides):
    """The CPU demo's settings: a small backbone and heads on 128² scenes."""
    settings = dict(
        NAME="demo", BACKBONE=tiny_backbone, IMAGES_PER_GPU=4, GPU_COUNT=1,
        IMAGE_MIN_DIM=image_size, IMAGE_MAX_DIM=image_size,
        TARGET_MIN_DIM=reference_size, TARGET_MAX_DIM=reference_size,
        RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128), TOP_DOWN_PYRAMID_SIZE=64, MATCHING_CHANNELS=96,
        FPN_CLASSIF_FC_LAYERS_SIZE=128, RPN_TRAIN_ANCHORS_PER_IMAGE=64, RPN_CONV_CHANNELS=128,
        MASK_CONV_CHANNELS=64,
        POST_NMS_ROIS_TRAINING=200, POST_NMS_ROIS_INFERENCE=100, TRAIN_ROIS_PER_IMAGE=32,
        MAX_GT_INSTANCES=12, DETECTION_MAX_INSTANCES=12, DETECTION_MIN_CONFIDENCE=0.5,
        MINI_MASK_SHAPE=(28, 28), LEARNING_RATE=0.01, WEIGHT_DECAY=0.0001,
        STEPS_PER_EPOCH=100, VALIDATION_STEPS=2, SEED=0, DATA_WORKERS=2, FPN_RELU=False,
    )
    settings.update(overrides)
    return siamese_config("small", **settings)


def make_datasets(dataset="synthetic", data_dir=None, num_train=2000, num_val=150, image_size=128,
                  seed=0, num_categories=400):
    """Training scenes and evaluation scenes of the embedded data (or Omniglot)."""
    if dataset == "synthetic":
        from .datasets.synthetic import make_train_val
        return make_train_val(num_categories=num_categories, num_train=num_train, num_val=num_val,
                              image_size=image_size, seed=seed)
    if dataset == "omniglot":
        from .datasets.omniglot import OmniglotOneShotDataset
        if not data_dir:
            raise ValueError("--dataset omniglot needs --data-dir (a directory with the Omniglot zip archives)")
        train = OmniglotOneShotDataset(data_dir, num_images=num_train, image_size=image_size, seed=2 * seed)
        val = OmniglotOneShotDataset(data_dir, num_images=num_val, image_size=image_size, seed=2 * seed + 1)
        return train, val
    raise ValueError(f"unknown dataset {dataset!r}: choose 'synthetic' or 'omniglot'")


def save_examples(model, dataset, class_ids, out_dir, count=4, seed=0, top_k=3):
    """Fig.-5-style pictures: query with the ``top_k`` highest-scoring detections for one
    held-out category, reference inset lower-left."""
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


def run_demo(out_dir="logs/demo", dataset="synthetic", data_dir=None, minutes=15.0, epochs=40,
             steps_per_epoch=None, num_train=2000, num_val=150, seed=0, eval_limit=None,
             config_overrides=None, verbose=1):
    """Train, evaluate and write the results; returns the summary dict."""
    from . import evaluation
    from .siamese import SiameseMaskRCNN

    t0 = time.time()
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    overrides = dict(config_overrides or {})
    if steps_per_epoch:
        overrides["STEPS_PER_EPOCH"] = int(steps_per_epoch)
    config = demo_config(**{**overrides, "SEED": seed})
    train, val = make_datasets(dataset, data_dir, num_train, num_val, config.IMAGE_MAX_DIM, seed)
    if verbose:
        print(f"data: {len(train.image_ids)} training scenes, {len(val.image_ids)} evaluation scenes, "
              f"{len(train.train_class_ids)} background and {len(train.oneshot_class_ids)} one-shot categories "
              f"({time.time() - t0:.0f}s)")

    model = SiameseMaskRCNN("training", config, model_dir=str(out_dir / "checkpoints"))
    budget = None if minutes is None else 60.0 * float(minutes) - (time.time() - t0)
    history = model.train(train, val, config.LEARNING_RATE, epochs=epochs, layers="all",
                          verbose=verbose, max_seconds=budget)
    train_seconds = time.time() - t0
    checkpoint = model.find_last()

    inference = SiameseMaskRCNN("inference", demo_config(**{**overrides, "SEED": seed, "IMAGES_PER_GPU": 1}),
                                model_dir=str(out_dir / "checkpoints"))
    inference.load_weights(checkpoint, by_name=True)
    predict = inference.predict_fn()
    rows = {
        "background": evaluation.evaluate(val, predict, val.train_class_ids, seed=seed, limit=eval_limit,
                                          progress=bool(verbose)),
        "one-shot": evaluation.evaluate(val, predict, val.oneshot_class_ids, seed=seed, limit=eval_limit,
                                        progress=bool(verbose)),
        "random boxes": evaluation.evaluate(val, evaluation.random_boxes_predictor(val, seed=seed),
                                            val.oneshot_class_ids, seed=seed, limit=eval_limit, progress=False),
    }
    absent = evaluation.absent_category_test(val, predict, val.oneshot_class_ids, seed=seed,
                                             score_threshold=inference.config.DETECTION_MIN_CONFIDENCE,
                                             limit=eval_limit if eval_limit else 50,
                                             max_categories_per_image=5, progress=bool(verbose))
    info = {"dataset": dataset, "train_scenes": len(train.image_ids), "eval_scenes": len(val.image_ids),
            "epochs_trained": model.epoch, "steps": model.epoch * config.STEPS_PER_EPOCH,
            "train_seconds": round(train_seconds, 1), "checkpoint": checkpoint,
            "final_loss": history[-1]["loss"] if history else None,
            "config": config.to_dict()}
    title = f"one-shot instance segmentation on {dataset} (mAP50, %)"
    written = evaluation.write_outputs(out_dir, rows, absent=absent, config=info, title=title)
    examples = save_examples(inference, val, val.oneshot_class_ids, out_dir / "examples", seed=seed)
    summary = {label: {"map50_bbox": r["map50_bbox"], "map50_segm": r["map50_segm"], "n_pairs": r["n_pairs"]}
               for label, r in rows.items()}
    summary.update({"absent_false_positives_per_image": absent["mean_false_positives_per_image"],
                    "total_seconds": round(time.time() - t0, 1), "examples": examples,
                    "outputs": {k: str(v) for k, v in written.items()}, **{k: info[k] for k in
                    ("dataset", "epochs_trained", "steps", "train_seconds", "checkpoint")}})
    (out_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if verbose:
        print(evaluation.format_table(rows, title=title))
        print(f"results in {out_dir} ({summary['total_seconds']:.0f}s in total)")
    return summary
