"""Tests of siamese_mask_rcnn.mrcnn.weights: legacy Keras-2 HDF5 weights by layer name."""
import json
import os

import h5py
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from siamese_mask_rcnn.mrcnn import weights as W  # noqa: E402
from siamese_mask_rcnn.mrcnn.h5layout import read_str_list_attr  # noqa: E402
from h5_fixtures import write_manifest_h5  # noqa: E402

ALL_WEIGHTED = ["conv1", "bn_conv1", "rpn_conv_shared", "rpn_class_raw", "mrcnn_class_logits"]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def build_model(conv_filters=4, logits_units=3, with_bn=True, with_bbox=False, share_rpn=False,
                prefix=""):
    """Tiny model with matterport layer names and a nested functional sub-model 'rpn_model'
    (``prefix`` is prepended to every weighted layer's name)."""
    feat_in = keras.Input((8, 8, conv_filters), name="input_rpn_feature_map")
    r = keras.layers.Conv2D(5, 3, padding="same", name=prefix + "rpn_conv_shared")(feat_in)
    r = keras.layers.Conv2D(2, 1, name=prefix + "rpn_class_raw")(r)
    rpn = keras.Model(feat_in, r, name="rpn_model")

    inp = keras.Input((8, 8, 3), name="input_image")
    x = keras.layers.Conv2D(conv_filters, 3, padding="same", name=prefix + "conv1")(inp)
    if with_bn:
        x = keras.layers.BatchNormalization(name=prefix + "bn_conv1")(x)
    x = keras.layers.Activation("relu", name="relu1")(x)
    y = rpn(x)
    if share_rpn:
        y = keras.layers.Add(name="add")([y, rpn(x)])
    p = keras.layers.GlobalAveragePooling2D(name="pool")(y)
    outputs = [keras.layers.Dense(logits_units, name=prefix + "mrcnn_class_logits")(p)]
    if with_bbox:
        outputs.append(keras.layers.Dense(4, name="mrcnn_bbox_fc")(p))
    return keras.Model(inp, outputs, name="tiny")


def randomize(model, seed):
    """Give every variable distinct random values (defaults like zeros/ones would hide bugs)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign(rng.uniform(0.5, 1.5, size=tuple(v.shape)).astype("float32"))


def values(model):
    """{variable path: numpy value} for every weight of the model."""
    return {v.path: np.array(v.numpy()) for v in model.weights}


def layer_values(model, name):
    """Values of one (possibly nested) layer's weights, in order."""
    layer = dict(W.iter_weighted_layers(model))[name]
    return [np.array(v.numpy()) for v in layer.weights]


@pytest.fixture
def saved(tmp_path):
    """A randomized tiny model saved with save_weights_by_name, and the file's path."""
    model = build_model()
    randomize(model, seed=1)
    path = tmp_path / "nested" / "dir" / "tiny.h5"
    W.save_weights_by_name(model, path)
    return model, path


# ---------------------------------------------------------------------------------------------
# traversal
# ---------------------------------------------------------------------------------------------
def test_iter_weighted_layers_flattens_nested_model_and_dedups_shared():
    model = build_model(share_rpn=True)
    names = [name for name, _ in W.iter_weighted_layers(model)]
    assert names == ALL_WEIGHTED
    assert all(layer.weights for _, layer in W.iter_weighted_layers(model))


# ---------------------------------------------------------------------------------------------
# saving / round trip
# ---------------------------------------------------------------------------------------------
def test_save_writes_legacy_layout(saved):
    model, path = saved
    assert os.listdir(path.parent) == ["tiny.h5"]  # no temp file left behind
    with h5py.File(path, "r") as f:
        assert [n.decode() for n in f.attrs["layer_names"]] == [l.name for l in model.layers]
        assert "relu1" in [n.decode() for n in f.attrs["layer_names"]]
        assert f.attrs["backend"] == b"tensorflow"
        assert f.attrs["keras_version"] == keras.__version__.encode()
        assert list(f["conv1"].attrs["weight_names"]) == [b"conv1/kernel:0", b"conv1/bias:0"]
        assert list(f["bn_conv1"].attrs["weight_names"]) == [
            b"bn_conv1/gamma:0", b"bn_conv1/beta:0",
            b"bn_conv1/moving_mean:0", b"bn_conv1/moving_variance:0"]
        assert list(f["rpn_model"].attrs["weight_names"]) == [
            b"rpn_conv_shared/kernel:0", b"rpn_conv_shared/bias:0",
            b"rpn_class_raw/kernel:0", b"rpn_class_raw/bias:0"]
        assert len(f["relu1"].attrs["weight_names"]) == 0
        assert f["rpn_model"]["rpn_conv_shared/kernel:0"].shape == (3, 3, 4, 5)
        np.testing.assert_array_equal(
            f["conv1/conv1/bias:0"][()], model.get_layer("conv1").bias.numpy())


def test_read_h5_weights_flattens_nested_group(saved):
    model, path = saved
    data = W.read_h5_weights(path)
    assert list(data) == ALL_WEIGHTED
    assert [n for n, _ in data["bn_conv1"]] == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert [n for n, _ in data["rpn_class_raw"]] == ["kernel", "bias"]
    assert data["rpn_class_raw"][0][1].shape == (1, 1, 5, 2)


def test_save_load_round_trip_restores_every_variable(saved):
    source, path = saved
    target = build_model()
    randomize(target, seed=2)
    before = values(target)
    report = W.load_weights_by_name(target, path)
    after = values(target)
    expected = values(source)
    assert set(after) == set(expected)
    for key in expected:
        assert not np.array_equal(before[key], expected[key])  # the load really changed it
        np.testing.assert_array_equal(after[key], expected[key])
    assert report.loaded == ALL_WEIGHTED
    assert report.n_arrays == 2 + 4 + 2 + 2 + 2
    assert report.missing_in_file == [] and report.unused_in_file == [] and report.skipped == []


def test_save_overwrites_atomically_and_keeps_old_file_on_failure(saved, monkeypatch):
    model, path = saved
    old = path.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(W, "_write_layer_group", boom)
    with pytest.raises(RuntimeError):
        W.save_weights_by_name(model, path)
    assert path.read_bytes() == old
    assert os.listdir(path.parent) == ["tiny.h5"]


# ---------------------------------------------------------------------------------------------
# loading by name
# ---------------------------------------------------------------------------------------------
def test_load_by_name_with_extra_and_missing_layers(saved):
    source, path = saved
    target = build_model(with_bn=False, with_bbox=True)
    randomize(target, seed=3)
    bbox_before = layer_values(target, "mrcnn_bbox_fc")
    report = W.load_weights_by_name(target, path)
    assert report.loaded == ["conv1", "rpn_conv_shared", "rpn_class_raw", "mrcnn_class_logits"]
    assert report.missing_in_file == ["mrcnn_bbox_fc"]
    assert report.unused_in_file == ["bn_conv1"]
    assert report.n_arrays == 8
    for name in report.loaded:
        for got, want in zip(layer_values(target, name), layer_values(source, name)):
            np.testing.assert_array_equal(got, want)
    for got, want in zip(layer_values(target, "mrcnn_bbox_fc"), bbox_before):
        np.testing.assert_array_equal(got, want)
    text = str(report)
    assert "loaded 4 layers (8 arrays)" in text
    assert "missing in file (1): mrcnn_bbox_fc" in text
    assert "unused in file (1): bn_conv1" in text


@pytest.mark.parametrize("exclude, excluded", [
    (["mrcnn_class_logits"], ["mrcnn_class_logits"]),
    ([r"rpn_.*", "bn_conv1"], ["bn_conv1", "rpn_conv_shared", "rpn_class_raw"]),
    (["rpn_model"], ["rpn_conv_shared", "rpn_class_raw"]),  # a nested sub-model's name
])
def test_exclude_leaves_layers_untouched(saved, exclude, excluded):
    source, path = saved
    target = build_model()
    randomize(target, seed=4)
    before = {name: layer_values(target, name) for name in ALL_WEIGHTED}
    report = W.load_weights_by_name(target, path, exclude=exclude)
    assert report.excluded == excluded
    assert report.loaded == [n for n in ALL_WEIGHTED if n not in excluded]
    for name in ALL_WEIGHTED:
        want = before[name] if name in excluded else layer_values(source, name)
        for got, exp in zip(layer_values(target, name), want):
            np.testing.assert_array_equal(got, exp)


def test_shape_mismatch_names_every_mismatch_and_assigns_nothing(saved):
    _, path = saved
    target = build_model(conv_filters=6, logits_units=7)
    randomize(target, seed=5)
    before = values(target)
    with pytest.raises(ValueError) as info:
        W.load_weights_by_name(target, path)
    msg = str(info.value)
    assert str(path) in msg
    for expected in ["conv1/kernel: file shape (3, 3, 3, 4) vs model shape (3, 3, 3, 6)",
                     "conv1/bias: file shape (4,) vs model shape (6,)",
                     "bn_conv1/gamma: file shape (4,) vs model shape (6,)",
                     "bn_conv1/moving_variance: file shape (4,) vs model shape (6,)",
                     "rpn_conv_shared/kernel: file shape (3, 3, 4, 5) vs model shape (3, 3, 6, 5)",
                     "mrcnn_class_logits/kernel: file shape (2, 3) vs model shape (2, 7)",
                     "mrcnn_class_logits/bias: file shape (3,) vs model shape (7,)"]:
        assert expected in msg
    assert "rpn_class_raw" not in msg  # its shapes match
    after = values(target)
    for key in before:  # atomic: not even the matching rpn_class_raw was assigned
        np.testing.assert_array_equal(after[key], before[key])


def test_skip_mismatch_skips_only_mismatched_layers(saved):
    source, path = saved
    target = build_model(logits_units=7)
    randomize(target, seed=6)
    logits_before = layer_values(target, "mrcnn_class_logits")
    report = W.load_weights_by_name(target, path, skip_mismatch=True)
    assert [name for name, _ in report.skipped] == ["mrcnn_class_logits"]
    assert "file shape (3,) vs model shape (7,)" in report.skipped[0][1]
    assert report.loaded == ALL_WEIGHTED[:-1]
    assert "mrcnn_class_logits" in report.unused_in_file
    for got, want in zip(layer_values(target, "mrcnn_class_logits"), logits_before):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(layer_values(target, "rpn_class_raw"), layer_values(source, "rpn_class_raw")):
        np.testing.assert_array_equal(got, want)
    assert "skipped (1):" in str(report)


def test_load_by_order_ignores_names_and_checks_counts(saved):
    source, path = saved
    target = build_model(prefix="renamed_")
    report = W.load_weights_by_name(target, path, by_name=False)
    assert report.loaded == ["renamed_" + n for n in ALL_WEIGHTED]
    for src, dst in zip(source.weights, target.weights):
        np.testing.assert_array_equal(dst.numpy(), src.numpy())
    with pytest.raises(ValueError, match="file has 5 weighted layers but the model has 4"):
        W.load_weights_by_name(build_model(with_bn=False), path, by_name=False)
    with pytest.raises(ValueError, match="exclude requires by_name=True"):
        W.load_weights_by_name(target, path, by_name=False, exclude=["conv1"])


# ---------------------------------------------------------------------------------------------
# files written by other tools
# ---------------------------------------------------------------------------------------------
def test_hand_written_matterport_layout_file_loads(tmp_path):
    """model_weights group, chunked bytes layer_names, str attrs, nested prefixed weight names,
    a weightless layer and weight names in a non-canonical order."""
    rng = np.random.default_rng(7)
    arr = lambda *shape: rng.standard_normal(shape).astype("float32")  # noqa: E731
    expected = {
        "conv1": [arr(3, 3, 3, 4), arr(4)],
        "bn_conv1": [arr(4), arr(4), arr(4), arr(4)],
        "rpn_conv_shared": [arr(3, 3, 4, 5), arr(5)],
        "rpn_class_raw": [arr(1, 1, 5, 2), arr(2)],
        "mrcnn_class_logits": [arr(2, 3), arr(3)],
    }
    path = tmp_path / "matterport_style.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("model_weights")
        g.attrs["layer_names0"] = np.array([b"input_image", b"backbone"])
        g.attrs["layer_names1"] = np.array([b"rpn_model", b"mrcnn_class_logits"])
        g.attrs["backend"] = b"tensorflow"
        g.create_group("input_image").attrs["weight_names"] = np.array([], dtype="S1")
        backbone = g.create_group("backbone")  # official-release style: prefix path
        bb_names = ["siamese_backbone/conv1/kernel:0", "siamese_backbone/conv1/bias:0",
                    "siamese_backbone/bn_conv1/moving_mean:0", "siamese_backbone/bn_conv1/gamma:0",
                    "siamese_backbone/bn_conv1/beta:0", "siamese_backbone/bn_conv1/moving_variance:0"]
        bb_values = expected["conv1"] + [expected["bn_conv1"][i] for i in (2, 0, 1, 3)]
        backbone.attrs["weight_names0"] = np.array([n.encode() for n in bb_names[:3]])
        backbone.attrs["weight_names1"] = np.array([n.encode() for n in bb_names[3:]])
        for name, value in zip(bb_names, bb_values):
            backbone.create_dataset(name, data=value)
        rpn = g.create_group("rpn_model")
        rpn_names = ["rpn_conv_shared/kernel:0", "rpn_conv_shared/bias:0",
                     "rpn_class_raw/kernel:0", "rpn_class_raw/bias:0"]
        rpn.attrs["weight_names"] = rpn_names  # h5py stores these as str
        for name, value in zip(rpn_names, expected["rpn_conv_shared"] + expected["rpn_class_raw"]):
            rpn.create_dataset(name, data=value)
        logits = g.create_group("mrcnn_class_logits")  # TF-uniquified scope name
        logits.attrs["weight_names"] = [b"mrcnn_class_logits_1/kernel:0", b"mrcnn_class_logits_1/bias:0"]
        for name, value in zip(["mrcnn_class_logits_1/kernel:0", "mrcnn_class_logits_1/bias:0"],
                               expected["mrcnn_class_logits"]):
            logits.create_dataset(name, data=value.astype("float64"))

    data = W.read_h5_weights(path)
    assert list(data) == ALL_WEIGHTED
    assert [n for n, _ in data["bn_conv1"]] == ["moving_mean", "gamma", "beta", "moving_variance"]

    model = build_model()
    report = W.load_weights_by_name(model, path)
    assert report.loaded == ALL_WEIGHTED and report.n_arrays == 12
    for name, want in expected.items():
        for got, exp in zip(layer_values(model, name), want):
            np.testing.assert_allclose(got, exp, rtol=0, atol=1e-7)


def test_chunked_attribute_writer_round_trips(tmp_path):
    names = [f"layer_with_a_rather_long_name_{i:05d}" for i in range(4000)]
    with h5py.File(tmp_path / "chunks.h5", "w") as f:
        W._write_str_list_attr(f, "layer_names", names)
        assert "layer_names" not in f.attrs and "layer_names0" in f.attrs and "layer_names1" in f.attrs
        assert read_str_list_attr(f, "layer_names") == names


def test_weights_layout_tells_the_four_kinds_of_hdf5_file_apart(tmp_path):
    """The layout test that predict runs before TensorFlow and the loader's own choice agree."""
    from siamese_mask_rcnn.mrcnn.h5layout import weights_layout

    def make(name, fill):
        path = tmp_path / name
        with h5py.File(path, "w") as f:
            fill(f)
        return path

    def layer(group, name, arrays=1):
        W._write_str_list_attr(group, "layer_names", [name])
        layer_group = group.create_group(name)
        W._write_str_list_attr(layer_group, "weight_names", [f"{name}/kernel:0"] * arrays)
        for _ in range(arrays):
            layer_group.create_dataset(f"{name}/kernel:0", data=np.zeros((1, 1, 3, 2), np.float32))

    files = {
        "layer_names": make("legacy.h5", lambda f: layer(f, "conv1")),
        "model_weights": make("full.h5", lambda f: layer(f.create_group("model_weights"), "conv1")),
        "keras3": make("k3.weights.h5", lambda f: f.create_group("layers").create_group("dense")
                       .create_group("vars").create_dataset("0", data=np.zeros(3))),
        None: make("data.h5", lambda f: f.create_dataset("kernel", data=np.zeros(3))),
    }
    empty = [make("no_names.h5", lambda f: W._write_str_list_attr(f, "layer_names", [])),
             make("blank_name.h5", lambda f: W._write_str_list_attr(f, "layer_names", [""])),
             make("no_arrays.h5", lambda f: layer(f, "conv1", arrays=0)),  # layers named, none holds an array
             make("empty_full.h5", lambda f: f.create_group("model_weights")),
             make("no_arrays_full.h5", lambda f: layer(f.create_group("model_weights"), "conv1", arrays=0)),
             make("empty_k3.weights.h5", lambda f: f.create_group("layers")),
             make("no_vars.weights.h5", lambda f: f.create_group("layers").create_group("dense"))]
    for layout, path in files.items():
        with h5py.File(path, "r") as f:
            assert weights_layout(f) == layout, path
    for path in empty:  # a layout's marker with nothing in it: nothing to load
        with h5py.File(path, "r") as f:
            assert weights_layout(f) is None, path
    assert W.is_keras3_weights_file(files["keras3"]) and not W.is_keras3_weights_file(files["layer_names"])
    for path in [files[None], *empty]:
        with pytest.raises(ValueError, match=rf"{path.name} holds no weights"):
            W.read_h5_weight_shapes(path)
    assert W.read_h5_weight_shapes(files["layer_names"]) == {"conv1": [("kernel", (1, 1, 3, 2))]}


def test_write_manifest_h5_resnet50(matterport_layout_dir, tmp_path):
    manifest_path = matterport_layout_dir / "matterport_resnet50_coco_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    out = tmp_path / "out" / "resnet50.h5"
    write_manifest_h5(manifest_path, out, seed=0)
    data = W.read_h5_weights(out)
    flat_names = []
    for layer in manifest["layers"]:
        if layer["class"] == "Model":
            flat_names.extend(layer["nested_layers"])
        else:
            flat_names.append(layer["name"])
    assert len(manifest["layers"]) == 131
    assert list(data) == flat_names
    assert sum(len(v) for v in data.values()) == 384
    for layer in manifest["layers"]:
        for w in layer["weights"]:
            leaf = w["h5_weight_name"].split(":")[0].split("/")
            owner = leaf[-2] if len(leaf) > 1 else layer["name"]
            got = dict(data[owner])[leaf[-1]]
            assert got.shape == tuple(w["shape"]) and got.dtype == np.float32
    assert (dict(data["bn_conv1"])["moving_variance"] > 0).all()
    with h5py.File(out, "r") as f:
        assert len(f.attrs["layer_names"]) == 131
        assert list(f["rpn_model"].attrs["weight_names"])[0] == b"rpn_conv_shared/kernel:0"


def test_write_manifest_h5_is_seeded_and_supports_full_model_layout(tmp_path):
    manifest = {"layers": [
        {"name": "conv1", "h5_group": "conv1", "weights": [
            {"shape": [2, 2, 1, 3], "h5_weight_name": "conv1/kernel:0"},
            {"shape": [3], "h5_weight_name": "conv1/bias:0"}]}]}
    manifest_path = tmp_path / "m.json"
    manifest_path.write_text(json.dumps(manifest))
    a = W.read_h5_weights(write_manifest_h5(manifest_path, tmp_path / "a.h5", seed=3))
    b = W.read_h5_weights(write_manifest_h5(manifest_path, tmp_path / "b.h5", seed=3,
                                              full_model=True))
    c = W.read_h5_weights(write_manifest_h5(manifest_path, tmp_path / "c.h5", seed=4))
    with h5py.File(tmp_path / "b.h5", "r") as f:
        assert "layer_names" not in f.attrs and "model_weights" in f
    np.testing.assert_array_equal(a["conv1"][0][1], b["conv1"][0][1])
    assert not np.array_equal(a["conv1"][0][1], c["conv1"][0][1])


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_missing_file_error_names_path(tmp_path):
    missing = tmp_path / "nope" / "weights.h5"
    with pytest.raises(FileNotFoundError, match="nope"):
        W.read_h5_weights(missing)
    with pytest.raises(FileNotFoundError) as info:
        W.load_weights_by_name(build_model(), missing)
    assert str(missing) in str(info.value)


def test_non_hdf5_and_non_legacy_files_are_rejected(tmp_path):
    text = tmp_path / "weights.h5"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match="not an HDF5 weights file: .*weights.h5"):
        W.read_h5_weights(text)
    keras3 = tmp_path / "k3.weights.h5"
    model = build_model()
    model.save_weights(keras3)
    with pytest.raises(ValueError, match="Keras 3 '.weights.h5' file"):
        W.read_h5_weights(keras3)
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        write_manifest_h5(tmp_path / "none.json", tmp_path / "x.h5")
