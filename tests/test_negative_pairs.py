"""Negative training pairs: a reference of a category absent from the query, all background."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from siamese_mask_rcnn.config import siamese_config  # noqa: E402
from siamese_mask_rcnn.datasets.synthetic import make_train_val  # noqa: E402
from siamese_mask_rcnn.mrcnn.losses import LOSS_NAMES  # noqa: E402
from siamese_mask_rcnn.siamese import SiameseMaskRCNN  # noqa: E402


@pytest.fixture(scope="module")
def scenes():
    train, _ = make_train_val(num_categories=40, num_train=12, num_val=1, image_size=128, seed=3)
    return train


def _annotated(dataset, image_id):
    return {abs(int(a["class_id"])) for a in dataset.instance_annotations(image_id)}


def test_absent_reference_class_is_absent_and_reference_able(scenes):
    rng = np.random.default_rng(0)
    for image_id in scenes.image_ids:
        annotated = _annotated(scenes, image_id)
        for _ in range(5):
            class_id = scenes.sample_absent_reference_class(image_id, rng)
            assert class_id in scenes.train_class_ids and class_id not in annotated
            assert scenes.category_index.get(class_id)
    image_id = scenes.image_ids[0]
    present = sorted(_annotated(scenes, image_id) & set(scenes.train_class_ids))
    assert scenes.sample_absent_reference_class(image_id, rng, class_ids=present) is None


@pytest.fixture(scope="module")
def negative_model(tmp_path_factory):
    keras.utils.set_random_seed(0)
    config = siamese_config("tiny", NEGATIVE_PAIR_FRACTION=1.0, IMAGES_PER_GPU=2)
    return SiameseMaskRCNN("training", config, model_dir=str(tmp_path_factory.mktemp("logs")))


def test_negative_pairs_reach_the_losses_with_all_background_targets(negative_model, scenes, monkeypatch):
    model, config = negative_model, negative_model.config
    drawn = []
    original = scenes.sample_references

    def spy(class_id, k, rng, exclude_image_id=None, **kwargs):
        drawn.append((int(class_id), int(exclude_image_id)))
        return original(class_id, k, rng, exclude_image_id=exclude_image_id, **kwargs)

    monkeypatch.setattr(scenes, "sample_references", spy)
    examples = [model.load_training_example(scenes, image_id, np.random.default_rng(image_id))
                for image_id in scenes.image_ids[:2]]
    for (class_id, image_id) in drawn:
        assert class_id not in _annotated(scenes, image_id)
    for arrays in examples:
        rpn_match, gt_ids = arrays[3], arrays[5]
        assert not np.any(rpn_match == 1) and np.sum(rpn_match == -1) == config.RPN_TRAIN_ANCHORS_PER_IMAGE
        assert not np.any(gt_ids)
    batch = [np.stack(column) for column in zip(*examples)]
    images, metas, references = batch[:3]
    head = model.head_model  # matching + RPN + heads: [meta, embedding, P2..P6, targets]
    targets = head.get_layer("proposal_targets").output
    probe = keras.Model(head.inputs, list(targets) + [head.outputs[0]])
    embedding = model.reference_model(references[:, 0], training=False)  # one shot
    maps = list(model.encoder(images, training=False))
    import tensorflow as tf
    inputs = [tf.convert_to_tensor(v) for v in [metas, embedding] + maps + batch[3:]]
    outputs = probe(inputs, training=True)
    rois, class_ids, deltas, masks, losses = [np.asarray(v) for v in outputs]
    sampled = np.any(rois != 0, axis=-1)
    negatives = model.negatives_without_positives()
    assert negatives == round(config.TRAIN_ROIS_PER_IMAGE * (1 - config.ROI_POSITIVE_RATIO)) > 0
    # Every image sampled negatives (Mask R-CNN's rule would sample none), none positive.
    assert np.all(sampled.sum(axis=1) > 0) and np.all(sampled.sum(axis=1) <= negatives)
    assert not np.any(class_ids) and not np.any(deltas) and not np.any(masks)
    parts = np.asarray(losses).reshape(-1, len(LOSS_NAMES), 2).sum(axis=0)  # [sum, count] per loss
    losses = dict(zip(LOSS_NAMES, parts[:, 0] / np.maximum(parts[:, 1], 1)))
    assert losses["rpn_class_loss"] > 0 and losses["mrcnn_class_loss"] > 0
    assert losses["rpn_bbox_loss"] == 0 and losses["mrcnn_bbox_loss"] == 0 and losses["mrcnn_mask_loss"] == 0


def test_without_negatives_the_rule_is_mask_rcnns(tmp_path):
    config = siamese_config("tiny")
    assert config.NEGATIVE_PAIR_FRACTION == 0
    model = SiameseMaskRCNN("training", config, model_dir=str(tmp_path))
    assert model.negatives_without_positives() == 0
    assert model.head_model.get_layer("proposal_targets").negatives_without_positives == 0
    assert config.HARD_NEGATIVE_FRACTION == 0  # the paper's uniform ROI sampling
    assert model.head_model.get_layer("proposal_targets").hard_negative_fraction == 0


def test_hard_negative_fraction_reaches_the_roi_sampler(tmp_path):
    config = siamese_config("tiny", HARD_NEGATIVE_FRACTION=0.5)
    model = SiameseMaskRCNN("training", config, model_dir=str(tmp_path))
    assert model.head_model.get_layer("proposal_targets").hard_negative_fraction == 0.5


def test_a_few_steps_with_half_negative_pairs(scenes, tmp_path):
    keras.utils.set_random_seed(1)
    config = siamese_config("tiny", NEGATIVE_PAIR_FRACTION=0.5, IMAGES_PER_GPU=2)
    model = SiameseMaskRCNN("training", config, model_dir=str(tmp_path))
    history = model.train(scenes, None, learning_rate=0.01, epochs=1, layers="all",
                          steps_per_epoch=3, validation_steps=0, verbose=0)
    assert np.isfinite(history[-1]["loss"])
