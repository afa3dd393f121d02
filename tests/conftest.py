"""Shared pytest fixtures: paths to the project and to the shared real data."""
import os
import pathlib

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
COCO_SUBSET = SHARED_DATA / "coco_val2017_subset"
OMNIGLOT_DIR = SHARED_DATA / "omniglot"
MATTERPORT_LAYOUT = SHARED_DATA / "matterport_layout"


def _need(path):
    if not path.exists():
        pytest.skip(f"shared test data not found at {path} (only present next to the project checkout)")
    return path


@pytest.fixture(scope="session")
def project_root():
    return ROOT


@pytest.fixture(scope="session")
def coco_subset_dir():
    """Directory with images/ and annotations/instances_val2017_subset.json."""
    return _need(COCO_SUBSET)


@pytest.fixture(scope="session")
def coco_subset_annotations():
    return _need(COCO_SUBSET / "annotations" / "instances_val2017_subset.json")


@pytest.fixture(scope="session")
def omniglot_dir():
    return _need(OMNIGLOT_DIR)


@pytest.fixture(scope="session")
def matterport_layout_dir():
    return _need(MATTERPORT_LAYOUT)


# Single-image inference settings on top of the "tiny" preset (siamese_mask_rcnn.presets) and
# the score of a classifier that always says "match": softmax([0, ln 3])[1] = 0.75.
TINY_INFERENCE = dict(IMAGES_PER_GPU=1, DETECTION_MAX_INSTANCES=5)
MATCH_SCORE = 0.75


def constant_score_checkpoint(run_dir, score):
    """Write an untrained tiny Siamese checkpoint whose classifier scores every proposal as a
    match with probability exactly ``score`` (and ``config.json`` beside it, as training
    does) into ``run_dir``; returns the weights' path."""
    import math

    import numpy as np

    from siamese_mask_rcnn.demo import demo_config
    from siamese_mask_rcnn.siamese import SiameseMaskRCNN

    import keras

    keras.utils.set_random_seed(0)  # the same weights whichever test builds the checkpoint first
    config = demo_config(preset="tiny", **TINY_INFERENCE)
    model = SiameseMaskRCNN("inference", config, model_dir=str(run_dir))
    (kernel,) = [w for w in model.keras_model.weights if w.path == "mrcnn_class_logits/kernel"]
    (bias,) = [w for w in model.keras_model.weights if w.path == "mrcnn_class_logits/bias"]
    kernel.assign(np.zeros(kernel.shape, np.float32))
    bias.assign(np.array([0.0, math.log(score / (1 - score))], np.float32))
    path = run_dir / "mask_rcnn_demo_0001.h5"
    model.save_weights(str(path))
    config.save(str(run_dir / "config.json"))
    return path


@pytest.fixture(scope="session")
def always_match_checkpoint(tmp_path_factory):
    """An untrained tiny Siamese checkpoint whose classifier scores every proposal as a match
    with probability exactly ``MATCH_SCORE``, with the ``config.json`` training writes beside it."""
    return constant_score_checkpoint(tmp_path_factory.mktemp("always_match_run"), MATCH_SCORE)


@pytest.fixture(scope="module")
def coco_split1(coco_subset_annotations, coco_subset_dir):
    """The shared COCO subset as a one-shot dataset with split S1 applied."""
    from siamese_mask_rcnn.datasets.coco import OneShotCocoDataset

    dataset = OneShotCocoDataset()
    dataset.load_coco(annotation_file=str(coco_subset_annotations), image_dir=str(coco_subset_dir / "images"))
    dataset.set_split(1)
    dataset.prepare()
    return dataset


@pytest.fixture(scope="module")
def coco_split1_ids(coco_split1):
    """Every category id of :func:`coco_split1`, training and one-shot, sorted."""
    return sorted(coco_split1.train_class_ids + coco_split1.oneshot_class_ids)


@pytest.fixture
def headless_plots(monkeypatch):
    """Fail if anything calls ``plt.show()`` under Agg; close every figure after the test.
    Plotting test modules use it with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import matplotlib.pyplot as plt

    def forbidden(*args, **kwargs):
        raise AssertionError("plt.show() called on a headless backend")
    monkeypatch.setattr(plt, "show", forbidden)
    yield
    plt.close("all")


def load_benchmark(name):
    """The module ``benchmarks/<name>.py``, loaded as when run as a script (its folder first
    on ``sys.path`` while it imports, so that its helper modules are found)."""
    import importlib.util
    import sys

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def assert_benchmark_refuses(name, extra, words, tmp_path):
    """Run ``benchmarks/<name>.py`` with the arguments ``extra`` (plus ``--out tmp_path/out``
    unless ``extra`` has an ``--out``) in ``tmp_path``, where ``afile`` is a file (for an
    ``--out`` under a file); assert exit status 2, ``words`` on stderr, no traceback and no
    output folder."""
    import subprocess
    import sys

    (tmp_path / "afile").write_text("a file where a folder would go")
    script = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    out = [] if "--out" in extra else ["--out", str(tmp_path / "out")]
    done = subprocess.run([sys.executable, str(script), *extra, *out],
                          capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
    return done
