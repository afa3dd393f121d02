"""Training under ``tf.distribute`` gives the same losses and the same update as one device.

Each model (the plain Mask R-CNN and the Siamese Mask R-CNN) is checked by
``tests/distributed_check.py`` in a subprocess (two logical CPU devices must be configured
before TensorFlow initialises). From the same initial weights (``save_weights`` /
``load_weights``) and the same global batch of 4 images, it runs one SGD step of
``training.make_step_functions`` on the default strategy (4 images on one device) and on
``MirroredStrategy(["/cpu:0", "/cpu:1"])`` (2 images per replica). It also computes the
per-image losses and the gradient of ``mean_i sum_k w_k L_ik + weight_decay`` with a plain
``GradientTape`` (no ``tf.distribute``), which gives hand-checkable expectations:

* the five reported losses are the per-image means, the total is ``sum_k w_k L_k`` plus the
  weight decay counted once (not 2x, not 1/2x, on either strategy);
* the first SGD update (zero momentum) of every variable is ``-lr * g * min(1, c / |g|)``
  on both strategies, where the clip norm ``c`` is the median per-variable gradient norm,
  so half the variables are clipped: clipping per replica before the cross-replica sum
  (Keras' own ``clipnorm`` under ``tf.distribute``) would break this for the clipped half;
* with 2 replicas the losses equal those on 1 device: a per-replica mean summed over
  replicas (the failure mode to avoid) would report them 2x too large.

Why the comparison is deterministic: ROI sampling (``DetectionTargetLayer``) shuffles the
proposals with ``tf.random.shuffle``, whose random stream necessarily differs between one
device (4 images in one ``map_fn``) and two replicas (2 + 2). The helper's config turns every
anchor into a proposal and every proposal into a training ROI (``ROI_POSITIVE_RATIO =
1/proposals``, ``TRAIN_ROIS_PER_IMAGE`` a multiple of the proposals): nothing is dropped, the
shuffle only permutes ROIs, and each loss (a mean over ROIs) and each gradient (a sum over
ROIs) is permutation-invariant up to float rounding. This keeps the real sampling code and
the real loss normalisation in the loop, while the batch arrays themselves are built once
(the first batch of the model's own training pipeline) and fed identically to both
strategies. Objects are large so that the untrained RPN's whole-image proposal is positive
and the classifier, box and mask losses are exercised; ``test_setup_exercises_every_loss``
guards that, and the agreement with the eager reference guards that nothing was dropped.

The Mask R-CNN check also runs ``MaskRCNN.train`` for one step on the two replicas (the real
loop with its input pipeline, ``experimental_distribute_dataset`` and the reported history)
and compares its reported losses and resulting weights with the one-device step.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPT = os.path.join(HERE, "distributed_check.py")
EPS32 = float(np.finfo(np.float32).eps)
LOSS_RTOL = 1e-4
UPDATE_RTOL = 1e-5  # relative to the size of the variable's update
REFERENCE_RTOL = 1e-4  # eager reference: other op order and ROI permutation


def run_check(*args, timeout=900):
    """Run the helper in a subprocess and return its JSON report."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0", CUDA_VISIBLE_DEVICES="-1")
    proc = subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    if proc.returncode != 0 or not lines:
        pytest.fail(f"{SCRIPT} {' '.join(args)} exited with {proc.returncode}:\n{proc.stderr[-6000:]}")
    return json.loads(lines[-1][len("REPORT "):])


@pytest.fixture(scope="module")
def mrcnn_report():
    return run_check("--model", "mrcnn", "--train")


@pytest.fixture(scope="module")
def siamese_report():
    return run_check("--model", "siamese")


@pytest.fixture(params=["mrcnn", "siamese"])
def report(request):
    return request.getfixturevalue(f"{request.param}_report")


def weighted_total(losses, report):
    return float(np.dot(np.asarray(losses[:5]), report["loss_weights"]))


def update_tolerance(row, run, rtol):
    """``rtol`` of the variable's expected update, plus float32 rounding of the weights."""
    return rtol * row["max_abs_expected_update"] + 2 * EPS32 * row[f"{run}_max_abs_weight"]


def norm_tolerance(row, run, expected, rtol=1e-4):
    """Tolerance on an update's norm: ``rtol`` of it, plus float32 rounding of the weights."""
    return rtol * expected + 2 * EPS32 * row[f"{run}_max_abs_weight"] * np.sqrt(row["size"])


# ------------------------------------------------------------------------------ set-up
def test_setup_exercises_every_loss(report):
    assert report["replicas"] == [1, 2]
    assert report["per_replica_batch"] == [4, 2]
    assert report["global_batch"] == [4, 4]
    assert all(row["two_replicas_start_equals_one_device"] for row in report["variables"])
    per_image = np.asarray(report["per_image_losses"])
    assert per_image.shape == (4, 5)
    assert np.all(per_image[:, :2] > 0), "every image must have RPN losses"
    heads = np.all(per_image[:, 2:] > 0, axis=1)
    # Each replica's half of the batch has an image with positive ROIs, and the halves
    # differ, so a per-replica normalisation error cannot cancel out.
    assert heads[:2].any() and heads[2:].any(), f"no positive ROIs in a replica's images: {per_image}"
    assert not np.allclose(per_image[:2].mean(0), per_image[2:].mean(0), rtol=1e-2)
    # Another forward pass draws other ROI shuffles: no ROI is dropped, the losses agree.
    np.testing.assert_allclose(report["per_image_losses_repeat"], per_image, rtol=1e-5, atol=1e-6)
    # Counting the decay twice or half would move the total by >= 10x the loss tolerance.
    assert report["reference_reg"] / 2 > 10 * LOSS_RTOL * report["reference_total"], "weight decay too small"


# ------------------------------------------------------------------------------ losses
@pytest.mark.parametrize("run", ["one_device", "two_replicas"])
def test_reported_losses_are_global_batch_means(report, run):
    per_image_mean = np.asarray(report["per_image_losses"]).mean(axis=0)
    losses = np.asarray(report[run])
    np.testing.assert_allclose(losses[:5], per_image_mean, rtol=LOSS_RTOL, atol=1e-6)
    # Total = weighted losses + weight decay, the decay counted exactly once.
    reg = losses[5] - weighted_total(losses, report)
    assert reg == pytest.approx(report["reference_reg"], rel=1e-2, abs=LOSS_RTOL * losses[5])
    assert losses[5] == pytest.approx(report["reference_total"], rel=LOSS_RTOL)


def test_two_replicas_report_the_same_losses_as_one_device(report):
    one, two = np.asarray(report["one_device"]), np.asarray(report["two_replicas"])
    ratio = two / np.where(one == 0, 1, one)
    assert np.all(np.abs(ratio - 1) < LOSS_RTOL), (
        f"two replicas report {two}, one device {one} (ratio {ratio}; 2.0 = per-replica means summed)")


# ------------------------------------------------------------------------------ updates
def test_two_replicas_apply_the_same_update_as_one_device(report):
    bad = [(row["name"], row["two_replicas_max_abs_diff_one_device"], row["max_abs_expected_update"])
           for row in report["variables"]
           if row["two_replicas_max_abs_diff_one_device"] > update_tolerance(row, "two_replicas", UPDATE_RTOL)]
    assert not bad, f"(variable, max |update difference|, max |update|): {bad}"
    assert sum(row["max_abs_expected_update"] > 0 for row in report["variables"]) > 0.9 * len(report["variables"])


@pytest.mark.parametrize("run", ["one_device", "two_replicas"])
def test_update_is_the_clipped_global_gradient_step(report, run):
    """Every variable moves by ``-lr * g * min(1, c / |g|)`` (first SGD step, zero momentum)."""
    bad = [(row["name"], row[f"{run}_max_abs_diff_expected"], row["max_abs_expected_update"])
           for row in report["variables"]
           if row[f"{run}_max_abs_diff_expected"] > update_tolerance(row, run, REFERENCE_RTOL)]
    assert not bad, f"(variable, max |update - expected|, max |expected|): {bad}"


@pytest.mark.parametrize("run", ["one_device", "two_replicas"])
def test_clipping_bounds_each_variable_of_the_global_gradient(report, run):
    """Clipped variables move by exactly ``lr * c``, the others by ``lr * |g|`` (hand-computed)."""
    lr, c = report["learning_rate"], report["clipnorm"]
    rows = report["variables"]
    clipped = [r for r in rows if r["clipped"]]
    free = [r for r in rows if not r["clipped"] and r["grad_norm"] > 0]
    assert len(clipped) >= 10 and len(free) >= 10, "the clip norm must clip some variables and not others"
    for r in clipped:
        assert r[f"{run}_update_norm"] == pytest.approx(lr * c, abs=norm_tolerance(r, run, lr * c)), r["name"]
    for r in free:
        expected = lr * r["grad_norm"]
        assert r[f"{run}_update_norm"] == pytest.approx(expected, abs=norm_tolerance(r, run, expected)), r["name"]


# ------------------------------------------------------------------------------ MaskRCNN.train
def test_training_loop_on_two_replicas_reports_the_one_device_loss(mrcnn_report):
    history = mrcnn_report["train_history"]
    one = mrcnn_report["one_device"]
    for name, value in zip(mrcnn_report["loss_names"], one):
        assert history[name] == pytest.approx(value, rel=LOSS_RTOL, abs=1e-6), name
    bad = [(row["name"], row["train_two_replicas_max_abs_diff_one_device"])
           for row in mrcnn_report["variables"]
           if not row["train_two_replicas_start_equals_one_device"]
           or row["train_two_replicas_max_abs_diff_one_device"]
           > update_tolerance(row, "train_two_replicas", UPDATE_RTOL)]
    assert not bad, f"(variable, max |update difference|): {bad}"
