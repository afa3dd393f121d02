"""Tests for siamese_mask_rcnn.mrcnn.utils (hand-computed expectations)."""
import logging
import math

import numpy as np
import pytest
import skimage.io

from siamese_mask_rcnn.mrcnn import utils
from siamese_mask_rcnn.mrcnn.config import Config
from siamese_mask_rcnn.mrcnn.anchors import compute_backbone_shapes


# --------------------------------------------------------------------- Dataset
def make_dataset():
    ds = utils.Dataset()
    ds.add_class("a", 1, "cat, feline")
    ds.add_class("a", 2, "dog")
    ds.add_class("a", 1, "cat again")  # duplicate: ignored
    ds.add_class("b", 1, "car")
    ds.add_image("a", "img7", "/nowhere/img7.png", width=4, annotations=[1])
    ds.add_image("b", 9, "/nowhere/9.png")
    ds.prepare()
    return ds


def test_dataset_prepare_tables():
    ds = make_dataset()
    assert ds.num_classes == 4
    assert ds.class_names == ["BG", "cat", "dog", "car"]
    assert ds.class_ids.tolist() == [0, 1, 2, 3]
    assert ds.num_images == 2 and ds.image_ids.tolist() == [0, 1]
    assert ds.sources == ["", "a", "b"]
    assert ds.source_class_ids == {"": [0], "a": [0, 1, 2], "b": [0, 3]}
    assert ds.class_from_source_map["a.2"] == 2
    assert ds.map_source_class_id("b.1") == 3
    assert ds.get_source_class_id(3, "b") == 1
    with pytest.raises(ValueError):
        ds.get_source_class_id(3, "a")
    with pytest.raises(KeyError, match="c.1"):
        ds.map_source_class_id("c.1")
    assert ds.image_from_source_map == {"a.img7": 0, "b.9": 1}
    assert ds.image_info[0]["width"] == 4 and ds.image_info[0]["annotations"] == [1]
    assert ds.source_image_link(1) == "/nowhere/9.png"
    assert ds.image_reference(0) == ""
    with pytest.raises(ValueError, match="dot"):
        ds.add_class("x.y", 1, "bad")


def test_default_load_mask_is_empty_and_warns(caplog):
    ds = make_dataset()
    with caplog.at_level(logging.WARNING):
        mask, class_ids = ds.load_mask(0)
    assert mask.size == 0 and class_ids.shape == (0,)
    assert class_ids.dtype == np.int32
    assert "load_mask" in caplog.text


def _dataset_with(path):
    ds = utils.Dataset()
    ds.add_image("t", 0, str(path))
    ds.prepare()
    return ds


def test_load_image_grey_becomes_rgb(tmp_path):
    grey = (np.arange(20, dtype=np.uint8).reshape(5, 4) * 10)
    path = tmp_path / "grey.png"
    skimage.io.imsave(path, grey, check_contrast=False)
    image = _dataset_with(path).load_image(0)
    assert image.shape == (5, 4, 3) and image.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(image[..., c], grey)


def test_load_image_rgba_drops_alpha(tmp_path):
    rgba = np.zeros((3, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 1] = np.arange(6, dtype=np.uint8)[None, :]
    rgba[..., 2] = 7
    rgba[..., 3] = 128
    path = tmp_path / "rgba.png"
    skimage.io.imsave(path, rgba, check_contrast=False)
    image = _dataset_with(path).load_image(0)
    assert image.shape == (3, 6, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, rgba[..., :3])


def test_load_image_errors_name_the_path(tmp_path):
    bad = tmp_path / "corrupt_image.png"
    bad.write_bytes(b"this is not a png at all")
    with pytest.raises(utils.ImageLoadError, match="corrupt_image.png") as info:
        _dataset_with(bad).load_image(0)
    assert info.value.path == str(bad)
    assert isinstance(info.value, OSError)
    with pytest.raises(utils.ImageLoadError, match="missing.jpg"):
        _dataset_with(tmp_path / "missing.jpg").load_image(0)


def test_to_uint8_rgb_conversions():
    assert utils.to_uint8_rgb(np.ones((2, 2), bool))[0, 0].tolist() == [255, 255, 255]
    assert utils.to_uint8_rgb(np.full((2, 2, 3), 65535, np.uint16))[0, 0, 0] == 255
    assert utils.to_uint8_rgb(np.full((2, 2, 3), 0.5))[0, 0, 0] == 128
    with pytest.raises(utils.ImageLoadError, match="shape"):
        utils.to_uint8_rgb(np.zeros((2, 2, 5)), path="x.png")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_to_uint8_rgb_refuses_non_finite_floats(value):
    image = np.full((3, 4, 3), 0.5, np.float32)
    image[1, 2, 0] = value
    with pytest.raises(utils.ImageLoadError, match=r"q\.png.*1 non-finite"):
        utils.to_uint8_rgb(image, path="q.png")


@pytest.mark.parametrize("value, shown", [(None, "NoneType None"), (3, "int 3"),
                                          ("query.png", "str 'query.png'"), ("x" * 200, "str 'xxx")])
def test_to_uint8_rgb_names_what_was_given_instead_of_an_array(value, shown):
    with pytest.raises(utils.ImageLoadError, match=r"expected an image array.*got " + shown) as info:
        utils.to_uint8_rgb(value)
    assert len(str(info.value)) < 140  # a long value is shortened, not printed whole


def test_to_uint8_rgb_refuses_non_numeric_data():
    with pytest.raises(utils.ImageLoadError, match="data type"):
        utils.to_uint8_rgb(np.full((2, 2, 3), "a"))


# ----------------------------------------------------------------------- boxes
def test_extract_bboxes_exclusive_corners():
    mask = np.zeros((10, 12, 2), dtype=bool)
    mask[2:5, 3:7, 0] = True
    mask[9, 11, 0] = False
    boxes = utils.extract_bboxes(mask)
    assert boxes.dtype == np.int32
    assert boxes.tolist() == [[2, 3, 5, 7], [0, 0, 0, 0]]


def test_compute_overlaps_hand_values():
    a = [0, 0, 10, 10]
    b = [5, 5, 15, 15]
    c = [0, 0, 10, 5]
    overlaps = utils.compute_overlaps(np.array([a, b]), np.array([a, b, c]))
    expected = [[1.0, 25 / 175, 0.5],
                [25 / 175, 1.0, 0.0]]
    np.testing.assert_allclose(overlaps, expected)
    # same result when the longer side is the second argument
    np.testing.assert_allclose(utils.compute_overlaps(np.array([a, b, c]), np.array([a, b])),
                               np.array(expected).T)
    iou = utils.compute_iou(np.array(a), np.array([b, c]), 100.0, np.array([100.0, 50.0]))
    np.testing.assert_allclose(iou, [1 / 7, 0.5])
    assert utils.compute_overlaps(np.zeros((0, 4)), np.array([a])).shape == (0, 1)


def test_compute_overlaps_masks_hand_values():
    m1 = np.zeros((4, 4, 2), dtype=bool)
    m1[:2, :2, 0] = True            # 4 px
    m1[3, 3, 1] = True              # 1 px
    m2 = np.zeros((4, 4, 2), dtype=bool)
    m2[:2, :, 0] = True             # 8 px, contains m1[0]
    m2[2:, 2:, 1] = True            # 4 px, contains m1[1]
    overlaps = utils.compute_overlaps_masks(m1, m2)
    np.testing.assert_allclose(overlaps, [[4 / 8, 0.0], [0.0, 1 / 4]])
    assert utils.compute_overlaps_masks(m1, np.zeros((4, 4, 0))).shape == (2, 0)


def test_non_max_suppression_hand_case():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]])
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    # IoU(0,1) = 81/119 = 0.68; IoU(0,3) = 90/100 = 0.9; IoU(3,1) = 72/(90+100-72)=0.61
    keep = utils.non_max_suppression(boxes, scores, 0.5)
    assert keep.dtype == np.int32
    assert keep.tolist() == [3, 2]
    assert utils.non_max_suppression(boxes, scores, 0.7).tolist() == [3, 1, 2]
    assert utils.non_max_suppression(boxes, scores, 0.95).tolist() == [3, 0, 1, 2]
    assert utils.non_max_suppression(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_box_refinement_hand_value_and_round_trip():
    deltas = utils.box_refinement(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 20]]))
    np.testing.assert_allclose(deltas, [[0, 0.5, 0, math.log(2)]], atol=1e-6)
    boxes = np.array([[0, 0, 10, 10], [5, 5, 25, 45], [100, 200, 180, 260]], dtype=np.float32)
    gt = np.array([[1, 2, 11, 14], [0, 0, 20, 20], [90, 210, 200, 250]], dtype=np.float32)
    restored = utils.apply_box_deltas(boxes, utils.box_refinement(boxes, gt))
    np.testing.assert_allclose(restored, gt, atol=1e-3)


def test_norm_denorm_round_trip():
    boxes = np.array([[10, 20, 50, 100], [0, 0, 101, 201]])
    normed = utils.norm_boxes(boxes, (101, 201))
    assert normed.dtype == np.float32
    np.testing.assert_allclose(normed[0], [0.1, 0.1, 0.49, 0.495], atol=1e-6)
    np.testing.assert_allclose(normed[1], [0, 0, 1, 1], atol=1e-6)
    back = utils.denorm_boxes(normed, (101, 201, 3))
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, boxes)


def test_trim_zeros():
    x = np.array([[1, 2, 3, 4], [0, 0, 0, 0], [0, 0, 0, 5], [0, 0, 0, 0]])
    assert utils.trim_zeros(x).tolist() == [[1, 2, 3, 4], [0, 0, 0, 5]]


# --------------------------------------------------------------------- resizing
def test_resize_image_square():
    image = np.random.default_rng(0).integers(0, 255, (60, 40, 3)).astype(np.uint8)
    out, window, scale, padding, crop = utils.resize_image(image, min_dim=50, max_dim=100, mode="square")
    # scale = 50/40 = 1.25 -> 75x50, padded into 100x100
    assert scale == pytest.approx(1.25)
    assert out.shape == (100, 100, 3) and out.dtype == np.uint8
    assert window == (12, 25, 87, 75)
    assert padding == [(12, 13), (25, 25), (0, 0)]
    assert crop is None
    assert out[:12].max() == 0 and out[87:].max() == 0 and out[:, :25].max() == 0 and out[:, 75:].max() == 0


def test_resize_image_square_max_dim_wins():
    image = np.ones((100, 50, 3), dtype=np.float32)
    out, window, scale, padding, _ = utils.resize_image(image, min_dim=80, max_dim=128, mode="square")
    # min_dim asks 1.6 -> 160 > 128, so scale = 128/100
    assert scale == pytest.approx(1.28)
    assert out.shape == (128, 128, 3) and out.dtype == np.float32
    assert window == (0, 32, 128, 96)
    assert padding == [(0, 0), (32, 32), (0, 0)]
    # min_scale forces a larger scale when possible
    _, _, s2, _, _ = utils.resize_image(np.ones((60, 40, 3)), min_scale=2, max_dim=200, mode="square")
    assert s2 == 2


def test_resize_image_pad64():
    image = np.ones((60, 40, 3), dtype=np.uint8)
    out, window, scale, padding, crop = utils.resize_image(image, min_dim=64, max_dim=1000, mode="pad64")
    # scale 64/40 = 1.6 -> 96x64 -> padded to 128x64
    assert scale == pytest.approx(1.6)
    assert out.shape == (128, 64, 3)
    assert window == (16, 0, 112, 64)
    assert padding == [(16, 16), (0, 0), (0, 0)]
    with pytest.raises(ValueError, match="64"):
        utils.resize_image(image, min_dim=50, mode="pad64")


def test_resize_image_crop_and_none():
    image = np.random.default_rng(1).integers(0, 255, (60, 40, 3)).astype(np.uint8)
    out, window, scale, padding, crop = utils.resize_image(
        image, min_dim=32, max_dim=100, mode="crop", rng=np.random.default_rng(5))
    assert out.shape == (32, 32, 3) and scale == 1 and window == (0, 0, 32, 32)
    y, x, h, w = crop
    assert (h, w) == (32, 32) and 0 <= y <= 28 and 0 <= x <= 8
    np.testing.assert_array_equal(out, image[y:y + 32, x:x + 32])
    # same seed -> same crop
    assert utils.resize_image(image, min_dim=32, mode="crop", rng=np.random.default_rng(5))[4] == crop
    out, window, scale, padding, crop = utils.resize_image(image, min_dim=800, max_dim=1024, mode="none")
    assert out is image and window == (0, 0, 60, 40) and scale == 1 and crop is None
    with pytest.raises(ValueError, match="bogus"):
        utils.resize_image(image, mode="bogus")


@pytest.mark.parametrize("mode,min_dim,max_dim", [("square", 50, 100), ("pad64", 64, None), ("crop", 32, None)])
def test_resize_mask_follows_image(mode, min_dim, max_dim):
    mask = np.zeros((60, 40, 2), dtype=bool)
    mask[10:40, 5:30, 0] = True
    mask[45:58, 20:38, 1] = True
    image = (mask[..., :1] * 255).repeat(3, axis=2).astype(np.uint8)
    out, window, scale, padding, crop = utils.resize_image(
        image, min_dim=min_dim, max_dim=max_dim, mode=mode, rng=np.random.default_rng(2))
    resized = utils.resize_mask(mask, scale, padding, crop)
    assert resized.shape == out.shape[:2] + (2,)
    assert resized.dtype == bool
    from_image = out[..., 0] > 127
    inter = np.sum(from_image & resized[..., 0])
    union = np.sum(from_image | resized[..., 0])
    assert union > 0 and inter / union > 0.9


def test_resize_mask_hand_case():
    mask = np.zeros((4, 4, 1), dtype=bool)
    mask[:2, :2, 0] = True
    out = utils.resize_mask(mask, 2, [(1, 1), (0, 2), (0, 0)])
    assert out.shape == (10, 10, 1)
    expected = np.zeros((10, 10), dtype=bool)
    expected[1:5, 0:4] = True
    np.testing.assert_array_equal(out[..., 0], expected)


def test_mini_mask_round_trip_rectangle():
    mask = np.zeros((100, 100, 2), dtype=bool)
    mask[10:50, 20:80, 0] = True
    yy, xx = np.mgrid[:100, :100]
    mask[..., 1] = (yy - 70) ** 2 + (xx - 40) ** 2 < 15 ** 2  # a disc
    bbox = utils.extract_bboxes(mask)
    assert bbox[0].tolist() == [10, 20, 50, 80]
    mini = utils.minimize_mask(bbox, mask, (56, 56))
    assert mini.shape == (56, 56, 2) and mini.dtype == bool
    assert mini[..., 0].all()
    full = utils.expand_mask(bbox, mini, (100, 100, 3))
    assert full.shape == (100, 100, 2)
    np.testing.assert_array_equal(full[..., 0], mask[..., 0])
    inter = np.sum(full[..., 1] & mask[..., 1])
    union = np.sum(full[..., 1] | mask[..., 1])
    assert inter / union > 0.95
    with pytest.raises(ValueError, match="zero area"):
        utils.minimize_mask(np.array([[5, 5, 5, 9]]), np.ones((10, 10, 1), bool), (8, 8))


def test_unmold_mask_hand_case():
    small = np.zeros((4, 4), dtype=np.float32)
    small[:, :2] = 1.0
    full = utils.unmold_mask(small, np.array([2, 2, 10, 10]), (12, 12, 3))
    expected = np.zeros((12, 12), dtype=bool)
    expected[2:10, 2:6] = True  # bilinear: column 3 of the box is 0.75, column 4 is 0.25
    assert full.dtype == bool
    np.testing.assert_array_equal(full, expected)
    # a box sticking out of the image is clipped, not an error
    clipped = utils.unmold_mask(np.ones((4, 4)), np.array([8, 8, 16, 16]), (12, 12))
    assert clipped.sum() == 16 and clipped[8:, 8:].all()


def test_unmold_masks_equals_stacked_single_masks():
    rng = np.random.default_rng(3)
    small = rng.uniform(size=(7, 6, 5)).astype(np.float32)
    boxes = np.array([[2, 3, 20, 15], [-4, -2, 6, 9], [30, 35, 44, 50],  # inside, top-left, bottom-right out
                      [5, 5, 5, 9], [50, 50, 60, 60], [0, 0, 40, 45], [10, 1, 12, 44]])  # empty, outside, whole
    full = utils.unmold_masks(small, boxes, (40, 45, 3))
    expected = np.stack([utils.unmold_mask(m, b, (40, 45)) for m, b in zip(small, boxes)], axis=-1)
    assert full.dtype == bool and full.shape == (40, 45, 7)
    np.testing.assert_array_equal(full, expected)
    assert expected[..., [0, 1, 2, 5, 6]].any(axis=(0, 1)).all()  # the case is not all-empty
    assert utils.unmold_masks(np.zeros((0, 6, 5)), np.zeros((0, 4)), (40, 45)).shape == (40, 45, 0)


def test_unmold_masks_box_mostly_outside_resizes_only_its_visible_window():
    """A box more than 4x its visible area takes the windowed path; it equals resizing the
    whole box and cropping."""
    from siamese_mask_rcnn.mrcnn.resizing import resize
    rng = np.random.default_rng(8)
    small = rng.uniform(size=(3, 28, 28)).astype(np.float32)
    boxes = np.array([[-300, -250, 310, 330], [20, -500, 700, 30], [-80, 10, 35, 44]])
    full = utils.unmold_masks(small, boxes, (40, 45))
    for i, (y1, x1, y2, x2) in enumerate(boxes):
        whole = resize(small[i], (y2 - y1, x2 - x1)) >= 0.5
        expected = np.zeros((40, 45), bool)
        cy1, cx1, cy2, cx2 = max(y1, 0), max(x1, 0), min(y2, 40), min(x2, 45)
        expected[cy1:cy2, cx1:cx2] = whole[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
        assert expected.any() and not expected.all()
        np.testing.assert_array_equal(full[..., i], expected, err_msg=f"box {i}")
    # a 20000-pixel box on a small image: only 40 x 45 pixels are interpolated
    huge = utils.unmold_masks(np.ones((1, 28, 28)), np.array([[-10000, -10000, 10000, 10000]]), (40, 45))
    assert huge.all()


@pytest.mark.parametrize("masks,boxes,message", [
    (np.zeros((3, 6, 5)), np.zeros((2, 4)), "3 masks for 2 boxes"),
    (np.zeros((6, 5)), np.zeros((2, 4)), r"masks must be \[N, h, w\]"),
    (np.zeros((2, 6, 5)), np.zeros((2, 3)), r"boxes must be \[N, 4\]"),
    (np.zeros((2, 6, 5)), np.array([[0, 0, 4, 4], [0, np.nan, 4, 4]]), r"box 1 is not finite"),
])
def test_unmold_masks_refuses_mismatched_or_bad_input(masks, boxes, message):
    with pytest.raises(ValueError, match=message):
        utils.unmold_masks(masks, boxes, (40, 45))


@pytest.mark.parametrize("image_shape", [(40,), None, (40.5, 45), (-1, 45), ("a", 45)])
def test_unmold_masks_refuses_a_bad_image_shape(image_shape):
    with pytest.raises(ValueError, match="image_shape must start with"):
        utils.unmold_masks(np.ones((1, 6, 5)), np.array([[0, 0, 4, 4]]), image_shape)


def test_unmold_masks_refuses_empty_small_masks():
    with pytest.raises(ValueError, match=r"h, w >= 1"):
        utils.unmold_masks(np.zeros((2, 0, 0)), np.array([[0, 0, 4, 4], [1, 1, 5, 5]]), (40, 45))


# ---------------------------------------------------------------------- anchors
def test_generate_anchors_hand_values():
    anchors = utils.generate_anchors(32, [0.5, 1, 2], (2, 2), 4, 1)
    assert anchors.shape == (12, 4)
    h, w = 32 / math.sqrt(0.5), 32 * math.sqrt(0.5)
    np.testing.assert_allclose(anchors[0], [-h / 2, -w / 2, h / 2, w / 2])       # (0,0) ratio 0.5 (tall)
    np.testing.assert_allclose(anchors[1], [-16, -16, 16, 16])                   # (0,0) ratio 1
    np.testing.assert_allclose(anchors[2], [-w / 2, -h / 2, w / 2, h / 2])       # (0,0) ratio 2 (wide)
    np.testing.assert_allclose(anchors[4], [-16, -12, 16, 20])                   # (0,1): centre x=4
    np.testing.assert_allclose(anchors[7], [-12, -16, 20, 16])                   # (1,0): centre y=4
    # anchor stride 2 on a 4x4 map: centres at 0 and 8
    strided = utils.generate_anchors([32], [1], (4, 4), 4, 2)
    np.testing.assert_allclose(strided[:, 0] + 16, [0, 0, 8, 8])


def test_pyramid_anchor_count_default_config():
    config = Config()
    shapes = compute_backbone_shapes(config, config.IMAGE_SHAPE)
    assert shapes.tolist() == [[256, 256], [128, 128], [64, 64], [32, 32], [16, 16]]
    anchors = utils.generate_pyramid_anchors(config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS,
                                             shapes, config.BACKBONE_STRIDES, config.RPN_ANCHOR_STRIDE)
    assert anchors.shape == (261888, 4)
    # the last level starts after 3*(256^2+128^2+64^2+32^2) anchors with scale 512
    first_p6 = 3 * (256 ** 2 + 128 ** 2 + 64 ** 2 + 32 ** 2)
    np.testing.assert_allclose(anchors[first_p6 + 1], [-256, -256, 256, 256])


# ------------------------------------------------------------------- evaluation
def _square_masks(boxes, shape=(20, 20)):
    masks = np.zeros(shape + (len(boxes),), dtype=bool)
    for i, (y1, x1, y2, x2) in enumerate(boxes):
        masks[y1:y2, x1:x2, i] = True
    return masks


GT_BOXES = np.array([[0, 0, 8, 8], [10, 10, 18, 18]])
GT_CLASSES = np.array([1, 1])


def test_compute_ap_perfect_prediction():
    masks = _square_masks(GT_BOXES)
    ap, precisions, recalls, overlaps = utils.compute_ap(
        GT_BOXES, GT_CLASSES, masks, GT_BOXES, GT_CLASSES, np.array([0.9, 0.8]), masks)
    assert ap == pytest.approx(1.0)
    np.testing.assert_allclose(np.diag(overlaps), [1, 1])
    assert utils.compute_ap_range(GT_BOXES, GT_CLASSES, masks, GT_BOXES, GT_CLASSES,
                                  np.array([0.9, 0.8]), masks, verbose=0) == pytest.approx(1.0)


def test_compute_ap_one_gt_missed():
    gt_masks = _square_masks(GT_BOXES)
    pred = GT_BOXES[:1]
    ap, precisions, recalls, _ = utils.compute_ap(
        GT_BOXES, GT_CLASSES, gt_masks, pred, np.array([1]), np.array([0.9]), _square_masks(pred))
    # precision 1 up to recall 0.5, then 0 -> AP = 0.5
    assert ap == pytest.approx(0.5)
    np.testing.assert_allclose(recalls, [0, 0.5, 1])
    np.testing.assert_allclose(precisions, [1, 1, 0])


def test_compute_ap_false_positive_first():
    gt_masks = _square_masks(GT_BOXES)
    pred = np.array([[0, 10, 5, 15], [10, 10, 18, 18]])  # first one hits nothing
    ap, _, _, _ = utils.compute_ap(GT_BOXES, GT_CLASSES, gt_masks, pred, np.array([1, 1]),
                                   np.array([0.9, 0.5]), _square_masks(pred))
    # hits [0, 1] -> precisions [0, .5], recalls [0, .5]; envelope .5 up to recall .5 -> AP .25
    assert ap == pytest.approx(0.25)
    # wrong class never matches
    ap_wrong, _, _, _ = utils.compute_ap(GT_BOXES, GT_CLASSES, gt_masks, GT_BOXES, np.array([2, 2]),
                                         np.array([0.9, 0.8]), gt_masks)
    assert ap_wrong == 0.0


def test_compute_matches_sorts_by_score_and_trims_padding():
    gt_masks = _square_masks(GT_BOXES)
    pred = np.array([[10, 10, 18, 18], [0, 0, 8, 8], [0, 0, 0, 0]])
    pred_masks = _square_masks(pred)
    gt_match, pred_match, overlaps = utils.compute_matches(
        GT_BOXES, GT_CLASSES, gt_masks, pred, np.array([1, 1, 0]), np.array([0.2, 0.9, 0]), pred_masks)
    # sorted by score: prediction 1 (box 0) first
    assert pred_match.tolist() == [0, 1]
    assert gt_match.tolist() == [0, 1]
    assert overlaps.shape == (2, 2)


def test_compute_recall():
    pred = np.array([[0, 0, 8, 8], [0, 0, 8, 7], [30, 30, 40, 40]])
    recall, positive = utils.compute_recall(pred, GT_BOXES, 0.5)
    assert recall == pytest.approx(0.5)
    assert positive.tolist() == [0, 1]
