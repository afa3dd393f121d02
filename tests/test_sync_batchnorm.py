"""With ``TRAIN_BN=True`` under ``tf.distribute`` the BatchNorm statistics are those of the
global batch: after one step on two mirrored CPU replicas (2 images each) every BatchNorm's
moving mean and variance equal those of one device on all 4 images. The same step with
``synchronized=False`` (each replica normalising by its own 2 images) does not, which shows
that the check would catch a missing synchronisation. See ``tests/sync_bn_check.py``.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPT = os.path.join(HERE, "sync_bn_check.py")
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def report():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0", CUDA_VISIBLE_DEVICES="-1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    if proc.returncode != 0 or not lines:
        pytest.fail(f"{SCRIPT} exited with {proc.returncode}:\n{proc.stderr[-6000:]}")
    return json.loads(lines[-1][len("REPORT "):])


def test_every_batchnorm_trains_and_is_synchronised(report):
    names = sorted(report["one_device"])
    assert {"tiny_bn1", "mrcnn_class_bn1", "mrcnn_mask_bn1"} <= set(names)
    assert all(report["two_replicas"][n]["synchronized"] for n in names)
    assert not any(report["two_replicas_unsynchronised"][n]["synchronized"] for n in names)
    for n in names:  # one step moved every statistic away from its initial value
        for key in ("mean", "variance"):
            assert not np.allclose(report["one_device"][n][key], report["initial"][n][key]), (n, key)


def test_moving_statistics_equal_one_device_on_the_global_batch(report):
    for n, stats in report["one_device"].items():
        for key in ("mean", "variance"):
            np.testing.assert_allclose(report["two_replicas"][n][key], stats[key], rtol=RTOL, atol=ATOL,
                                       err_msg=f"{n} moving {key}")
    np.testing.assert_allclose(report["two_replicas_losses"], report["one_device_losses"], rtol=1e-4)


def test_without_synchronisation_the_statistics_differ(report):
    """Per-replica statistics (the behaviour before this change) miss the variance between
    the two replicas' images: the same comparison fails for most layers."""
    differ = [n for n, stats in report["one_device"].items()
              if not np.allclose(report["two_replicas_unsynchronised"][n]["variance"], stats["variance"],
                                 rtol=RTOL, atol=ATOL)]
    assert len(differ) >= 0.8 * len(report["one_device"]), differ
