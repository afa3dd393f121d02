"""``siamese-mrcnn predict`` and ``siamese_mask_rcnn.predict.predict`` on your own files.

The weights come from a tiny untrained model whose classifier is set so that every proposal is
a "match" with probability exactly 0.75 (zero kernel, logit bias ``[0, ln 3]``): every
detection then has score 0.75, which makes the score threshold testable by hand.
"""
import json

import numpy as np
import pytest

from siamese_mask_rcnn import cli
from siamese_mask_rcnn import predict as predict_module
from siamese_mask_rcnn.predict import InputError, predict, read_user_image, resolve_config

from conftest import MATCH_SCORE, TINY_INFERENCE  # noqa: E402

QUERY_SHAPE = (100, 128, 3)  # not square: masks must come back at the query's size


@pytest.fixture(scope="module")
def weights(always_match_checkpoint):
    return always_match_checkpoint


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A reference PNG and a query PNG from the embedded data, plus their arrays."""
    from skimage import io as skio

    from siamese_mask_rcnn.datasets.synthetic import make_train_val

    folder = tmp_path_factory.mktemp("images")
    _, scenes = make_train_val(num_train=1, num_val=2, seed=3)
    class_id = scenes.image_categories[0][0]
    reference = scenes.sample_reference(class_id, np.random.default_rng(0), exclude_image_id=0)
    query = np.ascontiguousarray(scenes.load_image(0)[:QUERY_SHAPE[0]])
    skio.imsave(folder / "reference.png", reference, check_contrast=False)
    skio.imsave(folder / "query.png", query, check_contrast=False)
    return {"reference": folder / "reference.png", "query": folder / "query.png",
            "reference_array": reference, "query_array": query}


@pytest.fixture(scope="module")
def model(weights):
    return predict_module.load_model(str(weights))


def run_cli(*argv):
    return cli.main(["predict", *map(str, argv)])


# ------------------------------------------------------------------ command line, good input
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools on numpy 2
def test_cli_writes_png_and_json(weights, images, tmp_path, capsys):
    out_png, out_json = tmp_path / "out" / "result.png", tmp_path / "out" / "result.json"
    code = run_cli("--weights", weights, "--reference", images["reference"], "--query", images["query"],
                   "--out", out_png, "--json", out_json)
    assert code == 0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    payload = json.loads(out_json.read_text())
    assert set(payload) >= {"query", "references", "count", "detections"} and payload["warnings"] == []
    assert payload["query"] == str(images["query"]) and payload["references"] == [str(images["reference"])]
    assert 1 <= payload["count"] == len(payload["detections"]) <= TINY_INFERENCE["DETECTION_MAX_INSTANCES"]
    assert f"{payload['count']} detections" in capsys.readouterr().out

    from pycocotools import mask as mask_util
    for det in payload["detections"]:
        assert set(det) >= {"score", "box_yxyx", "box_xywh", "mask_rle", "mask_area"}
        assert det["score"] == pytest.approx(MATCH_SCORE, abs=1e-4)
        y1, x1, y2, x2 = det["box_yxyx"]
        assert det["box_xywh"] == [x1, y1, x2 - x1, y2 - y1]
        assert 0 <= y1 <= y2 <= QUERY_SHAPE[0] and 0 <= x1 <= x2 <= QUERY_SHAPE[1]
        assert det["mask_rle"]["size"] == list(QUERY_SHAPE[:2])
        rle = {"size": det["mask_rle"]["size"], "counts": det["mask_rle"]["counts"].encode()}
        mask = mask_util.decode([rle])[:, :, 0]
        assert mask.shape == QUERY_SHAPE[:2] and int(mask.sum()) == det["mask_area"]


def test_cli_min_confidence_above_every_score_finds_nothing(weights, images, tmp_path, capsys):
    out_json = tmp_path / "none.json"
    code = run_cli("--weights", weights, "--reference", images["reference"], "--query", images["query"],
                   "--json", out_json, "--min-confidence", "0.8")
    assert code == 0
    assert json.loads(out_json.read_text())["count"] == 0
    assert capsys.readouterr().out.startswith("0 detections")


def test_cli_score_rule_foreground_keeps_what_the_background_outscores(images, tmp_path, capsys):
    from conftest import constant_score_checkpoint

    unsure = constant_score_checkpoint(tmp_path / "unsure_run", 0.3)  # match 0.3, background 0.7
    args = ("--weights", unsure, "--reference", images["reference"], "--query", images["query"])
    assert run_cli(*args, "--json", tmp_path / "argmax.json", "--min-confidence", "0.2") == 0
    assert json.loads((tmp_path / "argmax.json").read_text())["count"] == 0
    assert run_cli(*args, "--json", tmp_path / "fg.json", "--min-confidence", "0.2", "--score-rule", "foreground") == 0
    payload = json.loads((tmp_path / "fg.json").read_text())
    assert payload["count"] >= 1 and payload["score_rule"] == "foreground"
    assert [d["score"] for d in payload["detections"]] == pytest.approx([0.3] * payload["count"], abs=1e-5)
    assert payload["max_detections"] == TINY_INFERENCE["DETECTION_MAX_INSTANCES"]
    assert run_cli(*args, "--json", tmp_path / "cap.json", "--min-confidence", "0.2", "--score-rule", "foreground",
                   "--max-detections", "1") == 0
    capped = json.loads((tmp_path / "cap.json").read_text())
    assert capped["count"] == 1 and capped["max_detections"] == 1
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_cli(*args, "--score-rule", "best")
    assert "invalid choice: 'best'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_cli(*args, "--max-detections", "0")
    assert "--max-detections must be >= 1" in capsys.readouterr().err
    assert run_cli(*args, "--max-detections", "51") == 2  # the tiny model scores 50 proposals
    assert "max_detections must be at most the 50 proposals" in capsys.readouterr().err


def test_python_predict_refuses_loading_options_with_a_loaded_model(model, images):
    for option in ({"min_confidence": 0.9}, {"score_rule": "argmax"}, {"max_detections": 3},
                   {"min_similarity": 0.5}, {"known_margin": 0.1}):
        with pytest.raises(ValueError, match=f"{next(iter(option))} applies when the model is loaded"):
            predict(None, images["reference"], images["query"], model=model, **option)


@pytest.mark.parametrize("kwargs, message", [
    ({"score_rule": "fg"}, "score_rule must be one of ('argmax', 'foreground'), got 'fg'"),
    ({"min_confidence": float("nan")}, "min_confidence must be a number in [0, 1], got nan"),
    ({"min_confidence": 2}, "min_confidence must be a number in [0, 1], got 2"),
    ({"max_detections": 0}, "max_detections must be a whole number >= 1, got 0"),
    ({"max_detections": 2.5}, "max_detections must be a whole number >= 1, got 2.5"),
    ({"max_detections": 10 ** 6}, "max_detections must be at most the 50 proposals the model scores "
                                  "(POST_NMS_ROIS_INFERENCE), got 1000000"),
])
def test_load_model_names_the_bad_argument_not_the_config_file(weights, kwargs, message):
    with pytest.raises(ValueError) as info:
        predict_module.load_model(str(weights), **kwargs)
    assert str(info.value) == message


# ------------------------------------------------------------------------------ Python API
def test_python_predict_returns_image_sized_masks(model, images):
    result = predict(None, images["reference"], images["query"], model=model)
    n = len(result["scores"])
    assert n >= 1
    assert result["rois"].shape == (n, 4)
    assert result["masks"].shape == QUERY_SHAPE[:2] + (n,) and result["masks"].dtype == bool
    assert np.allclose(result["scores"], MATCH_SCORE, atol=1e-4)
    assert np.all(result["class_ids"] == 1)
    # arrays work as well as paths (PNG is lossless: same pixels, same result)
    from_arrays = predict(None, [images["reference_array"]], images["query_array"], model=model)
    np.testing.assert_array_equal(from_arrays["rois"], result["rois"])
    np.testing.assert_array_equal(from_arrays["masks"], result["masks"])


def test_k_shot_of_identical_references_equals_one_shot(model, images):
    ref = images["reference_array"]
    one = predict(None, [ref], images["query_array"], model=model)
    three = predict(None, [ref, ref, ref], images["query_array"], model=model)
    np.testing.assert_array_equal(three["rois"], one["rois"])
    np.testing.assert_allclose(three["scores"], one["scores"], atol=1e-6)


def test_build_predictor_gives_the_evaluation_predict_fn(weights, model, images):
    """``build_predictor`` (the evaluation's entry point) loads the checkpoint with the config
    beside it, or with an explicit config, and detects per category like ``predict``."""
    expected = predict(None, images["reference_array"], images["query_array"], model=model)
    for predictor in (predict_module.build_predictor(str(weights)),
                      predict_module.build_predictor(str(weights), config=model.config)):
        results = predictor(images["query_array"], {7: [images["reference_array"]]})
        assert set(results) == {7}
        np.testing.assert_array_equal(results[7]["rois"], expected["rois"])
        np.testing.assert_allclose(results[7]["scores"], MATCH_SCORE, atol=1e-4)
    with pytest.raises(InputError, match="no_such.h5"):
        predict_module.build_predictor("no_such.h5", config=model.config)


def test_resolve_config_reads_config_beside_weights(weights, tmp_path):
    config = resolve_config(str(weights))
    assert (config.IMAGES_PER_GPU, config.MATCHING_CHANNELS, config.DETECTION_MAX_INSTANCES) == (1, 24, 5)
    assert list(config.IMAGE_SHAPE) == [128, 128, 3]
    lonely = tmp_path / "w.h5"
    lonely.write_bytes(b"")
    fallback = resolve_config(str(lonely), preset="small")
    assert list(fallback.IMAGE_SHAPE) == [512, 512, 3] and fallback.IMAGES_PER_GPU == 1
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(InputError) as info:  # the API path (no pre-check): the file named once
        resolve_config(str(lonely), config_path=str(broken))
    assert str(info.value).count(str(broken)) == 1 and "not valid JSON" in str(info.value)


# ------------------------------------------------------------------- bad input: exit code 2
@pytest.fixture
def no_model(monkeypatch):
    """Fail if anything tries to build a model (input errors must come first)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")
    monkeypatch.setattr(predict_module, "load_model", refuse)


@pytest.fixture
def files(tmp_path, images):
    """Good and bad input files; ``weights`` is a placeholder in the legacy weights layout
    that must never be loaded."""
    (tmp_path / "notes.jpg").write_bytes(b"this is text, not a JPEG\n")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    import h5py
    with h5py.File(tmp_path / "w.h5", "w") as h5:  # the legacy layout with one array (never loaded)
        h5.attrs["layer_names"] = np.array([b"conv1"])
        h5.create_group("conv1").attrs["weight_names"] = np.array([b"conv1/kernel:0"])
        h5["conv1"].create_dataset("conv1/kernel:0", data=np.zeros((1, 1, 3, 2), np.float32))
    return {"missing_ref": tmp_path / "missing_reference.png", "missing_query": tmp_path / "missing_query.png",
            "text": tmp_path / "notes.jpg", "empty": tmp_path / "empty.png", "dir": tmp_path / "folder",
            "ref": images["reference"], "query": images["query"], "weights": tmp_path / "w.h5"}


@pytest.mark.parametrize("reference, query, bad, words", [
    ("missing_ref", "query", "missing_ref", "reference image not found"),
    ("ref", "missing_query", "missing_query", "query image not found"),
    ("text", "query", "text", "not a readable image"),
    ("ref", "text", "text", "not a readable image"),
    ("empty", "query", "empty", "not a readable image"),
    ("dir", "query", "dir", "directory"),
    ("ref", "dir", "dir", "directory"),
], ids=["missing-reference", "missing-query", "text-reference", "text-query", "empty-file",
        "directory-reference", "directory-query"])
def test_bad_input_exits_2_naming_the_file(files, no_model, capsys, reference, query, bad, words):
    code = run_cli("--weights", files["weights"], "--reference", files[reference], "--query", files[query])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("siamese-mrcnn predict: error:")
    assert str(files[bad]) in err and words in err


@pytest.mark.parametrize("which", ["reference", "query", "weights"])
def test_missing_files_are_reported_before_tensorflow_is_set_up(files, tmp_path, monkeypatch, capsys, which):
    """The CLI checks its files before ``--threads`` imports TensorFlow (seconds)."""
    from siamese_mask_rcnn import demo as demo_job

    def no_tensorflow(*args, **kwargs):
        raise AssertionError("TensorFlow set up before the missing file was reported")
    monkeypatch.setattr(demo_job, "apply_thread_arguments", no_tensorflow)
    paths = {"reference": files["ref"], "query": files["query"], "weights": files["weights"]}
    paths[which] = tmp_path / f"missing_{which}.png"
    code = run_cli("--weights", paths["weights"], "--reference", paths["reference"], "--query", paths["query"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("siamese-mrcnn predict: error:") and f"missing_{which}.png" in err


@pytest.mark.parametrize("name, content, words", [
    ("notes.h5", b"plain text, not HDF5", "not an HDF5 weights file: {path}"),
    ("cut.h5", None, "cannot read weights file {path}: truncated or corrupt HDF5 file"),
    ("no_weights.h5", "hdf5", "{path} holds no weights: not one weight array under a 'layer_names' attribute"),
    ("empty_group.h5", "model_weights", "{path} holds no weights"),
    ("empty_layers.h5", "empty_layers", "{path} holds no weights"),
])
def test_weights_files_that_hold_no_weights_are_reported_before_tensorflow(files, tmp_path, monkeypatch, capsys,
                                                                   name, content, words):
    import h5py

    from siamese_mask_rcnn import demo as demo_job

    def no_tensorflow(*args, **kwargs):
        raise AssertionError("TensorFlow set up before the bad weights file was reported")
    monkeypatch.setattr(demo_job, "apply_thread_arguments", no_tensorflow)
    path = tmp_path / name
    if content == "hdf5":  # a valid HDF5 file that holds arrays but no weights layout
        with h5py.File(path, "w") as f:
            f.create_dataset("kernel", data=np.arange(10, dtype=np.float32))
    elif content == "model_weights":  # the full-model layout's group, empty
        with h5py.File(path, "w") as f:
            f.create_group("model_weights")
    elif content == "empty_layers":  # layers named, each group there, but not one array
        with h5py.File(path, "w") as f:
            f.attrs["layer_names"] = np.array([b"conv1", b""])
            f.create_group("conv1").attrs["weight_names"] = np.array([], dtype="S1")
    elif content is None:  # a real HDF5 file cut in half
        with h5py.File(path, "w") as f:
            f.create_dataset("kernel", data=np.arange(20000, dtype=np.float32))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)
    code = run_cli("--weights", path, "--reference", files["ref"], "--query", files["query"])
    assert code == 2
    err = capsys.readouterr().err
    assert words.format(path=path) in err and err.count(str(path)) == 1


@pytest.mark.parametrize("bad", ["text", "empty"])
def test_corrupt_images_and_a_missing_config_are_reported_before_tensorflow(files, tmp_path, monkeypatch,
                                                                           capsys, bad):
    from siamese_mask_rcnn import demo as demo_job

    def no_tensorflow(*args, **kwargs):
        raise AssertionError("TensorFlow set up before the bad input was reported")
    monkeypatch.setattr(demo_job, "apply_thread_arguments", no_tensorflow)
    code = run_cli("--weights", files["weights"], "--reference", files[bad], "--query", files["query"])
    assert code == 2
    assert f"reference image {files[bad]} is not a readable image" in capsys.readouterr().err
    code = run_cli("--weights", files["weights"], "--reference", files["ref"], "--query", files["query"],
                   "--config", tmp_path / "nope.json")
    assert code == 2
    assert f"config file not found: {tmp_path / 'nope.json'}" in capsys.readouterr().err
    code = run_cli("--weights", files["weights"], "--reference", files["ref"], "--query", files["query"],
                   "--config", files["text"])
    assert code == 2
    assert f"config file {files['text']} cannot be used: not valid JSON" in capsys.readouterr().err


def test_a_bad_output_creates_no_folder_for_the_other(files, tmp_path, no_model, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("a file")
    code = run_cli("--weights", files["weights"], "--reference", files["ref"], "--query", files["query"],
                   "--out", tmp_path / "new" / "deep" / "x.png", "--json", blocker / "x.json")
    assert code == 2
    assert f"the output folder {blocker} is a file, not a folder" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("bad", ["weights", "reference", "config"])
def test_a_bad_input_creates_no_output_folder(files, tmp_path, no_model, capsys, bad):
    args = {"--weights": files["weights"], "--reference": files["ref"], "--query": files["query"]}
    if bad == "config":
        args["--config"] = files["text"]
    else:
        args[f"--{bad}"] = files["text"]
    code = run_cli(*[v for item in args.items() for v in item],
                   "--out", tmp_path / "new" / "x.png", "--json", tmp_path / "other" / "x.json")
    assert code == 2 and str(files["text"]) in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and not (tmp_path / "other").exists()


@pytest.mark.parametrize("where", ["--config", "beside the weights"])
@pytest.mark.parametrize("content, words", [
    ("[1, 2]", "expected a JSON object of configuration keys and values, got a JSON list"),
    ('{"DETECTION_MIN_CONFIDENCE": "x"}', "DETECTION_MIN_CONFIDENCE must be"),
    ("{not json", "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8 text"),
])
def test_config_values_are_checked_before_tensorflow(files, tmp_path, monkeypatch, capsys, content, words, where):
    """An explicit --config, or the run's config.json that predict reads from beside the weights."""
    from siamese_mask_rcnn import demo as demo_job

    def no_tensorflow(*args, **kwargs):
        raise AssertionError("TensorFlow set up before the bad config was reported")
    monkeypatch.setattr(demo_job, "apply_thread_arguments", no_tensorflow)
    if where == "--config":
        bad = tmp_path / "bad_config.json"
        option = ["--config", bad]
    else:
        bad = files["weights"].parent / "config.json"
        option = []
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    code = run_cli("--weights", files["weights"], "--reference", files["ref"], "--query", files["query"],
                   *option, "--out", tmp_path / "new" / "x.png")
    assert code == 2
    err = capsys.readouterr().err
    assert f"config file {bad} cannot be used" in err and words in err
    assert not (tmp_path / "new").exists()


def test_unknown_config_keys_are_named_not_silently_dropped(weights, tmp_path, capsys):
    import pathlib
    beside = json.loads((pathlib.Path(weights).parent / "config.json").read_text())
    resolve_config(str(weights))
    assert "unknown key" not in capsys.readouterr().err  # the run's own config: nothing to say
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({**beside, "DETECTION_MIN_CONFIDENCEE": 0.99}))
    config = resolve_config(str(weights), config_path=str(typo))
    err = capsys.readouterr().err
    assert f"config file {typo}: unknown key(s) DETECTION_MIN_CONFIDENCEE ignored" in err
    assert config.DETECTION_MIN_CONFIDENCE == beside["DETECTION_MIN_CONFIDENCE"]


@pytest.mark.parametrize("which", ["reference", "query", "weights", "weights-directory", "config"])
def test_unreadable_files_are_reported_before_tensorflow_is_set_up(files, monkeypatch, capsys, which):
    """Files that exist but cannot be read (permissions: simulated, since root reads
    everything) and a directory given as --weights are refused before TensorFlow starts."""
    import builtins

    from siamese_mask_rcnn import demo as demo_job

    def no_tensorflow(*args, **kwargs):
        raise AssertionError("TensorFlow set up before the unreadable file was reported")
    monkeypatch.setattr(demo_job, "apply_thread_arguments", no_tensorflow)
    paths = {"reference": files["ref"], "query": files["query"], "weights": files["weights"]}
    if which == "config":  # the run's config.json beside the weights, read when --config is not given
        paths["config"] = files["weights"].parent / "config.json"
        paths["config"].write_text("{}")
    if which == "weights-directory":
        paths["weights"] = files["dir"]
        words = "weights file is a directory"
    else:
        locked = str(paths[which])
        real_open = builtins.open

        def open_refusing(path, *args, **kwargs):
            if str(path) == locked:
                raise PermissionError(13, "Permission denied", locked)
            return real_open(path, *args, **kwargs)
        monkeypatch.setattr(predict_module, "open", open_refusing, raising=False)
        words = "cannot be read (Permission denied)"
    code = run_cli("--weights", paths["weights"], "--reference", paths["reference"], "--query", paths["query"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("siamese-mrcnn predict: error:") and words in err
    assert str(paths["weights" if which.startswith("weights") else which]) in err


def test_bad_second_reference_is_named(files, no_model, capsys):
    code = run_cli("--weights", files["weights"], "--reference", files["ref"], "--reference", files["text"],
                   "--query", files["query"])
    assert code == 2
    assert str(files["text"]) in capsys.readouterr().err


def test_missing_weights_and_config_exit_2(files, tmp_path, capsys):
    code = run_cli("--weights", tmp_path / "nope.h5", "--reference", files["ref"], "--query", files["query"])
    assert code == 2
    assert f"weights file not found: {tmp_path / 'nope.h5'}" in capsys.readouterr().err
    code = run_cli("--weights", files["weights"], "--config", tmp_path / "nope.json", "--reference", files["ref"],
                   "--query", files["query"])
    assert code == 2
    assert f"config file not found: {tmp_path / 'nope.json'}" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    code = run_cli("--weights", files["weights"], "--config", broken, "--reference", files["ref"],
                   "--query", files["query"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"config file {broken} cannot be used" in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_min_confidence_outside_zero_one_exits_2(files, value, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli("--weights", files["weights"], "--reference", files["ref"], "--query", files["query"],
                "--min-confidence", value)
    assert info.value.code == 2
    assert f"--min-confidence must be in [0, 1], got {float(value)}" in capsys.readouterr().err


def test_read_user_image_converts_to_rgb(tmp_path):
    from skimage import io as skio

    grey = (np.arange(12 * 10) % 256).astype(np.uint8).reshape(12, 10)
    skio.imsave(tmp_path / "grey.png", grey, check_contrast=False)
    image = read_user_image(tmp_path / "grey.png", "reference")
    assert image.shape == (12, 10, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 1], grey)
    with pytest.raises(InputError, match="query image not found"):
        read_user_image(tmp_path / "absent.png", "query")


def test_predict_command_requires_reference_and_query(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["predict", "--weights", "w.h5", "--query", "q.png"])
    assert info.value.code == 2
    assert "--reference" in capsys.readouterr().err


def test_the_weights_layout_check_runs_without_tensorflow(project_root, tmp_path):
    """predict's weights check (HDF5, then a layout the loader reads) imports h5py only."""
    import subprocess
    import sys

    import h5py
    path = tmp_path / "arrays.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("kernel", data=np.zeros(4, np.float32))
    code = ("import sys\n"
            "from siamese_mask_rcnn.predict import InputError, _check_hdf5\n"
            "try:\n"
            f"    _check_hdf5({str(path)!r})\n"
            "except InputError as err:\n"
            "    assert 'holds no weights' in str(err), err\n"
            "else:\n"
            "    raise AssertionError('accepted')\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'tensorflow imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=project_root)


def test_cli_leaves_no_output_folders_when_the_model_fails_to_load(images, tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an HDF5 file")
    code = run_cli("--weights", bad, "--reference", images["reference"], "--query", images["query"],
                   "--json", tmp_path / "new" / "deeper" / "out.json", "--out", tmp_path / "pics" / "out.png")
    assert code == 2 and "bad.h5" in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and not (tmp_path / "pics").exists()


# ------------------------------------------------------------------ images too small to hold an object
@pytest.mark.parametrize("query_side, ref_side, expected", [
    (predict_module.SMALL_QUERY_SIDE, predict_module.SMALL_REFERENCE_SIDE, []),
    (predict_module.SMALL_QUERY_SIDE - 1, predict_module.SMALL_REFERENCE_SIDE, ["query"]),
    (500, predict_module.SMALL_REFERENCE_SIDE - 1, ["reference"]),
    (1, 1, ["reference", "query"]),
])
def test_small_image_warnings_name_the_small_image_and_its_size(query_side, ref_side, expected):
    query = np.zeros((query_side, query_side + 40, 3), np.uint8)  # the shorter side decides
    reference = np.zeros((ref_side + 9, ref_side, 3), np.uint8)
    notes = predict_module.small_image_warnings([reference], query, ["ref.png"], "scene.png")
    assert [note.split()[0] for note in notes] == expected
    for note in notes:
        if note.startswith("query"):
            assert f"query image scene.png is {query_side + 40} px wide and {query_side} px high" in note
        else:
            assert f"reference image ref.png is {ref_side} px wide and {ref_side + 9} px high" in note


def test_a_one_pixel_query_runs_with_a_warning_on_stderr_and_in_the_json(weights, images, tmp_path, capsys):
    from skimage import io as skio

    tiny = tmp_path / "one.png"
    skio.imsave(tiny, np.full((1, 1, 3), 200, np.uint8), check_contrast=False)
    out_json = tmp_path / "one.json"
    code = run_cli("--weights", weights, "--reference", images["reference"], "--query", tiny, "--json", out_json)
    assert code == 0
    err = capsys.readouterr().err
    assert f"siamese-mrcnn predict: warning: query image {tiny} is 1 px wide and 1 px high" in err
    assert "UserWarning" not in err  # one plain line, not Python's warning decoration
    payload = json.loads(out_json.read_text())
    assert len(payload["warnings"]) == 1 and payload["warnings"][0].startswith(f"query image {tiny} is 1 px wide")


def test_python_predict_warns_about_a_tiny_reference(model, images):
    with pytest.warns(predict_module.SmallImageWarning, match=r"reference image <array> is 3 px wide and 3 px high"):
        predict(None, np.full((3, 3, 3), 90, np.uint8), images["query_array"], model=model)


def test_small_image_warnings_are_shown_even_when_loading_then_fails(weights, images, tmp_path, capsys,
                                                                    monkeypatch):
    from skimage import io as skio

    tiny = tmp_path / "one.png"
    skio.imsave(tiny, np.full((1, 1, 3), 200, np.uint8), check_contrast=False)

    def failing_load(*args, **kwargs):
        raise InputError("the model could not be loaded (simulated)")
    monkeypatch.setattr(predict_module, "load_model", failing_load)
    code = run_cli("--weights", weights, "--reference", images["reference"], "--query", tiny)
    err = capsys.readouterr().err
    assert code == 2 and "could not be loaded (simulated)" in err
    assert f"siamese-mrcnn predict: warning: query image {tiny} is 1 px wide and 1 px high" in err
