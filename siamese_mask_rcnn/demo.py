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

from . import evaluation
from .config import siamese_config
from .mrcnn.fileio import ensure_writable_dir

log = logging.getLogger(__name__)


def demo_config(image_size=128, reference_size=32, preset="demo", **overrides):
    """The CPU demo's settings: the ``demo`` preset (a few-layer backbone and narrow heads on
    128² scenes with 32² references; see :mod:`siamese_mask_rcnn.presets`).

    Args:
        image_size: query side in pixels (``IMAGE_MIN_DIM`` = ``IMAGE_MAX_DIM``).
        reference_size: reference side in pixels (``TARGET_MIN_DIM`` = ``TARGET_MAX_DIM``).
        preset: the preset to start from (``"demo"``, or ``"tiny"`` for the test suite).
        **overrides: config keys applied last.

    Raises:
        ValueError: unknown preset, unknown config key or invalid value.
    """
    sizes = dict(IMAGE_MIN_DIM=image_size, IMAGE_MAX_DIM=image_size,
                 TARGET_MIN_DIM=reference_size, TARGET_MAX_DIM=reference_size)
    return siamese_config(preset, **{**sizes, **overrides})


def make_datasets(dataset="synthetic", data_dir=None, num_train=2000, num_val=150, image_size=128,
                  seed=0, num_categories=400):
    """Training scenes and evaluation scenes of the embedded data (or Omniglot), as
    ``(train, val)`` prepared one-shot datasets of ``image_size``² pixel scenes.

    Raises:
        ValueError: unknown ``dataset``, or ``"omniglot"`` without ``data_dir``.
        FileNotFoundError: the Omniglot archives are missing from ``data_dir``.
    """
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
    held-out category, reference inset lower-left. Returns the PNG paths written.

    Raises:
        OSError: ``out_dir`` cannot be created or written.
    """
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
        path = out_dir / f"example_{len(paths)}_{dataset.class_names[class_id]}.png"
        visualize.save_figure(fig, path)
        plt.close(fig)
        paths.append(str(path))
    return paths


def run_demo(out_dir="logs/demo", dataset="synthetic", data_dir=None, minutes=15.0, epochs=40,
             steps_per_epoch=None, num_train=2000, num_val=150, seed=0, eval_limit=None,
             config_overrides=None, verbose=1):
    """Train, evaluate (paper §5.2 protocol, §5.3 baseline) and write the results.

    ``minutes`` bounds the training time (None: ``epochs`` only); ``config_overrides`` are
    config keys applied on top of the ``demo`` preset. Returns the summary dict (mAP50 per
    row as fractions, timings, output paths), also written as ``demo_summary.json``.

    Raises:
        ValueError: unknown dataset or config key (see :func:`make_datasets`,
            :func:`demo_config`).
        FileNotFoundError: Omniglot archives missing.
        UnwritableOutputError: (an ``OSError``) ``out_dir`` cannot be created or written;
            checked first.
    """
    from .siamese import SiameseMaskRCNN  # imports TensorFlow: only when a model is built

    t0 = time.time()
    out_dir = pathlib.Path(ensure_writable_dir(out_dir, "demo output folder"))  # before any work
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
