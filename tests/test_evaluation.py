"""Tests of the one-shot evaluation protocol and analyses on the real COCO subset."""
import contextlib
import io
import json
import logging
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from siamese_mask_rcnn import evaluation as ev
from siamese_mask_rcnn.evaluation import baselines
from siamese_mask_rcnn.evaluation import cli as evaluation_cli


@pytest.fixture(scope="module")
def dataset(coco_split1):
    return coco_split1


@pytest.fixture(scope="module")
def raw(coco_subset_annotations):
    with open(coco_subset_annotations) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def gt_eval(dataset, coco_split1_ids):
    return ev.evaluate(dataset, ev.ground_truth_predictor(dataset), coco_split1_ids, seed=0,
                       progress=False)


def _internal_image_id(dataset, coco_image_id):
    return next(i for i in dataset.image_ids if dataset.image_info[i]["id"] == coco_image_id)


def _expected_pairs(raw, dataset, min_size=None):
    """(internal image id, internal class id) combinations computed from the raw JSON:
    a category present (non-crowd) in the image with a non-crowd instance of shorter box
    side >= ``min_size`` (default: the dataset's REFERENCE_MIN_SIZE) in another image."""
    min_size = dataset.REFERENCE_MIN_SIZE if min_size is None else min_size
    cat_pos = {c["id"]: p for p, c in enumerate(sorted(raw["categories"], key=lambda c: c["id"]), 1)}
    present, usable = set(), {}
    for a in raw["annotations"]:
        if a["iscrowd"]:
            continue
        present.add((a["image_id"], a["category_id"]))
        x, y, w, h = a["bbox"]
        sides = (round(y + h) - round(y), round(x + w) - round(x))  # rounded pixel box
        if min(sides) >= min_size:
            usable.setdefault(a["category_id"], set()).add(a["image_id"])
    return {(_internal_image_id(dataset, img), cat_pos[cat]) for img, cat in present
            if usable.get(cat, set()) - {img}}


# ---------------------------------------------------------------- pairs
def test_pairs_follow_protocol(dataset, coco_split1_ids, raw):
    pairs = ev.build_eval_pairs(dataset, coco_split1_ids, seed=0)
    got = {(p.image_id, p.class_id) for p in pairs}
    assert len(got) == len(pairs)  # every combination once
    assert got == _expected_pairs(raw, dataset)
    for pair in pairs:
        assert pair.class_id in dataset.image_categories[pair.image_id]
        (info,), (crop,) = pair.reference_info, pair.references
        assert info["image_id"] != pair.image_id
        ann = dataset.instance_annotations(info["image_id"])[info["annotation_index"]]
        assert not ann["iscrowd"] and ann["class_id"] == pair.class_id
        y1, x1, y2, x2 = info["bbox"]
        assert crop.dtype == np.uint8 and crop.shape == (y2 - y1, x2 - x1, 3)


def test_pairs_k_shot_limit_and_lazy_crops(dataset, coco_split1_ids):
    pairs = ev.build_eval_pairs(dataset, coco_split1_ids, seed=3, shots=3, limit=2, load_crops=False)
    assert len({p.image_id for p in pairs}) == 2
    assert all(p.references is None and len(p.reference_info) == 3 for p in pairs)
    assert all(i["image_id"] != p.image_id for p in pairs for i in p.reference_info)
    with pytest.raises(ValueError, match="shots"):
        ev.build_eval_pairs(dataset, coco_split1_ids, seed=0, shots=0)


def test_same_seed_same_draws_other_seed_differs(dataset, coco_split1_ids):
    def draws(seed):
        return [(p.image_id, p.class_id, [(i["image_id"], i["annotation_index"])
                                          for i in p.reference_info])
                for p in ev.build_eval_pairs(dataset, coco_split1_ids, seed=seed, load_crops=False)]
    assert draws(0) == draws(0)
    assert draws(0) != draws(1)
    rnd = ev.random_boxes_predictor(dataset, seed=0)
    first = ev.evaluate(dataset, rnd, coco_split1_ids, seed=5, progress=False)
    second = ev.evaluate(dataset, ev.random_boxes_predictor(dataset, seed=0), coco_split1_ids, seed=5,
                         progress=False)
    assert first["results"] == second["results"]
    assert first["ap50_bbox"] == second["ap50_bbox"] and first["ap50_segm"] == second["ap50_segm"]


# ---------------------------------------------------------------- AP50
def _toy_gt():
    from pycocotools.coco import COCO
    gt = COCO()
    gt.dataset = {"images": [{"id": 1, "width": 100, "height": 100}],
                  "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
                  "annotations": [
                      {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10],
                       "area": 100, "iscrowd": 0, "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]},
                      {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 20, 20],
                       "area": 400, "iscrowd": 0,
                       "segmentation": [[50, 50, 70, 50, 70, 70, 50, 70]]}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def test_coco_ap50_hand_computed():
    gt = _toy_gt()
    results = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
               {"image_id": 1, "category_id": 1, "bbox": [30, 30, 5, 5], "score": 0.8},
               {"image_id": 1, "category_id": 1, "bbox": [50, 50, 20, 20], "score": 0.7}]
    # TP, FP, TP: precision 1 up to recall .5 (51 thresholds), then 2/3 (50 thresholds)
    expected = (51 + 50 * 2 / 3) / 101
    out = ev.coco_ap50(gt, results, [1, 2], "bbox")
    assert out["ap50"] == {1: pytest.approx(expected)}
    assert out["no_gt"] == [2]  # category without ground truth is excluded and reported
    assert out["map50"] == pytest.approx(expected)
    assert len(results[0]) == 4  # pycocotools did not modify our dicts
    empty = ev.coco_ap50(gt, [], [1], "bbox")
    assert empty["ap50"] == {1: 0.0}
    with pytest.raises(ValueError, match="image ids missing"):
        ev.coco_ap50(gt, [dict(results[0], image_id=7)], [1], "bbox")
    with pytest.raises(ValueError, match="segmentation"):
        ev.coco_ap50(gt, results, [1], "segm")


def test_ground_truth_predictions_give_ap50_one(gt_eval, dataset, raw):
    expected_ids = sorted({c for _, c in _expected_pairs(raw, dataset)})
    assert gt_eval["class_ids"] == expected_ids
    assert expected_ids == [1, 27, 34, 67, 68]  # person, handbag, kite, keyboard, cell phone
    for iou_type in ("bbox", "segm"):
        assert set(gt_eval[f"ap50_{iou_type}"]) == set(expected_ids)
        for ap in gt_eval[f"ap50_{iou_type}"].values():
            assert ap == pytest.approx(1.0)
        assert gt_eval[f"map50_{iou_type}"] == pytest.approx(1.0)
        assert gt_eval[f"no_gt_{iou_type}"] == []
    assert gt_eval["n_pairs"] == len(_expected_pairs(raw, dataset))
    # one result per non-crowd GT instance of the evaluated pairs
    n_instances = sum(len(baselines._gt_instances(gt_eval["coco_gt"], p["image_id"], p["class_id"]))
                      for p in gt_eval["pairs"])
    assert len(gt_eval["results"]) == n_instances
    assert all(isinstance(r["segmentation"]["counts"], str) for r in gt_eval["results"])


def test_random_boxes_equal_independent_cocoeval(dataset, coco_split1_ids):
    from pycocotools.cocoeval import COCOeval
    out = ev.evaluate(dataset, ev.random_boxes_predictor(dataset, seed=1), coco_split1_ids, seed=0,
                      progress=False)
    gt = dataset.coco_gt()
    for iou_type in ("bbox", "segm"):
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(json.loads(json.dumps(out["results"])))
            coco_eval = COCOeval(gt, dt, iou_type)
            coco_eval.params.catIds = out["class_ids"]
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        assert out[f"map50_{iou_type}"] == pytest.approx(coco_eval.stats[1])
    assert out["map50_bbox"] < 0.5  # random boxes rarely hit


def test_random_boxes_are_shifted_ground_truth(dataset):
    image_id = _internal_image_id(dataset, 193245)  # 12 kites, 13 non-crowd persons
    gt_fn, rnd_fn = ev.ground_truth_predictor(dataset), ev.random_boxes_predictor(dataset, 4)
    image = dataset.load_image(image_id)
    gt = gt_fn(image, {34: []}, image_id=image_id)[34]
    rnd = rnd_fn(image, {34: []})[34]  # no image id: found by content
    assert gt["rois"].shape == rnd["rois"].shape == (12, 4)
    height, width = image.shape[:2]
    sizes = lambda r: np.stack([r[:, 2] - r[:, 0], r[:, 3] - r[:, 1]], 1)
    np.testing.assert_allclose(sizes(gt["rois"]), sizes(rnd["rois"]))
    assert np.all(rnd["rois"][:, :2] >= -1) and np.all(rnd["rois"][:, 2] <= height + 1)
    assert np.all(rnd["rois"][:, 3] <= width + 1)
    assert np.all((rnd["scores"] >= 0.8) & (rnd["scores"] <= 1.0))
    for k in range(12):
        dy, dx = np.round(rnd["rois"][k, :2] - gt["rois"][k, :2]).astype(int)
        ys, xs = np.nonzero(gt["masks"][:, :, k])
        assert rnd["masks"][:, :, k].sum() == len(ys)
        assert rnd["masks"][ys + dy, xs + dx, k].all()  # the mask moved with its box
    assert not np.allclose(gt["rois"], rnd["rois"])
    again = ev.random_boxes_predictor(dataset, 4)(image, {34: []}, image_id=image_id)[34]
    np.testing.assert_array_equal(again["rois"], rnd["rois"])


# ---------------------------------------------------------------- predictions
def test_run_predictions_one_call_per_image_and_conversion(dataset, coco_split1_ids):
    pairs = ev.build_eval_pairs(dataset, coco_split1_ids, seed=0)
    calls = []

    def predict(image, references):
        calls.append(sorted(references))
        height, width = image.shape[:2]
        masks = np.zeros((height, width, 1), bool)
        masks[2:5, 3:7, 0] = True
        return {c: {"rois": np.array([[2, 3, 5, 7]]), "scores": np.array([0.5]),
                    "masks": masks} for c in references}

    results = ev.run_predictions(dataset, predict, pairs, progress=False)
    by_image = {}
    for p in pairs:
        by_image.setdefault(p.image_id, []).append(p.class_id)
    assert sorted(calls) == sorted(sorted(v) for v in by_image.values())
    assert len(results) == len(pairs)
    assert all(r["bbox"] == [3.0, 2.0, 4.0, 3.0] for r in results)
    from pycocotools import mask as mask_utils
    assert mask_utils.area(dict(results[0]["segmentation"],
                                counts=results[0]["segmentation"]["counts"].encode())) == 12

    def broken(image, references):
        return {c: {"rois": np.zeros((1, 4)), "scores": np.ones(1),
                    "masks": np.zeros((5, 5, 1), bool)} for c in references}
    with pytest.raises(ValueError, match="masks must have shape"):
        ev.run_predictions(dataset, broken, pairs[:1], progress=False)
    with pytest.raises(ValueError, match="no entry for category"):
        ev.run_predictions(dataset, lambda image, refs: {}, pairs[:1], progress=False)


def test_no_tensorflow_imported():
    code = ("import sys, siamese_mask_rcnn.evaluation, siamese_mask_rcnn.mrcnn.visualize; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- runs
def test_confidence_interval_formula():
    # std([.1, .2, .3]) = sqrt(.02 / 3); 1.96 * that / sqrt(3)
    assert ev.confidence_interval95([0.1, 0.2, 0.3]) == pytest.approx(
        1.96 * math.sqrt(0.02 / 3) / math.sqrt(3))
    assert ev.confidence_interval95([0.4]) == 0.0


def test_evaluate_runs_mean_and_ci(dataset, coco_split1_ids):
    out = ev.evaluate_runs(dataset, None, coco_split1_ids, runs=3, seed=10, progress=False,
                           predict_fn_for_seed=lambda s: ev.random_boxes_predictor(dataset, s))
    assert out["seeds"] == [10, 11, 12]
    for iou_type in ("bbox", "segm"):
        values = [r[f"map50_{iou_type}"] for r in out["runs"]]
        assert out[f"map50_{iou_type}"] == pytest.approx(np.mean(values))
        assert out[f"ci95_{iou_type}"] == pytest.approx(1.96 * np.std(values) / math.sqrt(3))
    single = ev.evaluate(dataset, ev.random_boxes_predictor(dataset, 10), coco_split1_ids, seed=10,
                         progress=False)
    assert out["runs"][0]["map50_bbox"] == single["map50_bbox"]
    assert len({json.dumps(e["pairs"]) for e in out["evaluations"]}) == 3  # new draws per run


# ---------------------------------------------------------------- confusion
def test_confusion_of_ground_truth_is_diagonal(dataset, coco_split1_ids, gt_eval):
    conf = ev.confusion_matrix(dataset, None, coco_split1_ids, evaluation=gt_eval)
    matrix = conf["matrix"]
    assert conf["class_ids"] == gt_eval["class_ids"]
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    off = matrix[~np.eye(len(matrix), dtype=bool)]
    np.testing.assert_array_equal(off, 0.0)
    np.testing.assert_allclose(conf["column_sums"], 1.0)
    np.testing.assert_array_equal(conf["column_sums_off_diagonal"], 0.0)


def test_confusion_counts_false_positives(dataset, coco_split1_ids, gt_eval):
    """A predictor that answers every reference with the image's persons: row i, column
    person gets AP = share of recall thresholds reached by the persons of i's images."""
    gt_fn = ev.ground_truth_predictor(dataset)

    def persons(image, references, image_id=None):
        found = gt_fn(image, {1: []}, image_id=image_id)[1]
        return {c: found for c in references}

    evaluation = ev.evaluate(dataset, persons, coco_split1_ids, seed=0, progress=False)
    conf = ev.confusion_matrix(dataset, None, coco_split1_ids, evaluation=evaluation)
    ids = conf["class_ids"]
    person = ids.index(1)
    gt = evaluation["coco_gt"]
    n_person = len(gt.getAnnIds(catIds=[1], iscrowd=False))
    for i, class_id in enumerate(ids):
        images = {p["image_id"] for p in evaluation["pairs"] if p["class_id"] == class_id}
        found = len(gt.getAnnIds(imgIds=sorted(images), catIds=[1], iscrowd=False))
        recall = found / n_person
        # all detections are true persons (precision 1) up to that recall; none: AP 0
        expected = np.sum(np.linspace(0, 1, 101) <= recall + 1e-12) / 101 if found else 0.0
        assert conf["matrix"][i, person] == pytest.approx(expected)
    assert conf["matrix"][ids.index(34), ids.index(34)] == 0.0  # persons are not kites
    assert conf["column_sums_off_diagonal"][person] > 0


# ---------------------------------------------------------------- clutter
def test_clutter_analysis(dataset, gt_eval, tmp_path):
    clutter = ev.clutter_analysis(dataset, gt_eval["results"], gt_eval["coco_gt"],
                                  gt_eval["class_ids"])
    labels = [b["label"] for b in clutter["bins"]]
    assert labels == ["1", "2", "3", "4-5", "6-10", ">10"]
    for b in clutter["bins"]:
        assert {"label", "min", "max", "n_images", "map50_bbox", "map50_segm"} <= set(b)
        if b["n_images"]:
            assert b["map50_bbox"] == pytest.approx(1.0) and b["map50_segm"] == pytest.approx(1.0)
        else:
            assert math.isnan(b["map50_bbox"])
    assert sum(b["n_images"] for b in clutter["bins"]) == gt_eval["n_images"]
    # image 193245: 14 persons (one of them crowd) + 12 kites = 25 non-crowd instances
    assert clutter["instance_counts"][_internal_image_id(dataset, 193245)] == 25
    assert clutter["bins"][-1]["n_images"] >= 1
    written = ev.write_outputs(tmp_path, {"one-shot": gt_eval}, clutter=clutter)
    for key in ("clutter_png", "clutter_csv", "clutter_json"):
        assert written[key].is_file() and written[key].stat().st_size > 0
    rows = written["clutter_csv"].read_text().splitlines()
    assert rows[0].startswith("instances,") and len(rows) == 7
    assert json.loads(written["clutter_json"].read_text())["bins"][0]["map50_bbox"] is None


# ---------------------------------------------------------------- absent categories
def test_absent_category_test(dataset, tmp_path):
    oneshot = dataset.oneshot_class_ids
    gt_out = ev.absent_category_test(dataset, ev.ground_truth_predictor(dataset), oneshot,
                                     seed=0, score_threshold=0.5)
    expected_pairs = 0
    for image_id in dataset.image_ids:
        annotated = {a["class_id"] for a in dataset.instance_annotations(image_id)}
        expected_pairs += sum(1 for c in oneshot if c not in annotated and
                              set(dataset.category_index.get(c, [])) - {image_id})
    assert gt_out["n_pairs"] == expected_pairs > 0
    assert gt_out["mean_false_positives_per_image"] == 0.0
    assert gt_out["fraction_images_with_false_positive"] == 0.0

    def always_one(image, references):
        height, width = image.shape[:2]
        masks = np.ones((height, width, 1), bool)
        return {c: {"rois": np.array([[0, 0, 10, 10]]), "scores": np.array([0.8]),
                    "masks": masks} for c in references}

    out = ev.absent_category_test(dataset, always_one, oneshot, seed=0, score_threshold=0.5,
                                  limit=4)
    assert out["n_images"] == 4
    assert out["mean_false_positives_per_image"] == pytest.approx(
        np.mean([p["n_categories"] for p in out["per_image"]]))
    assert out["fraction_images_with_false_positive"] == 1.0
    assert out["fraction_pairs_with_false_positive"] == 1.0
    for stats in out["per_category"].values():
        assert stats["mean_per_query"] == 1.0
    strict = ev.absent_category_test(dataset, always_one, oneshot, seed=0, score_threshold=0.9,
                                     limit=4)
    assert strict["mean_false_positives_per_image"] == 0.0
    written = ev.write_outputs(tmp_path, {}, absent=out)
    assert json.loads(written["absent_json"].read_text())["n_images"] == 4
    assert written["absent_csv"].read_text().startswith("class_id,name")


# ---------------------------------------------------------------- table and files
def test_format_table_layout():
    summary = {"random boxes": {"map50_bbox": 0.022, "map50_segm": float("nan")},
               "one-shot": {"map50_bbox": 0.163, "map50_segm": 0.145,
                            "ci95_bbox": 0.004, "ci95_segm": 0.003},
               "background": {"map50_bbox": 0.376, "map50_segm": 0.349}}
    lines = ev.format_table(summary).splitlines()
    assert "detection" in lines[0] and "segmentation" in lines[0]
    rows = lines[2:]
    assert [r.split()[0] for r in rows] == ["background", "one-shot", "random"]
    assert rows[0].split()[1:] == ["37.6", "34.9"]
    assert "16.3 ± 0.4" in rows[1] and "14.5 ± 0.3" in rows[1]
    assert rows[2].split()[-1] == "n/a"


def _cli_main(project_root):
    return evaluation_cli.main


def test_write_outputs_and_cli(dataset, coco_subset_dir, coco_subset_annotations, tmp_path,
                               capsys, project_root):
    main = _cli_main(project_root)
    out_dir = tmp_path / "eval"
    summary = main(["--annotations", str(coco_subset_annotations),
                    "--images", str(coco_subset_dir / "images"), "--model", "gt",
                    "--classes", "both", "--confusion", "--clutter", "--absent", "--errors", "--quiet",
                    "--out", str(out_dir)])
    printed = capsys.readouterr().out
    assert "ground truth (one-shot)" in printed and "ground truth (background)" in printed
    assert "100.0" in printed
    assert "target recall 100%" in printed  # --errors: ground truth finds every target, nothing else
    errors = json.loads((out_dir / "errors.json").read_text())
    assert errors["fractions"]["target"] == 1.0 and errors["n_pairs"] > 0
    assert summary["ground truth (background)"]["map50_bbox"] == pytest.approx(1.0)
    for name in ("summary.json", "table.txt", "confusion.png", "confusion.csv",
                 "confusion.json", "clutter.png", "clutter.json", "absent.json",
                 "ap50_ground_truth_background.png", "results_ground_truth_background_seed0.json"):
        assert (out_dir / name).is_file(), name
    with open(out_dir / "summary.json") as handle:
        saved = json.load(handle)
    assert saved["rows"]["ground truth (background)"]["map50_segm"] == pytest.approx(1.0)
    assert saved["config"]["model"] == "gt"
    results = json.loads((out_dir / "results_ground_truth_background_seed0.json").read_text())
    from pycocotools.coco import COCO
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(coco_subset_annotations))  # the user's own file, its own ids
        loaded = gt.loadRes(results)  # RLE masks readable by pycocotools
    assert len(loaded.getAnnIds()) == len(results) > 0
    assert (out_dir / "table.txt").read_text() in printed


def test_cli_rejects_bad_arguments(coco_subset_annotations, coco_subset_dir, project_root):
    main = _cli_main(project_root)
    base = ["--annotations", str(coco_subset_annotations), "--images", str(coco_subset_dir / "images")]
    with pytest.raises(SystemExit):
        main(base)  # siamese without --weights
    with pytest.raises(SystemExit):
        main(["--model", "gt"])  # no data
    with pytest.raises(SystemExit):
        main(base + ["--model", "gt", "--runs", "0"])
    with pytest.raises(SystemExit):
        main(base + ["--model", "gt", "--protocol", "open-world", "--errors"])


def test_cli_random_baseline_runs(coco_subset_annotations, coco_subset_dir, tmp_path, capsys,
                                  project_root):
    main = _cli_main(project_root)
    summary = main(["--annotations", str(coco_subset_annotations), "--images",
                    str(coco_subset_dir / "images"), "--model", "random", "--runs", "2",
                    "--classes", "background", "--seed", "3", "--quiet", "--out", str(tmp_path)])
    row = summary["random boxes (background)"]
    assert row["seeds"] == [3, 4] and row["map50_bbox"] < 0.5
    assert "random boxes (background)" in capsys.readouterr().out
    assert (tmp_path / "results_random_boxes_background_seed4.json").is_file()


def test_unknown_class_id_is_named(dataset):
    with pytest.raises(ValueError, match=r"unknown class ids \[999\]"):
        ev.build_eval_pairs(dataset, [1, 999], seed=0)
    for bad in (1.7, float("nan"), True, "3"):  # 1.7 used to be truncated to category 1
        with pytest.raises(ValueError, match="class ids must be whole numbers"):
            ev.build_eval_pairs(dataset, [1, bad], seed=0)
    with pytest.raises(ValueError, match=r"shots must be >= 1 \(a whole number\), got 1.5"):
        ev.build_eval_pairs(dataset, [1], seed=0, shots=1.5)  # was run as 1 shot
    with pytest.raises(ValueError, match=r"limit must be a positive number of query images \(a whole number\), got 2.7"):
        ev.build_eval_pairs(dataset, [1], seed=0, limit=2.7)  # was cut to 2 images
    never_called = lambda image, references: pytest.fail("the arguments are checked before predicting")  # noqa: E731
    for analysis in (ev.absent_category_test, ev.evaluate_open_world):  # the same checks as the pairs'
        with pytest.raises(ValueError, match=r"shots must be >= 1 \(a whole number\), got 1.5"):
            analysis(dataset, never_called, [1], shots=1.5)
        with pytest.raises(ValueError, match=r"\(a whole number\), got 2.7"):
            analysis(dataset, never_called, [1], limit=2.7)
    whole = ev.build_eval_pairs(dataset, [np.int64(1), 2.0], seed=0, load_crops=False)
    assert whole and whole == ev.build_eval_pairs(dataset, [1, 2], seed=0, load_crops=False)


def test_sample_script_is_a_thin_wrapper_that_still_runs(project_root):
    script = project_root / "samples" / "coco" / "evaluate_siamese.py"
    assert "def " not in script.read_text()  # the logic lives in siamese_mask_rcnn.evaluation.cli
    env = {**os.environ, "PYTHONPATH": str(project_root)}
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                          env=env, check=True)
    assert "--confusion" in done.stdout and "usage: evaluate_siamese.py" in done.stdout
    failed = subprocess.run([sys.executable, str(script), "--model", "gt"], capture_output=True,
                            text=True, env=env)
    assert failed.returncode == 2 and "give --dataset DIR" in failed.stderr


def test_siamese_mrcnn_evaluate_subcommand(coco_subset_annotations, coco_subset_dir, tmp_path,
                                           capsys):
    from siamese_mask_rcnn import cli
    assert cli.main(["evaluate", "--annotations", str(coco_subset_annotations), "--images",
                     str(coco_subset_dir / "images"), "--model", "gt", "--limit", "3",
                     "--quiet", "--out", str(tmp_path)]) == 0
    assert "ground truth (one-shot)" in capsys.readouterr().out
    assert (tmp_path / "summary.json").is_file()
    with pytest.raises(SystemExit) as exc:
        cli.main(["evaluate", "--model", "gt"])
    assert exc.value.code == 2 and "siamese-mrcnn evaluate" in capsys.readouterr().err


# ---------------------------------------------------------------- fidelity to the release
def _plain_pycocotools_ap50(annotation_file, results_file, cat_ids, iou_type, img_ids=None):
    """AP50 (``stats[1]``) of a results file scored the way a user would: pycocotools' own
    ``COCO(file)``, ``loadRes(path)`` and ``COCOeval``, only ``catIds`` (and ``imgIds``) set."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotation_file))
        dt = gt.loadRes(str(results_file))
        coco_eval = COCOeval(gt, dt, iou_type)
        coco_eval.params.catIds = list(cat_ids)
        if img_ids is not None:
            coco_eval.params.imgIds = list(img_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return float(coco_eval.stats[1])


def test_results_files_score_with_plain_pycocotools_on_the_original_file(
        coco_subset_annotations, coco_subset_dir, raw, tmp_path):
    """The written results use the annotation file's own ids (COCO's non-contiguous ones),
    so plain pycocotools on the original file gives the summary's AP50 of every run."""
    out = tmp_path / "eval"
    summary = evaluation_cli.main([
        "--annotations", str(coco_subset_annotations), "--images", str(coco_subset_dir / "images"),
        "--model", "random", "--classes", "both", "--quiet", "--out", str(out)])
    saved = json.loads((out / "summary.json").read_text())
    file_images = {img["id"] for img in raw["images"]}
    file_categories = {cat["id"]: cat["name"] for cat in raw["categories"]}
    checked = differing = 0
    for label, slug in (("random boxes", "random_boxes"),
                        ("random boxes (background)", "random_boxes_background")):
        row = saved["rows"][label]
        assert row["seeds"] == [0, 1, 2, 3, 4]  # 5 runs by default
        cat_ids = row["source_category_ids"]
        # the file's ids, not the internal ones: e.g. handbag is 31 in the file, 27 inside
        assert [file_categories[c] for c in cat_ids] == [row["class_names"][str(c)]
                                                        for c in row["class_ids"]]
        assert set(row["source_image_ids"]) <= file_images
        differing += cat_ids != row["class_ids"]
        for run in row["runs"]:
            path = out / f"results_{slug}_seed{run['seed']}.json"
            results = json.loads(path.read_text())
            assert results and {r["image_id"] for r in results} <= file_images
            assert {r["category_id"] for r in results} <= set(cat_ids)
            for iou_type in ("bbox", "segm"):
                plain = _plain_pycocotools_ap50(coco_subset_annotations, path, cat_ids, iou_type)
                assert abs(plain - run[f"map50_{iou_type}"]) < 1e-6, (label, run["seed"], iou_type)
                restricted = _plain_pycocotools_ap50(coco_subset_annotations, path, cat_ids,
                                                     iou_type, img_ids=row["source_image_ids"])
                assert abs(restricted - run[f"map50_{iou_type}"]) < 1e-6
                checked += 1
        assert abs(row["map50_bbox"] - summary[label]["map50_bbox"]) < 1e-9
    assert checked == 2 * 5 * 2 and differing == 1  # background: handbag 31 (file) vs 27
    assert any(0 < run["map50_bbox"] < 1 for row in saved["rows"].values() for run in row["runs"])


def test_runs_default_to_five(coco_subset_annotations, coco_subset_dir):
    args = evaluation_cli.build_parser().parse_args(
        ["--annotations", str(coco_subset_annotations), "--images", str(coco_subset_dir / "images")])
    assert args.runs == 5 and args.reference_min_size == 0
    assert "default 5" in evaluation_cli.build_parser().format_help()


def test_references_come_from_every_non_crowd_instance(dataset, coco_split1_ids, raw,
                                                       coco_subset_annotations, coco_subset_dir,
                                                       tmp_path):
    """No minimum reference size unless the user sets one (API and CLI)."""
    assert dataset.REFERENCE_MIN_SIZE == 0
    pairs = ev.build_eval_pairs(dataset, coco_split1_ids, seed=0, load_crops=False)
    got = {(p.image_id, p.class_id) for p in pairs}
    assert got == _expected_pairs(raw, dataset, min_size=0)
    assert got > _expected_pairs(raw, dataset, min_size=16)  # more pairs than with a minimum
    # cell phone in 182202: its only other-image instances (in 176857) are both < 16 px
    phone = dataset.class_names.index("cell phone")
    query = _internal_image_id(dataset, 182202)
    (pair,) = [p for p in pairs if (p.image_id, p.class_id) == (query, phone)]
    y1, x1, y2, x2 = pair.reference_info[0]["bbox"]
    assert min(y2 - y1, x2 - x1) < 16
    assert not dataset.instance_annotations(pair.reference_info[0]["image_id"])[
        pair.reference_info[0]["annotation_index"]]["iscrowd"]
    base = ["--annotations", str(coco_subset_annotations), "--images", str(coco_subset_dir / "images"),
            "--model", "gt", "--classes", "both", "--runs", "1", "--quiet"]
    rows_default = evaluation_cli.main(base + ["--out", str(tmp_path / "a")])
    rows_16 = evaluation_cli.main(base + ["--reference-min-size", "16", "--out", str(tmp_path / "b")])
    n_default = sum(r["n_pairs"] for r in rows_default.values())
    n_16 = sum(r["n_pairs"] for r in rows_16.values())
    assert n_default == len(_expected_pairs(raw, dataset, min_size=0))
    assert n_16 == len(_expected_pairs(raw, dataset, min_size=16)) < n_default
    with pytest.raises(SystemExit):
        evaluation_cli.main(base + ["--reference-min-size", "-1", "--out", str(tmp_path / "c")])


def test_no_evaluation_pair_is_reported_briefly(caplog):
    """Categories that no scene holds give no pair: nan mAP50 and one short warning naming
    how many categories (not a list of all of them)."""
    from siamese_mask_rcnn.datasets.synthetic import SyntheticOneShotDataset
    dataset = SyntheticOneShotDataset(num_categories=40, num_images=2, image_size=64, seed=3,
                                      cache_size=None)
    present = {int(c) for i in dataset.image_ids for c in dataset.load_mask(i)[1]}
    absent = [c for c in range(1, dataset.num_classes) if c not in present]
    assert len(absent) > 10

    def never_called(*args):
        raise AssertionError("no pair should reach the model")

    with caplog.at_level(logging.WARNING):
        result = ev.evaluate(dataset, never_called, absent, progress=False)
    assert result["n_pairs"] == 0 and math.isnan(result["map50_bbox"])
    text = " ".join(r.getMessage() for r in caplog.records if "no evaluation pair" in r.getMessage())
    assert f"any of {len(absent)} categories" in text and text.endswith("with a reference available")
    listed = text.split("(", 1)[1].split(")", 1)[0]
    assert listed == ", ".join(str(c) for c in absent[:10]) + " ..."
