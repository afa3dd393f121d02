"""``siamese_mask_rcnn.evaluation.cli`` (``samples/coco/evaluate_siamese.py``) with a real (tiny, untrained) Siamese model on the COCO
subset, through every analysis: both category sets, runs, confusion, clutter, absent categories."""
import json

import pytest


from conftest import MATCH_SCORE  # noqa: E402

from siamese_mask_rcnn.evaluation import cli


@pytest.fixture(scope="module")
def weights(always_match_checkpoint):
    return always_match_checkpoint


def test_evaluate_cli_runs_a_trained_model_through_the_protocol(project_root, coco_subset_annotations,
                                                                coco_subset_dir, weights, tmp_path):
    out = tmp_path / "eval"
    cli.main(["--annotations", str(coco_subset_annotations), "--images", str(coco_subset_dir / "images"),
              "--split", "1", "--weights", str(weights), "--classes", "both", "--runs", "2",
              "--absent", "--confusion", "--clutter", "--out", str(out), "--quiet"])
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["rows"]
    assert {"background", "one-shot"} <= set(rows)
    results = json.loads(next(out.glob("results_one_shot_seed*.json")).read_text())
    assert results, "the model's detections must reach the COCO results"
    assert [r["score"] for r in results] == pytest.approx([MATCH_SCORE] * len(results), abs=1e-5)
    for r in results:
        assert set(r) >= {"image_id", "category_id", "bbox", "score", "segmentation"}
        assert isinstance(r["segmentation"]["counts"], str)
    for name in ("table.txt", "absent.json", "confusion.png", "confusion.csv", "confusion.json",
                 "clutter.png", "clutter.csv", "clutter.json"):
        assert (out / name).exists(), name
