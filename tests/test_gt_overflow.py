"""More ground-truth instances than MAX_GT_INSTANCES (issue: bad input): the reference's
category (positive ids) is kept first, crowd regions after, with one warning per image."""
import logging

import numpy as np

from siamese_mask_rcnn.mrcnn.image_meta import compose_image_meta
from siamese_mask_rcnn.mrcnn.targets import pack_training_inputs

from test_train_shapes import ShapesConfig


def _inputs(n_target, n_crowd, image_id):
    rng = np.random.default_rng(image_id)
    n = n_target + n_crowd
    y1 = rng.integers(0, 100, n)
    x1 = rng.integers(0, 100, n)
    boxes = np.stack([y1, x1, y1 + 20, x1 + 20], axis=1).astype(np.int32)
    masks = np.zeros((128, 128, n), bool)
    for k, (a, b, c, d) in enumerate(boxes):
        masks[a:c, b:d, k] = True
    class_ids = np.array([1] * n_target + [-1] * n_crowd, np.int32)
    order = rng.permutation(n)  # targets and crowds interleaved
    meta = compose_image_meta(image_id, (128, 128, 3), (128, 128, 3), (0, 0, 128, 128), 1, np.ones(2))
    return np.zeros((128, 128, 3), np.uint8), meta, class_ids[order], boxes[order], masks[..., order]


def _pack(config, image_id, n_target, n_crowd):
    image, meta, class_ids, boxes, masks = _inputs(n_target, n_crowd, image_id)
    out = pack_training_inputs(config, image, meta, class_ids, boxes, masks, np.random.default_rng(0))
    gt_ids, gt_boxes, gt_masks = out[-3:]
    return gt_ids, gt_boxes, gt_masks, (class_ids, boxes, masks)


def test_targets_first_then_crowd_and_one_warning_per_image(caplog):
    config = ShapesConfig(MAX_GT_INSTANCES=10)
    with caplog.at_level(logging.WARNING):
        gt_ids, gt_boxes, gt_masks, (_, boxes, masks) = _pack(config, 9001, n_target=12, n_crowd=3)
        _pack(config, 9001, n_target=12, n_crowd=3)  # the same image again: no second warning
    assert list(gt_ids) == [1] * 10  # every slot holds the reference's category
    # each kept instance is one of the image's instances, with its own mask
    for k in range(10):
        match = [j for j in range(len(boxes)) if (boxes[j] == gt_boxes[k]).all()]
        assert match and (masks[..., match[0]] == gt_masks[..., k]).all()
    warnings = [r.getMessage() for r in caplog.records if "image 9001" in r.getMessage()]
    assert warnings == ["image 9001 has 15 ground-truth instances (12 target, 3 crowd), more than "
                        "MAX_GT_INSTANCES=10: 2 target and 3 crowd instance(s) dropped (trained as "
                        "background); raise MAX_GT_INSTANCES to keep them"]


def test_crowd_fills_the_remaining_slots(caplog):
    config = ShapesConfig(MAX_GT_INSTANCES=10)
    with caplog.at_level(logging.WARNING):
        gt_ids, _, _, _ = _pack(config, 9002, n_target=8, n_crowd=5)
    assert sorted(gt_ids.tolist()) == [-1, -1] + [1] * 8
    assert any("8 target, 5 crowd" in r.getMessage() and "0 target and 3 crowd" in r.getMessage()
               for r in caplog.records)


def test_at_the_limit_nothing_is_dropped_or_warned(caplog):
    config = ShapesConfig(MAX_GT_INSTANCES=10)
    with caplog.at_level(logging.WARNING):
        gt_ids, _, _, _ = _pack(config, 9003, n_target=7, n_crowd=3)
    assert sorted(gt_ids.tolist()) == [-1] * 3 + [1] * 7
    assert not [r for r in caplog.records if "MAX_GT_INSTANCES" in r.getMessage()]


def test_the_warning_names_the_file_and_its_own_image_id(caplog):
    """Through a dataset, the warning names the image as its annotation file does (its own id
    and path), not by the internal index."""
    from siamese_mask_rcnn.mrcnn.dataset import Dataset
    from siamese_mask_rcnn.mrcnn.targets import describe_image

    dataset = Dataset()
    dataset.add_class("file", 1, "thing")
    dataset.add_image("file", image_id=384850, path="/data/000000384850.jpg")
    dataset.add_image("file", image_id=7, path=None)
    dataset.prepare()
    assert describe_image(dataset, 0) == "image 384850 (/data/000000384850.jpg)"
    assert describe_image(dataset, 1) == "image 7"
    config = ShapesConfig(MAX_GT_INSTANCES=10)
    image, meta, class_ids, boxes, masks = _inputs(12, 0, 9004)
    with caplog.at_level(logging.WARNING):
        pack_training_inputs(config, image, meta, class_ids, boxes, masks, np.random.default_rng(0),
                             image_name=describe_image(dataset, 0))
    assert any(r.getMessage().startswith("image 384850 (/data/000000384850.jpg) has 12 ground-truth")
               for r in caplog.records)
