"""``predict --known-margin`` on a checkpoint without the reference classifier is refused
before TensorFlow starts (h5py only), as ``demo --known-margin`` is."""
import os
import subprocess
import sys

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from siamese_mask_rcnn.mrcnn.h5layout import legacy_layer_holds_arrays  # noqa: E402
from siamese_mask_rcnn.predict import InputError, check_known_prototypes  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _legacy_file(path, layers, nested=False):
    """A legacy weights file with one small kernel per layer of ``layers``."""
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if nested else f
        root.attrs["layer_names"] = np.array([name.encode() for name in layers])
        for name in layers:
            group = root.create_group(name)
            group.attrs["weight_names"] = np.array([f"{name}/kernel:0".encode()])
            group.create_dataset(f"{name}/kernel:0", data=np.ones((4, 3), np.float32))
    return path


def test_legacy_layer_holds_arrays_answers_per_layout(tmp_path):
    with_classifier = _legacy_file(tmp_path / "a.h5", ["conv1", "reference_class_logits"])
    without = _legacy_file(tmp_path / "b.h5", ["conv1"])
    nested = _legacy_file(tmp_path / "c.h5", ["conv1", "reference_class_logits"], nested=True)
    empty_layer = tmp_path / "d.h5"
    with h5py.File(empty_layer, "w") as f:  # named, but no array in its group
        f.attrs["layer_names"] = np.array([b"conv1", b"reference_class_logits"])
        f.create_group("conv1").create_dataset("conv1/kernel:0", data=np.ones(2, np.float32))
        f.create_group("reference_class_logits").attrs["weight_names"] = np.array([], dtype="S1")
    keras3 = tmp_path / "e.weights.h5"
    with h5py.File(keras3, "w") as f:
        f.create_group("layers").create_group("dense").create_dataset("vars/0", data=np.ones(2, np.float32))
    assert legacy_layer_holds_arrays(with_classifier, "reference_class_logits") is True
    assert legacy_layer_holds_arrays(nested, "reference_class_logits") is True
    assert legacy_layer_holds_arrays(without, "reference_class_logits") is False
    assert legacy_layer_holds_arrays(empty_layer, "reference_class_logits") is False
    assert legacy_layer_holds_arrays(keras3, "reference_class_logits") is None


def test_check_known_prototypes_follows_the_option_then_the_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    without = _legacy_file(run / "mask_rcnn_demo_0001.h5", ["conv1"])
    with_classifier = _legacy_file(tmp_path / "w.h5", ["conv1", "reference_class_logits"])
    with pytest.raises(InputError, match=r"mask_rcnn_demo_0001.h5: known-category rejection \(--known-margin -0.2\)"
                       r".*leave out --known-margin \(in Python: known_margin=None\)$"):
        check_known_prototypes(without, -0.2)
    with pytest.raises(InputError, match=r"\(--known-margin 0\)"):  # -0 is printed as 0
        check_known_prototypes(without, -0.0)
    check_known_prototypes(without)            # no option, no config: nothing asked
    check_known_prototypes(without, "none")
    check_known_prototypes(with_classifier, -0.2)
    (run / "config.json").write_text('{"VERIFY_KNOWN_MARGIN": 0.1}')
    with pytest.raises(InputError, match=r"\(VERIFY_KNOWN_MARGIN 0.1 in .*config.json\).*pass --known-margin none"):
        check_known_prototypes(without)        # the run's config asks for it
    check_known_prototypes(without, "none")    # turned off on the command line
    other = tmp_path / "other.json"
    other.write_text('{"VERIFY_KNOWN_MARGIN": null}')
    check_known_prototypes(without, config_path=str(other))  # --config wins over the file beside
    check_known_prototypes(without, config_values={})  # values already read by check_inputs: the file is not
    (run / "config.json").write_text('{"VERIFY_KNOWN_MARGIN": ')  # broken JSON: named, not a raw json error
    with pytest.raises(InputError, match=r"config.json cannot be used: not valid JSON"):
        check_known_prototypes(without)


def test_command_line_refuses_before_tensorflow(tmp_path):
    from PIL import Image

    blocker = tmp_path / "blocked"
    for name in ("tensorflow", "keras"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} imported')\n")
    weights = _legacy_file(tmp_path / "mask_rcnn_demo_0001.h5", ["conv1"])
    image = tmp_path / "scene.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), ROOT])}
    base = [sys.executable, "-m", "siamese_mask_rcnn.cli", "predict", "--weights", str(weights),
            "--reference", str(image), "--query", str(image)]
    outputs = ["--out", str(tmp_path / "new" / "result.png"), "--json", str(tmp_path / "new2" / "result.json")]
    done = subprocess.run(base + outputs + ["--known-margin", "-0.2"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert "(--known-margin -0.2) needs the reference classifier (reference_class_logits)" in done.stderr
    assert "imported" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "new").exists() and not (tmp_path / "new2").exists()  # no output folder made
    done = subprocess.run(base + ["--known-margin", "none"], capture_output=True, text=True, env=env, timeout=120)
    assert "tensorflow imported" in done.stderr or "keras imported" in done.stderr  # got past the check


def test_python_predict_refuses_before_loading_and_makes_no_folder(tmp_path):
    from PIL import Image

    from siamese_mask_rcnn.predict import predict

    weights = _legacy_file(tmp_path / "mask_rcnn_demo_0001.h5", ["conv1"])
    image = tmp_path / "scene.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)
    with pytest.raises(InputError, match=r"\(--known-margin 0.1\) needs the reference classifier"):
        predict(str(weights), str(image), str(image), out_json=str(tmp_path / "new" / "r.json"), known_margin=0.1)
    assert not (tmp_path / "new").exists()
    for bad in ("abc", 3, True):
        with pytest.raises(InputError, match=r"known margin must be a number in \[-2, 2\] or 'none'"):
            predict(str(weights), str(image), str(image), known_margin=bad)


def test_refusal_names_where_the_margin_came_from():
    from siamese_mask_rcnn.predict import known_prototypes_missing

    option = known_prototypes_missing("w.h5", -0.2)
    assert option.startswith("w.h5: known-category rejection (--known-margin -0.2) needs the reference classifier")
    assert option.endswith("leave out --known-margin (in Python: known_margin=None)")
    config = known_prototypes_missing("w.h5", 0.1, "in run/config.json")
    assert "(VERIFY_KNOWN_MARGIN 0.1 in run/config.json)" in config and "pass --known-margin none" in config
