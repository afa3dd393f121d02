"""evaluation.error_breakdown / classify_detections: what each detection of a pair hit."""
import numpy as np
import pytest

from siamese_mask_rcnn import evaluation as ev

GT = np.array([[0, 0, 20, 20],      # target
               [0, 40, 20, 60],     # target
               [40, 0, 60, 20]])    # another category
IS_TARGET = np.array([True, True, False])


def test_each_outcome_by_hand():
    rois = np.array([[0, 0, 20, 20],      # target (first, highest score)
                     [1, 1, 20, 20],      # same target again: duplicate
                     [40, 0, 60, 20],     # the other category's instance
                     [0, 40, 20, 48],     # IoU 0.4 with the second target: near miss
                     [80, 80, 90, 90]])   # nothing
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    outcomes, found, hit = ev.classify_detections(rois, scores, GT, IS_TARGET)
    assert outcomes == ["target", "duplicate", "other_category", "near_miss", "background"]
    assert found.tolist() == [True, False, False]
    assert hit.tolist() == [True, False, True]


def test_score_order_decides_which_detection_is_the_true_positive():
    rois = np.array([[1, 1, 20, 20], [0, 0, 20, 20]])
    outcomes, _, _ = ev.classify_detections(rois, [0.3, 0.9], GT, IS_TARGET)
    assert outcomes == ["duplicate", "target"]
    # the near-miss band can be closed: then the same box is background
    outcomes, _, _ = ev.classify_detections([[0, 40, 20, 48]], [1.0], GT, IS_TARGET, near_miss_iou=0.5)
    assert outcomes == ["background"]


def test_no_ground_truth_and_no_detections():
    assert ev.classify_detections([[0, 0, 5, 5]], [1.0], np.zeros((0, 4)), [])[0] == ["background"]
    outcomes, found, hit = ev.classify_detections(np.zeros((0, 4)), [], GT, IS_TARGET)
    assert outcomes == [] and not found.any() and not hit.any()


@pytest.mark.parametrize("kwargs, words", [({"gt_is_target": [True]}, "1 entries for 3 boxes"),
                                           ({"near_miss_iou": 0.7}, "near_miss_iou must be in"),
                                           ({"scores": []}, "0 scores for 1 detections"),
                                           ({"scores": [0.5, 0.4]}, "2 scores for 1 detections"),
                                           ({"scores": [float("nan")]}, "score 0 is not finite"),
                                           ({"rois": [[0, 10, 5, 2]]}, "detection box 0 is not"),
                                           ({"rois": [[0, 0, float("inf"), 5]]}, "detection box 0 is not"),
                                           ({"gt_boxes": [[0, 0, 5, 5], [9, 9, 1, 1], [0, 0, 1, 1]]},
                                            "ground-truth box 1 is not"),
                                           ({"iou_threshold": 0.0, "near_miss_iou": 0.0}, "iou_threshold must be in"),
                                           ({"iou_threshold": 1.5}, "iou_threshold must be in"),
                                           ({"iou_threshold": float("nan")}, "iou_threshold must be in"),
                                           ({"iou_threshold": None}, "iou_threshold must be a number"),
                                           ({"near_miss_iou": "0.3"}, "near_miss_iou must be a number")])
def test_bad_arguments_are_named(kwargs, words):
    args = {"rois": [[0, 0, 5, 5]], "scores": [1.0], "gt_boxes": GT, "gt_is_target": IS_TARGET, **kwargs}
    with pytest.raises(ValueError, match=words):
        ev.classify_detections(**args)


def test_breakdown_of_ground_truth_and_of_wrong_instances(coco_split1):
    dataset = coco_split1
    classes = dataset.oneshot_class_ids
    pairs = ev.build_eval_pairs(dataset, classes, seed=0, load_crops=False)
    perfect = ev.error_breakdown(dataset, ev.ground_truth_predictor(dataset), classes, seed=0, progress=False)
    assert perfect["n_pairs"] == len(pairs) > 0
    assert perfect["fractions"]["target"] == 1.0 and perfect["target_recall"] == 1.0
    assert perfect["top1_target"] == 1.0
    assert perfect["shots"] == 1 and perfect["limit"] is None and perfect["seed"] == 0
    assert 0 < perfect["instance_recall"] < 1  # the other categories' instances are not detected

    def other_instances(image, references, image_id):
        """Boxes of every instance NOT of the searched category (as a confused model would)."""
        annotations = [a for a in dataset.instance_annotations(image_id) if not a.get("iscrowd")]
        out = {}
        for class_id in references:
            boxes = np.array([a["bbox"] for a in annotations if a["class_id"] != class_id],
                             dtype=float).reshape(-1, 4)
            out[class_id] = {"rois": boxes, "scores": np.linspace(0.9, 0.5, len(boxes)),
                             "masks": np.zeros(image.shape[:2] + (len(boxes),), bool)}
        return out

    confused = ev.error_breakdown(dataset, other_instances, classes, seed=0, progress=False)
    assert confused["n_pairs"] == perfect["n_pairs"]
    assert confused["counts"]["target"] == 0 and confused["target_recall"] == 0.0
    assert confused["fractions"]["other_category"] > 0.9  # boxes of touching instances can overlap a target
    assert confused["top1_target"] == 0.0
    line = ev.format_error_breakdown(confused, "x: ")
    assert line.startswith("x: ") and "other category" in line and "target recall 0%" in line


def test_breakdown_rejects_a_bad_band_before_predicting(coco_split1):
    def never(*_):
        raise AssertionError("predict_fn must not run")

    with pytest.raises(ValueError, match="near_miss_iou"):
        ev.error_breakdown(coco_split1, never, coco_split1.oneshot_class_ids, near_miss_iou=-0.1)
    with pytest.raises(ValueError, match="iou_threshold"):
        ev.error_breakdown(coco_split1, never, coco_split1.oneshot_class_ids, iou_threshold=0, near_miss_iou=0)


@pytest.mark.parametrize("output, words", [(None, "must return a dict"),
                                           ("nan", "score 0 is not finite"),
                                           ("inverted", "roi 0 is not")])
def test_breakdown_names_the_image_of_malformed_detections(coco_split1, output, words):
    def predict(image, references):
        if output is None:
            return None
        box = [[5, 5, 1, 1]] if output == "inverted" else [[1, 1, 5, 5]]
        score = [float("nan")] if output == "nan" else [0.9]
        return {c: {"rois": np.array(box, float), "scores": np.array(score),
                    "masks": np.zeros(image.shape[:2] + (1,), bool)} for c in references}

    with pytest.raises(ValueError, match=f"image .*{words}|{words}.* for image"):
        ev.error_breakdown(coco_split1, predict, coco_split1.oneshot_class_ids, progress=False)
    if output is not None:  # the protocol's scoring refuses them too (a nan score would rank anywhere)
        with pytest.raises(ValueError, match=f"image .*{words}"):
            ev.evaluate(coco_split1, predict, coco_split1.oneshot_class_ids, progress=False)


def test_boxes_must_be_n_by_4_and_an_empty_breakdown_says_so():
    with pytest.raises(ValueError, match=r"rois must have shape \[N, 4\]"):
        ev.classify_detections(np.zeros((4, 3)), [0.9, 0.8, 0.7], GT, IS_TARGET)
    with pytest.raises(ValueError, match=r"gt_boxes must have shape \[N, 4\]"):
        ev.classify_detections([[0, 0, 1, 1]], [0.9], [0, 0, 1, 1], [True])
    empty = {"n_pairs": 0, "fractions": dict.fromkeys(ev.DETECTION_OUTCOMES, float("nan"))}
    assert ev.format_error_breakdown(empty, "x: ").startswith("x: no evaluation pair")


def test_evaluate_errors_for_a_baseline_runs_without_tensorflow(coco_subset_annotations, coco_subset_dir, tmp_path):
    """``siamese-mrcnn evaluate --model gt --errors``: the baselines need no TensorFlow (made
    unimportable here), and errors.json says what it covers."""
    import json
    import os
    import subprocess
    import sys

    for name in ("tensorflow", "keras"):
        (tmp_path / "fake" / name).mkdir(parents=True)
        (tmp_path / "fake" / name / "__init__.py").write_text(f"raise ImportError('{name} must not load')")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "fake"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "siamese_mask_rcnn.cli", "evaluate", "--annotations",
                           str(coco_subset_annotations), "--images", str(coco_subset_dir / "images"), "--model", "gt",
                           "--runs", "1", "--limit", "3", "--errors", "--quiet", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr
    assert "target recall 100%" in done.stdout
    errors = json.loads((tmp_path / "out" / "errors.json").read_text())
    assert errors["categories"] == "oneshot" and errors["limit"] == 3 and errors["shots"] == 1
    assert errors["fractions"]["target"] == 1.0
    assert errors["recall_by"]["crowding"][-1]["high"] is None  # the unbounded bin: inf written as null
    assert "any-instance recall by instances in the query" in done.stdout


def test_instance_factors_by_hand():
    boxes = np.array([[0, 0, 20, 20],     # IoU 1/3 with the next (overlap 200 / 600)
                      [0, 10, 20, 30],
                      [50, 50, 60, 90]])  # alone; 40 px long on a 100 px image
    factors = ev.instance_factors(boxes, (80, 100, 3))
    assert np.allclose(factors["size"], [0.2, 0.2, 0.4])
    assert factors["crowding"].tolist() == [3, 3, 3]
    assert np.allclose(factors["overlap"], [1 / 3, 1 / 3, 0])
    alone = ev.instance_factors([[0, 0, 5, 5]], (10, 10))
    assert alone["overlap"].tolist() == [0.0] and alone["crowding"].tolist() == [1]
    assert all(len(v) == 0 for v in ev.instance_factors(np.zeros((0, 4)), (10, 10)).values())
    with pytest.raises(ValueError, match=r"gt_boxes must have shape \[G, 4\]"):
        ev.instance_factors(np.zeros((2, 3)), (10, 10))
    with pytest.raises(ValueError, match="ground-truth box 0 is not"):
        ev.instance_factors([[5, 5, 1, 1]], (10, 10))
    with pytest.raises(ValueError, match="positive height and width"):
        ev.instance_factors([[0, 0, 1, 1]], (0, 10))


def test_recall_by_factor_separates_found_from_missed_instances(coco_split1):
    """A predictor that frames only the instances whose box touches no other one: recall 100 %
    in the no-overlap bin, 0 % in the others; every instance-pair counted once per factor."""
    dataset = coco_split1
    classes = dataset.oneshot_class_ids

    def lone_instances(image, references, image_id):
        annotations = [a for a in dataset.instance_annotations(image_id) if not a.get("iscrowd")]
        boxes = np.array([a["bbox"] for a in annotations], dtype=float).reshape(-1, 4)
        keep = ev.instance_factors(boxes, image.shape)["overlap"] < 0.01
        return {c: {"rois": boxes[keep], "scores": np.linspace(0.9, 0.5, int(keep.sum())),
                    "masks": np.zeros(image.shape[:2] + (int(keep.sum()),), bool)} for c in references}

    result = ev.error_breakdown(dataset, lone_instances, classes, seed=0, progress=False)
    overlap = result["recall_by"]["overlap"]
    assert [(r["low"], r["high"]) for r in overlap] == [tuple(map(float, b)) for b in ev.RECALL_FACTORS["overlap"]]
    assert overlap[0]["instances"] > 0 and overlap[0]["recall"] == 1.0
    crowded = [r for r in overlap[1:] if r["instances"]]
    assert crowded and all(r["recall"] == 0.0 for r in crowded)
    for factor in ev.RECALL_FACTORS:
        rows = result["recall_by"][factor]
        assert sum(r["instances"] for r in rows) == sum(r["instances"] for r in overlap)
        found = sum(r["recall"] * r["instances"] for r in rows if r["instances"])
        assert found / sum(r["instances"] for r in rows) == pytest.approx(result["instance_recall"])
    text = ev.format_recall_by(result, "  ")
    lines = text.splitlines()
    assert len(lines) == len(ev.RECALL_FACTORS) and all(line.startswith("  any-instance recall by") for line in lines)
    assert "[0, 0.01) 100%" in lines[2] and "∞)" in lines[2]
    empty = [(f, k) for f, rows in result["recall_by"].items() for k, r in enumerate(rows) if not r["instances"]]
    for factor, k in empty:  # an empty bin prints "-", not nan
        assert " - (0)" in lines[list(ev.RECALL_FACTORS).index(factor)]


def test_proposal_recall_of_exact_boxes_and_of_shifted_ones(coco_split1):
    """Proposals equal to every instance's box frame all (recall 1 at IoU 0.5 and 0.7); boxes
    shifted by 40 % of their width frame none at 0.7 and the same count at both thresholds
    for the unshifted; a malformed answer is named with its image."""
    dataset = coco_split1
    classes = dataset.oneshot_class_ids

    def boxes_of(image_id, shift):
        annotations = [a for a in dataset.instance_annotations(image_id) if not a.get("iscrowd")]
        boxes = np.array([a["bbox"] for a in annotations], dtype=float).reshape(-1, 4)
        dx = shift * (boxes[:, 3] - boxes[:, 1])
        return boxes + np.stack([0 * dx, dx, 0 * dx, dx], axis=1)

    exact = ev.proposal_recall(dataset, lambda image, refs, image_id: {c: boxes_of(image_id, 0.0) for c in refs},
                               classes, progress=False)
    assert exact["n_pairs"] > 0 and exact["target_recall"] == {0.5: 1.0, 0.7: 1.0}
    assert exact["instance_recall"] == {0.5: 1.0, 0.7: 1.0}
    shifted = ev.proposal_recall(dataset, lambda image, refs, image_id: {c: boxes_of(image_id, 0.4) for c in refs},
                                 classes, progress=False, iou_thresholds=(0.3, 0.7))
    assert shifted["target_recall"][0.7] == 0.0 and shifted["target_recall"][0.3] > 0.5
    assert shifted["proposals_per_pair"] == exact["proposals_per_pair"]
    line = ev.format_proposal_recall(shifted, "p: ")
    assert line.startswith("p: ") and "IoU ≥ 0.7: target 0%" in line
    with pytest.raises(ValueError, match="image .*proposal 0 is not"):
        ev.proposal_recall(dataset, lambda image, refs: {c: np.array([[5.0, 5, 1, 1]]) for c in refs},
                           classes, progress=False)
    with pytest.raises(ValueError, match=r"image .*shape \[N, 4\]"):
        ev.proposal_recall(dataset, lambda image, refs: {c: np.zeros((2, 3)) for c in refs}, classes, progress=False)
    with pytest.raises(ValueError, match=r"iou_thresholds must be numbers in \(0, 1\], got 1.5"):
        ev.proposal_recall(dataset, lambda image, refs: {}, classes, iou_thresholds=(0.5, 1.5))
    with pytest.raises(ValueError, match="at least one threshold"):
        ev.proposal_recall(dataset, lambda image, refs: {}, classes, iou_thresholds=())


def test_a_category_missing_from_the_output_is_an_error_not_zero_recall(coco_split1):
    """Every analysis refuses a predictor that leaves out a category (as evaluate does) instead
    of scoring it as if it had detected nothing."""
    dataset = coco_split1
    classes = dataset.oneshot_class_ids
    gt = ev.ground_truth_predictor(dataset)

    def string_keys(image, references, image_id):
        return {str(c): v for c, v in gt(image, references, image_id=image_id).items()}

    def empty(image, references):
        return {}

    for run in (lambda p: ev.error_breakdown(dataset, p, classes, progress=False),
                lambda p: ev.evaluate(dataset, p, classes, progress=False),
                lambda p: ev.absent_category_test(dataset, p, dataset.class_ids[1:], limit=3, progress=False)):
        for predictor in (string_keys, empty):
            with pytest.raises(ValueError, match=r"no entry for category \d+ of image \d+"):
                run(predictor)
    with pytest.raises(ValueError, match=r"no entry for category \d+ of image \d+"):
        ev.proposal_recall(dataset, empty, classes, progress=False)


def test_proposal_recall_thresholds_and_ragged_boxes(coco_split1):
    dataset = coco_split1
    classes = dataset.oneshot_class_ids

    def exact(image, references, image_id):
        annotations = [a for a in dataset.instance_annotations(image_id) if not a.get("iscrowd")]
        boxes = [list(a["bbox"]) for a in annotations]  # a list, not an array: accepted
        return {c: boxes for c in references}

    one = ev.proposal_recall(dataset, exact, classes, iou_thresholds=0.5, progress=False)
    assert one["target_recall"] == {0.5: 1.0} and one["iou_thresholds"] == [0.5]
    for bad, words in (((0.5, 0.5), "repeats a threshold"), ("0.5", "a number or a sequence"),
                       (None, "a number or a sequence"), (True, "a number or a sequence")):
        with pytest.raises(ValueError, match=words):
            ev.proposal_recall(dataset, exact, classes, iou_thresholds=bad, progress=False)
    with pytest.raises(ValueError, match=r"proposal_fn output for image \d+, category \d+"):
        ev.proposal_recall(dataset, lambda image, refs: {c: [[0, 0, 10, 10], [0, 0, 10]] for c in refs},
                           classes, progress=False)


def test_no_detection_at_all_is_said_not_nan(coco_split1):
    dataset = coco_split1

    def nothing(image, references):
        return {c: {"rois": np.zeros((0, 4)), "scores": np.zeros(0), "masks": np.zeros(image.shape[:2] + (0,), bool)}
                for c in references}

    result = ev.error_breakdown(dataset, nothing, dataset.oneshot_class_ids, progress=False)
    line = ev.format_error_breakdown(result)
    assert "no detection" in line and "nan" not in line and "target recall 0%" in line


@pytest.mark.parametrize("rois, n, words", [([[0, 0], [10, 10]], 1, r"rois must have shape \[N, 4\]"),
                                            (np.zeros((4, 5)), 5, r"rois must have shape \[N, 4\]"),
                                            ([[0, 0, 10, 10, 3]], 1, r"rois must have shape \[N, 4\]"),
                                            (None, 0, r"rois must have shape \[N, 4\]"),
                                            ([[0, 0, 10, 10], [0, 0, 10]], 2, "must be arrays of numbers")])
def test_malformed_rois_are_refused_with_image_and_category(coco_split1, rois, n, words):
    dataset = coco_split1

    def predict(image, references):
        return {c: {"rois": rois, "scores": np.ones(n), "masks": np.zeros(image.shape[:2] + (n,), bool)}
                for c in references}

    for run in (lambda: ev.evaluate(dataset, predict, dataset.oneshot_class_ids, progress=False),
                lambda: ev.error_breakdown(dataset, predict, dataset.oneshot_class_ids, progress=False),
                lambda: ev.absent_category_test(dataset, predict, dataset.class_ids[1:], limit=2, progress=False)):
        with pytest.raises(ValueError, match=rf"image \d+, category \d+: .*{words}"):
            run()


@pytest.mark.parametrize("kwargs, words", [({"limit": 0}, "limit must be a positive"),
                                           ({"limit": -1}, "limit must be a positive"),
                                           ({"score_threshold": float("nan")}, "score_threshold must be a finite"),
                                           ({"score_threshold": None}, "score_threshold must be a finite"),
                                           ({"score_threshold": "0.5"}, "score_threshold must be a finite"),
                                           ({"max_categories_per_image": 0}, "max_categories_per_image must be"),
                                           ({"max_categories_per_image": "2"}, "max_categories_per_image must be"),
                                           ({"shots": 0}, "shots must be >= 1")])
def test_absent_test_arguments_are_checked_before_predicting(coco_split1, kwargs, words):
    def never(*_):
        raise AssertionError("predict_fn must not run")

    with pytest.raises(ValueError, match=words):
        ev.absent_category_test(coco_split1, never, coco_split1.class_ids[1:], progress=False, **kwargs)


def test_recall_tables_read_their_json_copies(coco_split1):
    """format_recall_by / format_proposal_recall print a result written to JSON and read back
    (null for inf and nan, string keys) as they print the result itself."""
    import json

    from siamese_mask_rcnn.evaluation.report import _jsonable

    dataset = coco_split1
    gt = ev.ground_truth_predictor(dataset)
    breakdown = ev.error_breakdown(dataset, gt, dataset.oneshot_class_ids, progress=False)
    copy = json.loads(json.dumps(_jsonable(breakdown)))
    assert copy["recall_by"]["size"][-1]["high"] is None
    assert ev.format_recall_by(copy) == ev.format_recall_by(breakdown)

    def props(image, references, image_id):
        boxes = np.array([a["bbox"] for a in dataset.instance_annotations(image_id)], float).reshape(-1, 4)
        return {c: boxes for c in references}

    result = ev.proposal_recall(dataset, props, dataset.oneshot_class_ids,
                                iou_thresholds=[np.float32(0.5), 0.7], progress=False)
    assert list(result["target_recall"]) == [0.5, 0.7] and all(type(t) is float for t in result["target_recall"])
    copy = json.loads(json.dumps(_jsonable(result)))
    assert ev.format_proposal_recall(copy) == ev.format_proposal_recall(result)
    with pytest.raises(ValueError, match="repeats a threshold"):
        ev.proposal_recall(dataset, props, dataset.oneshot_class_ids, iou_thresholds=[0.7, np.float32(0.7)])
    assert ev.proposal_recall(dataset, props, dataset.oneshot_class_ids, iou_thresholds=np.array(0.5),
                              progress=False)["iou_thresholds"] == [0.5]


def test_evaluate_refuses_a_nan_score_threshold_before_any_work(coco_subset_annotations, coco_subset_dir, tmp_path,
                                                                capsys):
    from siamese_mask_rcnn.evaluation import cli as evaluation_cli

    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exit_info:
        evaluation_cli.main(["--annotations", str(coco_subset_annotations), "--images", str(coco_subset_dir / "images"),
                             "--model", "gt", "--runs", "1", "--absent", "--score-threshold", "nan", "--quiet",
                             "--out", str(out)])
    assert exit_info.value.code == 2
    assert "--score-threshold must be a finite number" in capsys.readouterr().err
    assert not out.exists()  # refused before the output folder is made
