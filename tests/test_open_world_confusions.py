"""The attribution of open-world false positives in benchmarks/open_world_confusions.py
(pure numpy; the benchmark itself is run by hand)."""
import os
import pathlib
import sys
import types

import numpy as np
import pytest

from conftest import load_benchmark  # noqa: E402

PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "open_world_confusions.py"


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("open_world_confusions")


def style(family, primary, secondary, pattern):
    return types.SimpleNamespace(family=family, primary=primary, secondary=secondary, pattern=pattern)


STYLES = {1: style("star", "red", "white", "solid"),      # the reference's category
          2: style("star", "red", "black", "dots"),       # shares family and primary colour
          3: style("ring", "blue", "white", "solid")}     # shares secondary colour and pattern


def test_shared_attributes(bench):
    assert bench.shared_attributes(STYLES[1], STYLES[2]) == ("family", "primary")
    assert bench.shared_attributes(STYLES[1], STYLES[3]) == ("secondary", "pattern")
    assert bench.shared_attributes(STYLES[1], STYLES[1]) == bench.ATTRIBUTES


def test_false_positives_are_attributed_to_the_best_overlapping_object(bench):
    gt_boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float64)
    gt_ids = [2, 3]
    rois = np.array([[0, 0, 10, 11],      # on object 0 (category 2), IoU 10/11
                     [21, 21, 40, 40],    # on object 1 (category 3), IoU 361/400
                     [50, 50, 60, 60],    # on nothing
                     [0, 0, 10, 10]])     # under the threshold: not counted
    scores = [0.9, 0.6, 0.7, 0.4]
    hits = bench.attribute_false_positives(rois, scores, gt_boxes, gt_ids, STYLES[1], STYLES.get, 0.5)
    assert hits == [("family", "primary"), ("secondary", "pattern"), None]
    # IoU exactly 0.5 counts as on the object, 1/3 does not
    assert bench.attribute_false_positives([[0, 0, 10, 20]], [0.9], gt_boxes[:1], [2], STYLES[1],
                                           STYLES.get, 0.5) == [("family", "primary")]
    assert bench.attribute_false_positives([[0, 0, 10, 30]], [0.9], gt_boxes[:1], [2], STYLES[1],
                                           STYLES.get, 0.5) == [None]
    # a scene without annotated objects
    assert bench.attribute_false_positives(rois[:1], [0.9], np.zeros((0, 4)), [], STYLES[1],
                                           STYLES.get, 0.5) == [None]


def test_summary_shares_and_rates(bench):
    hits = [("family", "primary"), ("family",), None]
    base = [("family", "primary"), ("secondary", "pattern"), (), ()]
    lines = bench.summarise(hits, base, n_pairs=2)
    assert lines[0].startswith("3 false positives on 2 absent pairs (1.50 per pair); 1 on no annotated object")
    family = next(line for line in lines if line.startswith("family"))
    assert family.split()[1:] == ["100.0%", "25.0%"]      # 2 of 2 attributed vs 1 of 4 objects
    pattern = next(line for line in lines if line.startswith("pattern"))
    assert pattern.split()[1:] == ["0.0%", "25.0%"]
    by_count = {int(line.split()[0]): [float(v) for v in line.split()[1:]]
                for line in lines[1:] if line[:1].isdigit()}
    assert by_count[1] == [0.5, 0.0] and by_count[2] == [0.5, 1.0] and by_count[0] == [0.0, 1.0]


@pytest.mark.parametrize("script", ["open_world_confusions.py", "open_world_calibration.py"])
def test_bad_checkpoints_are_refused_before_tensorflow(script, tmp_path):
    """A missing file, a non-HDF5 file and a checkpoint without its run's config.json: exit 2
    naming the file, with TensorFlow and Keras made unimportable."""
    import subprocess

    import h5py

    blocker = tmp_path / "blocked"
    for name in ("tensorflow", "keras"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} imported')\n")
    text = tmp_path / "notes.h5"
    text.write_text("not HDF5")
    lonely = tmp_path / "run" / "mask_rcnn_demo_0001.h5"
    lonely.parent.mkdir()
    with h5py.File(lonely, "w") as f:
        f.attrs["layer_names"] = np.array([b"conv1"])
        f.create_group("conv1").attrs["weight_names"] = np.array([b"conv1/kernel:0"])
        f["conv1"].create_dataset("conv1/kernel:0", data=np.zeros((1, 1, 3, 2), np.float32))
    cases = {tmp_path / "missing.h5": "weights file not found", text: "not an HDF5 weights file",
             lonely: "no config.json beside"}
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    bad_options = [(["--scenes", "0"], "--scenes must be >= 1, got 0"), (["--seed", "-1"], "--seed must be >= 0")]
    if script == "open_world_confusions.py":
        bad_options += [(["--threshold", "0"], "--threshold must be in (0, 1], got 0.0"),
                        (["--threshold", "2"], "--threshold must be in (0, 1], got 2.0")]
    for extra, words in bad_options:  # with a usable-looking file: the option is what is refused
        done = subprocess.run([sys.executable, str(PATH.parent / script), "--weights", str(lonely), *extra],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 2 and words in done.stderr, done.stderr
    for path, words in cases.items():
        done = subprocess.run([sys.executable, str(PATH.parent / script), "--weights", str(path)],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 2, done.stderr
        assert f"--weights: {words}" in done.stderr and str(path) in done.stderr, done.stderr
        assert "imported" not in done.stderr
