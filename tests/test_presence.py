"""The presence head (siamese_mask_rcnn.presence): open-world "is the category here?"."""
import contextlib

import numpy as np
import pytest

keras = pytest.importorskip("keras")
import tensorflow as tf  # noqa: E402

from siamese_mask_rcnn.config import siamese_config  # noqa: E402
from siamese_mask_rcnn.datasets.synthetic import make_train_val  # noqa: E402
from siamese_mask_rcnn.mrcnn.losses import LOSS_NAMES  # noqa: E402
from siamese_mask_rcnn.mrcnn.weights import iter_weighted_layers  # noqa: E402
from siamese_mask_rcnn.presence import PRESENCE_LAYER_NAMES, PresenceLossParts, gate_detections  # noqa: E402
from siamese_mask_rcnn.siamese import SiameseMaskRCNN  # noqa: E402


@pytest.fixture(scope="module")
def scenes():
    train, val = make_train_val(num_categories=40, num_train=12, num_val=3, image_size=128, seed=3)
    return train, val


def _annotated(dataset, image_id):
    return {abs(int(a["class_id"])) for a in dataset.instance_annotations(image_id)}


@contextlib.contextmanager
def recording_references(dataset):
    """Record ``(class_id, exclude_image_id)`` of every ``dataset.sample_references`` call."""
    drawn = []
    original = dataset.sample_references

    def spy(class_id, k, rng, exclude_image_id=None, **kwargs):
        drawn.append((int(class_id), int(exclude_image_id)))
        return original(class_id, k, rng, exclude_image_id=exclude_image_id, **kwargs)

    dataset.sample_references = spy
    try:
        yield drawn
    finally:
        del dataset.sample_references


def test_gate_detections_multiplies_scores_and_drops_those_below_the_threshold():
    masks = np.zeros((4, 5, 3), bool)
    for i in range(3):
        masks[i, i, i] = True
    result = {"rois": np.array([[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]]), "class_ids": np.array([1, 1, 1]),
              "scores": np.array([0.9, 0.6, 0.99], np.float32), "masks": masks, "extra": "kept"}
    gated = gate_detections(result, 0.7, 0.5)
    # 0.9*0.7 = 0.63 and 0.99*0.7 = 0.693 stay; 0.6*0.7 = 0.42 goes
    np.testing.assert_allclose(gated["scores"], [0.63, 0.693], rtol=1e-6)
    assert gated["rois"].tolist() == [[0, 0, 1, 1], [2, 2, 3, 3]]
    assert gated["masks"].shape == (4, 5, 2) and gated["masks"][0, 0, 0] and gated["masks"][2, 2, 1]
    assert gated["presence"] == pytest.approx(0.7) and gated["extra"] == "kept"
    assert len(gate_detections(result, 0.1, 0.5)["scores"]) == 0
    assert len(result["scores"]) == 3  # the input is not changed


def test_presence_loss_parts_are_binary_cross_entropy():
    positive = np.array([[2.0], [-1.0]], np.float32)
    negative = np.array([[0.5], [-3.0]], np.float32)
    parts = np.asarray(PresenceLossParts()([positive, negative]))
    sigmoid = 1 / (1 + np.exp(-np.array([2.0, -1.0, 0.5, -3.0])))
    expected = [-np.log(sigmoid[0]) - np.log(1 - sigmoid[2]), -np.log(sigmoid[1]) - np.log(1 - sigmoid[3])]
    assert parts.shape == (2, 1, 2)
    np.testing.assert_allclose(parts[:, 0, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(parts[:, 0, 1], [2, 2])


def test_training_example_adds_a_negative_reference_and_keeps_the_positive_pair(scenes, tmp_path):
    train, _ = scenes
    plain = SiameseMaskRCNN("training", siamese_config("tiny"), model_dir=str(tmp_path))
    model = SiameseMaskRCNN("training", siamese_config("tiny", PRESENCE_HEAD=True), model_dir=str(tmp_path))
    assert model.loss_names() == tuple(LOSS_NAMES) + ("presence_loss",)
    assert model.keras_model.output.shape[1:] == (len(LOSS_NAMES) + 1, 2)
    assert model.input_specs("training")[-1][0] == "input_negative_references"
    assert model.input_specs("inference") == plain.input_specs("inference")
    with recording_references(train) as drawn:
        for image_id in train.image_ids[:4]:
            drawn.clear()
            with_head = model.load_training_example(train, image_id, np.random.default_rng([7, image_id]))
            without = plain.load_training_example(train, image_id, np.random.default_rng([7, image_id]))
            assert len(with_head) == len(without) + 1
            for a, b in zip(with_head, without):  # the positive pair and its targets are unchanged
                np.testing.assert_array_equal(a, b)
            assert with_head[-1].shape == tuple(model.input_specs("training")[-1][1])
            (positive, _), (negative, _), _ = drawn  # with head, then without
            assert positive in _annotated(train, image_id) and negative not in _annotated(train, image_id)
            assert not np.array_equal(with_head[-1], with_head[2])


def _weights(model):
    return {name: [w.numpy().copy() for w in layer.weights] for name, layer in iter_weighted_layers(model.keras_model)}


def _train(config, dataset, tmp_path, steps=2):
    keras.utils.set_random_seed(5)
    model = SiameseMaskRCNN("training", config, model_dir=str(tmp_path))
    before = _weights(model)
    model.train(dataset, None, learning_rate=0.02, epochs=1, layers="all", steps_per_epoch=steps,
                validation_steps=0, verbose=0)
    return before, _weights(model)


def test_the_detector_trains_exactly_as_without_the_head(scenes, tmp_path):
    """The gradient stop and the separate clipping: with the head, every weight of the
    detector after two steps is the one of the model without the head (a small clip norm
    makes the clipping active), and the head's own weights moved."""
    train, _ = scenes
    tf.config.experimental.enable_op_determinism()
    settings = dict(GRADIENT_CLIP_NORM=0.5, IMAGES_PER_GPU=2)
    initial, weights = _train(siamese_config("tiny", PRESENCE_HEAD=True, PRESENCE_GRADIENT=False, **settings),
                              train, tmp_path / "a")
    _, reference = _train(siamese_config("tiny", **settings), train, tmp_path / "b")
    assert set(weights) - set(reference) == set(PRESENCE_LAYER_NAMES)
    for name, values in reference.items():
        for a, b in zip(weights[name], values):
            # equal up to float rounding (seen: 7e-9, one float32 ulp): without the head the
            # optimizer re-applies the clip factor (~1 - 1e-8) to the clipped gradients. A
            # step moves these weights by ~1e-4; a leak of the presence loss or a shared clip
            # norm changed them by ~3e-5 when measured.
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-7, err_msg=name)
    for name in PRESENCE_LAYER_NAMES:
        assert any(not np.array_equal(a, b) for a, b in zip(weights[name], initial[name])), name


@pytest.fixture(scope="module")
def inference_model(tmp_path_factory):
    keras.utils.set_random_seed(2)
    config = siamese_config("tiny", PRESENCE_HEAD=True, DETECTION_MIN_CONFIDENCE=0.0)
    return SiameseMaskRCNN("inference", config, model_dir=str(tmp_path_factory.mktemp("logs")))


def _set_presence_bias(model, value):
    layer = model.head_model.get_layer("presence_logit")
    kernel, bias = layer.get_weights()
    layer.set_weights([np.zeros_like(kernel), np.full_like(bias, value)])


def test_presence_gates_the_detections_in_every_inference_path(inference_model, scenes):
    model = inference_model
    _, val = scenes
    image = val.load_image(val.image_ids[0])
    rng = np.random.default_rng(0)
    embeddings = {k: model.embed_category([val.sample_reference(c, rng)])
                  for k, c in enumerate(val.image_categories[val.image_ids[0]][:2])}
    embeddings[9] = embeddings[0] * 0.5
    original = model.head_model.get_layer("presence_logit").get_weights()
    try:
        _set_presence_bias(model, 30.0)  # presence 1: the scores are the detector's own
        sure = model.detect_embeddings(image, embeddings, fold=False)
        _set_presence_bias(model, 0.0)  # logit 0, presence 0.5: every score halved
        half = model.detect_embeddings(image, embeddings, fold=False)
        half_folded = model.detect_embeddings(image, embeddings, fold=True)
        for key in embeddings:
            assert sure[key]["presence"] == pytest.approx(1.0)
            assert half[key]["presence"] == pytest.approx(0.5, abs=1e-6)
            np.testing.assert_allclose(half[key]["scores"], sure[key]["scores"] * 0.5, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(half_folded[key]["scores"], half[key]["scores"], rtol=1e-4, atol=1e-5)
        model.config.DETECTION_MIN_CONFIDENCE = 0.4
        try:
            gated = model.detect_embeddings(image, embeddings, fold=False)
            for key in embeddings:  # kept: halved scores >= 0.4 only
                assert np.all(gated[key]["scores"] >= 0.4)
                assert len(gated[key]["scores"]) == int(np.sum(sure[key]["scores"] * 0.5 >= 0.4))
            _set_presence_bias(model, -30.0)  # "not here": empty results
            absent = model.detect_embeddings(image, embeddings)
            assert all(len(r["scores"]) == 0 and r["masks"].shape[-1] == 0 for r in absent.values())
        finally:
            model.config.DETECTION_MIN_CONFIDENCE = 0.0
    finally:
        model.head_model.get_layer("presence_logit").set_weights(original)


def _query_and_embeddings(model, dataset, index, seed):
    """Scene ``index`` of ``dataset`` and the embeddings of (up to) two of its categories."""
    image_id = dataset.image_ids[index]
    rng = np.random.default_rng(seed)
    embeddings = {c: model.embed_category([dataset.sample_reference(c, rng)])
                  for c in dataset.image_categories[image_id][:2]}
    return dataset.load_image(image_id), embeddings


def test_learned_presence_differs_between_pairs_and_agrees_across_paths(inference_model, scenes):
    model = inference_model
    image, embeddings = _query_and_embeddings(model, scenes[1], 1, 1)
    embeddings[-1] = embeddings[next(iter(embeddings))] + 3.0
    plain = model.detect_embeddings(image, embeddings, fold=False, batch_size=1)
    folded = model.detect_embeddings(image, embeddings, fold=True)
    values = [plain[k]["presence"] for k in embeddings]
    assert len(set(np.round(values, 6))) > 1
    for k in embeddings:
        assert folded[k]["presence"] == pytest.approx(plain[k]["presence"], abs=1e-5)


def test_a_file_without_the_head_loads_with_only_the_head_missing(tmp_path):
    keras.utils.set_random_seed(3)
    plain = SiameseMaskRCNN("inference", siamese_config("tiny"), model_dir=str(tmp_path))
    path = str(tmp_path / "plain.h5")
    plain.save_weights(path)
    model = SiameseMaskRCNN("inference", siamese_config("tiny", PRESENCE_HEAD=True), model_dir=str(tmp_path))
    report = model.load_weights(path, by_name=True, skip_mismatch=True)
    assert sorted(report.missing_in_file) == sorted(PRESENCE_LAYER_NAMES)
    # and a file of the head model loads back completely, head included
    path2 = str(tmp_path / "head.h5")
    _set_presence_bias(model, 1.25)
    model.save_weights(path2)
    again = SiameseMaskRCNN("inference", siamese_config("tiny", PRESENCE_HEAD=True), model_dir=str(tmp_path))
    report = again.load_weights(path2, by_name=True)
    assert not report.missing_in_file
    assert again.head_model.get_layer("presence_logit").get_weights()[1][0] == pytest.approx(1.25)


def test_presence_auc_on_a_hand_made_case():
    from siamese_mask_rcnn.evaluation.openworld import presence_auc
    present = [{"presence": 0.9}, {"presence": 0.5}]
    absent = [{"presence": 0.5}, {"presence": 0.1}]
    # 0.9 beats both, 0.5 ties one (1/2) and beats one: (2 + 1.5) / 4
    assert presence_auc(present, absent) == pytest.approx(0.875)
    assert presence_auc(absent, present) == pytest.approx(0.125)
    assert presence_auc(present, [{"presence": None}]) is None
    assert presence_auc([], absent) is None


def test_gating_none_reports_the_presence_beside_the_detectors_scores(inference_model, scenes):
    model = inference_model
    image, embeddings = _query_and_embeddings(model, scenes[1], 2, 4)
    original = model.head_model.get_layer("presence_logit").get_weights()
    try:
        _set_presence_bias(model, 30.0)
        sure = model.detect_embeddings(image, embeddings)
        _set_presence_bias(model, -30.0)
        model.config.PRESENCE_GATING = "none"
        reported = model.detect_embeddings(image, embeddings)
    finally:
        model.config.PRESENCE_GATING = "multiply"
        model.head_model.get_layer("presence_logit").set_weights(original)
    for key in embeddings:
        assert reported[key]["presence"] < 1e-9
        np.testing.assert_allclose(reported[key]["scores"], sure[key]["scores"], rtol=1e-6)
        assert reported[key]["masks"].shape == sure[key]["masks"].shape


def test_a_few_coco_steps_with_the_presence_head(coco_subset_annotations, coco_subset_dir, tmp_path):
    """Real COCO images: the negative references are crops of a training category absent
    from the query image, and training runs with the sixth loss finite."""
    from siamese_mask_rcnn.datasets.coco import OneShotCocoDataset

    dataset = OneShotCocoDataset()
    dataset.load_coco(annotation_file=str(coco_subset_annotations), image_dir=str(coco_subset_dir / "images"))
    dataset.set_split(1)
    dataset.prepare()
    keras.utils.set_random_seed(0)
    config = siamese_config("tiny", PRESENCE_HEAD=True, IMAGES_PER_GPU=1)
    model = SiameseMaskRCNN("training", config, model_dir=str(tmp_path))
    image_id = model.training_image_ids(dataset)[0]
    with recording_references(dataset) as drawn:
        arrays = model.load_training_example(dataset, image_id, np.random.default_rng(0))
    negative_class = drawn[-1][0]
    assert negative_class in dataset.train_class_ids and negative_class not in _annotated(dataset, image_id)
    assert arrays[-1].shape == (1,) + tuple(config.TARGET_SHAPE) and np.any(arrays[-1] != arrays[-1].flat[0])
    history = model.train(dataset, None, learning_rate=0.01, epochs=1, layers="heads", steps_per_epoch=2,
                          validation_steps=0, verbose=0)
    assert np.isfinite(history[-1]["presence_loss"]) and history[-1]["presence_loss"] > 0


@pytest.fixture(scope="module")
def presence_weight_files(tmp_path_factory):
    """Legacy-layout weight files of the tiny preset with and without a presence head, in a
    folder without ``config.json``: ``(head_file, plain_file)``."""
    folder = tmp_path_factory.mktemp("presence_weights")
    keras.utils.set_random_seed(6)
    with_head = SiameseMaskRCNN("inference", siamese_config("tiny", PRESENCE_HEAD=True), model_dir=str(folder))
    plain = SiameseMaskRCNN("inference", siamese_config("tiny"), model_dir=str(folder))
    head_file, plain_file = str(folder / "head.h5"), str(folder / "plain.h5")
    with_head.save_weights(head_file)
    plain.save_weights(plain_file)
    return head_file, plain_file


def test_predict_turns_the_head_on_for_a_file_that_holds_one(presence_weight_files, capsys):
    """No config.json beside a checkpoint with a trained head: the preset (without the head)
    must not silently drop its layers."""
    from siamese_mask_rcnn.predict import file_has_presence_head, load_model

    head_file, plain_file = presence_weight_files
    assert file_has_presence_head(head_file) and not file_has_presence_head(plain_file)
    model = load_model(head_file, preset="tiny")
    assert model.has_presence_head()
    assert "holds a trained presence head" in capsys.readouterr().err
    assert not load_model(plain_file, preset="tiny").has_presence_head()
    assert "presence head" not in capsys.readouterr().err


def test_load_model_without_config_reads_the_shapes_once(presence_weight_files, monkeypatch, capsys):
    """Without config.json or --preset the file's shapes give the preset and tell whether it
    holds a presence head: read once for both, with the same answers as reading twice."""
    from siamese_mask_rcnn import predict
    from siamese_mask_rcnn.mrcnn import weights as weights_module

    head_file, plain_file = presence_weight_files
    calls = []
    for name in ("read_h5_weight_shapes", "is_keras3_weights_file", "keras3_weight_shapes"):
        original = getattr(weights_module, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(weights_module, name, counted)
    model = predict.load_model(head_file)
    # the shapes once (which reader, then the reader); the loader asks the format once more
    assert sorted(calls) == ["is_keras3_weights_file"] * 2 + ["read_h5_weight_shapes"], calls
    tiny = siamese_config("tiny")
    assert model.has_presence_head() and model.config.NAME == tiny.NAME
    assert (model.config.MATCHING_CHANNELS, model.config.TOP_DOWN_PYRAMID_SIZE) == (
        tiny.MATCHING_CHANNELS, tiny.TOP_DOWN_PYRAMID_SIZE)
    err = capsys.readouterr().err
    assert "assuming preset 'tiny'" in err and "holds a trained presence head" in err
    calls.clear()
    assert not predict.load_model(plain_file).has_presence_head()
    assert sorted(calls) == ["is_keras3_weights_file"] * 2 + ["read_h5_weight_shapes"], calls
    assert "presence head" not in capsys.readouterr().err
    monkeypatch.undo()
    # the functions, given the shapes read once, answer as when they read the file themselves
    for path in (head_file, plain_file):
        shapes = predict.weight_file_shapes(path)
        assert shapes[0] is None and "fpn_distance_P2" in shapes[1]
        assert predict.infer_preset(path, shapes) == predict.infer_preset(path)
        assert predict.file_has_presence_head(path, shapes) == predict.file_has_presence_head(path)
    assert predict.infer_preset(head_file)[0] == "tiny"
    assert predict.file_has_presence_head(head_file, predict.weight_file_shapes(head_file))
    assert not predict.file_has_presence_head("keras3.weights.h5", ({(3, 3, 3, 8)}, {}))  # no layer names
