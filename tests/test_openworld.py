"""Open-world one-shot evaluation: every category searched in every query image."""
import json
import math

import numpy as np
import pytest

from siamese_mask_rcnn.evaluation import baselines
from siamese_mask_rcnn.evaluation import openworld as ow


@pytest.fixture(scope="module")
def dataset(coco_split1):
    return coco_split1


@pytest.fixture(scope="module")
def gt_open_world(dataset, coco_split1_ids):
    return ow.evaluate_open_world(dataset, baselines.ground_truth_predictor(dataset), coco_split1_ids,
                                  seed=0, progress=False)


# ---------------------------------------------------------------- hand-made curve


def test_match_detections_greedy_by_score():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    rois = np.array([[0, 0, 10, 10],      # exact match of gt 0, low score
                     [0, 0, 10, 9],       # IoU 0.9 with gt 0, high score: takes gt 0
                     [50, 50, 60, 60],    # nothing
                     [20, 20, 30, 31]], float)
    scores = np.array([0.2, 0.9, 0.8, 0.5])
    assert ow.match_detections(rois, scores, gt).tolist() == [False, True, False, True]
    assert ow.match_detections(rois, scores, np.zeros((0, 4))).tolist() == [False] * 4


def test_curve_points_on_a_hand_made_case():
    present = [{"scores": [0.9, 0.6, 0.3], "matched": [True, False, True], "n_gt": 3}]
    absent = [{"scores": [0.8]}, {"scores": []}]
    rows = ow.recall_fp_curve(present, absent, thresholds=(0.0, 0.5, 0.85, 1.0))
    by_t = {r["threshold"]: r for r in rows}
    assert by_t[0.0]["recall"] == pytest.approx(2 / 3)
    assert by_t[0.0]["fp_per_absent_pair"] == pytest.approx(0.5)
    assert by_t[0.0]["fraction_absent_pairs_with_fp"] == pytest.approx(0.5)
    assert by_t[0.0]["precision_present"] == pytest.approx(2 / 3)
    assert by_t[0.5]["recall"] == pytest.approx(1 / 3)
    assert by_t[0.5]["precision_present"] == pytest.approx(1 / 2)
    assert by_t[0.85]["recall"] == pytest.approx(1 / 3)
    assert by_t[0.85]["fp_per_absent_pair"] == 0
    assert by_t[1.0]["recall"] == 0 and math.isnan(by_t[1.0]["precision_present"])
    assert ow.operating_point(rows, 0.1)["threshold"] == 0.85
    assert ow.operating_point(rows, 0.5)["threshold"] == 0.0
    assert ow.curve_at(rows, 0.7)["threshold"] == 0.5
    assert ow.operating_point([dict(rows[0], fp_per_absent_pair=3.0)], 0.1) is None


# ---------------------------------------------------------------- protocol


def test_every_category_searched_in_every_image(dataset, coco_split1_ids, gt_open_world):
    images = sorted(dataset.image_ids)
    assert gt_open_world["n_images"] == len(images)
    for image_id in images:
        present, absent = ow.open_world_categories(dataset, image_id, coco_split1_ids)
        annotated = {abs(a["class_id"]) for a in dataset.instance_annotations(image_id)}
        assert set(present) <= annotated and not set(absent) & annotated
        assert set(present) | set(absent) == {c for c in coco_split1_ids
                                             if (c in dataset.image_categories.get(image_id, [])
                                                 or c not in annotated)
                                             and [i for i in dataset.category_index.get(c, []) if i != image_id]}
    assert gt_open_world["n_absent_pairs"] > 5 * gt_open_world["n_present_pairs"]


def test_ground_truth_scores_100_and_no_false_positive(gt_open_world):
    assert gt_open_world["map50_bbox"] == pytest.approx(1.0)
    assert gt_open_world["map50_segm"] == pytest.approx(1.0)
    assert gt_open_world["at_threshold"]["fp_per_absent_pair"] == 0
    assert gt_open_world["at_threshold"]["recall"] == pytest.approx(1.0)
    assert gt_open_world["operating_point"]["threshold"] == 0.0


def test_one_confident_false_positive_lowers_ap_by_the_hand_computed_amount(dataset, coco_split1_ids,
                                                                          gt_open_world):
    # The first absent pair of some category that has ground truth: one detection scored
    # above every true positive makes that category's AP n/(n+1) (n = its instances), the
    # precision of the envelope at every recall level.
    target = None
    for image_id in sorted(dataset.image_ids):
        _, absent = ow.open_world_categories(dataset, image_id, coco_split1_ids)
        for class_id in absent:
            if class_id in gt_open_world["ap50_bbox"]:
                target = (image_id, class_id)
                break
        if target:
            break
    image_id, class_id = target
    gt = baselines.ground_truth_predictor(dataset)

    def predict(image, references, image_id=None):
        out = gt(image, references, image_id=image_id)
        if image_id == target[0]:
            h, w = image.shape[:2]
            mask = np.zeros((h, w, 1), bool)
            mask[10:60, 10:60] = True
            out[class_id] = {"rois": np.array([[10, 10, 60, 60]], float), "scores": np.array([2.0]),
                             "masks": mask}
        return out

    result = ow.evaluate_open_world(dataset, predict, coco_split1_ids, seed=0, progress=False)
    gt_data = dataset.to_coco_dict(class_ids=[class_id])
    n = sum(1 for a in gt_data["annotations"] if not a["iscrowd"])
    assert result["ap50_bbox"][class_id] == pytest.approx(n / (n + 1))
    drop = (1 - n / (n + 1)) / len(gt_open_world["ap50_bbox"])
    assert gt_open_world["map50_bbox"] - result["map50_bbox"] == pytest.approx(drop)
    assert result["at_threshold"]["fp_per_absent_pair"] == pytest.approx(1 / result["n_absent_pairs"])
    # Every other category is untouched.
    for other, ap in result["ap50_bbox"].items():
        if other != class_id:
            assert ap == pytest.approx(1.0)


def test_absent_cap_is_seeded_and_keeps_present(dataset, coco_split1_ids):
    for image_id in sorted(dataset.image_ids)[:4]:
        present, absent = ow.open_world_categories(dataset, image_id, coco_split1_ids)
        p2, a2 = ow.open_world_categories(dataset, image_id, coco_split1_ids, max_absent_per_image=3, seed=5)
        assert p2 == present and len(a2) == min(3, len(absent)) and set(a2) <= set(absent)
        assert ow.open_world_categories(dataset, image_id, coco_split1_ids, 3, seed=5) == (p2, a2)
    with pytest.raises(ValueError, match="max_absent_per_image"):
        ow.open_world_categories(dataset, 0, coco_split1_ids, max_absent_per_image=-1)


def test_interrupted_run_resumes_where_it_stopped(dataset, coco_split1_ids, tmp_path):
    gt = baselines.ground_truth_predictor(dataset)
    path = tmp_path / "ow.jsonl"
    calls = []

    def flaky(image, references, image_id=None):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(image_id)
        return gt(image, references, image_id=image_id)

    with pytest.raises(KeyboardInterrupt):
        ow.evaluate_open_world(dataset, flaky, coco_split1_ids, seed=3, max_absent_per_image=4,
                               results_path=path, progress=False)
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["kind"] == "header" and len(lines) == 1 + 4
    # A line cut by a kill is dropped on resume.
    with open(path, "a") as handle:
        handle.write('{"image_id": 99, "pairs": [')
    resumed = []

    def counting(image, references, image_id=None):
        resumed.append(image_id)
        return gt(image, references, image_id=image_id)

    result = ow.evaluate_open_world(dataset, counting, coco_split1_ids, seed=3, max_absent_per_image=4,
                                    results_path=path, progress=False)
    assert not set(resumed) & set(calls) and len(resumed) + 4 == len(dataset.image_ids)
    fresh = ow.evaluate_open_world(dataset, gt, coco_split1_ids, seed=3, max_absent_per_image=4,
                                   progress=False)
    assert result["map50_bbox"] == fresh["map50_bbox"] == pytest.approx(1.0)
    assert result["n_absent_pairs"] == fresh["n_absent_pairs"]
    assert len(path.read_text().splitlines()) == 1 + len(dataset.image_ids)
    with pytest.raises(ValueError, match=r"ow\.jsonl was written with seed=3"):
        ow.evaluate_open_world(dataset, gt, coco_split1_ids, seed=4, max_absent_per_image=4,
                               results_path=path, progress=False)


def test_writes_curve_csv_png_and_summary(gt_open_world, tmp_path):
    paths = ow.write_open_world(gt_open_world, tmp_path)
    rows = paths["open_world_curve_csv"].read_text().splitlines()
    assert rows[0].startswith("threshold,recall,fp_per_absent_pair") and len(rows) == 1 + 101
    assert paths["open_world_curve_png"].stat().st_size > 1000
    data = json.loads(paths["open_world_json"].read_text())
    assert data["summary"]["fp_per_absent_pair"] == 0 and "results" not in data
    text = ow.format_open_world(gt_open_world)
    assert "0.00 false positives per absent pair" in text and "detection 100.0" in text


def test_summary_says_where_the_threshold_comes_from(gt_open_world):
    """The default wording is the demo's (quoted in the README, character for character);
    ``evaluate_siamese.py`` names its --score-threshold instead of the model's threshold."""
    import re
    default = ow.format_open_world(gt_open_world)
    line = default.splitlines()[2]
    assert re.fullmatch(r"  at the model's threshold 0\.50: \d+\.\d\d false positives per absent pair "
                        r"\(\d+\.\d% of absent pairs with any\), recall \d+\.\d% on present pairs", line), line
    assert ow.format_open_world(gt_open_world, "the model's threshold") == default
    flagged = ow.format_open_world(gt_open_world, threshold_origin="--score-threshold")
    assert flagged == default.replace("  at the model's threshold 0.50: ", "  at --score-threshold 0.50: ")
    assert flagged != default


def test_curve_legend_says_where_the_threshold_comes_from(gt_open_world, headless_plots):
    import matplotlib.pyplot as plt

    for label, expected in ((None, "model threshold 0.50"), ("--score-threshold", "--score-threshold 0.50")):
        kwargs = {} if label is None else {"threshold_label": label}
        fig = ow.plot_curve(gt_open_world, **kwargs)
        texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        plt.close(fig)
        assert expected in texts, texts


# ---------------------------------------------------------------- command line


def test_cli_open_world_protocol(coco_subset_annotations, coco_subset_dir, tmp_path, capsys):
    from siamese_mask_rcnn.evaluation import cli
    base = ["--annotations", str(coco_subset_annotations), "--images", str(coco_subset_dir / "images"),
            "--protocol", "open-world", "--classes", "both", "--quiet", "--out", str(tmp_path)]
    outcome = cli.main(base + ["--model", "gt", "--max-absent-per-image", "5"])
    out = capsys.readouterr().out
    assert set(outcome) == {"oneshot", "background"}
    assert outcome["background"]["map50_bbox"] == pytest.approx(1.0)
    assert "0.00 false positives per absent pair" in out and "[ground truth (background)]" in out
    assert "  at --score-threshold 0.70: 0.00 false positives" in out and "model's threshold" not in out, out
    for name in ("oneshot_open_world.json", "background_open_world_curve.csv",
                 "background_open_world_curve.png", "background_open_world_results.jsonl"):
        assert (tmp_path / name).is_file()
    # The random-boxes baseline (shifted ground truth) finds little on present pairs.
    random_out = tmp_path / "random"
    outcome = cli.main(base[:-1] + [str(random_out), "--model", "random", "--classes", "background"])
    assert outcome["background"]["map50_bbox"] < 0.5
    # ... and says that its zero false positives on absent pairs come from reading the truth
    assert "0 by construction" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(base + ["--model", "gt", "--absent"])
    with pytest.raises(SystemExit):
        cli.main(base + ["--model", "gt", "--max-absent-per-image", "-1"])
