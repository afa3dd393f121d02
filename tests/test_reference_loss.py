"""The reference classification loss (siamese_mask_rcnn.reference_loss, issue #10)."""
import glob
import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from siamese_mask_rcnn.config import siamese_config  # noqa: E402
from siamese_mask_rcnn.datasets.synthetic import make_train_val  # noqa: E402
from siamese_mask_rcnn.mrcnn.losses import LOSS_NAMES  # noqa: E402
from siamese_mask_rcnn.mrcnn.weights import iter_weighted_layers  # noqa: E402
from siamese_mask_rcnn.reference_loss import LOGIT_SCALE, ReferenceClassifier, ReferenceClassLossParts  # noqa: E402
from siamese_mask_rcnn.siamese import SiameseMaskRCNN  # noqa: E402


@pytest.fixture(scope="module")
def scenes():
    return make_train_val(num_categories=40, num_train=12, num_val=3, image_size=128, seed=3)


def test_classifier_gives_scaled_cosines():
    layer = ReferenceClassifier(3)
    x = np.array([[[1.0, 0.0], [0.0, 0.0]], [[2.0, 2.0], [0.0, 0.0]]], np.float32)  # [N=2, L=2, C=2]
    layer.build(x.shape)
    kernel = np.array([[1, 0, 1], [0, 1, 1], [0, 0, 0], [0, 0, 5]], np.float32)  # [4, 3]
    layer.kernel.assign(kernel)
    logits = np.asarray(layer(x))
    flat = x.reshape(2, -1)
    cos = (flat / np.linalg.norm(flat, axis=1, keepdims=True)) @ (kernel / np.linalg.norm(kernel, axis=0))
    np.testing.assert_allclose(logits, LOGIT_SCALE * cos, rtol=1e-5, atol=1e-6)
    assert logits[0, 0] == pytest.approx(LOGIT_SCALE) and logits[1, 1] == pytest.approx(LOGIT_SCALE / np.sqrt(2))


def test_loss_parts_are_the_cross_entropy_of_every_shot():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0], [1.0, 1.0, 1.0], [0.0, 4.0, 0.0]], np.float32)
    class_ids = np.array([[2], [1]], np.int32)  # two queries, two shots each
    parts = np.asarray(ReferenceClassLossParts(2)([logits, class_ids]))
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = [-log_softmax[0, 2] - log_softmax[1, 2], -log_softmax[2, 1] - log_softmax[3, 1]]
    assert parts.shape == (2, 1, 2)
    np.testing.assert_allclose(parts[:, 0, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(parts[:, 0, 1], [2, 2])


@pytest.mark.parametrize("bad", [1, -1, True, 2.5, "40"])
def test_config_refuses_a_bad_number_of_classes(bad):
    with pytest.raises(ValueError, match="REFERENCE_CLASSES"):
        siamese_config("tiny", REFERENCE_CLASSES=bad)


def test_training_example_ends_with_the_references_category(scenes, tmp_path):
    train, _ = scenes
    plain = SiameseMaskRCNN("training", siamese_config("tiny"), model_dir=str(tmp_path))
    model = SiameseMaskRCNN("training", siamese_config("tiny", REFERENCE_CLASSES=train.num_classes),
                            model_dir=str(tmp_path))
    assert model.loss_names() == tuple(LOSS_NAMES) + ("reference_class_loss",)
    assert model.keras_model.output.shape[1:] == (len(LOSS_NAMES) + 1, 2)
    assert model.input_specs("training")[-1][0] == "input_reference_class_ids"
    assert model.input_specs("inference") == plain.input_specs("inference")
    for image_id in train.image_ids[:4]:
        drawn = []
        original = train.sample_references

        def spy(class_id, *args, **kwargs):
            drawn.append(int(class_id))
            return original(class_id, *args, **kwargs)

        train.sample_references = spy
        try:
            arrays = model.load_training_example(train, image_id, np.random.default_rng([7, image_id]))
        finally:
            del train.sample_references
        without = plain.load_training_example(train, image_id, np.random.default_rng([7, image_id]))
        assert len(arrays) == len(without) + 1
        for a, b in zip(arrays, without):  # the pair and its targets are the paper's
            np.testing.assert_array_equal(a, b)
        assert arrays[-1].tolist() == drawn and 0 < drawn[0] < train.num_classes


def test_a_category_outside_the_classifier_is_a_clear_error(scenes, tmp_path):
    train, _ = scenes
    model = SiameseMaskRCNN("training", siamese_config("tiny", REFERENCE_CLASSES=2), model_dir=str(tmp_path))
    image_id = next(i for i in train.image_ids
                    if any(abs(int(a["class_id"])) > 1 for a in train.instance_annotations(i)))
    with pytest.raises(ValueError, match=f"REFERENCE_CLASSES to the dataset's num_classes \\({train.num_classes}\\)"):
        for seed in range(20):  # some draw picks a category id > 1
            model.load_training_example(train, image_id, np.random.default_rng([seed, image_id]))


def _weights(model, names=None):
    return {name: [w.numpy().copy() for w in layer.weights] for name, layer in iter_weighted_layers(model.keras_model)
            if names is None or name in names}


def test_the_loss_trains_the_encoder_and_inference_loads_the_checkpoint(scenes, tmp_path):
    """With every detection loss weighted 0, only the reference loss moves the weights: the
    classifier and the shared encoder change, the heads do not; the checkpoint holds the
    classifier and an inference model loads it (the classifier unused)."""
    train, val = scenes
    zero = {name: 0.0 for name in LOSS_NAMES}
    config = siamese_config("tiny", REFERENCE_CLASSES=train.num_classes, IMAGES_PER_GPU=2,
                            LOSS_WEIGHTS={**zero, "reference_class_loss": 1.0}, WEIGHT_DECAY=0.0)
    keras.utils.set_random_seed(5)
    model = SiameseMaskRCNN("training", config, model_dir=str(tmp_path))
    before = _weights(model)
    history = model.train(train, None, learning_rate=0.05, epochs=1, layers="all", steps_per_epoch=2,
                          validation_steps=0, verbose=0)
    after = _weights(model)
    assert "reference_class_logits" in after

    def moved(name):
        return any(not np.array_equal(a, b) for a, b in zip(before[name], after[name]))

    assert moved("reference_class_logits") and moved("tiny_conv1")
    assert not moved("mrcnn_class_logits") and not moved("fpn_distance_P2")
    # near log(classes) at the start (cosines of random vectors are small); finite and positive
    assert 0 < history[-1]["reference_class_loss"] < 2 * np.log(train.num_classes)
    checkpoint = sorted(glob.glob(os.path.join(str(tmp_path), "**", "*.h5"), recursive=True))[-1]
    inference = SiameseMaskRCNN("inference", siamese_config("tiny", REFERENCE_CLASSES=train.num_classes),
                                model_dir=str(tmp_path))
    inference.load_weights(checkpoint, by_name=True)
    np.testing.assert_array_equal(inference.encoder.get_layer("tiny_conv1").get_weights()[0],
                                  after["tiny_conv1"][0])
