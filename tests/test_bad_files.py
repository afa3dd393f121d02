"""Bad weight files, URLs and extreme image shapes given to ``predict`` and evaluation
(issue: bad input). User errors exit with code 2 and a message naming the file."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from siamese_mask_rcnn import cli
from siamese_mask_rcnn.mrcnn.resizing import resize_image, resize_mask
from siamese_mask_rcnn.predict import InputError, load_model

from conftest import TINY_INFERENCE  # noqa: E402


def run_cli(*argv):
    return cli.main(["predict", *map(str, argv)])


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    shapes = {"ref": (40, 40), "query": (96, 128), "wide": (3, 2000), "tall": (2000, 3), "line": (1, 2000),
              "column": (2000, 1), "dot": (1, 1)}
    paths = {}
    for name, (h, w) in shapes.items():
        paths[name] = folder / f"{name}.png"
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(paths[name])
    return paths


@pytest.fixture(scope="module")
def weights(always_match_checkpoint):
    return always_match_checkpoint


# ------------------------------------------------------------------------------ URLs
@pytest.mark.parametrize("role", ["query", "reference"])
@pytest.mark.parametrize("url", ["https://example.com/cat.jpg", "http://images.cocodataset.org/val2017/1.jpg",
                                 "s3://bucket/cat.png", "file:///tmp/cat.png"])
def test_url_input_exits_2_saying_only_local_files(pictures, weights, capsys, role, url):
    args = {"query": pictures["query"], "reference": pictures["ref"], role: url}
    code = run_cli("--weights", weights, "--reference", args["reference"], "--query", args["query"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{role} image {url} is a URL: only local files are read" in err  # the URL kept intact


# ------------------------------------------------------------------ extreme aspect ratios
@pytest.mark.parametrize("h, w", [(3, 2000), (2000, 3), (1, 2000), (2000, 1), (1, 1), (1, 5)])
@pytest.mark.parametrize("mode, min_dim, max_dim", [("square", 128, 128), ("square", 150, 192), ("pad64", 64, None)])
def test_resize_keeps_at_least_one_pixel_per_side(h, w, mode, min_dim, max_dim):
    image = np.full((h, w, 3), 200, np.uint8)
    resized, window, scale, padding, _ = resize_image(image, min_dim=min_dim, max_dim=max_dim, mode=mode)
    y1, x1, y2, x2 = window
    assert y2 - y1 >= 1 and x2 - x1 >= 1
    assert (resized[y1:y2, x1:x2] == 200).all()
    mask = resize_mask(np.ones((h, w, 1), bool), scale, padding)
    assert mask.shape[:2] == resized.shape[:2] and mask[y1:y2, x1:x2].all() and mask.sum() == (y2 - y1) * (x2 - x1)


@pytest.mark.parametrize("original, box", [((3, 2000), (0, 500, 3, 1000)), ((2000, 3), (100, 0, 900, 3))])
def test_unmold_detections_through_a_one_pixel_window(original, box):
    """A 2000x3 image becomes a 1-pixel-thin window; a detection covering the window's
    full thin side maps back to the full 3 pixels of the original, without NaN."""
    from siamese_mask_rcnn.mrcnn.boxes import norm_boxes
    from siamese_mask_rcnn.mrcnn.molding import unmold_detections

    image = np.zeros(original + (3,), np.uint8)
    molded, window, scale, _, _ = resize_image(image, min_dim=128, max_dim=128, mode="square")
    y1, x1, y2, x2 = box
    molded_box = np.array([y1 * scale + window[0], x1 * scale + window[1],
                           y2 * scale + window[0], x2 * scale + window[1]])
    molded_box[[0, 1]] = np.floor(molded_box[[0, 1]])
    molded_box[[2, 3]] = np.maximum(np.ceil(molded_box[[2, 3]]), molded_box[[0, 1]] + 1)
    detections = np.zeros((1, 6))
    detections[0, :4] = norm_boxes(molded_box[None], molded.shape[:2])[0]
    detections[0, 4:] = [1, 0.9]
    masks = np.ones((1, 28, 28, 1), np.float32)
    with np.errstate(all="raise"):
        boxes, class_ids, scores, full = unmold_detections(detections, masks, original + (3,), molded.shape,
                                                           np.array(window))
    assert len(boxes) == 1 and full.shape == original + (1,)
    thin = 0 if original[0] == 3 else 1
    assert boxes[0][thin] == 0 and boxes[0][thin + 2] == 3          # the whole thin side
    long_side = 1 - thin
    assert abs(boxes[0][long_side] - box[long_side]) <= 16 and abs(boxes[0][long_side + 2] - box[long_side + 2]) <= 16
    assert full[..., 0].sum() > 0


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("query, reference", [("wide", "ref"), ("tall", "ref"), ("line", "ref"), ("column", "ref"),
                                              ("dot", "ref"), ("query", "wide"), ("query", "column")])
def test_extreme_aspect_ratios_work_end_to_end(pictures, weights, tmp_path, capsys, query, reference):
    out = tmp_path / "r.json"
    code = run_cli("--weights", weights, "--reference", pictures[reference], "--query", pictures[query],
                   "--json", out)
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    h, w = Image.open(pictures[query]).size[::-1]
    assert all(d["mask_rle"]["size"] == [h, w] for d in result["detections"])
    assert all(0 <= d["box_yxyx"][0] <= d["box_yxyx"][2] <= h and 0 <= d["box_yxyx"][1] <= d["box_yxyx"][3] <= w
               for d in result["detections"])


# ------------------------------------------------------------------------ weight files
def _copy(weights, folder, name=None, with_config=True):
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or weights.name)
    shutil.copy(weights, target)
    if with_config:
        shutil.copy(weights.parent / "config.json", folder / "config.json")
    return target


@pytest.mark.parametrize("keep", [0.5, 0.9, 2000, 100])
def test_truncated_h5_exits_2_naming_the_path(weights, pictures, tmp_path, capsys, keep):
    path = _copy(weights, tmp_path / "run")
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep) if keep < 1 else keep])
    code = run_cli("--weights", path, "--reference", pictures["ref"], "--query", pictures["query"])
    assert code == 2
    err = capsys.readouterr().err
    assert str(path) in err and ("truncated or corrupt" in err or "not an HDF5 weights file" in err)
    assert "Traceback" not in err


def test_not_hdf5_exits_2(pictures, tmp_path, capsys):
    path = tmp_path / "run" / "w.h5"
    path.parent.mkdir()
    path.write_bytes(b"\x00" * 5000)
    code = run_cli("--weights", path, "--reference", pictures["ref"], "--query", pictures["query"])
    assert code == 2 and f"not an HDF5 weights file: {path}" in capsys.readouterr().err


def test_checkpoint_without_config_says_which_preset_was_assumed(weights, pictures, tmp_path, capsys):
    path = _copy(weights, tmp_path / "alone", with_config=False)
    # Without --preset the preset is inferred from the file's shapes, and said.
    code = run_cli("--weights", path, "--reference", pictures["ref"], "--query", pictures["query"])
    assert code == 0
    assert "no config.json beside" in capsys.readouterr().err
    # A preset that does not fit: the message says which preset was used (the user's
    # --preset, not an "assumption") and how to pass --config.
    code = run_cli("--weights", path, "--preset", "small", "--reference", pictures["ref"],
                   "--query", pictures["query"])
    assert code == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert f"no config was found (no --config, no {tmp_path / 'alone' / 'config.json'}): used the preset 'small' you chose" in err
    assert "--config FILE" in err and "skip_mismatch" not in err
    # with --config it loads
    code = run_cli("--weights", path, "--config", weights.parent / "config.json", "--reference", pictures["ref"],
                   "--query", pictures["query"])
    assert code == 0


def _tiny_model():
    from siamese_mask_rcnn.demo import demo_config
    from siamese_mask_rcnn.siamese import SiameseMaskRCNN
    return SiameseMaskRCNN("inference", demo_config(**TINY_INFERENCE), model_dir="logs")


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_keras3_weights_file_loads_natively(weights, pictures, tmp_path, capsys):
    legacy = load_model(str(weights))
    folder = tmp_path / "k3"
    folder.mkdir()
    shutil.copy(weights.parent / "config.json", folder / "config.json")
    native = folder / "model.weights.h5"
    legacy.keras_model.save_weights(str(native))
    model = load_model(str(native))
    for a, b in zip(legacy.keras_model.weights, model.keras_model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    out_legacy, out_native = tmp_path / "a.json", tmp_path / "b.json"
    assert run_cli("--weights", weights, "--reference", pictures["ref"], "--query", pictures["query"],
                   "--json", out_legacy) == 0
    assert run_cli("--weights", native, "--reference", pictures["ref"], "--query", pictures["query"],
                   "--json", out_native) == 0
    assert json.loads(out_legacy.read_text())["detections"] == json.loads(out_native.read_text())["detections"]
    # the same bytes under a plain ".h5" name load too
    shutil.copy(native, folder / "renamed.h5")
    load_model(str(folder / "renamed.h5"))


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_keras3_weights_file_without_config_json_gets_its_preset_from_its_shapes(weights, pictures, tmp_path,
                                                                                 capsys):
    from siamese_mask_rcnn.predict import infer_preset
    legacy = load_model(str(weights))
    folder = tmp_path / "k3_alone"
    folder.mkdir()
    native = folder / "model.weights.h5"
    legacy.keras_model.save_weights(str(native))
    assert infer_preset(str(native))[0] == "tiny"
    out = tmp_path / "alone.json"
    assert run_cli("--weights", native, "--reference", pictures["ref"], "--query", pictures["query"],
                   "--json", out) == 0
    assert "assuming preset 'tiny'" in capsys.readouterr().err
    assert "detections" in json.loads(out.read_text())


def test_keras3_weights_file_of_another_model_exits_2(pictures, tmp_path, capsys):
    import keras
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    folder = tmp_path / "other"
    folder.mkdir()
    path = folder / "other.weights.h5"
    other.save_weights(str(path))
    code = run_cli("--weights", path, "--reference", pictures["ref"], "--query", pictures["query"])
    assert code == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Keras 3 .weights.h5 file that does not fit this model" in err


def _partial_file(weights, path, keep):
    """A legacy .h5 with only the layers of ``weights`` whose names satisfy ``keep``."""
    from siamese_mask_rcnn.mrcnn import weights as W
    model = load_model(str(weights))
    import h5py
    layers = W.read_h5_weights(str(weights))
    with h5py.File(path, "w") as h5:
        names = [n for n in layers if keep(n)]
        h5.attrs["layer_names"] = np.array([n.encode() for n in names])
        for name in names:
            group = h5.create_group(name)
            group.attrs["weight_names"] = np.array([f"{name}/{w}:0".encode() for w, _ in layers[name]])
            for w, array in layers[name]:
                group.create_dataset(f"{name}/{w}:0", data=array)
    return model


def _unrelated_file(path):
    from siamese_mask_rcnn.mrcnn import weights as W
    import keras
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="unrelated_dense")])
    W.save_weights_by_name(model, str(path))


def test_unrelated_legacy_h5_is_refused_listing_missing_layers(weights, pictures, tmp_path, capsys):
    path = tmp_path / "run" / "unrelated.h5"
    path.parent.mkdir()
    shutil.copy(weights.parent / "config.json", path.parent / "config.json")
    _unrelated_file(path)
    code = run_cli("--weights", path, "--reference", pictures["ref"], "--query", pictures["query"])
    assert code == 2
    err = capsys.readouterr().err
    total = len(list(__import__("siamese_mask_rcnn.mrcnn.weights", fromlist=["x"]).iter_weighted_layers(
        _tiny_model().keras_model)))
    assert f"{path} fills only 0 of the model's {total} weighted layers; {total} missing:" in err
    assert "mrcnn_class_logits" in err or "..." in err
    assert "--allow-partial" in err
    code = run_cli("--weights", path, "--reference", pictures["ref"], "--query", pictures["query"], "--allow-partial")
    assert code == 0


def test_legacy_h5_without_the_heads_is_refused_unless_excluded(weights, tmp_path):
    path = tmp_path / "run" / "no_heads.h5"
    path.parent.mkdir()
    shutil.copy(weights.parent / "config.json", path.parent / "config.json")
    full = _partial_file(weights, path, keep=lambda n: not n.startswith("mrcnn_"))
    heads = [n for n, _ in __import__("siamese_mask_rcnn.mrcnn.weights", fromlist=["x"]).iter_weighted_layers(
        full.keras_model) if n.startswith("mrcnn_")]
    with pytest.raises(InputError) as info:
        load_model(str(path))
    message = str(info.value)
    assert f"{len(heads)} missing: " in message and all(h in message for h in heads[:5])
    load_model(str(path), exclude=[r"mrcnn_.*"])          # excluded on purpose: accepted
    load_model(str(path), allow_partial=True)


def test_evaluation_refuses_a_partial_file(weights, tmp_path, coco_subset_dir, coco_subset_annotations):
    from siamese_mask_rcnn.demo import demo_config
    from siamese_mask_rcnn.predict import build_predictor

    path = tmp_path / "run" / "unrelated.h5"
    path.parent.mkdir()
    _unrelated_file(path)
    with pytest.raises(InputError, match="fills only 0 of the model's"):
        build_predictor(str(path), config=demo_config(**TINY_INFERENCE))
    build_predictor(str(path), config=demo_config(**TINY_INFERENCE), allow_partial=True)
    shutil.copy(weights.parent / "config.json", path.parent / "config.json")
    script = __import__("pathlib").Path(__file__).resolve().parents[1] / "samples" / "coco" / "evaluate_siamese.py"
    proc = subprocess.run([sys.executable, str(script), "--annotations", str(coco_subset_annotations), "--images",
                           str(coco_subset_dir / "images"), "--weights", str(path), "--limit", "1", "--quiet",
                           "--out", str(tmp_path / "eval")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{path} fills only 0 of the model's" in proc.stderr and "Traceback" not in proc.stderr
