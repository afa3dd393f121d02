"""Mixed precision (``MIXED_PRECISION`` / ``--mixed-precision``) on the CPU.

A tiny Siamese Mask R-CNN (the settings of ``distributed_check.py``: 64² procedural scenes,
every proposal kept as a training ROI) trains 3 steps in float32 and 3 steps in
``mixed_bfloat16`` from the same initial weights and the same seed. The losses stay finite
and close to float32's; the weights stay float32, the checkpoint is float32 and loads
into a float32 model. ``mixed_float16`` (GPUs) trains with a dynamic
``LossScaleOptimizer``; its code path runs here too.
"""
import numpy as np
import pytest

import distributed_check as dc

STEPS = 3
LEARNING_RATE = 0.002
# Measured on an AMD EPYC CPU: see the README's "Training on COCO" section.
FIRST_STEP_RTOL = 0.015  # measured: 0.6%
ALL_STEPS_RTOL = 0.10  # measured: 5.2% (mrcnn_class_loss of step 3; the runs' weights differ by then)
FLOAT32_LAYERS = ("ROI", "proposal_targets", "roi_align_classifier", "roi_align_mask", "losses",
                  "fpn_distance_concat_P2", "reference_pooling", "anchors", "norm_gt_boxes")


def build(policy, model_dir, mode="training"):
    import keras
    from siamese_mask_rcnn.config import siamese_config
    from siamese_mask_rcnn.siamese import SiameseMaskRCNN
    keras.utils.set_random_seed(0)
    settings = dc.tiny_settings(2, 1, weight_decay=1e-4)
    settings.update(NUM_CLASSES=2, TARGET_MIN_DIM=24, TARGET_MAX_DIM=32, MATCHING_CHANNELS=32,
                    FPN_RELU=False, GRADIENT_CLIP_NORM=5.0, MIXED_PRECISION=policy)
    return SiameseMaskRCNN(mode, siamese_config("small", **settings), str(model_dir))


def all_layers(model):
    return {layer.name: layer for layer in model.keras_model._flatten_layers(include_self=False, recursive=True)}


def train(model, dataset, steps=STEPS):
    import keras
    keras.utils.set_random_seed(1)  # the same ROI shuffles in both runs
    return model.train(dataset, None, learning_rate=LEARNING_RATE, epochs=steps, layers="all",
                       steps_per_epoch=1, validation_steps=0, verbose=0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mixed")
    dataset = dc.make_dataset("siamese")
    f32 = build(None, tmp / "f32")
    init = str(tmp / "init.h5")
    f32.save_weights(init)
    bf16 = build("mixed_bfloat16", tmp / "bf16")
    bf16.load_weights(init, by_name=True)
    return {"f32": f32, "bf16": bf16, "f32_history": train(f32, dataset),
            "bf16_history": train(bf16, dataset), "tmp": tmp}


def test_policy_applies_to_compute_not_to_weights(runs):
    import keras
    assert keras.config.dtype_policy().name == "float32", "building must restore the global policy"
    layers = all_layers(runs["bf16"])
    assert layers["fpn_c5p5"].compute_dtype == "bfloat16"
    assert layers["mrcnn_mask_conv1"].compute_dtype == "bfloat16"
    for name in FLOAT32_LAYERS:
        assert layers[name].compute_dtype == "float32", name
    assert all(w.dtype == "float32" for w in runs["bf16"].keras_model.weights)
    assert all_layers(runs["f32"])["fpn_c5p5"].compute_dtype == "float32"


def test_bfloat16_losses_are_finite_and_close_to_float32(runs):
    names = ["rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss", "mrcnn_mask_loss", "loss"]
    f32 = np.array([[h[n] for n in names] for h in runs["f32_history"]])
    bf16 = np.array([[h[n] for n in names] for h in runs["bf16_history"]])
    assert f32.shape == bf16.shape == (STEPS, 6)
    assert np.all(np.isfinite(bf16)) and np.all(f32[:, -1] > 0)
    assert np.all(f32[:, 2:5] > 0), "the heads' losses must be exercised"
    rel = np.abs(bf16 - f32) / np.maximum(np.abs(f32), 1e-3)
    print(f"float32 losses:\n{f32}\nbfloat16 losses:\n{bf16}\nrelative differences:\n{rel}")
    # Step 1: same weights, same batch: only the arithmetic differs.
    assert rel[0].max() < FIRST_STEP_RTOL, rel[0]
    # Later steps start from weights the two runs updated differently.
    assert rel.max() < ALL_STEPS_RTOL, rel
    # the weights did train (and differently from float32's: bfloat16 really was used)
    bf16_kernel = np.asarray(all_layers(runs["bf16"])["fpn_c5p5"].kernel)
    f32_kernel = np.asarray(all_layers(runs["f32"])["fpn_c5p5"].kernel)
    assert not np.array_equal(bf16_kernel, f32_kernel)


def test_bfloat16_checkpoint_is_float32_and_loads_into_a_float32_model(runs):
    from siamese_mask_rcnn.mrcnn import weights as mweights
    path = runs["bf16_history"][-1]["checkpoint"]
    stored = mweights.read_h5_weights(path)
    assert stored and all(np.asarray(v).dtype == np.float32 for items in stored.values() for _, v in items)
    plain = build(None, runs["tmp"] / "load", mode="inference")
    plain.load_weights(path, by_name=True)
    trained = {w.path: np.asarray(w) for w in runs["bf16"].keras_model.weights}
    loaded = {w.path: np.asarray(w) for w in plain.keras_model.weights}
    common = [k for k in loaded if k in trained]
    assert len(common) > 50
    for k in common:
        np.testing.assert_array_equal(loaded[k], trained[k], err_msg=k)


def test_bfloat16_model_detects_with_embeddings_as_with_detect(runs):
    """predict / evaluate run ``detect_embeddings``: a bfloat16 model's float32 query maps and
    embeddings reach the heads (plain and folded paths), and the plain path gives what the
    whole graph's ``detect`` gives (bfloat16 -> float32 -> bfloat16 is exact)."""
    model = build("mixed_bfloat16", runs["tmp"] / "bf16_inference", mode="inference")
    model.load_weights(runs["bf16_history"][-1]["checkpoint"], by_name=True)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    crop = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
    embedding = model.embed_category([crop])
    assert embedding.dtype == np.float32 and np.all(np.isfinite(embedding))
    _, _, _, maps = model.encode_query(image)
    assert all(m.dtype == np.float32 for m in maps)
    whole = model.detect([crop], [image])[0]
    plain = model.detect_embeddings(image, {1: embedding, 2: embedding}, fold=False)
    folded = model.detect_embeddings(image, {1: embedding, 2: embedding}, fold=True)
    assert model.fold_pays(100) is False, "bfloat16 matching convs never fold by default"
    for result in (plain[1], plain[2]):
        np.testing.assert_allclose(result["rois"], whole["rois"], atol=1)
        np.testing.assert_allclose(result["scores"], whole["scores"], atol=1e-2)
    for result in folded.values():
        assert result["masks"].shape[:2] == image.shape[:2]
        assert np.all(np.isfinite(result["scores"]))


def test_float16_trains_with_dynamic_loss_scaling(tmp_path):
    import keras
    model = build("mixed_float16", tmp_path)
    history = train(model, dc.make_dataset("siamese"), steps=2)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    # GRADIENT_CLIP_NORM clips the global norm (Keras 2's clipnorm, as the release used it)
    assert model.optimizer.inner_optimizer.global_clipnorm == pytest.approx(5.0)
    assert model.optimizer.inner_optimizer.clipnorm is None
    assert all(np.isfinite(h["loss"]) for h in history)
    assert float(model.optimizer.dynamic_scale.numpy()) > 1.0
    assert all_layers(model)["fpn_c5p5"].compute_dtype == "float16"
    assert all(w.dtype == "float32" for w in model.keras_model.weights)


@pytest.mark.parametrize("stride", [1, 4])
def test_strided_rpn_conv_gradient_under_bfloat16_is_finite_on_a_one_pixel_level(stride):
    """oneDNN's bfloat16 kernel gradient of a convolution whose input is smaller than its
    stride is garbage (1e24 or inf); the strided shared RPN conv computes in float32 then."""
    import keras
    import tensorflow as tf
    from siamese_mask_rcnn.mrcnn.heads import build_rpn_model
    from siamese_mask_rcnn.mrcnn.model import dtype_policy

    models = {}
    for policy in ("float32", "mixed_bfloat16"):
        keras.utils.set_random_seed(0)
        with dtype_policy(policy):
            models[policy] = build_rpn_model(stride, 1, 32, conv_channels=32)
    models["mixed_bfloat16"].set_weights(models["float32"].get_weights())
    want = "float32" if stride > 1 else "bfloat16"
    assert models["mixed_bfloat16"].get_layer("rpn_conv_shared").compute_dtype == want
    x = tf.constant(np.random.default_rng(0).standard_normal((2, 1, 1, 32)), tf.float32)
    grads = {}
    for policy, model in models.items():
        with tf.GradientTape() as tape:
            logits, _, bbox = model(x)
            loss = tf.reduce_sum(tf.cast(logits, tf.float32) ** 2) + tf.reduce_sum(tf.cast(bbox, tf.float32) ** 2)
        grads[policy] = tape.gradient(loss, model.get_layer("rpn_conv_shared").kernel).numpy()
    assert np.all(np.isfinite(grads["mixed_bfloat16"]))
    scale = np.abs(grads["float32"]).max()
    assert scale > 0
    assert np.abs(grads["mixed_bfloat16"] - grads["float32"]).max() < 0.05 * scale


def test_unknown_policy_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="MIXED_PRECISION='float8'"):
        build("float8", tmp_path)
