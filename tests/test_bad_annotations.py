"""COCO annotation files with bad or degenerate annotations (issue: bad input).

Every annotation is checked on load: a message ``<file>: annotation <id>: <what is wrong>``,
the annotation dropped from training targets and evaluation ground truth alike, counted.
"""
import copy
import json
import logging

import numpy as np
import pytest

from siamese_mask_rcnn.datasets.coco import AnnotationError, ImageSizeError, OneShotCocoDataset

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

ANN_ID = 1094693          # a dining table in image 384850 (bbox [304.9, 462.86, 103.55, 166.83])


@pytest.fixture(scope="module")
def raw(coco_subset_annotations):
    return json.loads(coco_subset_annotations.read_text())


def _write(tmp_path, data, name="bad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _load(path, images, strict=False, split=None):
    ds = OneShotCocoDataset()
    ds.load_coco(annotation_file=str(path), image_dir=str(images), strict=strict)
    if split:
        ds.set_split(split)
    ds.prepare()
    return ds


def _with(raw, change):
    data = copy.deepcopy(raw)
    ann = next(a for a in data["annotations"] if a["id"] == ANN_ID)
    change(ann)
    return data


def _set(key, value):
    def change(ann):
        ann[key] = value
    return change


CASES = [  # (change, what the message says, invalid or degenerate)
    (_set("segmentation", [[300, 50, 380, 50]]), "polygon 0 has 2 point(s); a polygon needs at least 3", "invalid"),
    (_set("segmentation", [[300, 50, 380, 50, 380, 90], [1, 2]]), "polygon 1 has 1 point(s)", "invalid"),
    (_set("segmentation", [[300, 50, 380, 50, 380]]), "polygon 0 has an odd number of coordinates (5)", "invalid"),
    (_set("segmentation", []), "empty segmentation", "invalid"),
    (_set("segmentation", "abc"), "segmentation is str", "invalid"),
    (_set("segmentation", [[300, 50, float("nan"), 50, 380, 90]]), "polygon 0 holds a non-finite number", "invalid"),
    (_set("segmentation", {"size": [10, 10], "counts": [100]}), "RLE size [10, 10] differs", "invalid"),
    (_set("bbox", [304.9, 462.86, -103.55, 166.83]), "bbox has a negative width or height", "invalid"),
    (_set("bbox", [304.9, 462.86, 103.55, -1]), "bbox has a negative width or height", "invalid"),
    (_set("bbox", [304.9, 462.86, 103.55]), "bbox has 3 numbers, expected 4", "invalid"),
    (_set("bbox", [304.9, 462.86, 103.55, 166.83, 1]), "bbox has 5 numbers, expected 4", "invalid"),
    (_set("bbox", [304.9, float("inf"), 103.55, 166.83]), "bbox holds a non-finite number", "invalid"),
    (_set("bbox", [304.9, "462", 103.55, 166.83]), "bbox holds a value that is not a number", "invalid"),
    (_set("bbox", None), "bbox is NoneType", "invalid"),
    (_set("category_id", 999), "unknown category id 999", "invalid"),
    (_set("image_id", 12345), "unknown image id 12345", "invalid"),
    (_set("category_id", [1]), "unknown category id [1]", "invalid"),
    (_set("image_id", None), "unknown image id None", "invalid"),
    (_set("bbox", [304.9, 462.86, 0, 166.83]), "zero-area bbox", "degenerate"),
    (_set("bbox", [304.9, 462.86, 103.55, 0.0]), "zero-area bbox", "degenerate"),
    (_set("segmentation", [[300, 50, 340, 50, 380, 50]]), "zero-area mask (its polygons enclose no area)", "degenerate"),
    (_set("segmentation", {"size": [640, 480], "counts": [640 * 480]}), "zero-area mask (its RLE covers no pixel)",
     "degenerate"),
]


@pytest.mark.parametrize("change, message, kind", CASES)
def test_bad_annotation_is_named_dropped_and_counted(raw, tmp_path, coco_subset_dir, change, message, kind, caplog):
    path = _write(tmp_path, _with(raw, change))
    with caplog.at_level(logging.WARNING):
        ds = _load(path, coco_subset_dir / "images")
    assert ds.dropped_annotations == {"invalid": int(kind == "invalid"), "degenerate": int(kind == "degenerate")}
    assert len(ds.annotation_problems) == 1
    problem = ds.annotation_problems[0]
    assert problem.startswith(f"{path}: annotation {ANN_ID}: ") and message in problem
    assert any(problem in r.getMessage() for r in caplog.records)
    kept = [ann["annotation_id"] for i in ds.image_ids for ann in ds.instance_annotations(i)]
    assert ANN_ID not in kept and len(kept) == len(raw["annotations"]) - 1
    # every remaining mask decodes; the summary carries the counts
    for image_id in ds.image_ids:
        masks, class_ids = ds.load_mask(image_id)
        assert masks.shape[-1] == len(class_ids)
    assert ds.index_summary()["dropped_annotations"] == ds.dropped_annotations


def test_strict_raises_listing_every_problem(raw, tmp_path, coco_subset_dir):
    data = _with(raw, _set("bbox", [1, 2, 3]))
    data["annotations"][0]["segmentation"] = [[1, 2, 3, 4]]
    path = _write(tmp_path, data)
    with pytest.raises(ValueError) as info:
        _load(path, coco_subset_dir / "images", strict=True)
    text = str(info.value)
    assert "2 unusable annotation(s)" in text
    assert f"annotation {ANN_ID}: bbox has 3 numbers" in text
    assert f"annotation {data['annotations'][0]['id']}: polygon 0 has 2 point(s)" in text


def test_clean_file_has_no_problems(coco_subset_annotations, coco_subset_dir):
    ds = _load(coco_subset_annotations, coco_subset_dir / "images")
    assert ds.annotation_problems == [] and ds.dropped_annotations == {"invalid": 0, "degenerate": 0}


def test_undecodable_segmentation_names_the_annotation(raw, tmp_path, coco_subset_dir):
    """A segmentation that passes the checks but fails in pycocotools is a per-example
    ``ValueError`` (skipped by the training pipeline), naming the file and annotation."""
    ds = _load(_write(tmp_path, raw), coco_subset_dir / "images")
    image_id = next(i for i in ds.image_ids if ds.image_info[i]["id"] == 384850)
    ann = next(a for a in ds.image_info[image_id]["annotations"] if a["id"] == ANN_ID)
    ann["segmentation"] = {"size": [640, 480], "counts": 12}
    with pytest.raises(AnnotationError, match=rf"bad.json: annotation {ANN_ID}: cannot decode the segmentation"):
        ds.load_mask(image_id)
    assert issubclass(AnnotationError, ValueError)


def _swap_size(raw, coco_image_id):
    data = copy.deepcopy(raw)
    img = next(i for i in data["images"] if i["id"] == coco_image_id)
    img["width"], img["height"] = img["height"], img["width"]
    return data


def test_image_size_differs_from_json(raw, tmp_path, coco_subset_dir):
    path = _write(tmp_path, _swap_size(raw, 409630))    # 500x375 listed as 375x500
    ds = _load(path, coco_subset_dir / "images")
    image_id = next(i for i in ds.image_ids if ds.image_info[i]["id"] == 409630)
    with pytest.raises(ImageSizeError) as info:
        ds.load_image(image_id)
    message = str(info.value)
    assert "000000409630.jpg" in message and str(path) in message
    assert "gives 375x500 (width x height), the image is 500x375" in message
    assert isinstance(info.value, ValueError)  # skipped and counted by the training pipeline


def test_evaluation_names_the_image_with_the_wrong_size(raw, tmp_path, coco_subset_dir):
    from siamese_mask_rcnn import evaluation as ev
    ds = _load(_write(tmp_path, _swap_size(raw, 176857)), coco_subset_dir / "images", split=1)
    ids = sorted(ds.train_class_ids + ds.oneshot_class_ids)
    with pytest.raises(ImageSizeError, match=r"000000176857\.jpg.*gives 375x500 .* the image is 500x375"):
        ev.evaluate(ds, ev.ground_truth_predictor(ds), ids, seed=0, progress=False)


@pytest.mark.parametrize("bbox, segmentation", [
    ([200.0, 100.0, 0.0, 40.0], [[200, 100, 200, 140, 200, 120]]),      # zero-width box, line mask
    ([200.0, 100.0, 30.0, 0.0], [[200, 100, 230, 100, 215, 100]]),      # zero-height box, line mask
    ([200.0, 100.0, 30.0, 40.0], [[200, 100, 230, 100, 215, 100]]),     # box fine, zero-area mask
])
def test_ground_truth_predictor_scores_100_with_a_zero_area_annotation(raw, tmp_path, coco_subset_dir,
                                                                      bbox, segmentation):
    from siamese_mask_rcnn import evaluation as ev
    data = copy.deepcopy(raw)
    data["annotations"].append({"id": 999001, "image_id": 176857, "category_id": 1, "iscrowd": 0,
                                "area": 0.0, "bbox": bbox, "segmentation": segmentation})
    ds = _load(_write(tmp_path, data), coco_subset_dir / "images", split=1)
    assert ds.dropped_annotations == {"invalid": 0, "degenerate": 1}
    ids = sorted(ds.train_class_ids + ds.oneshot_class_ids)
    result = ev.evaluate(ds, ev.ground_truth_predictor(ds), ids, seed=0, progress=False)
    assert result["map50_bbox"] == pytest.approx(1.0) and result["map50_segm"] == pytest.approx(1.0)


def test_same_image_reference_pairs_are_counted(coco_subset_annotations, coco_subset_dir, caplog):
    with caplog.at_level(logging.INFO):
        ds = _load(coco_subset_annotations, coco_subset_dir / "images")
    pairs = ds.same_image_reference_pairs()
    # hand count from the JSON: categories whose usable references all lie in one image
    expected = sorted((i, c) for c, images in ds.category_index.items() if len(images) == 1
                      for i in images if c in ds.image_categories[i])
    assert sorted(pairs) == expected and len(pairs) > 0
    elephant = ds.class_names.index("elephant")
    assert any(c == elephant for _, c in pairs)
    assert ds.index_summary()["same_image_reference_pairs"] == len(pairs)
    assert any(f"{len(pairs)} (query, category) pairs have their category's only usable reference"
               in r.getMessage() for r in caplog.records)
    rng = np.random.default_rng(0)
    for image_id, class_id in pairs:
        _, info = ds.sample_reference(class_id, rng, exclude_image_id=image_id, return_info=True)
        assert info["same_image"] and info["image_id"] == image_id
