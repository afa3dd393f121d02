"""Training under ``tf.distribute``: the same losses and update as their hand-written definition,
and, where the definition makes them equal, as one device.

Each model is checked by ``tests/distributed_check.py`` in a subprocess (two logical CPU devices
must be configured before TensorFlow initialises). From the same initial weights
(``save_weights`` / ``load_weights``) and the same global batch of 4 images, it runs one SGD step
of ``training.make_step_functions`` on the default strategy (4 images on one device) and on
``MirroredStrategy(["/cpu:0", "/cpu:1"])`` (2 images per replica). It also computes each image's
loss parts (sum and count of each loss) and, with a plain ``GradientTape``, the gradient of the
objective written out from its definition, which gives hand-checkable expectations:

* ``LOSS_NORMALIZATION = "release"`` (the default, matterport's and the official release's):
  each loss is pooled over the images of a replica (sum of sums / sum of counts) and the
  replicas are averaged. One device pools over all 4 images; two replicas average the pools of
  images {0, 1} and {2, 3}. **What is equal:** a loss whose counts are the same in both halves
  (the classifier loss: every image has ``TRAIN_ROIS_PER_IMAGE`` rows; the RPN class loss:
  ``RPN_TRAIN_ANCHORS_PER_IMAGE`` sampled anchors),
  and every loss and the whole update when the two halves hold the same images
  (``[a, b, a, b]``). **What is not:** the RPN box, box and mask losses when the halves have
  different numbers of positive anchors / ROIs; each run then matches its own definition,
  checked to float rounding, and the test shows that the two differ.
* ``"per_image"``: per-image means averaged over the global batch; one device and two replicas
  give the same losses and update for any batch.
* In every mode: the total is ``sum_k w_k L_k`` plus the weight decay counted once; the first
  SGD update (zero momentum) is ``-lr * g * min(1, c / |g|_global)`` (global-norm clipping,
  ``c`` = 0.3 × the gradient's global norm, so every run is clipped): clipping each replica's
  partial gradient before the cross-replica sum would break it.

Why the comparison is deterministic: ROI sampling (``DetectionTargetLayer``) shuffles the
proposals with ``tf.random.shuffle``, whose random stream necessarily differs between one
device (4 images in one ``map_fn``) and two replicas (2 + 2). The helper's config turns every
anchor into a proposal and every proposal into a training ROI (``ROI_POSITIVE_RATIO =
1/proposals``, ``TRAIN_ROIS_PER_IMAGE`` a multiple of the proposals): nothing is dropped, the
shuffle only permutes ROIs, and each loss part (a sum or count over ROIs) and each gradient
is permutation-invariant up to float rounding. The batch arrays themselves are built once
(the first batch of the model's own training pipeline) and fed identically to both
strategies. Objects are large so that the untrained RPN's whole-image proposal is positive
and the classifier, box and mask losses are exercised; ``test_setup_exercises_every_loss``
guards that.

The Mask R-CNN check also runs ``MaskRCNN.train`` for one step on the two replicas (the real
loop with its input pipeline, ``experimental_distribute_dataset`` and the reported history)
and compares its reported losses and resulting weights with the two-replica step.
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
RUN_INDEX = {"one_device": 0, "two_replicas": 1}


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
    return run_check("--model", "mrcnn", "--train", "--normalization", "release")


@pytest.fixture(scope="module")
def siamese_report():
    return run_check("--model", "siamese", "--normalization", "release")


@pytest.fixture(scope="module")
def per_image_report():
    return run_check("--model", "mrcnn", "--normalization", "per_image")


@pytest.fixture(params=["mrcnn", "siamese", "per_image"])
def report(request):
    return request.getfixturevalue(f"{request.param}_report")


@pytest.fixture(params=["mrcnn", "siamese"])
def release_report(request):
    return request.getfixturevalue(f"{request.param}_report")


def weighted_total(losses, report):
    return float(np.dot(np.asarray(losses[:5]), report["loss_weights"]))


def update_tolerance(row, run, rtol):
    """``rtol`` of the variable's expected update, plus float32 rounding of the weights."""
    return rtol * row[f"{run}_max_abs_expected_update"] + 2 * EPS32 * row[f"{run}_max_abs_weight"]


def parts_of(report):
    return np.asarray(report["per_image_parts"], np.float64)  # [4, 5, (sum, count)]


def ratio(num, den):
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)


# ------------------------------------------------------------------------------ set-up
def test_setup_exercises_every_loss(report):
    assert report["replicas"] == [1, 2]
    assert report["per_replica_batch"] == [4, 2]
    assert report["global_batch"] == [4, 4]
    assert all(row["two_replicas_start_equals_one_device"] for row in report["variables"])
    parts = parts_of(report)
    assert parts.shape == (4, 5, 2)
    assert np.all(parts[:, :2] > 0), "every image must have RPN losses"
    heads = np.all(parts[:, 2:, 1] > 0, axis=1)
    # Each replica's half of the batch has an image with positive ROIs, and the halves
    # differ, so a per-replica normalisation error cannot cancel out.
    assert heads[:2].any() and heads[2:].any(), f"no positive ROIs in a replica's images: {parts}"
    per_image = ratio(parts[..., 0], parts[..., 1])
    assert not np.allclose(per_image[:2].mean(0), per_image[2:].mean(0), rtol=1e-2)
    # Another forward pass draws other ROI shuffles: no ROI is dropped, the parts agree.
    np.testing.assert_allclose(report["per_image_parts_repeat"], parts, rtol=1e-5, atol=1e-5)
    # Counting the decay twice or half would move the total by >= 10x the loss tolerance.
    assert report["reference_reg"] / 2 > 10 * LOSS_RTOL * report["reference_total"][0], "weight decay too small"
    # every run's gradient is clipped (its global norm is above the clip norm)
    assert min(report["grad_global_norm"]) > 2 * report["clipnorm"]


# ------------------------------------------------------------------------------ losses
@pytest.mark.parametrize("run", ["one_device", "two_replicas"])
def test_reported_losses_follow_the_definition(report, run):
    """The five losses are those of the hand-written objective of the run; the total adds the
    weight decay exactly once."""
    parts = parts_of(report)
    groups = [[0, 1, 2, 3]] if run == "one_device" else [[0, 1], [2, 3]]
    if report["normalization"] == "per_image":
        want = ratio(parts[..., 0], parts[..., 1]).mean(axis=0)
    else:
        want = np.mean([ratio(parts[g, :, 0].sum(0), parts[g, :, 1].sum(0)) for g in groups], axis=0)
    losses = np.asarray(report[run])
    np.testing.assert_allclose(losses[:5], want, rtol=LOSS_RTOL, atol=1e-6)
    np.testing.assert_allclose(losses[:5], report["reference_losses"][RUN_INDEX[run]], rtol=LOSS_RTOL, atol=1e-6)
    reg = losses[5] - weighted_total(losses, report)
    assert reg == pytest.approx(report["reference_reg"], rel=1e-2, abs=LOSS_RTOL * losses[5])
    assert losses[5] == pytest.approx(report["reference_total"][RUN_INDEX[run]], rel=LOSS_RTOL)


def test_per_image_losses_are_the_same_on_two_replicas(per_image_report):
    one, two = np.asarray(per_image_report["one_device"]), np.asarray(per_image_report["two_replicas"])
    ratio_ = two / np.where(one == 0, 1, one)
    assert np.all(np.abs(ratio_ - 1) < LOSS_RTOL), (
        f"two replicas report {two}, one device {one} (ratio {ratio_}; 2.0 = per-replica means summed)")


def test_release_losses_equal_on_two_replicas_exactly_where_the_halves_counts_are_equal(release_report):
    parts = parts_of(release_report)
    one, two = np.asarray(release_report["one_device"]), np.asarray(release_report["two_replicas"])
    equal_counts = np.isclose(parts[:2, :, 1].sum(0), parts[2:, :, 1].sum(0))
    assert equal_counts[2], "every image has TRAIN_ROIS_PER_IMAGE classifier rows"
    np.testing.assert_allclose(two[:5][equal_counts], one[:5][equal_counts], rtol=LOSS_RTOL, atol=1e-6)
    # a loss whose halves have different counts (positive anchors or ROIs): pooled over 4
    # images is not the mean of the two halves' pools (the release's semantics, not an error).
    # How far apart they are depends on the data: the untrained mask head's per-pixel
    # cross-entropy is close to ln 2 everywhere, so its two values differ by only ~0.2%.
    # The two runs must differ by exactly the amount the two definitions predict, which is
    # far above what float rounding (LOSS_RTOL on each run) could produce.
    unequal = np.flatnonzero(~equal_counts)
    assert unequal.size, "the test data should give the halves different positive counts"
    for k in unequal:
        name = release_report["loss_names"][k]
        halves = [ratio(parts[g, k, 0].sum(), parts[g, k, 1].sum()) for g in ([0, 1], [2, 3])]
        pooled = ratio(parts[:, k, 0].sum(), parts[:, k, 1].sum())
        predicted = float(np.mean(halves) - pooled)
        assert abs(predicted) > 10 * LOSS_RTOL * abs(pooled), (name, halves, pooled)
        assert two[k] - one[k] == pytest.approx(predicted, abs=2 * LOSS_RTOL * abs(pooled) + 1e-6), (
            name, two[k], one[k], halves, pooled)
    # and pooling is not the per-image mean either
    per_image = ratio(parts[..., 0], parts[..., 1]).mean(axis=0)
    assert one[unequal[0]] != pytest.approx(per_image[unequal[0]], rel=100 * LOSS_RTOL)


def test_release_same_halves_give_the_one_device_losses_and_update(release_report):
    one = np.asarray(release_report["same_halves_one_device"])
    two = np.asarray(release_report["same_halves_two_replicas"])
    np.testing.assert_allclose(two, one, rtol=LOSS_RTOL, atol=1e-6)
    np.testing.assert_allclose(one[:5], release_report["same_halves_reference_losses"], rtol=LOSS_RTOL, atol=1e-6)
    assert one[5] == pytest.approx(release_report["same_halves_reference_total"], rel=LOSS_RTOL)
    assert release_report["same_halves_grad_global_norm"] > 2 * release_report["clipnorm"]
    bad = [(row["name"], row["same_halves_two_replicas_max_abs_diff_one_device"])
           for row in release_report["variables"]
           if row["same_halves_two_replicas_max_abs_diff_one_device"]
           > update_tolerance(row, "same_halves_two_replicas", UPDATE_RTOL)]
    assert not bad, f"(variable, max |update difference|): {bad}"


# ------------------------------------------------------------------------------ updates
def test_per_image_two_replicas_apply_the_same_update_as_one_device(per_image_report):
    rows = per_image_report["variables"]
    bad = [(row["name"], row["two_replicas_max_abs_diff_one_device"], row["max_abs_expected_update"])
           for row in rows
           if row["two_replicas_max_abs_diff_one_device"] > update_tolerance(row, "two_replicas", UPDATE_RTOL)]
    assert not bad, f"(variable, max |update difference|, max |update|): {bad}"
    assert sum(row["max_abs_expected_update"] > 0 for row in rows) > 0.9 * len(rows)


RUNS = ["one_device", "two_replicas"]


@pytest.mark.parametrize("run", RUNS + ["same_halves_one_device", "same_halves_two_replicas"])
def test_update_is_the_clipped_global_gradient_step(report, run):
    """Every variable moves by ``-lr * g * min(1, c / |g|_global)`` (first SGD step, zero momentum)."""
    rows = report["variables"]
    if f"{run}_max_abs_diff_expected" not in rows[0]:
        pytest.skip(f"no {run} run with {report['normalization']} normalisation")
    bad = [(row["name"], row[f"{run}_max_abs_diff_expected"], row[f"{run}_max_abs_expected_update"])
           for row in rows
           if row[f"{run}_max_abs_diff_expected"] > update_tolerance(row, run, REFERENCE_RTOL)]
    assert not bad, f"(variable, max |update - expected|, max |expected|): {bad}"


@pytest.mark.parametrize("run", RUNS)
def test_clipping_bounds_the_global_norm_of_the_update(report, run):
    """The whole update has global norm ``lr * c`` (hand-computed), while single variables are
    not clipped to ``c`` on their own."""
    lr, c = report["learning_rate"], report["clipnorm"]
    rows = report["variables"]
    norm = np.sqrt(sum(r[f"{run}_update_sq"] for r in rows))
    assert norm == pytest.approx(lr * c, rel=1e-4)
    assert max(np.sqrt(r[f"{run}_update_sq"]) for r in rows) < lr * c


# ------------------------------------------------------------------------------ MaskRCNN.train
def test_training_loop_on_two_replicas_reports_the_two_replica_step(mrcnn_report):
    history = mrcnn_report["train_history"]
    two = mrcnn_report["two_replicas"]
    for name, value in zip(mrcnn_report["loss_names"], two):
        assert history[name] == pytest.approx(value, rel=LOSS_RTOL, abs=1e-6), name
    bad = [(row["name"], row["train_two_replicas_max_abs_diff_one_device"])
           for row in mrcnn_report["variables"]
           if not row["train_two_replicas_start_equals_one_device"]
           or row["train_two_replicas_max_abs_diff_expected"]
           > update_tolerance(row, "train_two_replicas", REFERENCE_RTOL)]
    assert not bad, f"(variable, max |update difference|): {bad}"
