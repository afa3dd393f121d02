"""Results files in the annotation file's own ids, for every data source (issue: fidelity to
the release): written results score with plain pycocotools against the data's COCO file —
the original file for COCO, the ``export_coco`` file for the embedded data and Omniglot."""
import contextlib
import io
import json

import pytest

from siamese_mask_rcnn import evaluation as ev
from siamese_mask_rcnn.datasets import synthetic as syn
from siamese_mask_rcnn.datasets.coco import OneShotCocoDataset


def _plain_ap50(annotation_file, results_file, cat_ids, iou_type):
    """``stats[1]`` (AP at IoU .50) of plain pycocotools with only ``catIds`` set."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotation_file))
        evaluator = COCOeval(gt, gt.loadRes(str(results_file)), iou_type)
        evaluator.params.catIds = list(cat_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[1])


def _check_written_results_score_against(dataset, annotation_file, tmp_path, class_ids):
    """Evaluate the random-boxes baseline, write the outputs, score them with pycocotools."""
    result = ev.evaluate(dataset, ev.random_boxes_predictor(dataset, seed=2), class_ids, seed=1,
                         progress=False)
    assert result["n_pairs"] > 0
    written = ev.write_outputs(tmp_path / "eval", {"one-shot": result})
    path = written["results_one_shot_seed1"]
    results = json.loads(path.read_text())
    assert len(results) == len(result["results"]) > 0
    data = json.loads(annotation_file.read_text())
    assert {r["image_id"] for r in results} <= {img["id"] for img in data["images"]}
    assert set(result["source_category_ids"]) <= {c["id"] for c in data["categories"]}
    for iou_type in ("bbox", "segm"):
        plain = _plain_ap50(annotation_file, path, result["source_category_ids"], iou_type)
        assert abs(plain - result[f"map50_{iou_type}"]) < 1e-6, iou_type
    return result, results


def test_embedded_data_results_score_against_its_export(tmp_path):
    dataset = syn.SyntheticOneShotDataset(num_categories=12, num_images=8, seed=4)
    exported = dataset.export_coco(tmp_path / "embedded.json")
    result, _ = _check_written_results_score_against(dataset, exported, tmp_path,
                                                     dataset.train_class_ids)
    # generated data: the export's ids are the internal ones
    assert result["source_category_ids"] == result["class_ids"]


def test_omniglot_results_score_against_its_export(omniglot_dir, tmp_path):
    from siamese_mask_rcnn.datasets.omniglot import OmniglotOneShotDataset
    dataset = OmniglotOneShotDataset(omniglot_dir, num_images=8, seed=0)
    exported = dataset.export_coco(tmp_path / "omniglot.json")
    _check_written_results_score_against(dataset, exported, tmp_path, dataset.oneshot_class_ids
                                         + dataset.train_class_ids)


def test_coco_results_and_export_keep_the_files_ids(coco_split1, coco_subset_annotations,
                                                    tmp_path):
    raw = json.loads(coco_subset_annotations.read_text())
    ids = sorted(coco_split1.train_class_ids + coco_split1.oneshot_class_ids)
    result, results = _check_written_results_score_against(coco_split1, coco_subset_annotations,
                                                           tmp_path, ids)
    # the results are the internal ones with the file's ids, nothing else changed
    assert [(r["image_id"], r["category_id"]) for r in results] == [
        (coco_split1.image_info[r["image_id"]]["id"], coco_split1.get_source_class_id(
            r["category_id"], "coco")) for r in result["results"]]
    assert [r["bbox"] for r in results] == [r["bbox"] for r in result["results"]]
    # an export of a COCO dataset keeps the file's ids, so the same results score against it
    exported = coco_split1.export_coco(tmp_path / "export.json")
    data = json.loads(exported.read_text())
    assert sorted(img["id"] for img in data["images"]) == sorted(img["id"] for img in raw["images"])
    assert [c["id"] for c in data["categories"]] == sorted(c["id"] for c in raw["categories"])
    assert len(data["annotations"]) == len(raw["annotations"])
    for iou_type in ("bbox", "segm"):
        plain = _plain_ap50(exported, tmp_path / "eval" / "results_one_shot_seed1.json",
                            result["source_category_ids"], iou_type)
        assert abs(plain - result[f"map50_{iou_type}"]) < 1e-6
    # an export loads back with the same ids and the same names
    back = OneShotCocoDataset()
    back.load_coco(annotation_file=str(exported), image_dir=str(tmp_path))
    back.prepare()
    assert [back.source_image_id(i) for i in back.image_ids] == [
        coco_split1.source_image_id(i) for i in coco_split1.image_ids]
    assert back.class_names == coco_split1.class_names


def test_source_ids_are_checked(coco_split1):
    assert coco_split1.source_class_id(80) == 90  # toothbrush: internal 80, COCO 90
    with pytest.raises(ValueError, match="unknown class id 0"):
        coco_split1.source_class_id(0)
    with pytest.raises(ValueError, match="unknown image id 99"):
        coco_split1.source_image_id(99)
    with pytest.raises(ValueError, match="image 99, category 1"):
        coco_split1.to_source_results([{"image_id": 99, "category_id": 1}])
