"""siamese_mask_rcnn.cocoformat: the one home of RLE masks, COCO boxes and in-memory COCO objects."""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from siamese_mask_rcnn import cocoformat


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools decode under numpy 2
def test_encode_mask_is_json_ready_and_decodes_back():
    mask = np.zeros((7, 9), bool)
    mask[2:5, 3:8] = True
    mask[6, 0] = True
    rle = cocoformat.encode_mask(mask)
    assert rle["size"] == [7, 9] and isinstance(rle["counts"], str)
    json.dumps(rle)  # no bytes, no numpy values
    decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
    np.testing.assert_array_equal(decoded.astype(bool), mask)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        cocoformat.encode_mask(np.zeros((2, 3, 1), bool))


def test_encode_mask_with_box_gives_area_and_tight_xywh_box():
    mask = np.zeros((10, 12), np.uint8)
    mask[1:4, 5:11] = 1
    rle, area, bbox = cocoformat.encode_mask_with_box(mask)
    assert area == 18 and bbox == [5.0, 1.0, 6.0, 3.0]
    assert rle == cocoformat.encode_mask(mask)
    assert cocoformat.encode_mask_with_box(np.zeros((4, 4), bool))[1:] == (0, [0.0, 0.0, 0.0, 0.0])


def test_box_conversions_are_inverse():
    assert cocoformat.box_yxyx_to_xywh((2, 3, 10, 7)) == [3, 2, 4, 8]
    assert cocoformat.box_xywh_to_yxyx([3, 2, 4, 8]) == [2.0, 3.0, 10.0, 7.0]
    box = (1.5, 2.25, 9.5, 12.0)
    assert cocoformat.box_xywh_to_yxyx(cocoformat.box_yxyx_to_xywh(box)) == pytest.approx(list(box))


def _ground_truth():
    mask = np.zeros((8, 8), bool)
    mask[2:6, 1:4] = True
    rle, area, bbox = cocoformat.encode_mask_with_box(mask)
    return cocoformat.coco_from_dict({
        "images": [{"id": 1, "width": 8, "height": 8}, {"id": 2, "width": 8, "height": 8}],
        "categories": [{"id": 5, "name": "thing"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "segmentation": rle,
                         "bbox": bbox, "area": area, "iscrowd": 0}]}), rle, bbox


def test_coco_from_dict_is_quiet_and_indexed(capsys):
    coco, _, _ = _ground_truth()
    assert capsys.readouterr().out == ""
    assert coco.getImgIds() == [1, 2] and coco.getAnnIds(catIds=[5]) == [1]
    cocoformat.coco_from_dict({"images": [], "categories": [], "annotations": []}, verbose=True)
    assert "index" in capsys.readouterr().out  # pycocotools' own prints when verbose


def test_load_results_empty_unknown_images_and_masks(capsys):
    coco, rle, bbox = _ground_truth()
    empty = cocoformat.load_results(coco, [], "segm")
    assert empty.getAnnIds() == [] and empty.getImgIds() == [1, 2]
    result = {"image_id": 1, "category_id": 5, "bbox": bbox, "score": 0.9, "segmentation": rle}
    loaded = cocoformat.load_results(coco, [result], "segm")
    assert len(loaded.getAnnIds()) == 1 and "area" not in result  # the caller's dict is untouched
    boxes = cocoformat.load_results(coco, [result], "bbox")
    # the mask was dropped: pycocotools made the box's polygon instead of keeping the RLE
    assert isinstance(boxes.loadAnns(boxes.getAnnIds())[0]["segmentation"], list)
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match=r"missing from the ground truth: \[3\]"):
        cocoformat.load_results(coco, [dict(result, image_id=3)], "bbox")
    with pytest.raises(ValueError, match="no segmentation"):
        cocoformat.load_results(coco, [{k: v for k, v in result.items() if k != "segmentation"}], "segm")
    with pytest.raises(ValueError, match="iou_type"):
        cocoformat.load_results(coco, [result], "keypoints")
