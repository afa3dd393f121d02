"""``samples/coco/evaluate_siamese.py`` with a real (tiny, untrained) Siamese model on the COCO
subset, through every analysis: both category sets, runs, confusion, clutter, absent categories."""
import importlib.util
import json
import math

import numpy as np
import pytest

from siamese_mask_rcnn.demo import demo_config

TINY_MODEL = dict(IMAGES_PER_GPU=1, TOP_DOWN_PYRAMID_SIZE=16, MATCHING_CHANNELS=24,
                  FPN_CLASSIF_FC_LAYERS_SIZE=32, RPN_CONV_CHANNELS=32, MASK_CONV_CHANNELS=16,
                  POST_NMS_ROIS_INFERENCE=50, DETECTION_MAX_INSTANCES=5)


def load_cli(project_root):
    spec = importlib.util.spec_from_file_location("evaluate_siamese",
                                                  project_root / "samples" / "coco" / "evaluate_siamese.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """An untrained tiny checkpoint whose classifier always says "match" (score 0.75), with
    the ``config.json`` that training writes beside it."""
    from siamese_mask_rcnn.siamese import SiameseMaskRCNN

    run_dir = tmp_path_factory.mktemp("run")
    config = demo_config(**TINY_MODEL)
    model = SiameseMaskRCNN("inference", config, model_dir=str(run_dir))
    for path, value in (("mrcnn_class_logits/kernel", 0.0), ("mrcnn_class_logits/bias", None)):
        (var,) = [w for w in model.keras_model.weights if w.path == path]
        var.assign(np.zeros(var.shape, np.float32) if value is not None
                   else np.array([0.0, math.log(3.0)], np.float32))
    path = run_dir / "mask_rcnn_demo_0001.h5"
    model.save_weights(str(path))
    config.save(str(run_dir / "config.json"))
    return path


def test_evaluate_cli_runs_a_trained_model_through_the_protocol(project_root, coco_subset_annotations,
                                                                coco_subset_dir, weights, tmp_path):
    cli = load_cli(project_root)
    out = tmp_path / "eval"
    cli.main(["--annotations", str(coco_subset_annotations), "--images", str(coco_subset_dir / "images"),
              "--split", "1", "--weights", str(weights), "--classes", "both", "--runs", "2",
              "--absent", "--confusion", "--clutter", "--out", str(out), "--quiet"])
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["rows"]
    assert {"background", "one-shot"} <= set(rows)
    results = json.loads(next(out.glob("results_one_shot_seed*.json")).read_text())
    assert results, "the model's detections must reach the COCO results"
    assert [r["score"] for r in results] == pytest.approx([0.75] * len(results), abs=1e-5)
    for r in results:
        assert set(r) >= {"image_id", "category_id", "bbox", "score", "segmentation"}
        assert isinstance(r["segmentation"]["counts"], str)
    for name in ("table.txt", "absent.json", "confusion.png", "confusion.csv", "confusion.json",
                 "clutter.png", "clutter.csv", "clutter.json"):
        assert (out / name).exists(), name
