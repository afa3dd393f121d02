"""Siamese Mask R-CNN: graph of the paper model, k-shot embeddings, cached embeddings,
one-shot training examples and a tiny train → checkpoint → detect round trip on real COCO."""
import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from siamese_mask_rcnn.config import siamese_config  # noqa: E402
from siamese_mask_rcnn.mrcnn import molding as mmolding  # noqa: E402
from siamese_mask_rcnn.mrcnn import utils  # noqa: E402
from siamese_mask_rcnn import siamese  # noqa: E402
from siamese_mask_rcnn.siamese import LEVELS, SiameseMaskRCNN, mold_reference  # noqa: E402

#: One image per batch, one data worker on top of the "smoke" preset (small's structure at
#: 128² with ``tiny_backbone``; see siamese_mask_rcnn.presets).
TINY = dict(IMAGES_PER_GPU=1, DATA_WORKERS=1)


def tiny_config(**overrides):
    """The "smoke" preset (small's structure, tiny sizes) with ``TINY`` and ``overrides``."""
    return siamese_config("smoke", **{**TINY, **overrides})


def weight_by_path(model, path):
    """The one variable of ``model`` whose path is exactly ``path``."""
    found = [w for w in model.weights if w.path == path]
    assert len(found) == 1, f"{len(found)} variables with path {path}"
    return found[0]


# --------------------------------------------------------------------------- paper graph
@pytest.fixture(scope="module")
def paper_model(tmp_path_factory):
    """The paper preset's inference model (1024² query, 192² reference, ResNet-50)."""
    keras.utils.set_random_seed(0)
    config = siamese_config("paper", IMAGES_PER_GPU=1)
    return SiameseMaskRCNN("inference", config, model_dir=str(tmp_path_factory.mktemp("logs")))


def test_paper_preset_input_shapes(paper_model):
    c = paper_model.config
    assert c.BACKBONE == "resnet50"
    shapes = {t.name: tuple(t.shape) for t in paper_model.keras_model.inputs}
    assert shapes["input_image"] == (None, 1024, 1024, 3)
    assert shapes["input_references"] == (None, 1, 192, 192, 3)


def test_backbone_weights_are_shared_once(paper_model):
    km = paper_model.keras_model
    # exactly one ResNet stem kernel although the encoder runs on query and reference
    stems = [w for w in km.weights if w.path == "conv1/kernel"]
    assert len(stems) == 1
    assert tuple(stems[0].shape) == (7, 7, 3, 64)
    assert len({id(w) for w in km.weights}) == len(km.weights)
    # the same variable object in the encoder and the reference model
    assert weight_by_path(paper_model.encoder, "conv1/kernel") is stems[0]
    assert weight_by_path(paper_model.reference_model, "conv1/kernel") is stems[0]
    # ResNet-50: stage 4 has 6 blocks (a..f), no 7th
    paths = {w.path for w in km.weights}
    assert "res4f_branch2c/kernel" in paths and "res4g_branch2c/kernel" not in paths


def test_query_and_reference_go_through_the_same_encoder(paper_model):
    km = paper_model.keras_model
    encoder = km.get_layer("siamese_encoder")
    assert encoder is paper_model.encoder
    calls = [n for nodes in km._nodes_by_depth.values() for n in nodes if n.operation is encoder]
    assert len(calls) == 2
    sources = sorted(n.input_tensors[0]._keras_history.operation.name for n in calls)
    assert sources == ["fold_shots", "input_image"]
    input_sides = sorted(tuple(n.input_tensors[0].shape[1:3]) for n in calls)
    assert input_sides == [(192, 192), (1024, 1024)]


def test_matching_layers_per_level(paper_model):
    heads = paper_model.head_model
    for level in LEVELS:
        layer = heads.get_layer(f"fpn_distance_{level}")
        assert layer.filters == 384
        assert tuple(layer.kernel.shape) == (1, 1, 512, 384)  # [P, |P - pooled ref|] = 2 x 256
    paths = [w.path for w in paper_model.keras_model.weights if w.path.startswith("fpn_distance_")]
    assert sorted(paths) == sorted([f"fpn_distance_{lv}/{k}" for lv in LEVELS for k in ("kernel", "bias")])


def test_two_way_classifier_and_single_mask(paper_model):
    km = paper_model.keras_model
    assert tuple(weight_by_path(km, "mrcnn_class_logits/kernel").shape) == (1024, 2)
    assert tuple(weight_by_path(km, "mrcnn_bbox_fc/kernel").shape) == (1024, 4)  # class-agnostic, as the release
    assert tuple(weight_by_path(km, "mrcnn_mask/kernel").shape) == (1, 1, 256, 1)


def test_paper_reference_embedding_shape(paper_model):
    crop = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    emb = paper_model.encode_references([crop])
    assert emb.shape == (1, 5, 256)
    assert np.all(np.isfinite(emb))


# --------------------------------------------------------------------------- k-shot
@pytest.fixture(scope="module")
def three_shot_model(tmp_path_factory):
    """A tiny inference model with NUM_TARGETS=3 that keeps every detection."""
    keras.utils.set_random_seed(1)
    config = tiny_config(NUM_TARGETS=3, DETECTION_MIN_CONFIDENCE=0.0)
    return SiameseMaskRCNN("inference", config, model_dir=str(tmp_path_factory.mktemp("logs")))


@pytest.fixture(scope="module")
def random_pair():
    """A query image and three reference crops of different sizes."""
    rng = np.random.default_rng(7)
    query = rng.integers(0, 256, (96, 150, 3), dtype=np.uint8)
    refs = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(40, 20, 3), (30, 30, 3), (17, 50, 3)]]
    return query, refs


def test_k_shot_embedding_is_mean_of_reference_embeddings(three_shot_model, random_pair):
    model = three_shot_model
    query, refs = random_pair
    molded_refs = np.stack([mold_reference(r, model.config) for r in refs]).astype(np.float32)
    singles = np.asarray(model.reference_model(molded_refs, training=False))
    assert singles.shape == (3, len(LEVELS), 32)
    assert not np.allclose(singles[0], singles[1])  # the mean is not trivially one of them
    molded, metas, _ = model.mold_inputs([query])
    inside = model.run_graph(molded, [("k_shot", "k_shot_mean")], image_metas=metas,
                             extra_inputs=[molded_refs[None]])["k_shot"]
    np.testing.assert_allclose(inside[0], singles.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.embed_category(refs), singles.mean(axis=0), rtol=1e-5, atol=1e-5)


def test_detect_embeddings_equals_detect(three_shot_model, random_pair):
    model = three_shot_model
    query, refs = random_pair
    direct = model.detect([refs], [query])[0]
    cached = model.detect_embeddings(query, {"cat": model.embed_category(refs)})["cat"]
    assert len(direct["scores"]) > 0  # min confidence 0: a meaningful comparison
    assert direct["masks"].shape == query.shape[:2] + (len(direct["scores"]),)
    np.testing.assert_array_equal(cached["class_ids"], direct["class_ids"])
    np.testing.assert_allclose(cached["scores"], direct["scores"], atol=1e-4)
    assert np.max(np.abs(cached["rois"].astype(int) - direct["rois"].astype(int))) <= 1
    assert np.mean(cached["masks"] != direct["masks"]) < 0.01


def test_detect_checks_number_of_references(three_shot_model, random_pair):
    query, refs = random_pair
    with pytest.raises(ValueError, match="NUM_TARGETS=3"):
        three_shot_model.detect([refs[:2]], [query])



def test_detect_accepts_the_release_positional_call_and_checks_counts(three_shot_model, random_pair):
    query, refs = random_pair
    by_keyword = three_shot_model.detect(references=[refs], images=[query])[0]
    positional = three_shot_model.detect([refs], [query])[0]
    np.testing.assert_array_equal(by_keyword["rois"], positional["rois"])
    with pytest.raises(ValueError, match="2 reference sets for 1 images"):
        three_shot_model.detect([refs, refs], [query])
    with pytest.raises(ValueError, match=r"has shape \(7,\), expected \(5, 32\)"):
        three_shot_model.detect_embeddings(query, {"bad": np.zeros(7, np.float32)})
    with pytest.raises(ValueError, match="at least one reference"):
        three_shot_model.encode_references([])
    for bad in (None, 3, {"crop": refs[0]}):  # used to fail inside len() or np.stack
        with pytest.raises(TypeError, match=f"a list of them, got {type(bad).__name__}"):
            three_shot_model.encode_references(bad)
    with pytest.raises(TypeError, match="category 1: references must be .* got NoneType"):
        three_shot_model.proposal_fn()(query, {1: None})
    for fn in (three_shot_model.proposal_fn(), three_shot_model.predict_fn()):
        with pytest.raises(TypeError, match="references must be a dict"):
            fn(query, None)
        with pytest.raises(ValueError, match="category 4: encode_references needs at least one"):
            fn(query, {4: []})


# --------------------------------------------------------------------------- custom layers
@pytest.mark.parametrize("make, inputs", [
    (lambda: siamese.PooledEmbedding(name="pool"),
     lambda rng: [rng.normal(size=(2, s, s, 4)).astype("float32") for s in (8, 4, 2)]),
    (lambda: siamese.MeanOverShots(3, name="mean"),
     lambda rng: rng.normal(size=(6, 5, 4)).astype("float32")),
    (lambda: siamese.DistanceConcat(2, name="dist"),
     lambda rng: [rng.normal(size=(2, 4, 4, 3)).astype("float32"),
                  rng.normal(size=(2, 5, 3)).astype("float32")]),
])
def test_custom_layers_round_trip_through_their_config(make, inputs):
    layer = make()
    data = inputs(np.random.default_rng(0))
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == layer.get_config()
    expected = np.asarray(layer(data))
    np.testing.assert_allclose(np.asarray(clone(data)), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(restored(data)), expected, rtol=1e-6)


def test_custom_layers_compute_what_the_paper_says():
    rng = np.random.default_rng(1)
    maps = [rng.normal(size=(2, s, s, 4)).astype("float32") for s in (8, 4)]
    pooled = np.asarray(siamese.PooledEmbedding()(maps))
    np.testing.assert_allclose(pooled, np.stack([m.mean(axis=(1, 2)) for m in maps], axis=1), rtol=1e-5)
    shots = rng.normal(size=(6, 2, 4)).astype("float32")
    np.testing.assert_allclose(np.asarray(siamese.MeanOverShots(3)(shots)),
                               shots.reshape(2, 3, 2, 4).mean(axis=1), rtol=1e-5, atol=1e-6)
    fmap = rng.normal(size=(2, 3, 3, 4)).astype("float32")
    out = np.asarray(siamese.DistanceConcat(1)([fmap, pooled]))
    np.testing.assert_allclose(out, np.concatenate([fmap, np.abs(fmap - pooled[:, 1][:, None, None])], -1),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="shots must be >= 1"):
        siamese.MeanOverShots(0)
    with pytest.raises(ValueError, match="level must be >= 0"):
        siamese.DistanceConcat(-1)


# --------------------------------------------------------------------------- real COCO
@pytest.fixture(scope="module")
def tiny_training_model(tmp_path_factory):
    keras.utils.set_random_seed(2)
    return SiameseMaskRCNN("training", tiny_config(), model_dir=str(tmp_path_factory.mktemp("logs")))


def _expected_targets(dataset, config, image_id, class_id):
    """Labels and boxes (resized image pixels) of the class's instances that survive resizing."""
    masks, labels = dataset.load_class_gt(image_id, class_id)
    image = dataset.load_image(image_id)
    _, _, scale, padding, crop = mmolding.resize_for_config(image, config)
    resized = utils.resize_mask(masks, scale, padding, crop).astype(bool)
    keep = resized.sum(axis=(0, 1)) > 0
    boxes = utils.extract_bboxes(resized[:, :, keep])
    return labels[keep], boxes


def test_training_image_ids_exclude_held_out_only_images(tiny_training_model, coco_split1):
    ids = tiny_training_model.training_image_ids(coco_split1)
    # the subset's image 2 shows only an elephant: a held-out category of S1 (position 21)
    assert coco_split1.image_categories[2] == [21] and 21 in coco_split1.oneshot_class_ids
    assert 2 not in ids
    assert ids == [0, 1, 3, 4, 5, 6, 7, 8, 9]


def test_training_targets_are_the_sampled_category(tiny_training_model, coco_split1, monkeypatch):
    model, dataset, config = tiny_training_model, coco_split1, tiny_training_model.config
    calls = []
    original = dataset.sample_references

    def spy(class_id, k, rng, exclude_image_id=None, **kwargs):
        crops = original(class_id, k, rng, exclude_image_id=exclude_image_id, **kwargs)
        calls.append((int(class_id), exclude_image_id, crops))
        return crops

    monkeypatch.setattr(dataset, "sample_references", spy)
    train_ids, held_out = set(dataset.train_class_ids), set(dataset.oneshot_class_ids)
    sampled = set()
    for image_id in model.training_image_ids(dataset):
        for seed in range(3):
            expected_class = dataset.sample_reference_class(image_id, np.random.default_rng(seed))
            arrays = model.load_training_example(dataset, image_id, np.random.default_rng(seed))
            class_id, excluded, crops = calls[-1]
            assert class_id == expected_class
            assert class_id in train_ids and class_id not in held_out
            assert excluded == image_id  # references come from other images
            sampled.add(class_id)
            references, gt_ids, gt_boxes = arrays[2], arrays[5], arrays[6]
            assert references.shape == (1, 32, 32, 3)
            np.testing.assert_allclose(references[0], mold_reference(crops[0], config))
            labels, boxes = _expected_targets(dataset, config, image_id, class_id)
            n = int(np.sum(gt_ids != 0))
            assert n == min(len(labels), config.MAX_GT_INSTANCES)
            assert set(gt_ids[:n].tolist()) <= {1, -1}
            assert np.all(gt_ids[n:] == 0)
            expected = {tuple(b) for b in boxes.tolist()}
            assert {tuple(b) for b in gt_boxes[:n].astype(int).tolist()} <= expected
            if n == len(labels):
                assert sorted(gt_ids[:n].tolist()) == sorted(labels.tolist())
    # person (held out in S1) is the most frequent class of the subset and never sampled
    assert 1 not in sampled and len(sampled) >= 5


@pytest.fixture(scope="module")
def trained_checkpoint(tiny_training_model, coco_split1):
    """Two training steps of the tiny model on the subset (validation: tests/test_train_cli.py)."""
    model = tiny_training_model
    history = model.train(coco_split1, None, learning_rate=0.01, epochs=1, layers="all",
                          steps_per_epoch=2, validation_steps=0, verbose=0)
    return model, history


def test_two_steps_write_checkpoint_and_config(trained_checkpoint):
    model, history = trained_checkpoint
    assert model.epoch == 1 and len(history) == 1
    path = model.checkpoint_path.format(1)
    assert os.path.isfile(path) and history[0]["checkpoint"] == path
    assert np.isfinite(history[0]["loss"]) and history[0]["loss"] > 0
    assert os.path.isfile(os.path.join(model.log_dir, "config.json"))
    assert model.find_last() == path


def test_checkpoint_loads_into_inference_model_and_detects(trained_checkpoint, coco_split1, tmp_path):
    trained, _ = trained_checkpoint
    path = trained.checkpoint_path.format(1)
    keras.utils.set_random_seed(3)
    model = SiameseMaskRCNN("inference", tiny_config(DETECTION_MIN_CONFIDENCE=0.0), model_dir=str(tmp_path))
    report = model.load_weights(path, by_name=True)
    assert not report.skipped
    for name in ("tiny_conv1/kernel", "fpn_distance_P3/kernel", "mrcnn_class_logits/kernel", "mrcnn_mask/kernel"):
        np.testing.assert_array_equal(np.asarray(weight_by_path(model.keras_model, name)),
                                      np.asarray(weight_by_path(trained.keras_model, name)))
    rng = np.random.default_rng(0)
    query_id = 3
    class_id = coco_split1.oneshot_class_ids[0]  # person: a category never trained on
    ref = coco_split1.sample_reference(class_id, rng, exclude_image_id=query_id)
    query = coco_split1.load_image(query_id)
    # the loaded encoder gives the trained encoder's embedding
    molded_ref = mold_reference(ref, model.config)[None].astype(np.float32)
    np.testing.assert_allclose(model.encode_references([ref]),
                               np.asarray(trained.reference_model(molded_ref, training=False)), atol=1e-5)
    result = model.detect([ref], [query])[0]
    assert set(result) == {"rois", "class_ids", "scores", "masks"}
    assert result["masks"].shape == query.shape[:2] + (len(result["scores"]),)
    # two steps teach little: make the classifier say "match" everywhere so that the
    # detection -> full-image mask path runs on the loaded weights
    bias = model.head_model.get_layer("mrcnn_class_logits").bias
    bias.assign(np.array([0.0, 20.0], np.float32))
    result = model.detect([ref], [query])[0]
    n = len(result["scores"])
    assert 1 <= n <= model.config.DETECTION_MAX_INSTANCES
    assert result["rois"].shape == (n, 4)
    assert result["masks"].shape == (query.shape[0], query.shape[1], n)
    assert result["masks"].dtype == bool
    assert np.all(result["class_ids"] == 1)
    assert np.all((result["scores"] > 0.99) & (result["scores"] <= 1))
    y1, x1, y2, x2 = result["rois"].T
    assert np.all((0 <= y1) & (y1 < y2) & (y2 <= query.shape[0]))
    assert np.all((0 <= x1) & (x1 < x2) & (x2 <= query.shape[1]))
