"""Fidelity to the official Siamese Mask R-CNN release (bethgelab, Keras 2.1.6).

* Its weight files load by name with zero mismatches: random-valued files are written from
  ``../shared/data/siamese_official_layout/*_manifest.json`` (exact layer names, shapes and
  the nested ``resnet_model`` / ``fpn_model`` / ``rpn_model`` groups, with the moving
  statistics after all other arrays inside ``resnet_model``) and every array must arrive in
  the model with its value.
* The Siamese box regressor is class-agnostic (``mrcnn_bbox_fc`` ``[FC, 4]``); plain Mask R-CNN
  keeps matterport's per-class ``[FC, 4·NUM_CLASSES]``.
* ``predict`` infers the preset of a release file without ``config.json``.
* Gradient clipping clips the global norm (Keras 2 ``clipnorm``).
"""
import json
import math

import numpy as np
import pytest
import tensorflow as tf

from conftest import SHARED_DATA, _need
from h5_fixtures import write_manifest_h5

LAYOUT = SHARED_DATA / "siamese_official_layout"
MANIFESTS = {"small": "siamese_official_small_manifest.json", "paper": "siamese_official_large_manifest.json"}


def manifest_path(preset):
    return _need(LAYOUT / MANIFESTS[preset])


def write_release_file(preset, path, seed):
    return write_manifest_h5(manifest_path(preset), path, seed=seed)


def file_arrays(path):
    """``{(leaf layer, short weight name): array}`` of every dataset of an h5 file, read with
    h5py directly (independently of the loader)."""
    import h5py
    out = {}
    with h5py.File(path, "r") as f:
        for group_name in f.attrs["layer_names"]:
            group_name = group_name.decode() if isinstance(group_name, bytes) else group_name
            group = f[group_name]
            for wname in group.attrs["weight_names"]:
                wname = wname.decode() if isinstance(wname, bytes) else wname
                parts = wname.split(":")[0].split("/")
                out[(parts[-2], parts[-1])] = np.asarray(group[wname])
    return out


def model_arrays(keras_model):
    """``{(layer name, short weight name): value}`` of every weight of a model, flattened."""
    from siamese_mask_rcnn.mrcnn.weights import iter_weighted_layers
    out = {}
    for name, layer in iter_weighted_layers(keras_model):
        for v in layer.weights:
            out[(name, v.name)] = v.numpy()
    return out


@pytest.fixture(scope="module")
def small_release(tmp_path_factory):
    path = tmp_path_factory.mktemp("release") / "small_siamese_mrcnn_0160.h5"
    return write_release_file("small", path, seed=1)


def test_manifests_describe_the_nested_release_layout():
    """Guard the facts the loading test relies on (read from the manifests themselves)."""
    for preset in MANIFESTS:
        manifest = json.loads(manifest_path(preset).read_text())
        groups = {layer["name"]: layer for layer in manifest["layers"]}
        assert {"resnet_model", "fpn_model", "rpn_model"} <= set(groups)
        resnet = [w["h5_weight_name"] for w in groups["resnet_model"]["weights"]]
        moving = [i for i, n in enumerate(resnet) if "moving_" in n]
        assert len(resnet) == 318 and len(moving) == 106
        assert min(moving) == 318 - 106  # every moving statistic after all other arrays
        assert groups["mrcnn_bbox_fc"]["weights"][0]["shape"][1] == 4
        assert sum(len(layer["weights"]) for layer in manifest["layers"]) == 394


@pytest.mark.parametrize("preset", ["small", "paper"])
def test_release_file_loads_by_name_with_every_array(preset, tmp_path):
    from siamese_mask_rcnn.config import siamese_config
    from siamese_mask_rcnn.siamese import SiameseMaskRCNN

    path = write_release_file(preset, tmp_path / f"{preset}.h5", seed=2)
    expected = file_arrays(path)
    assert len(expected) == 394
    model = SiameseMaskRCNN("inference", siamese_config(preset, IMAGES_PER_GPU=1), model_dir=str(tmp_path))
    report = model.load_weights(str(path), by_name=True)
    assert not report.skipped and not report.unused_in_file and not report.missing_in_file, str(report)
    assert report.n_arrays == 394
    got = model_arrays(model.keras_model)
    assert set(got) == set(expected), (set(got) ^ set(expected))
    for key, array in expected.items():
        np.testing.assert_array_equal(got[key], array, err_msg=str(key))
    assert got[("mrcnn_bbox_fc", "kernel")].shape == (model.config.FPN_CLASSIF_FC_LAYERS_SIZE, 4)


def test_detect_runs_on_the_loaded_small_release_model(small_release, tmp_path):
    from siamese_mask_rcnn.config import siamese_config
    from siamese_mask_rcnn.siamese import SiameseMaskRCNN

    config = siamese_config("small", IMAGES_PER_GPU=1, DETECTION_MIN_CONFIDENCE=0.0)
    model = SiameseMaskRCNN("inference", config, model_dir=str(tmp_path))
    model.load_weights(str(small_release), by_name=True)
    rng = np.random.default_rng(0)
    query = rng.integers(0, 255, (300, 420, 3), dtype=np.uint8)
    reference = rng.integers(0, 255, (60, 50, 3), dtype=np.uint8)
    (result,) = model.detect([reference], [query])
    n = len(result["scores"])
    assert result["masks"].shape == (300, 420, n) and result["rois"].shape == (n, 4)
    assert np.all(np.isfinite(result["scores"]))
    assert n <= config.DETECTION_MAX_INSTANCES


def test_siamese_box_head_is_class_agnostic_and_mrcnn_keeps_per_class_boxes(tmp_path):
    """The repeated class-agnostic deltas feed decoding and the box loss for every class."""
    from siamese_mask_rcnn.demo import demo_config
    from siamese_mask_rcnn.mrcnn.backbone import tiny_backbone
    from siamese_mask_rcnn.mrcnn.config import Config
    from siamese_mask_rcnn.mrcnn.model import MaskRCNN
    from siamese_mask_rcnn.siamese import SiameseMaskRCNN

    small = dict(IMAGES_PER_GPU=1, TOP_DOWN_PYRAMID_SIZE=16, FPN_CLASSIF_FC_LAYERS_SIZE=32,
                 RPN_CONV_CHANNELS=16, MASK_CONV_CHANNELS=16, POST_NMS_ROIS_INFERENCE=20,
                 DETECTION_MAX_INSTANCES=5)
    siamese = SiameseMaskRCNN("inference", demo_config(MATCHING_CHANNELS=24, **small), str(tmp_path))
    fc = siamese.keras_model.get_layer("siamese_heads").get_layer("mrcnn_bbox_fc")
    assert tuple(fc.kernel.shape) == (32, 4)
    mrcnn = MaskRCNN("inference", Config(NAME="t", NUM_CLASSES=4, BACKBONE=tiny_backbone,
                                         IMAGE_MIN_DIM=64, IMAGE_MAX_DIM=64, **small), str(tmp_path))
    assert tuple(mrcnn.keras_model.get_layer("mrcnn_bbox_fc").kernel.shape) == (32, 16)
    # the Siamese bbox output repeats the same 4 deltas for both classes
    rng = np.random.default_rng(0)
    query = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    reference = rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)
    molded, metas, _ = siamese.mold_inputs([query])
    from siamese_mask_rcnn.siamese import mold_reference
    refs = np.stack([mold_reference(reference, siamese.config)])[None]
    _, _, bbox, _, _, _, _ = siamese._predict([molded, metas, refs])
    assert bbox.shape[2:] == (2, 4)
    np.testing.assert_array_equal(bbox[:, :, 0], bbox[:, :, 1])
    assert np.abs(bbox).max() > 0


def test_small_preset_uses_the_release_image_sizes():
    from siamese_mask_rcnn.config import siamese_config

    manifest = json.loads(manifest_path("small").read_text())["config"]
    small = siamese_config("small")
    for key in ("IMAGE_MIN_DIM", "IMAGE_MAX_DIM", "TARGET_MIN_DIM", "TARGET_MAX_DIM",
                "FPN_CLASSIF_FC_LAYERS_SIZE"):
        assert getattr(small, key) == manifest[key], key
    large = json.loads(manifest_path("paper").read_text())["config"]
    paper = siamese_config("paper")
    for key in ("IMAGE_MIN_DIM", "IMAGE_MAX_DIM", "TARGET_MIN_DIM", "TARGET_MAX_DIM",
                "FPN_CLASSIF_FC_LAYERS_SIZE"):
        assert getattr(paper, key) == large[key], key


# ------------------------------------------------------------------------------ predict
def test_preset_is_inferred_from_the_file_without_config_json(small_release, tmp_path, capsys):
    from siamese_mask_rcnn.mrcnn import weights as W
    from siamese_mask_rcnn.predict import InputError, infer_preset, resolve_config

    assert infer_preset(small_release)[0] == "small"
    large = write_release_file("paper", tmp_path / "large_siamese_mrcnn_coco_full_0320.h5", seed=3)
    assert infer_preset(large)[0] == "paper"
    config = resolve_config(str(large))
    assert config.FPN_CLASSIF_FC_LAYERS_SIZE == 1024 and config.IMAGE_MAX_DIM == 1024
    err = capsys.readouterr().err
    assert "assuming preset 'paper'" in err and "1024" in err
    # an explicit preset wins (and says nothing)
    assert resolve_config(str(large), preset="small").FPN_CLASSIF_FC_LAYERS_SIZE == 512
    assert "assuming" not in capsys.readouterr().err
    # shapes no preset has: a clear error naming the file
    odd = tmp_path / "odd.h5"
    manifest = {"layers": [
        {"name": "mrcnn_class_logits", "weights": [{"shape": [77, 2], "h5_weight_name": "mrcnn_class_logits/kernel:0"}]},
        {"name": "fpn_distance_P2", "weights": [
            {"shape": [1, 1, 512, 384], "h5_weight_name": "fpn_distance_P2/kernel:0"}]}]}
    (tmp_path / "odd.json").write_text(json.dumps(manifest))
    write_manifest_h5(tmp_path / "odd.json", odd)
    with pytest.raises(InputError, match="odd.h5: classifier width 77, matching kernel"):
        infer_preset(odd)


def test_predict_cli_runs_the_small_release_file_without_config(small_release, tmp_path, capsys):
    from skimage import io as skio

    from siamese_mask_rcnn import cli

    rng = np.random.default_rng(1)
    skio.imsave(tmp_path / "ref.png", rng.integers(0, 255, (40, 50, 3), dtype=np.uint8), check_contrast=False)
    skio.imsave(tmp_path / "query.png", rng.integers(0, 255, (120, 90, 3), dtype=np.uint8), check_contrast=False)
    assert not (small_release.parent / "config.json").exists()
    code = cli.main(["predict", "--weights", str(small_release), "--reference", str(tmp_path / "ref.png"),
                     "--query", str(tmp_path / "query.png"), "--json", str(tmp_path / "out.json"),
                     "--min-confidence", "0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "assuming preset 'small'" in captured.err
    payload = json.loads((tmp_path / "out.json").read_text())
    assert payload["count"] == len(payload["detections"]) and "detections" in captured.out


# ------------------------------------------------------------------------------ clipping
def test_gradient_clipping_clips_the_global_norm():
    """100 gradients of norm 3 each (global norm 30) become global norm 5.0, same direction."""
    from types import SimpleNamespace

    from siamese_mask_rcnn.mrcnn.config import Config
    from siamese_mask_rcnn.mrcnn.model import MaskRCNN
    from siamese_mask_rcnn.mrcnn.training import clip_gradients

    rng = np.random.default_rng(0)
    grads = []
    for i in range(100):
        g = rng.normal(size=(i % 7 + 1, 3)).astype(np.float32)
        grads.append(tf.constant(g * (3.0 / np.linalg.norm(g))))
    assert math.sqrt(sum(float(tf.reduce_sum(g ** 2)) for g in grads)) == pytest.approx(30.0, rel=1e-5)
    owner = SimpleNamespace(config=Config(GRADIENT_CLIP_NORM=5.0), strategy=tf.distribute.get_strategy())
    optimizer = MaskRCNN.compile(owner, learning_rate=0.02, momentum=0.9)
    clipped = clip_gradients(grads, optimizer)
    norm = math.sqrt(sum(float(tf.reduce_sum(g ** 2)) for g in clipped))
    assert norm == pytest.approx(5.0, rel=1e-5)
    for g, c in zip(grads, clipped):  # every tensor scaled by the same 5/30
        np.testing.assert_allclose(c.numpy(), g.numpy() * (5.0 / 30.0), rtol=1e-5, atol=1e-7)
    # below the bound nothing changes
    small = [g / 10.0 for g in grads]
    for g, c in zip(small, clip_gradients(small, optimizer)):
        np.testing.assert_allclose(c.numpy(), g.numpy(), rtol=1e-6)
