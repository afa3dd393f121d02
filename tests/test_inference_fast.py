"""The inference shortcuts give today's answers (issue 16).

* the mask head runs only on the detections that passed the score threshold;
* several categories of one query run as one batched head call;
* with several categories the query's term of the matching 1x1 conv and of the RPN conv
  after it is computed once ("folded"), each category paying only its reference term.

Each is compared with a reference computed the plain way, on a tiny model with random
weights. The classifier's logit layer is set (``_spread_scores``) so that scores
spread over (0, 1): some detections pass the threshold, not all slots fill up. RPN and
detection NMS are off (IoU threshold 1) and every anchor is a proposal, so the float
rounding of a reassociated sum cannot flip an NMS choice between near-equal scores: what is
compared is the arithmetic, not the chaos of NMS on random weights.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from siamese_mask_rcnn.config import siamese_config
from siamese_mask_rcnn.siamese import LEVELS, SiameseMaskRCNN

QUERY_SHAPE = (100, 128, 3)
MAX_DETECTIONS = 30
MIN_CONFIDENCE = 0.65
SHIFT = 1.5


def _config(**overrides):
    anchors = 3 * sum((128 // s) ** 2 for s in (4, 8, 16, 32, 64))
    settings = dict(IMAGES_PER_GPU=1, DETECTION_MIN_CONFIDENCE=MIN_CONFIDENCE,
                    DETECTION_MAX_INSTANCES=MAX_DETECTIONS, RPN_NMS_THRESHOLD=1.0,
                    DETECTION_NMS_THRESHOLD=1.0, POST_NMS_ROIS_INFERENCE=anchors, PRE_NMS_LIMIT=anchors)
    return siamese_config("tiny", **{**settings, **overrides})


def _spread_scores(model):
    """Set the class-logit layer so that, over the ROIs of a random query, the match-minus-
    background logit is a standard normal shifted by -SHIFT: a dozen or two of the thousands of
    proposals pass ``MIN_CONFIDENCE``, with well separated scores."""
    rng = np.random.default_rng(1)
    hm = model.head_model
    _, metas, _, maps = model.encode_query(rng.integers(0, 255, QUERY_SHAPE, dtype=np.uint8))
    embedding = model.embed_category([rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)])[None]
    features = np.asarray(keras.Model(hm.inputs, hm.get_layer("pool_squeeze").output)(
        [metas, embedding] + maps, training=False))
    direction = rng.normal(size=features.shape[1]).astype(np.float32)
    projection = features @ direction
    kernel = np.zeros((features.shape[1], 2), np.float32)
    kernel[:, 1] = direction / projection.std()
    bias = np.array([0.0, -projection.mean() / projection.std() - SHIFT], np.float32)
    hm.get_layer("mrcnn_class_logits").set_weights([kernel, bias])


def _fixed_boxes(model):
    """Zero box refinements (RPN and classifier): every proposal is an anchor and every
    detection box its proposal, exactly, in every path. A refined box feeds ROIAlign's
    choice of pyramid level, a step function, so float rounding could otherwise move a box
    across a level boundary; the deltas themselves are compared in
    ``test_folded_rpn_outputs_equal_the_plain_graph``."""
    for layer in (model.head_model.get_layer("rpn_model").get_layer("rpn_bbox_pred"),
                  model.head_model.get_layer("mrcnn_bbox_fc")):
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])


def _model(fixed_boxes=True, **overrides):
    keras.utils.set_random_seed(7)
    model = SiameseMaskRCNN("inference", _config(**overrides), model_dir="logs/test_inference_fast")
    _spread_scores(model)
    if fixed_boxes:
        _fixed_boxes(model)
    return model


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def three_shot_model():
    return _model(NUM_TARGETS=3)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    query = rng.integers(0, 255, QUERY_SHAPE, dtype=np.uint8)
    references = [rng.integers(0, 255, (30 + 3 * i, 20 + 5 * i, 3), dtype=np.uint8) for i in range(7)]
    return query, references


def _mask_head_on_every_slot(head_model, boxes, meta, matched):
    """The mask head of paper Section 4.4 applied to all ``boxes [1, N, 4]`` (today's graph
    before the shortcut), layer by layer with the model's own layers."""
    x = head_model.get_layer("roi_align_mask")([boxes, meta] + matched)
    x = tf.reshape(x, [-1] + list(x.shape[2:]))
    for i in range(1, 5):
        x = head_model.get_layer(f"mrcnn_mask_conv{i}")(x)
        x = tf.nn.relu(head_model.get_layer(f"mrcnn_mask_bn{i}")(x, training=False))
    x = head_model.get_layer("mrcnn_mask")(head_model.get_layer("mrcnn_mask_deconv")(x))
    return np.asarray(x)


def test_mask_head_runs_only_on_detections_that_pass_the_threshold(model, images):
    query, references = images
    hm = model.head_model
    molded, metas, _, maps = model.encode_query(query)
    embedding = model.embed_category(references[:1])[None]
    probe = keras.Model(hm.inputs, [hm.outputs[0], hm.outputs[3], hm.get_layer("mrcnn_mask").output] +
                        [hm.get_layer(f"fpn_distance_{n}").output for n in LEVELS[:4]])
    detections, masks, mask_rows, *matched = [np.asarray(v) for v in
                                              probe([metas, embedding] + maps, training=False)]
    real = int((detections[0, :, 4] > 0).sum())
    assert 0 < real < MAX_DETECTIONS, "the fixture must give some, not all, detections"
    assert np.all(detections[0, :real, 4] > 0) and np.all(detections[0, real:] == 0)
    # The mask convolutions saw only the real detections ...
    assert mask_rows.shape[0] == real
    # ... and the output keeps one (zero) mask per padding slot.
    assert masks.shape == (1, MAX_DETECTIONS, 28, 28, 1)
    assert np.all(masks[0, real:] == 0)
    every_slot = _mask_head_on_every_slot(hm, detections[:, :, :4], metas, matched)
    assert every_slot.shape[0] == MAX_DETECTIONS
    np.testing.assert_allclose(masks[0, :real], every_slot[:real], atol=1e-4)


def test_mask_head_trim_uses_the_largest_count_of_the_batch(model, images):
    query, references = images
    hm = model.head_model
    _, metas, _, maps = model.encode_query(query)
    embeddings = model.encode_references(references[:3])
    k = len(embeddings)
    probe = keras.Model(hm.inputs, [hm.outputs[0], hm.outputs[3], hm.get_layer("mrcnn_mask").output])
    detections, masks, mask_rows = [np.asarray(v) for v in probe(
        [np.repeat(metas, k, 0), embeddings] + [np.repeat(m, k, 0) for m in maps], training=False)]
    counts = (detections[:, :, 4] > 0).sum(axis=1)
    assert mask_rows.shape[0] == k * max(1, counts.max())
    assert counts.min() < counts.max()  # some rows of the trimmed batch are padding
    for row, count in enumerate(counts):
        assert np.all(masks[row, count:] == 0)
        single, single_masks = [np.asarray(v) for v in probe(
            [metas, embeddings[row:row + 1]] + maps, training=False)[:2]]
        np.testing.assert_allclose(detections[row], single[0], atol=1e-4)
        np.testing.assert_allclose(masks[row], single_masks[0], atol=1e-4)


def _raw(model, query, embeddings, fold, batch_size):
    """Detection rows [K, D, 6] and masks [K, D, h, w, 1] of the batched / folded functions."""
    _, metas, _, maps = model.encode_query(query)
    maps = [tf.convert_to_tensor(m) for m in maps]
    if fold:
        model._fold_parts()
        prepared, fn = model._fold_query_fn()(*maps), model._fold_heads_fn()
    else:
        prepared, fn = [], model._plain_heads_fn()
    parts = []
    for start in range(0, len(embeddings), batch_size):
        parts.append([v.numpy() for v in fn(metas, embeddings[start:start + batch_size], *maps, *prepared)])
    rows, masks, rpn_class, rpn_bbox = [np.concatenate(p) for p in zip(*parts)]
    return rows, masks, rpn_class, rpn_bbox


def _assert_same_results(expected, actual):
    assert expected.keys() == actual.keys()
    for key in expected:
        e, a = expected[key], actual[key]
        np.testing.assert_array_equal(e["rois"], a["rois"])
        np.testing.assert_array_equal(e["class_ids"], a["class_ids"])
        np.testing.assert_allclose(e["scores"], a["scores"], atol=1e-4)
        assert e["masks"].shape == a["masks"].shape
        # Binary masks may differ where a mask probability sits within rounding of 0.5.
        assert np.mean(e["masks"] != a["masks"]) < 1e-3


def test_folded_matching_equals_the_plain_graph(model, images):
    query, references = images
    embeddings = model.encode_references(references)
    plain = _raw(model, query, embeddings, fold=False, batch_size=1)
    assert np.all((plain[0][:, :, 4] > 0).sum(axis=1) < MAX_DETECTIONS)
    assert (plain[0][:, :, 4] > 0).sum() > len(embeddings)
    for batch_size in (1, 3, len(embeddings)):
        folded = _raw(model, query, embeddings, fold=True, batch_size=batch_size)
        for expected, actual in zip(plain, folded):  # detections, masks, RPN scores and deltas
            np.testing.assert_allclose(actual, expected, atol=1e-4)


@pytest.mark.parametrize("stride", [1, 2])
def test_folded_rpn_outputs_equal_the_plain_graph(images, stride):
    """With the box refinements on, non-zero biases in the matching and RPN convs (the fold
    moves the matching bias through the zero-padded RPN conv) and RPN anchor strides 1
    (Winograd) and 2 (strided convolution): the RPN scores and deltas of the folded path."""
    model = _model(fixed_boxes=False, RPN_ANCHOR_STRIDE=stride)
    rng = np.random.default_rng(stride)
    hm = model.head_model
    for layer in [hm.get_layer(f"fpn_distance_{n}") for n in LEVELS] + [
            hm.get_layer("rpn_model").get_layer("rpn_conv_shared")]:
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel, rng.normal(0, 0.5, bias.shape).astype(np.float32)])
    query, references = images
    embeddings = model.encode_references(references[:4])
    plain = _raw(model, query, embeddings, fold=False, batch_size=1)
    folded = _raw(model, query, embeddings, fold=True, batch_size=4)
    assert np.abs(plain[3]).max() > 0.01  # the deltas are not zero
    np.testing.assert_allclose(folded[2], plain[2], atol=1e-4)
    np.testing.assert_allclose(folded[3], plain[3], atol=1e-4)


def test_batched_categories_equal_one_call_per_category(model, images):
    query, references = images
    embeddings = model.encode_references(references)
    plain = _raw(model, query, embeddings, fold=False, batch_size=1)
    batched = _raw(model, query, embeddings, fold=False, batch_size=4)
    for expected, actual in zip(plain, batched):
        np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_detect_embeddings_paths_agree_for_one_and_several_categories(model, images):
    query, references = images
    embeddings = {f"c{i}": e for i, e in enumerate(model.encode_references(references))}
    one = {"c0": embeddings["c0"]}
    reference = model.detect_embeddings(query, one, batch_size=1, fold=False)
    _assert_same_results(reference, model.detect_embeddings(query, one))
    _assert_same_results(reference, model.detect_embeddings(query, one, fold=True))
    # The whole model (detect) agrees with the separable parts.
    _assert_same_results(reference, {"c0": model.detect([references[0]], [query])[0]})
    expected = model.detect_embeddings(query, embeddings, batch_size=1, fold=False)
    for batch_size, fold in ((None, None), (2, True), (3, False), (len(embeddings), True)):
        _assert_same_results(expected, model.detect_embeddings(query, embeddings, batch_size, fold))


def test_k_shot_categories_folded_equal_detect(three_shot_model, images):
    model = three_shot_model
    query, references = images
    shots = {"a": references[0:3], "b": references[3:6], "c": references[4:7]}
    embeddings = {key: model.embed_category(crops) for key, crops in shots.items()}
    folded = model.detect_embeddings(query, embeddings, fold=True)
    for key, crops in shots.items():
        _assert_same_results({key: model.detect([crops], [query])[0]}, {key: folded[key]})


def test_fold_is_chosen_only_when_it_saves_operations(model):
    plain, once, per_category = model.matching_costs()
    c = model.config
    assert per_category < plain  # the reference term alone is cheaper than the whole graph
    assert not model.fold_pays(1)  # one category: the plain graph is cheaper
    assert model.fold_pays(10)
    for k in range(1, 12):
        assert model.fold_pays(k) == (k * plain > once + k * per_category)
    # The plain graph's count, written out for the tiny preset (C=16, M=24, R=32, 128² query).
    pixels = [32 * 32, 16 * 16, 8 * 8, 4 * 4, 2 * 2]
    assert (c.TOP_DOWN_PYRAMID_SIZE, c.MATCHING_CHANNELS, c.RPN_CONV_CHANNELS) == (16, 24, 32)
    assert plain == sum(pixels) * 2 * 16 * 24 + sum(pixels) * 9 * 24 * 32
    # once per query: the query term on P2..P5, its RPN conv from P (16 channels, not 24) and
    # of the bias map (1 channel), the two composed kernels per level
    assert once == (sum(pixels[:4]) * 16 * 24 + sum(pixels) * 9 * 16 * 32 + sum(pixels) * 9 * 32
                    + 2 * 5 * 9 * 16 * 24 * 32)


def test_category_batch_is_bounded(model, monkeypatch):
    assert 1 <= model.category_batch_size() <= 32
    monkeypatch.setattr(SiameseMaskRCNN, "CATEGORY_BATCH_BYTES", 1)
    assert model.category_batch_size() == 1


@pytest.mark.parametrize("batch_size", [0, -1, 2.7, "2", True])
def test_bad_batch_size_is_refused(model, images, batch_size):
    query, references = images
    with pytest.raises(ValueError, match=f"batch_size must be an integer >= 1.*got {batch_size!r}"):
        model.detect_embeddings(query, {0: model.embed_category(references[:1])}, batch_size=batch_size)
    assert model.detect_embeddings(query, {}) == {}


def test_bad_fold_and_embeddings_are_refused_with_the_key_named(model, images):
    query, references = images
    embedding = model.embed_category(references[:1])  # [5, C]
    with pytest.raises(ValueError, match="fold must be True, False or None .*got 'no'"):
        model.detect_embeddings(query, {0: embedding}, fold="no")
    with pytest.raises(ValueError, match=r"embedding 'cat' has shape \(%d, 5\)" % embedding.shape[1]):
        model.detect_embeddings(query, {"cat": embedding.T})
    bad = embedding.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="embedding 7 has 1 non-finite values"):
        model.detect_embeddings(query, {0: embedding, 7: bad})
    with pytest.raises(ValueError, match="embeddings must be a dict"):
        model.detect_embeddings(query, [embedding])
    for not_numbers in ("cat.npy", [[1, 2], [3]], None):
        with pytest.raises(ValueError, match="embedding 'dog' is not an array of numbers"):
            model.detect_embeddings(query, {0: embedding, "dog": not_numbers})
    flat = model.detect_embeddings(query, {0: embedding.ravel()}, fold=False)
    _assert_same_results(model.detect_embeddings(query, {0: embedding}, fold=False), flat)


def test_query_in_any_image_layout_or_as_a_path(model, images, tmp_path):
    from PIL import Image
    from siamese_mask_rcnn.mrcnn.utils import ImageLoadError
    query, references = images
    embeddings = {0: model.embed_category(references[:1])}
    expected = model.detect_embeddings(query, embeddings, fold=False)
    path = tmp_path / "query.png"
    Image.fromarray(query).save(path)
    _assert_same_results(expected, model.detect_embeddings(str(path), embeddings, fold=False))
    rgba = np.concatenate([query, np.full(query.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    _assert_same_results(expected, model.detect_embeddings(rgba, embeddings, fold=False))
    grey = model.detect_embeddings(query[..., 0], embeddings, fold=False)
    assert grey[0]["masks"].shape[:2] == query.shape[:2]
    with pytest.raises(ImageLoadError, match=r"shape \(0, 0, 3\)"):
        model.detect_embeddings(np.zeros((0, 0, 3), np.uint8), embeddings)
    with pytest.raises(ImageLoadError, match="missing.png"):
        model.detect_embeddings(str(tmp_path / "missing.png"), embeddings)
    with pytest.raises(ImageLoadError, match="a directory, not an image file"):
        model.detect_embeddings(str(tmp_path), embeddings)
    # references as file paths too
    Image.fromarray(references[0]).save(tmp_path / "reference.png")
    np.testing.assert_allclose(model.embed_category([str(tmp_path / "reference.png")]),
                               embeddings[0], atol=1e-6)
    np.testing.assert_allclose(model.encode_references(str(tmp_path / "reference.png"))[0],
                               embeddings[0], atol=1e-6)
    # one crop given without a list is one reference, not a stack of rows; a stack is N crops
    crop = references[0]
    np.testing.assert_allclose(model.embed_category(crop), embeddings[0], atol=1e-6)
    np.testing.assert_allclose(model.encode_references(crop[..., 0]), model.encode_references([crop[..., 0]]))
    pair = np.stack([references[0], references[0][::-1]])
    assert model.encode_references(pair).shape[0] == 2
    # detect (matterport's batch path) reads queries as detect_embeddings does
    bad = query.astype(np.float32)
    bad[3, 4, 1] = np.nan
    with pytest.raises(ImageLoadError, match="1 non-finite"):
        model.detect([[references[0]]], [bad])
    with pytest.raises(ImageLoadError, match="missing.png"):
        model.detect([[references[0]]], [str(tmp_path / "missing.png")])
    Image.fromarray(query).save(tmp_path / "query.png")
    by_path = model.detect([str(tmp_path / "reference.png")], [str(tmp_path / "query.png")])[0]
    _assert_same_results({0: model.detect([[references[0]]], [query])[0]}, {0: by_path})


def test_no_retracing_across_calls(model, images):
    query, references = images
    embeddings = {i: e for i, e in enumerate(model.encode_references(references))}
    model.detect_embeddings(query, embeddings, batch_size=3, fold=True)
    model.detect_embeddings(query, embeddings, batch_size=3, fold=False)
    traces = {key: fn.experimental_get_tracing_count() for key, fn in model._functions.items()
              if hasattr(fn, "experimental_get_tracing_count")}
    model.detect_embeddings(query, dict(list(embeddings.items())[:5]), batch_size=3, fold=True)
    model.detect_embeddings(query, dict(list(embeddings.items())[:2]), batch_size=2, fold=False)
    after = {key: fn.experimental_get_tracing_count() for key, fn in model._functions.items()
             if hasattr(fn, "experimental_get_tracing_count")}
    assert traces == after


# ------------------------------------------------------------------ --threads on the CLIs
def test_predict_and_evaluate_refuse_zero_threads(capsys):
    from siamese_mask_rcnn import cli
    from siamese_mask_rcnn.evaluation import cli as evaluation_cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict", "--weights", "w.h5", "--reference", "r.png", "--query", "q.png",
                  "--threads", "0"])
    assert exit_info.value.code == 2
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        evaluation_cli.main(["--model", "random", "--annotations", "a.json", "--images", ".",
                             "--inter-op-threads", "-1"])
    assert exit_info.value.code == 2
    assert "--inter-op-threads must be >= 1, got -1" in capsys.readouterr().err


def test_thread_flags_reach_tensorflow(monkeypatch):
    import argparse

    from siamese_mask_rcnn.demo import add_thread_arguments, apply_thread_arguments

    applied = {}
    threading = tf.config.threading
    monkeypatch.setattr(threading, "set_intra_op_parallelism_threads", lambda n: applied.update(intra=n))
    monkeypatch.setattr(threading, "set_inter_op_parallelism_threads", lambda n: applied.update(inter=n))
    parser = argparse.ArgumentParser()
    add_thread_arguments(parser)
    apply_thread_arguments(parser, parser.parse_args(["--threads", "3", "--inter-op-threads", "1"]))
    assert applied == {"intra": 3, "inter": 1}
    applied.clear()
    apply_thread_arguments(parser, parser.parse_args([]))
    assert applied == {}  # TensorFlow's defaults stay


def test_folded_path_leaves_the_weight_file_layout_alone(images, tmp_path):
    """The folded path's sub-models share the head model's layers: after it ran, the model
    has the same weights, and a file saved by layer name fills a fresh model completely and
    gives the same detections."""
    model = _model()
    query, references = images
    names_before = [w.path for w in model.keras_model.weights]
    embeddings = {i: e for i, e in enumerate(model.encode_references(references[:3]))}
    folded = model.detect_embeddings(query, embeddings, fold=True)
    assert [w.path for w in model.keras_model.weights] == names_before
    model.save_weights(str(tmp_path / "after_fold.h5"))
    keras.utils.set_random_seed(11)
    fresh = SiameseMaskRCNN("inference", _config(), model_dir="logs/test_inference_fast")
    report = fresh.load_weights(str(tmp_path / "after_fold.h5"), by_name=True)
    assert not list(report.missing_in_file)
    _assert_same_results(folded, fresh.detect_embeddings(query, embeddings, fold=False))


def test_winograd_convs_equal_the_convolutions(model, images):
    """``WINOGRAD_CONVS=True``: the inference graph's RPN and mask-head 3×3 convs and
    the folded path's RPN convs by Winograd F(2×2, 3×3) give the answers of TensorFlow's
    convolution on the same weights; training graphs keep the convolution. (The default
    "auto" picks one of the two by the CPU.)"""
    from siamese_mask_rcnn.mrcnn.winograd import Winograd3x3Conv2D
    # the fixture's model ("auto") is one of the two on this CPU: build only the other one
    if model._fold_winograd():
        direct = _model(WINOGRAD_CONVS=False)
        direct.keras_model.set_weights(model.keras_model.get_weights())
    else:
        direct, model = model, _model(WINOGRAD_CONVS=True)
        model.keras_model.set_weights(direct.keras_model.get_weights())
    hm, dm = model.head_model, direct.head_model
    for name in ["mrcnn_mask_conv1", "mrcnn_mask_conv4"]:
        assert isinstance(hm.get_layer(name), Winograd3x3Conv2D)
        assert not isinstance(dm.get_layer(name), Winograd3x3Conv2D)
    assert isinstance(hm.get_layer("rpn_model").get_layer("rpn_conv_shared"), Winograd3x3Conv2D)
    assert not isinstance(dm.get_layer("rpn_model").get_layer("rpn_conv_shared"), Winograd3x3Conv2D)
    assert model._fold_winograd() and not direct._fold_winograd()
    query, references = images
    embeddings = model.encode_references(references)
    for fold in (False, True):
        expected = _raw(direct, query, embeddings, fold=fold, batch_size=3)
        actual = _raw(model, query, embeddings, fold=fold, batch_size=3)
        assert (expected[0][:, :, 4] > 0).sum() > len(embeddings)  # detections (and masks) to compare
        for e, a in zip(expected, actual):  # detections, masks, RPN scores and deltas
            np.testing.assert_allclose(a, e, atol=1e-4)
    keyed = {f"c{i}": e for i, e in enumerate(embeddings[:3])}
    _assert_same_results(direct.detect_embeddings(query, keyed), model.detect_embeddings(query, keyed))


def test_training_graph_keeps_tensorflow_convolutions():
    """Only inference graphs use Winograd and the matrix-product box head."""
    from siamese_mask_rcnn.mrcnn.winograd import Winograd3x3Conv2D
    training = SiameseMaskRCNN("training", _config(WINOGRAD_CONVS=True), model_dir="logs/test_inference_fast")
    from siamese_mask_rcnn.mrcnn.heads import WindowConv2D
    heads = training.head_model
    layers = [heads.get_layer("rpn_model").get_layer("rpn_conv_shared")]
    layers += [layer for layer in heads.layers if layer.name.startswith("mrcnn_mask_conv")]
    assert len(layers) == 5
    assert not any(isinstance(layer, Winograd3x3Conv2D) for layer in layers)
    # the box head's first layer too: the training arithmetic is TensorFlow's convolution
    assert not isinstance(heads.get_layer("mrcnn_class_conv1"), WindowConv2D)
    inference = SiameseMaskRCNN("inference", _config(), model_dir="logs/test_inference_fast")
    assert isinstance(inference.head_model.get_layer("mrcnn_class_conv1"), WindowConv2D)


def test_proposals_hold_every_detection_box(model, images):
    """With zero box refinements every detection box is its proposal: the proposals mapped to
    the (non-square) query's pixels must contain each detection box exactly."""
    query, references = images
    embedding = model.embed_category([references[0]])
    proposals = model.proposals(query, embedding)
    assert proposals.dtype == np.int32 and proposals.ndim == 2 and proposals.shape[1] == 4
    assert 0 < len(proposals) <= model.config.POST_NMS_ROIS_INFERENCE
    assert np.all(proposals[:, 2] > proposals[:, 0]) and np.all(proposals[:, 3] > proposals[:, 1])
    detections = model.detect_embeddings(query, {"a": embedding})["a"]["rois"]
    assert len(detections) > 0
    as_rows = {tuple(box) for box in proposals.tolist()}
    assert all(tuple(box) in as_rows for box in detections.tolist())
    # the flat [5 * C] embedding and proposal_fn give the same boxes
    np.testing.assert_array_equal(model.proposals(query, embedding.reshape(-1)), proposals)
    by_class = model.proposal_fn()(query, {3: [references[0]], 5: [references[1]]})  # the query encoded once
    np.testing.assert_array_equal(by_class[3], proposals)
    np.testing.assert_array_equal(by_class[5], model.proposals(query, model.embed_category([references[1]])))


def test_proposals_refuse_bad_input(model, images):
    import types
    query, _ = images
    with pytest.raises(ValueError, match=r"^the embedding has shape \(3, 4\)"):
        model.proposals(query, np.zeros((3, 4), np.float32))
    with pytest.raises(RuntimeError, match="inference mode"):
        SiameseMaskRCNN.proposals(types.SimpleNamespace(mode="training"), query, None)
