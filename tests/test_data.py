"""Tests of the numpy contracts of siamese_mask_rcnn.mrcnn: image meta, anchors, molding and unmolding, training targets."""
import albumentations as A
import numpy as np
import pytest
import skimage.io

from siamese_mask_rcnn.mrcnn import anchors as manchors
from siamese_mask_rcnn.mrcnn import image_meta as mmeta
from siamese_mask_rcnn.mrcnn import molding as mmolding
from siamese_mask_rcnn.mrcnn import targets as mtargets
from siamese_mask_rcnn.mrcnn import utils
from siamese_mask_rcnn.mrcnn.config import Config


class SmallConfig(Config):
    NAME = "small"
    NUM_CLASSES = 4
    IMAGE_MIN_DIM = 64
    IMAGE_MAX_DIM = 128
    MINI_MASK_SHAPE = (14, 14)


# ------------------------------------------------------------------ image meta
def test_image_meta_round_trip():
    meta = mmeta.compose_image_meta(7, (480, 640, 3), (1024, 1024, 3), (128, 0, 896, 1024), 1.6, [1, 0, 1])
    assert meta.shape == (1 + 3 + 3 + 4 + 1 + 3,)
    batch = np.stack([meta, mmeta.compose_image_meta(8, (10, 20, 3), (64, 64, 3), (0, 0, 64, 64), 2.0, [0, 1, 1])])
    parsed = mmeta.parse_image_meta(batch)
    assert parsed["image_id"].tolist() == [7, 8]
    assert parsed["original_image_shape"].tolist() == [[480, 640, 3], [10, 20, 3]]
    assert parsed["image_shape"][0].tolist() == [1024, 1024, 3]
    assert parsed["window"][0].tolist() == [128, 0, 896, 1024]
    np.testing.assert_allclose(parsed["scale"], [1.6, 2.0])
    assert parsed["scale"].dtype == np.float32 and parsed["window"].dtype == np.int32
    assert parsed["active_class_ids"].tolist() == [[1, 0, 1], [0, 1, 1]]
    single = mmeta.parse_image_meta(meta)
    assert int(single["image_id"]) == 7 and single["window"].tolist() == [128, 0, 896, 1024]
    assert len(meta) == Config(NUM_CLASSES=3).IMAGE_META_SIZE


def test_mold_unmold_image():
    config = Config()
    image = np.random.default_rng(0).integers(0, 256, (5, 6, 3)).astype(np.uint8)
    molded = mmolding.mold_image(image, config)
    assert molded.dtype == np.float32
    np.testing.assert_allclose(molded[0, 0], image[0, 0] - np.array([123.7, 116.8, 103.9]), rtol=1e-5)
    back = mmolding.unmold_image(molded, config)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, image)


# --------------------------------------------------------------------- anchors
def test_compute_backbone_shapes():
    config = Config()
    assert manchors.compute_backbone_shapes(config, (100, 200, 3)).tolist() == \
        [[25, 50], [13, 25], [7, 13], [4, 7], [2, 4]]
    custom = Config(COMPUTE_BACKBONE_SHAPE=lambda shape: np.array([[1, 2]]))
    assert manchors.compute_backbone_shapes(custom, (64, 64, 3)).tolist() == [[1, 2]]
    # A callable backbone without COMPUTE_BACKBONE_SHAPE is assumed to have BACKBONE_STRIDES
    assert manchors.compute_backbone_shapes(Config(BACKBONE=lambda x: x), (64, 96, 3)).tolist() == \
        [[16, 24], [8, 12], [4, 6], [2, 3], [1, 2]]
    with pytest.raises(ValueError, match="not a callable"):
        manchors.compute_backbone_shapes(Config(COMPUTE_BACKBONE_SHAPE="<callable:f>"), (64, 64, 3))


def test_get_anchors_cached_and_normalised():
    config = Config()
    anchors = manchors.get_anchors(config, config.IMAGE_SHAPE)
    assert anchors.shape == (261888, 4) and anchors.dtype == np.float32
    assert manchors.get_anchors(Config(), (1024, 1024, 3)) is anchors  # cached per shape
    assert not anchors.flags.writeable
    pixels = manchors.get_anchors_pixels(config, config.IMAGE_SHAPE)
    np.testing.assert_allclose(anchors[:100], utils.norm_boxes(pixels[:100], (1024, 1024)))
    small = manchors.get_anchors(SmallConfig(), (128, 128, 3))
    assert small.shape == (3 * (32 ** 2 + 16 ** 2 + 8 ** 2 + 4 ** 2 + 2 ** 2), 4)


# ------------------------------------------------------------------ prepare_gt
def _instances():
    """60x40 image: a rectangle (class 1), a crowd region (class -1), an empty mask (class 2)."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (60, 40, 3)).astype(np.uint8)
    mask = np.zeros((60, 40, 3), dtype=bool)
    mask[10:30, 5:25, 0] = True
    mask[40:55, 10:35, 1] = True
    return image, mask, np.array([1, -1, 2])


def test_prepare_gt_square_resize_and_mini_masks():
    image, mask, class_ids = _instances()
    out, meta, ids, bbox, masks = mtargets.prepare_gt(image, mask, class_ids, SmallConfig(), image_id=5)
    # scale max(1, 64/40) = 1.6 -> 96x64, padded into 128x128 at (16, 32)
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    assert ids.tolist() == [1, -1]  # empty instance dropped, crowd kept
    assert ids.dtype == np.int32
    assert bbox.tolist()[0] == [32, 40, 64, 72]
    assert masks.shape == (14, 14, 2) and masks.dtype == bool
    assert masks[..., 0].all()
    parsed = mmeta.parse_image_meta(meta)
    assert int(parsed["image_id"]) == 5
    assert parsed["original_image_shape"].tolist() == [60, 40, 3]
    assert parsed["image_shape"].tolist() == [128, 128, 3]
    assert parsed["window"].tolist() == [16, 32, 112, 96]
    assert float(parsed["scale"]) == pytest.approx(1.6)
    assert parsed["active_class_ids"].tolist() == [1, 1, 1, 1]
    _, meta2, _, _, _ = mtargets.prepare_gt(image, mask, class_ids, SmallConfig(), source_class_ids=[0, 2])
    assert mmeta.parse_image_meta(meta2)["active_class_ids"].tolist() == [1, 0, 1, 0]


def test_prepare_gt_full_masks_and_validation():
    image, mask, class_ids = _instances()
    config = SmallConfig(USE_MINI_MASK=False)
    _, _, _, bbox, masks = mtargets.prepare_gt(image, mask, class_ids, config)
    assert masks.shape == (128, 128, 2)
    np.testing.assert_array_equal(utils.extract_bboxes(masks), bbox)
    with pytest.raises(ValueError, match="class ids"):
        mtargets.prepare_gt(image, mask, class_ids[:2], config)
    with pytest.raises(ValueError, match="do not match"):
        mtargets.prepare_gt(image, mask[:50], class_ids, config)
    # no instances at all (matterport's default load_mask output)
    out, _, ids, bbox, masks = mtargets.prepare_gt(image, np.empty([0, 0, 0]), np.empty([0], np.int32), config)
    assert out.shape == (128, 128, 3) and ids.shape == (0,) and bbox.shape == (0, 4)
    assert masks.shape == (128, 128, 0)


def test_prepare_gt_crop_mode_is_reproducible():
    image, mask, class_ids = _instances()
    config = SmallConfig(IMAGE_RESIZE_MODE="crop", IMAGE_MIN_DIM=32)
    a = mtargets.prepare_gt(image, mask, class_ids, config, rng=np.random.default_rng(11))
    b = mtargets.prepare_gt(image, mask, class_ids, config, rng=np.random.default_rng(11))
    assert a[0].shape == (32, 32, 3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[3], b[3])


def test_prepare_gt_augmentation_geometric_and_pixel():
    image, mask, class_ids = _instances()
    config = SmallConfig()
    flipped = mtargets.prepare_gt(image, mask, class_ids, config, augmentation=A.HorizontalFlip(p=1.0))
    # x mirrored in the 128-wide padded image: [40, 72) -> [56, 88)
    assert flipped[3].tolist()[0] == [32, 56, 64, 88]
    plain = mtargets.prepare_gt(image, mask, class_ids, config)
    np.testing.assert_array_equal(flipped[0], plain[0][:, ::-1])
    inverted = mtargets.prepare_gt(image, mask, class_ids, config, augmentation=A.InvertImg(p=1.0))
    np.testing.assert_array_equal(inverted[0], 255 - plain[0])
    np.testing.assert_array_equal(inverted[3], plain[3])  # masks untouched
    with pytest.raises(ValueError, match="shape"):
        mtargets.prepare_gt(image, mask, class_ids, config, augmentation=A.Resize(64, 64))


def test_prepare_gt_augmentation_reproducible_with_rng():
    image, mask, class_ids = _instances()
    aug = A.Compose([A.HorizontalFlip(p=0.5), A.RandomBrightnessContrast(p=0.5)])
    runs = []
    for _ in range(2):
        rng = np.random.default_rng(42)
        runs.append([mtargets.prepare_gt(image, mask, class_ids, SmallConfig(), augmentation=aug, rng=rng)[0]
                     for _ in range(4)])
    for x, y in zip(*runs):
        np.testing.assert_array_equal(x, y)


class TinyDataset(utils.Dataset):
    def __init__(self, path):
        super().__init__()
        self.add_class("tiny", 1, "box")
        self.add_class("other", 1, "thing")
        self.add_image("tiny", 0, str(path))

    def load_mask(self, image_id):
        mask = np.zeros((20, 30, 1), dtype=bool)
        mask[5:10, 6:16, 0] = True
        return mask, np.array([1], dtype=np.int32)


def test_load_image_gt_from_dataset(tmp_path):
    path = tmp_path / "img.png"
    skimage.io.imsave(path, np.full((20, 30), 77, np.uint8), check_contrast=False)
    ds = TinyDataset(path)
    ds.prepare()
    config = SmallConfig(NUM_CLASSES=3)
    image, meta, ids, bbox, masks = mtargets.load_image_gt(ds, config, 0)
    assert image.shape == (128, 128, 3)
    assert ids.tolist() == [1]
    assert mmeta.parse_image_meta(meta)["active_class_ids"].tolist() == [1, 1, 0]  # BG + tiny.1
    # scale = 64/20 = 3.2 -> 64x96 at offsets (32, 16): box [5,6,10,16] -> [48, 35, 64, 67]
    assert bbox.tolist() == [[48, 35, 64, 67]]


# ---------------------------------------------------------------- RPN targets
def test_rpn_targets_gt_equal_to_anchor():
    config = SmallConfig()
    anchors = np.array(manchors.get_anchors_pixels(config, (128, 128, 3)))
    k = 3 * (10 * 32 + 12) + 1  # P2 anchor at cell (10, 12), ratio 1: [24, 32, 56, 64]
    np.testing.assert_allclose(anchors[k], [24, 32, 56, 64])
    gt_boxes = anchors[k:k + 1].astype(np.int32)
    rpn_match, rpn_bbox = mtargets.build_rpn_targets((128, 128, 3), anchors, np.array([1]), gt_boxes, config,
                                                 rng=np.random.default_rng(0))
    assert rpn_match.dtype == np.int32 and rpn_match.shape == (anchors.shape[0],)
    assert rpn_bbox.dtype == np.float32 and rpn_bbox.shape == (256, 4)
    assert set(np.unique(rpn_match)) <= {-1, 0, 1}
    assert rpn_match[k] == 1
    positives = np.where(rpn_match == 1)[0]
    row = int(np.searchsorted(positives, k))
    np.testing.assert_allclose(rpn_bbox[row], 0, atol=1e-6)
    # every positive has IoU >= 0.7 here, and its deltas are the scaled refinement
    ious = utils.compute_overlaps(anchors[positives], gt_boxes)[:, 0]
    assert np.all(ious >= 0.7)
    expected = utils.box_refinement(anchors[positives], np.repeat(gt_boxes, len(positives), 0)) / 0.1 * \
        np.array([1, 1, 0.5, 0.5])
    np.testing.assert_allclose(rpn_bbox[:len(positives)], expected, atol=1e-5)
    assert np.all(rpn_bbox[len(positives):] == 0)
    assert np.count_nonzero(rpn_match) <= config.RPN_TRAIN_ANCHORS_PER_IMAGE


def test_rpn_targets_balance_and_reproducibility():
    config = SmallConfig(RPN_TRAIN_ANCHORS_PER_IMAGE=8)
    anchors = np.array(manchors.get_anchors_pixels(config, (128, 128, 3)))
    gt_boxes = np.array([[0, 0, 60, 60], [60, 60, 124, 124], [10, 70, 40, 120]])
    ids = np.array([1, 2, 3])
    m1, b1 = mtargets.build_rpn_targets(None, anchors, ids, gt_boxes, config, rng=np.random.default_rng(1))
    m2, b2 = mtargets.build_rpn_targets(None, anchors, ids, gt_boxes, config, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(b1, b2)
    assert np.sum(m1 == 1) == 4          # more candidates than 8 // 2, so exactly half
    assert np.count_nonzero(m1) == 8
    assert b1.shape == (8, 4)


def test_rpn_targets_small_gt_gets_its_best_anchor():
    config = SmallConfig()
    anchors = np.array(manchors.get_anchors_pixels(config, (128, 128, 3)))
    gt = np.array([[50, 50, 58, 58]])  # far smaller than any anchor: max IoU < 0.3
    overlaps = utils.compute_overlaps(anchors, gt)[:, 0]
    assert overlaps.max() < 0.3
    rpn_match, _ = mtargets.build_rpn_targets(None, anchors, np.array([1]), gt, config, rng=np.random.default_rng(0))
    positives = np.where(rpn_match == 1)[0]
    assert positives.size >= 1
    np.testing.assert_allclose(overlaps[positives], overlaps.max())


def test_rpn_targets_crowd_handling():
    config = SmallConfig(RPN_TRAIN_ANCHORS_PER_IMAGE=4000)  # no subsampling
    anchors = np.array(manchors.get_anchors_pixels(config, (128, 128, 3)))
    crowd = np.array([[0, 0, 40, 40]])
    gt = np.array([[80, 80, 112, 112]])
    rpn_match, _ = mtargets.build_rpn_targets(None, anchors, np.array([-1, 1]), np.concatenate([crowd, gt]),
                                          config, rng=np.random.default_rng(0))
    touches_crowd = utils.compute_overlaps(anchors, crowd)[:, 0] >= 0.001
    gt_iou = utils.compute_overlaps(anchors, gt)[:, 0]
    assert not np.any(rpn_match[touches_crowd] == -1)   # never negative near a crowd
    assert np.all(rpn_match[~touches_crowd & (gt_iou < 0.3)] == -1)
    assert np.all(rpn_match[gt_iou >= 0.7] == 1)
    # crowd boxes are never positive targets themselves
    only_crowd, bbox = mtargets.build_rpn_targets(None, anchors, np.array([-1]), crowd, config,
                                              rng=np.random.default_rng(0))
    assert not np.any(only_crowd == 1) and np.all(bbox == 0)
    assert np.array_equal(only_crowd == -1, ~touches_crowd)


def test_rpn_targets_without_gt_are_all_negative_subsampled():
    config = SmallConfig()
    anchors = np.array(manchors.get_anchors_pixels(config, (128, 128, 3)))
    rpn_match, rpn_bbox = mtargets.build_rpn_targets(None, anchors, np.zeros([0], np.int32), np.zeros([0, 4]),
                                                 config, rng=np.random.default_rng(0))
    assert np.sum(rpn_match == -1) == 256 and np.sum(rpn_match == 1) == 0


# ------------------------------------------------------------------- inference
def test_mold_inputs():
    config = SmallConfig()
    images = [np.zeros((60, 40, 3), np.uint8), np.full((100, 200, 3), 255, np.uint8)]
    molded, metas, windows = mmolding.mold_inputs(images, config)
    assert molded.shape == (2, 128, 128, 3) and molded.dtype == np.float32
    assert metas.shape == (2, config.IMAGE_META_SIZE)
    assert windows.tolist() == [[16, 32, 112, 96], [32, 0, 96, 128]]
    parsed = mmeta.parse_image_meta(metas)
    assert parsed["original_image_shape"].tolist() == [[60, 40, 3], [100, 200, 3]]
    assert parsed["active_class_ids"].sum() == 0
    np.testing.assert_allclose(molded[0, 0, 0], -config.MEAN_PIXEL, rtol=1e-6)  # padding = 0 - mean
    with pytest.raises(ValueError, match="different shapes"):
        mmolding.mold_inputs(images, SmallConfig(IMAGE_RESIZE_MODE="pad64"))


def test_unmold_detections_maps_back_to_original():
    image_shape = (128, 128, 3)
    original = (60, 40, 3)
    window = (16, 32, 112, 96)
    # a detection covering original [10, 5, 30, 25] sits at [32, 40, 64, 72] in the molded image
    box = utils.norm_boxes(np.array([[32, 40, 64, 72]]), image_shape[:2])[0]
    flat = utils.norm_boxes(np.array([[50, 50, 50, 60]]), image_shape[:2])[0]   # zero height
    detections = np.zeros((4, 6), dtype=np.float32)
    detections[0] = [*box, 1, 0.9]
    detections[1] = [*flat, 1, 0.8]
    masks = np.ones((4, 7, 7), dtype=np.float32)
    boxes, class_ids, scores, full_masks = mmolding.unmold_detections(detections, masks, original, image_shape, window)
    assert boxes.dtype == np.int32 and boxes.tolist() == [[10, 5, 30, 25]]
    assert class_ids.dtype == np.int32 and class_ids.tolist() == [1]
    assert scores.dtype == np.float32 and scores.tolist() == pytest.approx([0.9])
    assert full_masks.shape == (60, 40, 1) and full_masks.dtype == bool
    expected = np.zeros((60, 40), bool)
    expected[10:30, 5:25] = True
    np.testing.assert_array_equal(full_masks[..., 0], expected)
    # per-class masks [N, h, w, C] pick the channel of the class
    per_class = np.zeros((4, 7, 7, 3), np.float32)
    per_class[..., 1] = 1
    _, _, _, m2 = mmolding.unmold_detections(detections, per_class, original, image_shape, window)
    np.testing.assert_array_equal(m2[..., 0], expected)
    # nothing detected
    b, c, s, m = mmolding.unmold_detections(np.zeros((3, 6)), np.zeros((3, 7, 7)), original, image_shape, window)
    assert b.shape == (0, 4) and c.shape == (0,) and s.shape == (0,) and m.shape == (60, 40, 0)
