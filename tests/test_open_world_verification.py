"""The numpy parts of benchmarks/open_world_verification.py, evaluation.openworld.roc_auc,
verification.level_cosine and datasets.base.crop_box (the benchmark itself is run by hand)."""
import pathlib
import sys

import numpy as np
import pytest

from conftest import load_benchmark  # noqa: E402

from siamese_mask_rcnn.datasets.base import crop_box
from siamese_mask_rcnn.evaluation.openworld import roc_auc
from siamese_mask_rcnn.verification import level_cosine

PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "open_world_verification.py"


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("open_world_verification")


def test_roc_auc_counts_pairs_and_half_ties():
    # pairs (pos > neg): 3 > 1, 3 > 2, 2 > 1, 2 = 2 (half) -> 3.5 of 4
    assert roc_auc([3, 2], [1, 2]) == pytest.approx(0.875)
    assert roc_auc([0, 0], [1, 1]) == 0.0
    assert roc_auc([1], [1]) == 0.5
    assert roc_auc([], [1]) is None and roc_auc([1], []) is None


def test_crop_box_clips_to_the_image_and_keeps_one_pixel():
    image = np.arange(5 * 6).reshape(5, 6)
    crop, box = crop_box(image, (1.7, 2.2, 3.9, 5.0))
    assert box == (1, 2, 3, 5) and crop.tolist() == image[1:3, 2:5].tolist()
    crop, box = crop_box(image, (-4, -1, 99, 99))
    assert box == (0, 0, 5, 6) and crop.shape == (5, 6)
    crop, box = crop_box(image, (7, 7, 7, 7))  # outside and empty: the last pixel
    assert box == (4, 5, 5, 6) and crop.tolist() == [[29]]


def test_level_cosine_averages_the_levels():
    reference = np.array([[1.0, 0.0], [0.0, 2.0]])               # [L=2, C=2]
    embeddings = np.array([[[3.0, 0.0], [0.0, 1.0]],             # both levels aligned: 1
                           [[0.0, 1.0], [0.0, 5.0]],             # (0 + 1) / 2
                           [[1.0, 1.0], [0.0, 0.0]]])            # (1/sqrt 2 + 0) / 2 (zero vector: 0)
    np.testing.assert_allclose(level_cosine(embeddings, reference), [1.0, 0.5, 0.5 / np.sqrt(2)])


def test_verification_table_keeps_the_stated_share_of_true_detections(bench):
    true_sims = [0.9, 0.8, 0.7, 0.6]  # 4 of 5 instances found
    absent = [0.95, 0.65, 0.5, 0.1]
    rows = bench.verification_table(true_sims, [0.75], absent, n_gt=5, n_absent=2, shares=(1.0, 0.5))
    (t_all, recall_all, fp_all, present_all), (t_half, recall_half, fp_half, present_half) = rows
    assert t_all == -np.inf and recall_all == pytest.approx(0.8) and fp_all == pytest.approx(2.0)
    assert present_all == 1
    # the threshold keeping half of the true detections is their median, 0.75: 0.9 and 0.8
    assert t_half == pytest.approx(0.75) and recall_half == pytest.approx(0.4)
    assert fp_half == pytest.approx(0.5) and present_half == 1  # 0.95 of the absent, 0.75 itself


@pytest.mark.parametrize("name", ["open_world_calibration", "open_world_confusions", "open_world_verification"])
def test_open_world_benchmarks_run_as_modules_and_name_a_missing_checkpoint(name, tmp_path):
    """``python -m benchmarks.<name>`` finds its helper module as the script form does; a
    missing checkpoint is reported (status 2) before TensorFlow starts."""
    import subprocess

    missing = tmp_path / "no_such_run" / "mask_rcnn_demo_0030.h5"
    result = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--weights", str(missing)],
                            cwd=str(PATH.parents[1]), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"weights file not found: {missing}" in result.stderr
