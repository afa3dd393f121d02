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


def _one_shot_results(out):
    return json.loads(next(out.glob("results_one_shot_seed*.json")).read_text())


def test_evaluate_detection_flags_reach_the_model(coco_subset_annotations, coco_subset_dir, tmp_path):
    """A classifier unsure of every proposal (match probability 0.3 < the background's 0.7):
    matterport's argmax rule detects nothing; ``--score-rule foreground`` keeps the ROIs from
    ``--min-confidence`` on, at most ``--max-detections`` per (query, category)."""
    from conftest import constant_score_checkpoint

    weights = constant_score_checkpoint(tmp_path / "unsure_run", 0.3)
    common = ["--annotations", str(coco_subset_annotations), "--images", str(coco_subset_dir / "images"),
              "--split", "1", "--weights", str(weights), "--runs", "1", "--limit", "3", "--quiet"]
    cli.main(common + ["--out", str(tmp_path / "argmax")])
    assert _one_shot_results(tmp_path / "argmax") == []
    recorded = json.loads((tmp_path / "argmax" / "summary.json").read_text())["config"]
    # the settings in effect (the checkpoint's config), not the flags' None
    assert (recorded["score_rule"], recorded["min_confidence"], recorded["max_detections"]) == ("argmax", 0.5, 5)
    cli.main(common + ["--score-rule", "foreground", "--min-confidence", "0.2", "--max-detections", "2",
                       "--out", str(tmp_path / "fg")])
    results = _one_shot_results(tmp_path / "fg")
    assert results and [r["score"] for r in results] == pytest.approx([0.3] * len(results), abs=1e-5)
    per_pair = {}
    for r in results:
        per_pair[(r["image_id"], r["category_id"])] = per_pair.get((r["image_id"], r["category_id"]), 0) + 1
    assert max(per_pair.values()) == 2
    cli.main(common + ["--score-rule", "foreground", "--min-confidence", "0.35", "--out", str(tmp_path / "hi")])
    assert _one_shot_results(tmp_path / "hi") == []


@pytest.mark.parametrize("extra, message", [
    (["--min-confidence", "1.5"], "--min-confidence must be in [0, 1], got 1.5"),
    (["--min-confidence", "nan"], "--min-confidence must be in [0, 1], got nan"),
    (["--max-detections", "0"], "--max-detections"),
    (["--model", "gt", "--score-rule", "foreground"], "--score-rule sets the Siamese model's detections; --model gt"),
    (["--model", "random", "--score-rule", "foreground", "--max-detections", "3"],
     "--score-rule, --max-detections set the Siamese model's detections; --model random"),
])
def test_evaluate_detection_flags_are_checked(coco_subset_annotations, coco_subset_dir, weights, tmp_path,
                                              capsys, extra, message):
    argv = ["--annotations", str(coco_subset_annotations), "--images", str(coco_subset_dir / "images"),
            "--weights", str(weights), "--out", str(tmp_path / "o")] + extra
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_build_predictor_refuses_unknown_or_conflicting_detection_keywords(weights):
    from siamese_mask_rcnn.predict import build_predictor

    with pytest.raises(TypeError, match="min_confidnce"):
        build_predictor(str(weights), min_confidnce=0.2)
    with pytest.raises(TypeError, match="in the config given"):
        build_predictor(str(weights), config=object(), score_rule="foreground")


def test_a_failed_model_load_leaves_no_empty_output_folder(coco_subset_annotations, coco_subset_dir, tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an HDF5 file at all")
    argv = ["--annotations", str(coco_subset_annotations), "--images", str(coco_subset_dir / "images"),
            "--weights", str(bad), "--quiet"]
    with pytest.raises(ValueError, match="bad.h5"):
        cli.main(argv + ["--out", str(tmp_path / "new" / "deeper" / "eval")])
    assert not (tmp_path / "new").exists()  # made by the argument checks, removed again, parents too
    assert tmp_path.is_dir()
    (tmp_path / "mine").mkdir()
    with pytest.raises(ValueError, match="bad.h5"):
        cli.main(argv + ["--out", str(tmp_path / "mine")])
    assert (tmp_path / "mine").is_dir()  # the user's own folder stays
