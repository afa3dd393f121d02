"""Tests of the TensorFlow side of the Mask R-CNN core: box ops, custom layers, losses.

Every layer is called eagerly on tiny hand-made tensors whose expected output is worked
out by hand (or with the numpy helpers of ``mrcnn.utils``, which have their own tests).
"""
import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from siamese_mask_rcnn.mrcnn import image_meta as mmeta  # noqa: E402
from siamese_mask_rcnn.mrcnn import utils  # noqa: E402
from siamese_mask_rcnn.mrcnn import heads as H  # noqa: E402
from siamese_mask_rcnn.mrcnn import layers as L  # noqa: E402
from siamese_mask_rcnn.mrcnn import losses as LS  # noqa: E402
from siamese_mask_rcnn.mrcnn.config import Config  # noqa: E402

STD = np.array([0.1, 0.1, 0.2, 0.2], np.float32)


def random_boxes(rng, n, scale=1.0):
    """``n`` valid (y1 < y2, x1 < x2) boxes inside ``[0, scale]``."""
    a = rng.uniform(0, scale, (n, 2))
    b = rng.uniform(0, scale, (n, 2))
    lo, hi = np.minimum(a, b), np.maximum(a, b) + 0.01 * scale
    return np.stack([lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1]], axis=1).astype(np.float32)


def meta_1024(num_classes=81, window=(0, 0, 1024, 1024), batch=1):
    """Image metas ``[batch, META]`` of a 1024² molded image."""
    meta = mmeta.compose_image_meta(7, (1024, 1024, 3), (1024, 1024, 3), window, 1.0,
                                   np.ones(num_classes))
    return np.tile(meta[None].astype(np.float32), [batch, 1])


def smooth_l1_np(x):
    x = np.abs(x)
    return np.where(x < 1, 0.5 * x ** 2, x - 0.5)


# ----------------------------------------------------------------------------------------
# box operations vs their numpy twins
# ----------------------------------------------------------------------------------------

def test_apply_box_deltas_graph_matches_numpy():
    rng = np.random.default_rng(0)
    boxes = random_boxes(rng, 50)
    deltas = rng.normal(0, 0.3, (50, 4)).astype(np.float32)
    got = L.apply_box_deltas_graph(tf.constant(boxes), tf.constant(deltas)).numpy()
    np.testing.assert_allclose(got, utils.apply_box_deltas(boxes, deltas), atol=1e-6)
    # hand case: shift down by half a height, double the width
    got = L.apply_box_deltas_graph(tf.constant([[0.0, 0.0, 0.2, 0.4]]),
                                   tf.constant([[0.5, 0.0, 0.0, math.log(2.0)]])).numpy()
    np.testing.assert_allclose(got, [[0.1, -0.2, 0.3, 0.6]], atol=1e-6)
    # huge log-scale deltas are capped (a zero-height box must not become 0·inf = NaN)
    got = L.apply_box_deltas_graph(tf.constant([[0.5, 0.5, 0.5, 0.7], [0.0, 0.0, 0.1, 0.1]]),
                                   tf.constant([[0.0, 0.0, 1e4, 1e4], [0.0, 0.0, 1e4, 0.0]])).numpy()
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got[1], [0.05 - 0.05e6, 0.0, 0.05 + 0.05e6, 0.1], rtol=1e-5)


def test_box_refinement_graph_matches_numpy_and_inverts_apply():
    rng = np.random.default_rng(1)
    boxes, gt = random_boxes(rng, 40), random_boxes(rng, 40)
    got = L.box_refinement_graph(tf.constant(boxes), tf.constant(gt)).numpy()
    np.testing.assert_allclose(got, utils.box_refinement(boxes, gt), rtol=1e-5, atol=1e-5)
    back = L.apply_box_deltas_graph(tf.constant(boxes), tf.constant(got)).numpy()
    np.testing.assert_allclose(back, gt, atol=1e-5)
    # identical boxes → zero deltas
    np.testing.assert_allclose(L.box_refinement_graph(tf.constant(gt), tf.constant(gt)).numpy(), 0, atol=1e-6)


def test_overlaps_graph_matches_compute_overlaps():
    rng = np.random.default_rng(2)
    b1, b2 = random_boxes(rng, 17), random_boxes(rng, 9)
    b2[0] = b1[3]  # an exact duplicate → IoU 1
    b2[1] = [2.0, 2.0, 3.0, 3.0]  # disjoint from everything → IoU 0
    got = L.overlaps_graph(tf.constant(b1), tf.constant(b2)).numpy()
    assert got.shape == (17, 9)
    np.testing.assert_allclose(got, utils.compute_overlaps(b1, b2), atol=1e-5)
    assert got[3, 0] == pytest.approx(1.0)
    assert np.all(got[:, 1] == 0)
    # hand case: two unit squares overlapping by half → 1/3
    iou = L.overlaps_graph(tf.constant([[0.0, 0.0, 1.0, 1.0]]), tf.constant([[0.0, 0.5, 1.0, 1.5]])).numpy()
    assert iou[0, 0] == pytest.approx(1 / 3)
    # zero-area padding boxes give 0, not NaN
    pad = L.overlaps_graph(tf.zeros([2, 4]), tf.zeros([3, 4])).numpy()
    assert np.all(pad == 0)


def test_clip_boxes_graph_hand_case():
    boxes = tf.constant([[-0.2, 0.1, 0.5, 1.3],   # sticks out top and right
                         [0.3, 0.3, 0.6, 0.6],    # inside
                         [1.2, -0.5, 1.5, -0.1]])  # completely outside
    window = tf.constant([0.1, 0.0, 0.9, 1.0])
    got = L.clip_boxes_graph(boxes, window).numpy()
    np.testing.assert_allclose(got, [[0.1, 0.1, 0.5, 1.0],
                                     [0.3, 0.3, 0.6, 0.6],
                                     [0.9, 0.0, 0.9, 0.0]], atol=1e-7)


def test_norm_boxes_graph_matches_numpy():
    rng = np.random.default_rng(3)
    pixel = np.round(random_boxes(rng, 20, scale=300)).astype(np.float32)
    got = L.norm_boxes_graph(tf.constant(pixel), tf.constant([320, 480])).numpy()
    np.testing.assert_allclose(got, utils.norm_boxes(pixel, (320, 480)), atol=1e-6)
    # matterport's convention: (0, 0, h, w) → (0, 0, 1, 1)
    whole = L.norm_boxes_graph(tf.constant([[0.0, 0.0, 320.0, 480.0]]), tf.constant([320, 480])).numpy()
    np.testing.assert_allclose(whole, [[0, 0, 1, 1]], atol=1e-7)


def test_parse_image_meta_graph_matches_numpy():
    meta = mmeta.compose_image_meta(5, (480, 640, 3), (1024, 1024, 3), (128, 0, 896, 1024), 1.6,
                                   [1, 0, 1, 1])
    metas = np.stack([meta, meta]).astype(np.float32)
    metas[1, 0] = 9
    got = L.parse_image_meta_graph(tf.constant(metas))
    want = mmeta.parse_image_meta(metas)
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(got[key].numpy(), want[key], rtol=1e-6)


def test_trim_zeros_pad_to_and_max_or_zero():
    boxes = tf.constant([[0.1, 0.1, 0.2, 0.2], [0, 0, 0, 0], [0.3, 0.3, 0.4, 0.4], [0, 0, 0, 0]])
    trimmed, keep = L.trim_zeros_graph(boxes)
    np.testing.assert_allclose(trimmed.numpy(), [[0.1, 0.1, 0.2, 0.2], [0.3, 0.3, 0.4, 0.4]])
    assert keep.numpy().tolist() == [True, False, True, False]
    padded = L.pad_to(tf.constant([[1.0, 2.0]]), 3).numpy()
    np.testing.assert_array_equal(padded, [[1, 2], [0, 0], [0, 0]])
    cut = L.pad_to(tf.range(5), 3).numpy()
    np.testing.assert_array_equal(cut, [0, 1, 2])
    np.testing.assert_array_equal(L.max_or_zero(tf.zeros([3, 0])).numpy(), [0, 0, 0])
    np.testing.assert_allclose(L.max_or_zero(tf.constant([[0.2, 0.7], [0.4, 0.1]])).numpy(), [0.7, 0.4])


# ----------------------------------------------------------------------------------------
# small layers
# ----------------------------------------------------------------------------------------

def test_anchors_layer_tiles_over_batch_and_norm_boxes_layer():
    anchors = np.array([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]], np.float32)
    out = L.AnchorsLayer(anchors)(tf.zeros([3, 8, 8, 3])).numpy()
    assert out.shape == (3, 2, 4)
    assert np.all(out == anchors[None])
    boxes = np.array([[[0, 0, 64, 64], [32, 16, 64, 48]]], np.float32)
    got = L.NormBoxesLayer((65, 65, 3))(tf.constant(boxes)).numpy()
    np.testing.assert_allclose(got, [[[0, 0, 63 / 64, 63 / 64], [0.5, 0.25, 63 / 64, 47 / 64]]], atol=1e-6)


def test_fold_unfold_rois_round_trip_and_rpn_outputs():
    x = tf.reshape(tf.range(2 * 3 * 4 * 5, dtype=tf.float32), [2, 3, 4, 5])
    folded = H.FoldRois()(x)
    assert folded.shape == (6, 4, 5)
    np.testing.assert_array_equal(folded.numpy()[4], x.numpy()[1, 1])
    back = H.UnfoldRois()([folded, tf.zeros([2, 3, 4])])
    np.testing.assert_array_equal(back.numpy(), x.numpy())
    # RPN maps [B, h, w, k·anchors] → [B, h·w·anchors, k], anchors fastest
    raw = tf.reshape(tf.range(1 * 2 * 2 * 6, dtype=tf.float32), [1, 2, 2, 6])
    out = H.RpnOutputs(2)(raw).numpy()
    assert out.shape == (1, 12, 2)
    np.testing.assert_array_equal(out[0, 3], [6, 7])  # location (0, 1), anchor 0


def test_window_conv2d_equals_conv2d_and_trains_the_same():
    rng = np.random.default_rng(4)
    window = H.WindowConv2D(6, 5, padding="valid", name="mrcnn_class_conv1")
    conv = keras.layers.Conv2D(6, 5, padding="valid")
    window.build((None, 5, 5, 3))
    conv.build((None, 5, 5, 3))
    window.set_weights([rng.standard_normal((5, 5, 3, 6)).astype(np.float32), rng.standard_normal(6).astype(np.float32)])
    conv.set_weights(window.get_weights())
    assert [w.shape for w in window.weights] == [(5, 5, 3, 6), (6,)]
    for shape in [(4, 5, 5, 3), (2, 8, 7, 3)]:  # the whole window (matrix product), a larger map (convolution)
        x = tf.constant(rng.standard_normal(shape).astype(np.float32))
        out = window(x)
        assert out.shape == conv(x).shape
        np.testing.assert_allclose(out.numpy(), conv(x).numpy(), rtol=1e-5, atol=1e-5)
        grads = []
        for layer in (window, conv):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(tf.sin(layer(x)))
            grads.append(tape.gradient(loss, [x] + layer.trainable_weights))
        for a, b in zip(*grads):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------
# ProposalLayer
# ----------------------------------------------------------------------------------------

ANCHORS3 = np.array([[0.10, 0.10, 0.50, 0.50],   # A
                     [0.12, 0.12, 0.52, 0.52],   # B: IoU(A, B) = 0.82 > 0.7
                     [0.60, 0.60, 0.90, 0.90]],  # C: disjoint
                    np.float32)


def rpn_probs(fg_scores):
    fg = np.asarray(fg_scores, np.float32)
    return np.stack([1 - fg, fg], axis=-1)


def test_proposal_layer_sorts_by_score_nms_and_pads():
    layer = L.ProposalLayer(proposal_count=5, nms_threshold=0.7, pre_nms_limit=10, bbox_std_dev=STD)
    probs = rpn_probs([[0.6, 0.9, 0.8]])
    out = layer([tf.constant(probs), tf.zeros([1, 3, 4]), tf.constant(ANCHORS3[None])]).numpy()
    assert out.shape == (1, 5, 4)
    # B (0.9) then C (0.8); A (0.6) overlaps B by 0.82 and is suppressed; zero padding
    np.testing.assert_allclose(out[0, :2], ANCHORS3[[1, 2]], atol=1e-6)
    assert np.all(out[0, 2:] == 0)


def test_proposal_layer_batch_images_are_independent_and_pre_nms_limit():
    layer = L.ProposalLayer(proposal_count=3, nms_threshold=0.7, pre_nms_limit=10, bbox_std_dev=STD)
    probs = rpn_probs([[0.6, 0.9, 0.8], [0.9, 0.1, 0.95]])
    anchors = np.stack([ANCHORS3, ANCHORS3])
    out = layer([tf.constant(probs), tf.zeros([2, 3, 4]), tf.constant(anchors)]).numpy()
    np.testing.assert_allclose(out[1], ANCHORS3[[2, 0]].tolist() + [[0, 0, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(out[0, :2], ANCHORS3[[1, 2]], atol=1e-6)
    # only the best anchor survives a pre-NMS limit of 1
    top1 = L.ProposalLayer(3, 0.7, 1, STD)([tf.constant(probs), tf.zeros([2, 3, 4]), tf.constant(anchors)]).numpy()
    np.testing.assert_allclose(top1[:, 0], ANCHORS3[[1, 2]], atol=1e-6)
    assert np.all(top1[:, 1:] == 0)
    # with a loose NMS threshold A is kept after B and C
    loose = L.ProposalLayer(3, 0.9, 10, STD)([tf.constant(probs[:1]), tf.zeros([1, 3, 4]),
                                              tf.constant(anchors[:1])]).numpy()
    np.testing.assert_allclose(loose[0], ANCHORS3[[1, 2, 0]], atol=1e-6)


def test_proposal_layer_applies_deltas_times_std_and_clips():
    anchors = np.array([[[0.2, 0.2, 0.4, 0.4], [0.8, 0.8, 0.95, 0.95]]], np.float32)
    # raw deltas are multiplied by RPN_BBOX_STD_DEV: dy 1 → 0.1·h, log dh 1 → ·e^0.2
    deltas = np.array([[[1.0, 0.0, 1.0, 0.0], [0.0, 5.0, 0.0, 0.0]]], np.float32)
    probs = rpn_probs([[0.9, 0.8]])
    out = L.ProposalLayer(2, 0.7, 10, STD)([tf.constant(probs), tf.constant(deltas), tf.constant(anchors)]).numpy()
    cy = 0.3 + 0.1 * 0.2
    h = 0.2 * math.exp(0.2)
    np.testing.assert_allclose(out[0, 0], [cy - h / 2, 0.2, cy + h / 2, 0.4], atol=1e-6)
    # second anchor moves right by 0.5·0.15 = 0.075 and is clipped at x = 1
    np.testing.assert_allclose(out[0, 1], [0.8, 0.875, 0.95, 1.0], atol=1e-6)


# ----------------------------------------------------------------------------------------
# PyramidROIAlign
# ----------------------------------------------------------------------------------------

def px_box(cy, cx, h, w, side=1024):
    """Normalised box of ``h × w`` pixels centred at pixel ``(cy, cx)`` of a square image."""
    return [(cy - h / 2) / (side - 1), (cx - w / 2) / (side - 1),
            (cy + h / 2) / (side - 1), (cx + w / 2) / (side - 1)]


def level_maps(batch=2, channels=2):
    """P2..P5 whose value encodes the level (channel c holds level + 10·c)."""
    maps = []
    for level, size in zip(range(2, 6), (16, 8, 4, 2)):
        values = np.array([level + 10 * c for c in range(channels)], np.float32)
        maps.append(tf.constant(np.broadcast_to(values, (batch, size, size, channels)).copy()))
    return maps


def test_pyramid_roi_align_assigns_levels_by_box_size_and_keeps_order():
    boxes = np.array([
        [px_box(300, 300, 16, 16), px_box(512, 512, 1000, 1000),
         px_box(500, 400, 224, 224), px_box(200, 700, 112, 112), px_box(600, 600, 448, 112)],
        [px_box(500, 400, 224, 224), px_box(100, 100, 8, 8),
         px_box(300, 300, 112, 112), px_box(512, 512, 900, 700), px_box(512, 512, 448, 448)],
    ], np.float32)
    layer = L.PyramidROIAlign([7, 7])
    out = layer([tf.constant(boxes), tf.constant(meta_1024(batch=2))] + level_maps()).numpy()
    assert out.shape == (2, 5, 7, 7, 2)
    # tiny → P2, huge → P5, 224 px → P4, 112 px → P3, 448×112 (area of 224²) → P4, 448 → P5
    expected_levels = np.array([[2, 5, 4, 3, 4], [4, 2, 3, 5, 5]], np.float32)
    np.testing.assert_allclose(out[..., 0], np.broadcast_to(expected_levels[..., None, None], (2, 5, 7, 7)))
    np.testing.assert_allclose(out[..., 1], 10 + out[..., 0])
    assert layer.compute_output_shape([(2, 5, 4), (2, 93), (2, 16, 16, 2)] + [None] * 3) == (2, 5, 7, 7, 2)


def test_pyramid_roi_align_crops_the_box_region():
    """A P5 map with value 10·row + col; a tall box over columns 0..3 → those columns."""
    values = (10 * np.arange(8)[:, None] + np.arange(8)[None, :]).astype(np.float32)
    p5 = tf.constant(values[None, :, :, None])
    others = [tf.zeros([1, s, s, 1]) for s in (32, 16, 8)]
    box = np.array([[[0.0, 0.0, 1.0, 3.0 / 7.0]]], np.float32)  # 1024 × 439 px → level 5
    out = L.PyramidROIAlign([8, 4])([tf.constant(box), tf.constant(meta_1024())] + others + [p5]).numpy()
    np.testing.assert_allclose(out[0, 0, :, :, 0], values[:, :4], atol=1e-4)


def crop_and_resize_image_grad_np(upstream, boxes, box_indices, image_shape):
    """float64 reference of the bilinear ``crop_and_resize`` gradient w.r.t. the image: each
    crop sample sends its gradient to its four neighbours with the bilinear weights (samples
    outside the map send nothing); the sample grid spans the box corners, as TensorFlow's."""
    batch, height, width, depth = image_shape
    grad = np.zeros(image_shape)
    crop_h, crop_w = upstream.shape[1:3]

    def samples(lo, hi, size, steps):
        if steps == 1:
            return [0.5 * (lo + hi) * (size - 1)]
        return [lo * (size - 1) + k * (hi - lo) * (size - 1) / (steps - 1) for k in range(steps)]

    for n, (y1, x1, y2, x2) in enumerate(boxes.astype(np.float64)):
        for i, y in enumerate(samples(y1, y2, height, crop_h)):
            if not 0 <= y <= height - 1:
                continue
            top, bottom, fy = math.floor(y), math.ceil(y), y - math.floor(y)
            for j, x in enumerate(samples(x1, x2, width, crop_w)):
                if not 0 <= x <= width - 1:
                    continue
                left, right, fx = math.floor(x), math.ceil(x), x - math.floor(x)
                g, b = upstream[n, i, j].astype(np.float64), box_indices[n]
                grad[b, top, left] += (1 - fy) * (1 - fx) * g
                grad[b, top, right] += (1 - fy) * fx * g
                grad[b, bottom, left] += fy * (1 - fx) * g
                grad[b, bottom, right] += fy * fx * g
    return grad


@pytest.mark.parametrize("crop_size", [(7, 5), (1, 3)])
def test_roi_align_crops_are_crop_and_resize_with_the_exact_image_gradient(crop_size):
    rng = np.random.default_rng(4)
    image = rng.normal(size=(2, 12, 9, 3)).astype(np.float32)
    boxes = np.concatenate([random_boxes(rng, 10),
                            [[-0.4, 0.2, 1.3, 0.7],      # beyond the map: outer samples are 0
                             [0.5, 0.5, 0.5, 0.5],       # a point
                             [0.25, 0.75, 0.75, 0.25]]]  # flipped: sampled right to left
                           ).astype(np.float32)
    box_indices = rng.integers(0, 2, len(boxes)).astype(np.int32)
    upstream = rng.normal(size=(len(boxes),) + crop_size + (3,)).astype(np.float32)
    x = tf.constant(image)
    with tf.GradientTape() as tape:
        tape.watch(x)
        crops = L.roi_align_crops(x, boxes, box_indices, crop_size)
    grad = tape.gradient(crops, x, output_gradients=tf.constant(upstream)).numpy()
    np.testing.assert_array_equal(crops.numpy(),
                                  tf.image.crop_and_resize(image, boxes, box_indices, crop_size).numpy())
    expected = crop_and_resize_image_grad_np(upstream, boxes, box_indices, image.shape)
    np.testing.assert_allclose(grad, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert np.abs(expected).max() > 0


def test_pyramid_roi_align_gradient_keeps_every_overlapping_box_contribution():
    """Many overlapping boxes on one P2 map: the gradient that reaches P2 is the exact sum
    of every box's share on every call (TensorFlow's CPU kernel of the crop_and_resize
    gradient loses some of them now and then: its threads add into shared pixels)."""
    rng = np.random.default_rng(5)
    n, side, channels = 96, 24, 64
    centres = rng.uniform(0.4, 0.6, (n, 2))
    sides = rng.uniform(0.02, 0.06, (n, 2))  # < 0.077 of a 1024² image: all on P2
    boxes = np.concatenate([centres - sides / 2, centres + sides / 2], axis=1).astype(np.float32)
    p2 = tf.constant(rng.normal(size=(1, side, side, channels)).astype(np.float32))
    others = [tf.zeros([1, s, s, channels]) for s in (12, 6, 3)]
    upstream = tf.constant(rng.normal(size=(1, n, 7, 7, channels)).astype(np.float32))
    layer = L.PyramidROIAlign([7, 7])

    @tf.function
    def p2_gradient():
        with tf.GradientTape() as tape:
            tape.watch(p2)
            out = layer([tf.constant(boxes[None]), tf.constant(meta_1024())] + [p2] + others)
        return tape.gradient(out, p2, output_gradients=upstream)

    expected = crop_and_resize_image_grad_np(upstream.numpy()[0], boxes, np.zeros(n, np.int32), p2.shape)
    results = [p2_gradient().numpy() for _ in range(200)]
    assert len({r.tobytes() for r in results}) == 1, "the gradient changed from call to call"
    np.testing.assert_allclose(results[0], expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_roi_align_gradient_choice_follows_the_maps_placement(monkeypatch):
    """The race-free gradient is for maps on a CPU: chosen by the maps' device when it is
    known (a replica's device under a strategy), else by whether the process sees a GPU;
    never under op determinism (TensorFlow's kernel then runs on one thread)."""
    from tensorflow.python.framework import config as tf_config
    monkeypatch.setattr(tf_config, "is_op_determinism_enabled", lambda: False)
    gpus = []
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: list(gpus))
    assert not L._race_free_roi_align_gradient("/job:localhost/replica:0/task:0/device:GPU:1")
    assert L._race_free_roi_align_gradient("/job:localhost/replica:0/task:0/device:CPU:0")
    assert L._race_free_roi_align_gradient("")
    gpus.append("GPU:0")  # a process with a GPU: unplaced maps go there, CPU-placed maps not
    assert not L._race_free_roi_align_gradient("")
    assert L._race_free_roi_align_gradient("/device:CPU:0")
    monkeypatch.setattr(tf_config, "is_op_determinism_enabled", lambda: True)
    assert not L._race_free_roi_align_gradient("/device:CPU:0")
    # the layer reads the device of the maps it is given
    seen = []
    monkeypatch.setattr(L, "_race_free_roi_align_gradient", lambda device="": seen.append(device) or True)
    with tf.device("/cpu:0"):
        maps = [tf.zeros([1, s, s, 4]) for s in (16, 8, 4, 2)]
    L.PyramidROIAlign([2, 2])([tf.constant([[[0.1, 0.1, 0.5, 0.5]]]), tf.constant(meta_1024())] + maps)
    assert seen and "CPU:0" in seen[-1].upper()


# ----------------------------------------------------------------------------------------
# DetectionTargetLayer
# ----------------------------------------------------------------------------------------

GT_BOX = [0.2, 0.2, 0.6, 0.6]
CROWD_BOX = [0.7, 0.7, 0.95, 0.95]


def target_config(**overrides):
    values = dict(NUM_CLASSES=4, TRAIN_ROIS_PER_IMAGE=10, ROI_POSITIVE_RATIO=0.33,
                  USE_MINI_MASK=True, MINI_MASK_SHAPE=(15, 15), MASK_SHAPE=[15, 15], MAX_GT_INSTANCES=3)
    values.update(overrides)
    return Config(**values)


def target_layer(config):
    return L.DetectionTargetLayer(config.TRAIN_ROIS_PER_IMAGE, config.ROI_POSITIVE_RATIO, config.BBOX_STD_DEV,
                                  config.MASK_SHAPE, config.USE_MINI_MASK)


def run_targets(config, proposals, class_ids, boxes, masks):
    out = target_layer(config)([tf.constant(np.asarray(proposals, np.float32)),
                                          tf.constant(np.asarray(class_ids, np.int32)),
                                          tf.constant(np.asarray(boxes, np.float32)),
                                          tf.constant(np.asarray(masks, bool))])
    return [o.numpy() for o in out]


def mini_masks(rng, count, side=15):
    masks = rng.random((side, side, count)) > 0.5
    masks[:, -3:] = False  # keeps the shifted-crop expectation independent of edge rounding
    return masks


def test_detection_target_positive_negative_crowd_and_padding():
    rng = np.random.default_rng(4)
    masks = np.zeros((1, 15, 15, 3), bool)
    masks[0, ..., :2] = mini_masks(rng, 2)
    gt_boxes = [[GT_BOX, CROWD_BOX, [0, 0, 0, 0]]]
    gt_ids = [[2, -1, 0]]
    far = [0.0, 0.0, 0.1, 0.1]
    over_crowd = [0.72, 0.72, 0.9, 0.9]
    proposals = [[GT_BOX, over_crowd, far, [0, 0, 0, 0], [0, 0, 0, 0]]]
    rois, ids, deltas, tmasks = run_targets(target_config(), proposals, gt_ids, gt_boxes, masks)
    assert rois.shape == (1, 10, 4) and ids.shape == (1, 10)
    assert deltas.shape == (1, 10, 4) and tmasks.shape == (1, 10, 15, 15)
    # 1 positive → int(1 / 0.33) - 1 = 2 negatives wanted, but only `far` qualifies:
    # the proposal over the crowd box is never a negative.
    np.testing.assert_allclose(rois[0, 0], GT_BOX, atol=1e-6)
    np.testing.assert_allclose(rois[0, 1], far, atol=1e-6)
    assert ids[0].tolist() == [2] + [0] * 9
    np.testing.assert_allclose(deltas[0], 0, atol=1e-5)
    # a proposal equal to its GT box crops the whole mini-mask (15 → 15, exact sampling)
    np.testing.assert_array_equal(tmasks[0, 0], masks[0, :, :, 0].astype(np.float32))
    assert np.all(rois[0, 2:] == 0) and np.all(tmasks[0, 1:] == 0)


def test_detection_target_shifted_positive_deltas_and_mini_mask_crop():
    rng = np.random.default_rng(5)
    mask = mini_masks(rng, 1)
    shift = 0.4 * 2 / 14  # two mini-mask pixels of the 0.4-wide GT box; IoU 0.75
    proposal = [0.2, 0.2 + shift, 0.6, 0.6 + shift]
    rois, ids, deltas, tmasks = run_targets(target_config(), [[proposal]], [[3]], [[GT_BOX]], mask[None])
    assert ids[0, 0] == 3
    np.testing.assert_allclose(rois[0, 0], proposal, atol=1e-6)
    want = utils.box_refinement(np.array([proposal]), np.array([GT_BOX])) / STD
    np.testing.assert_allclose(deltas[0, 0], want[0], atol=1e-4)
    assert deltas[0, 0, 1] == pytest.approx(-1 / 0.7, abs=1e-4)  # dx = -shift / w / 0.1
    # the ROI sees mini-mask columns 2..14, then empty space beyond the GT box
    expected = np.zeros((15, 15), np.float32)
    expected[:, :13] = mask[:, 2:, 0]
    np.testing.assert_array_equal(tmasks[0, 0], expected)


def test_detection_target_full_size_masks_are_cropped_at_the_roi():
    rng = np.random.default_rng(6)
    full = rng.random((29, 29, 1)) > 0.5  # normalised 0.25 ↔ pixel 7 (29 - 1 = 28 steps)
    box = [0.25, 0.25, 0.75, 0.75]
    config = target_config(USE_MINI_MASK=False)
    _, ids, _, tmasks = run_targets(config, [[box]], [[1]], [[box]], full[None])
    assert ids[0, 0] == 1
    np.testing.assert_array_equal(tmasks[0, 0], full[7:22, 7:22, 0].astype(np.float32))


def test_detection_target_counts_respect_rois_per_image_and_ratio():
    rng = np.random.default_rng(7)
    config = target_config(TRAIN_ROIS_PER_IMAGE=200, ROI_POSITIVE_RATIO=0.33)
    jitter = rng.uniform(-0.01, 0.01, (150, 4))
    positives = np.array(GT_BOX) + jitter
    corner = rng.uniform(0.0, 0.1, (300, 2))
    negatives = np.concatenate([corner, corner + 0.05], axis=1)
    proposals = np.concatenate([positives, negatives])[None]
    masks = mini_masks(rng, 1)[None]
    rois, ids, _, _ = run_targets(config, proposals, [[1]], [[GT_BOX]], masks)
    # 66 = int(200·0.33) positives first, then 200 - 66 = 134 negatives
    assert np.sum(ids[0] > 0) == 66 and np.all(ids[0, :66] == 1)
    assert np.sum(np.any(rois[0] != 0, axis=1)) == 200
    iou = utils.compute_overlaps(rois[0], np.array([GT_BOX]))[:, 0]
    assert np.all(iou[:66] >= 0.5) and np.all(iou[66:] < 0.5)

    # few positives: 5 → int(5 / 0.33) - 5 = 10 negatives; padding after them
    proposals = np.concatenate([positives[:5], negatives])[None]
    rois, ids, deltas, tmasks = run_targets(config, proposals, [[1]], [[GT_BOX]], masks)
    assert np.sum(ids[0] > 0) == 5
    assert np.sum(np.any(rois[0] != 0, axis=1)) == 15
    assert np.all(rois[0, 15:] == 0) and np.all(deltas[0, 5:] == 0) and np.all(tmasks[0, 5:] == 0)

    # few negatives: all of them are used
    proposals = np.concatenate([positives[:5], negatives[:3]])[None]
    rois, ids, _, _ = run_targets(config, proposals, [[1]], [[GT_BOX]], masks)
    assert np.sum(np.any(rois[0] != 0, axis=1)) == 8


def test_detection_target_batch_and_image_without_gt():
    rng = np.random.default_rng(8)
    masks = np.zeros((2, 15, 15, 3), bool)
    masks[0, ..., 0] = mini_masks(rng, 1)[..., 0]
    boxes = np.zeros((2, 3, 4), np.float32)
    boxes[0, 0] = GT_BOX
    ids = np.array([[4, 0, 0], [0, 0, 0]])
    proposals = np.array([[GT_BOX, [0.0, 0.0, 0.1, 0.1]], [GT_BOX, [0.0, 0.0, 0.1, 0.1]]], np.float32)
    rois, tids, _, _ = run_targets(target_config(), proposals, ids, boxes, masks)
    assert tids[0, 0] == 4 and np.any(rois[0] != 0)
    # matterport's rule: no positives → no negatives either, the image gets no ROI
    assert np.all(rois[1] == 0) and np.all(tids[1] == 0)


def test_detection_target_hard_negatives_come_from_the_best_scored_proposals():
    """HARD_NEGATIVE_FRACTION: that share of the negatives is the first negative proposals
    (the proposal layer's best RPN scores), the rest uniform from the others; 0 is Mask
    R-CNN's uniform sampling, drawing exactly what the layer drew without the argument."""
    rng = np.random.default_rng(9)
    config = target_config(TRAIN_ROIS_PER_IMAGE=30, ROI_POSITIVE_RATIO=0.33)
    corner = rng.uniform(0.0, 0.1, (60, 2))
    negatives = np.concatenate([corner, corner + 0.05], axis=1)
    positives = np.array(GT_BOX) + rng.uniform(-0.01, 0.01, (3, 4))
    # best scored first: the positives are spread among the negatives
    proposals = np.concatenate([negatives[:2], positives[:1], negatives[2:], positives[1:]])
    masks = mini_masks(rng, 1)[None]
    args = [tf.constant(proposals[None], tf.float32), tf.constant([[1]], tf.int32),
            tf.constant([[GT_BOX]], tf.float32), tf.constant(masks)]

    def sampled(**kwargs):
        layer = L.DetectionTargetLayer(config.TRAIN_ROIS_PER_IMAGE, config.ROI_POSITIVE_RATIO,
                                       config.BBOX_STD_DEV, config.MASK_SHAPE, True, seed=3, **kwargs)
        rois, ids, _, _ = [o.numpy()[0] for o in layer(args)]
        rows = [int(np.argmin(np.abs(proposals - r).sum(axis=1))) for r in rois if np.any(r)]
        return rows, ids

    # 3 positives → int(3 / 0.33) - 3 = 6 negatives
    rows, ids = sampled(hard_negative_fraction=1.0)
    assert ids.tolist()[:3] == [1, 1, 1] and len(rows) == 9
    assert rows[3:] == [0, 1, 3, 4, 5, 6]  # the first six negatives in proposal order
    rows, _ = sampled(hard_negative_fraction=0.5)
    assert rows[3:6] == [0, 1, 3]  # 3 hard ones, then 3 uniform from the other 57
    assert len(set(rows[6:]) & {0, 1, 3}) == 0 and len(set(rows[6:])) == 3
    plain, _ = sampled()
    assert sampled(hard_negative_fraction=0.0)[0] == plain
    assert plain[3:] != [0, 1, 3, 4, 5, 6]  # uniform sampling does not take the first ones
    with pytest.raises(ValueError, match="hard_negative_fraction"):
        L.DetectionTargetLayer(10, 0.33, STD, [15, 15], True, hard_negative_fraction=1.5)
    for bad in (-0.1, 1.5, None, True, "0.5"):
        with pytest.raises(ValueError, match="HARD_NEGATIVE_FRACTION"):
            type("C", (Config,), {"HARD_NEGATIVE_FRACTION": bad})()
    assert Config(HARD_NEGATIVE_FRACTION=0.5).HARD_NEGATIVE_FRACTION == 0.5


# ----------------------------------------------------------------------------------------
# DetectionLayer
# ----------------------------------------------------------------------------------------

def detection_inputs():
    """7 ROIs over 3 classes; returns (rois, probs, deltas, meta) with a letterbox window."""
    rois = np.array([[0.2, 0.2, 0.4, 0.4],     # 0 class 1, 0.90
                     [0.21, 0.21, 0.41, 0.41],  # 1 class 1, 0.80 → NMS'd by 0
                     [0.2, 0.2, 0.4, 0.4],      # 2 class 2, 0.85 → kept (other class)
                     [0.6, 0.6, 0.8, 0.8],      # 3 background
                     [0.6, 0.6, 0.8, 0.8],      # 4 class 2, 0.60 → below confidence
                     [0.0, 0.5, 0.3, 0.9],      # 5 class 1, 0.75 → clipped to the window
                     [0.5, 0.1, 0.7, 0.3]],     # 6 class 2, 0.95 with a class-2 delta
                    np.float32)
    probs = np.array([[0.05, 0.90, 0.05], [0.10, 0.80, 0.10], [0.05, 0.10, 0.85],
                      [0.95, 0.03, 0.02], [0.20, 0.20, 0.60], [0.15, 0.75, 0.10],
                      [0.02, 0.03, 0.95]], np.float32)
    deltas = np.zeros((7, 3, 4), np.float32)
    deltas[6] = 9.0  # deltas of the other classes must be ignored
    deltas[6, 2] = [1.0, 0.0, 0.0, 0.0]  # ·0.1 std → moves down by 0.1·0.2
    meta = mmeta.compose_image_meta(0, (96, 128, 3), (128, 128, 3), (16, 0, 112, 128), 1.0, np.ones(3))
    return rois[None], probs[None], deltas[None], meta[None].astype(np.float32)


def detection_layer(config):
    return L.DetectionLayer(config.DETECTION_MAX_INSTANCES, config.DETECTION_MIN_CONFIDENCE,
                            config.DETECTION_NMS_THRESHOLD, config.BBOX_STD_DEV)


def detection_config(**overrides):
    values = dict(NUM_CLASSES=3, DETECTION_MAX_INSTANCES=6, DETECTION_MIN_CONFIDENCE=0.7,
                  DETECTION_NMS_THRESHOLD=0.3, BBOX_STD_DEV=STD)
    values.update(overrides)
    return Config(**values)


def test_detection_layer_filters_nms_per_class_sorts_clips_and_pads():
    out = detection_layer(detection_config())([tf.constant(x) for x in detection_inputs()]).numpy()
    assert out.shape == (1, 6, 6)
    wy1 = 16 / 127  # window (16, 0, 112, 128) normalised: (16/127, 0, 111/127, 1)
    want = np.array([[0.52, 0.1, 0.72, 0.3, 2, 0.95],
                     [0.2, 0.2, 0.4, 0.4, 1, 0.90],
                     [0.2, 0.2, 0.4, 0.4, 2, 0.85],
                     [wy1, 0.5, 0.3, 0.9, 1, 0.75]], np.float32)
    np.testing.assert_allclose(out[0, :4], want, atol=1e-5)
    assert np.all(out[0, 4:] == 0)


def test_detection_layer_max_instances_and_all_background_in_graph_mode():
    layer = detection_layer(detection_config(DETECTION_MAX_INSTANCES=2))
    out = layer([tf.constant(x) for x in detection_inputs()]).numpy()
    np.testing.assert_allclose(out[0, :, 4:], [[2, 0.95], [1, 0.90]], atol=1e-6)

    rois, probs, deltas, meta = detection_inputs()
    probs = np.zeros_like(probs)
    probs[..., 0] = 1.0
    graph_layer = detection_layer(detection_config())
    fn = tf.function(lambda *a: graph_layer(list(a)))
    empty = fn(*[tf.constant(x) for x in (rois, probs, deltas, meta)]).numpy()
    assert empty.shape == (1, 6, 6) and np.all(empty == 0)


def test_detection_score_rule_foreground_keeps_rois_the_background_outscores():
    """matterport's argmax drops a ROI whose background is most probable; "foreground" scores it
    by its best object class, so a floor below 0.5 keeps it (DETECTION_SCORE_RULE)."""
    rois = np.array([[[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.7, 0.7], [0.1, 0.6, 0.3, 0.9]]], np.float32)
    probs = np.array([[[0.55, 0.15, 0.30], [0.90, 0.06, 0.04], [0.10, 0.85, 0.05]]], np.float32)
    deltas = np.zeros((1, 3, 3, 4), np.float32)
    meta = mmeta.compose_image_meta(0, (128, 128, 3), (128, 128, 3), (0, 0, 128, 128), 1.0, np.ones(3))
    inputs = [tf.constant(x) for x in (rois, probs, deltas, meta[None].astype(np.float32))]

    def detect(rule, floor):
        layer = L.DetectionLayer(6, floor, 0.3, STD, score_rule=rule)
        out = layer(inputs).numpy()[0]
        return out[out[:, 5] > 0][:, 4:]

    np.testing.assert_allclose(detect("argmax", 0.2), [[1, 0.85]], atol=1e-6)
    # ROI 0: best object class 2 (0.30), kept at floor 0.2; ROI 1's best (0.06) is below it
    np.testing.assert_allclose(detect("foreground", 0.2), [[1, 0.85], [2, 0.30]], atol=1e-6)
    np.testing.assert_allclose(detect("foreground", 0.05), [[1, 0.85], [2, 0.30], [1, 0.06]], atol=1e-6)
    np.testing.assert_allclose(detect("foreground", 0.5), detect("argmax", 0.5), atol=1e-6)
    clone = L.DetectionLayer.from_config(L.DetectionLayer(6, 0.2, 0.3, STD, score_rule="foreground").get_config())
    assert clone.score_rule == "foreground"
    with pytest.raises(ValueError, match="score_rule"):
        L.DetectionLayer(6, 0.2, 0.3, STD, score_rule="max")
    with pytest.raises(ValueError, match="DETECTION_SCORE_RULE"):
        Config(DETECTION_SCORE_RULE="fg")
    assert Config(DETECTION_SCORE_RULE="foreground").DETECTION_SCORE_RULE == "foreground"


# ----------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------

def test_rpn_class_loss_one_hand_values():
    match = tf.constant([[1], [-1], [0], [1]], tf.int32)
    logits = tf.constant([[0.0, math.log(3)], [math.log(3), 0.0], [100.0, -100.0], [0.0, 0.0]])
    want = (2 * math.log(4 / 3) + math.log(2)) / 3  # the neutral anchor is ignored
    assert LS.rpn_class_loss_one(match, logits).numpy() == pytest.approx(want, rel=1e-5)
    assert LS.rpn_class_loss_one(tf.zeros([4, 1], tf.int32), logits).numpy() == 0.0


def test_rpn_bbox_loss_one_uses_packed_targets_of_positive_anchors():
    match = tf.constant([[0], [1], [-1], [1]], tf.int32)
    pred = np.zeros((4, 4), np.float32)
    pred[1] = [0.5, 0, 0, 0]
    pred[3] = [0, 2.0, 0, 0]
    pred[0] = pred[2] = 50.0  # not positive: ignored
    target = np.zeros((6, 4), np.float32)
    target[2:] = 99.0  # beyond the 2 positives: padding
    want = (0.125 + 1.5) / 8
    assert LS.rpn_bbox_loss_one(tf.constant(target), match, tf.constant(pred)).numpy() == pytest.approx(want)
    none = LS.rpn_bbox_loss_one(tf.constant(target), tf.zeros([4, 1], tf.int32), tf.constant(pred))
    assert none.numpy() == 0.0


def test_mrcnn_class_loss_one_ignores_inactive_predictions_and_padding():
    logits = np.array([[2.0, 0.5, 0.1], [0.1, 0.2, 3.0], [0.3, 1.5, 0.2], [5.0, 0.0, 0.0]], np.float32)
    target = np.array([0, 1, 1, 2])
    active = np.array([1, 1, 0])       # ROI 1 predicts class 2, inactive in this source
    valid = np.array([1, 1, 1, 0])     # ROI 3 is padding
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    ce = -logp[np.arange(4), target]
    want = (ce[0] + ce[2]) / 2
    got = LS.mrcnn_class_loss_one(tf.constant(target), tf.constant(logits),
                                  tf.constant(active), tf.constant(valid, tf.bool))
    assert got.numpy() == pytest.approx(want, rel=1e-5)


def test_mrcnn_bbox_loss_one_uses_each_positive_rois_own_class():
    target_ids = np.array([2, 0, 1])
    target = np.array([[0.5, 0, 0, 0], [7, 7, 7, 7], [0, 0, 3.0, 0]], np.float32)
    pred = np.full((3, 3, 4), 40.0, np.float32)  # other classes: far off, must be ignored
    pred[0, 2] = 0.0
    pred[2, 1] = 0.0
    want = (0.125 + 2.5) / 8
    got = LS.mrcnn_bbox_loss_one(tf.constant(target), tf.constant(target_ids), tf.constant(pred))
    assert got.numpy() == pytest.approx(want, rel=1e-6)


def bce_np(target, pred):
    pred = np.clip(pred, 1e-7, 1 - 1e-7)
    return -(target * np.log(pred) + (1 - target) * np.log(1 - pred))


def test_mrcnn_mask_loss_one_picks_class_channel_or_channel_zero():
    rng = np.random.default_rng(9)
    target = (rng.random((3, 4, 4)) > 0.5).astype(np.float32)
    target_ids = np.array([2, 0, 1])
    pred = rng.uniform(0.05, 0.95, (3, 4, 4, 3)).astype(np.float32)
    want = np.mean(np.concatenate([bce_np(target[0], pred[0, ..., 2]).ravel(),
                                   bce_np(target[2], pred[2, ..., 1]).ravel()]))
    got = LS.mrcnn_mask_loss_one(tf.constant(target), tf.constant(target_ids), tf.constant(pred))
    assert got.numpy() == pytest.approx(want, rel=1e-5)
    # a single-channel (class-agnostic) head is read at channel 0 for every class
    one = pred[..., :1]
    want1 = np.mean(np.concatenate([bce_np(target[0], one[0, ..., 0]).ravel(),
                                    bce_np(target[2], one[2, ..., 0]).ravel()]))
    got1 = LS.mrcnn_mask_loss_one(tf.constant(target), tf.constant(target_ids), tf.constant(one))
    assert got1.numpy() == pytest.approx(want1, rel=1e-5)
    none = LS.mrcnn_mask_loss_one(tf.constant(target), tf.zeros([3], tf.int32), tf.constant(pred))
    assert none.numpy() == 0.0



def test_mask_pixel_weights_balance_foreground_and_background():
    # ROI 0: 4 of 16 pixels foreground; ROI 1: all background; ROI 2: one pixel of 100
    target = np.zeros((3, 10, 10), np.float32)
    target[0, :2, :2] = 1
    target[2, 5, 5] = 1
    t = tf.constant(target)
    plain = LS.mask_pixel_weights(t, 0.0).numpy()
    assert np.all(plain == 1.0)
    full = LS.mask_pixel_weights(t, 1.0).numpy()
    # foreground fraction 0.04: foreground 0.5/0.04 = 12.5, background 0.5/0.96
    assert full[0, 0, 0] == pytest.approx(12.5) and full[0, 9, 9] == pytest.approx(0.5 / 0.96)
    assert full[0].sum() == pytest.approx(100.0, rel=1e-5)  # the ROI's weights average 1
    assert np.all(full[1] == 1.0)  # no foreground: unweighted
    # 1 % foreground is clipped to 2 %: at most 0.5 / 0.02 = 25 per pixel
    assert full[2, 5, 5] == pytest.approx(0.5 / LS.MIN_FOREGROUND_FRACTION)
    half = LS.mask_pixel_weights(t, 0.5).numpy()
    np.testing.assert_allclose(half, 0.5 + 0.5 * full, rtol=1e-6)


def test_mask_loss_with_foreground_balance_weighs_pixels():
    rng = np.random.default_rng(4)
    target = (rng.random((2, 6, 6)) > 0.8).astype(np.float32)
    target_ids = np.array([1, 1])
    pred = rng.uniform(0.05, 0.95, (2, 6, 6, 2)).astype(np.float32)
    args = (tf.constant(target), tf.constant(target_ids), tf.constant(pred))
    assert LS.mrcnn_mask_loss_one(*args, 0.0).numpy() == pytest.approx(
        LS.mrcnn_mask_loss_one(*args).numpy())
    w = LS.mask_pixel_weights(tf.constant(target), 1.0).numpy()
    want = np.mean(w * bce_np(target, pred[..., 1]))
    assert LS.mrcnn_mask_loss_one(*args, 1.0).numpy() == pytest.approx(want, rel=1e-5)
    # missing a thin foreground costs more with balance than without
    miss = np.where(target[..., None] > 0, 0.1, 0.1).astype(np.float32).repeat(2, -1)
    m = (tf.constant(target), tf.constant(target_ids), tf.constant(miss))
    assert LS.mrcnn_mask_loss_one(*m, 1.0).numpy() > LS.mrcnn_mask_loss_one(*m, 0.0).numpy()
    with pytest.raises(ValueError, match="mask_foreground_balance"):
        LS.MaskRCNNLosses(mask_foreground_balance=1.5)
    for bad in (-0.1, 1.5, None, True, "0.5", "high"):
        with pytest.raises(ValueError, match="MASK_FOREGROUND_BALANCE"):
            type("C", (Config,), {"MASK_FOREGROUND_BALANCE": bad})()


def test_loss_weights_names_and_values_are_checked():
    from siamese_mask_rcnn.mrcnn.config import KNOWN_LOSS_NAMES
    assert KNOWN_LOSS_NAMES == tuple(LS.LOSS_NAMES) + ("presence_loss", "reference_class_loss")
    with pytest.raises(ValueError, match=r"unknown loss name\(s\) \['mrcnn_mask_los'\]"):
        type("C", (Config,), {"LOSS_WEIGHTS": {"mrcnn_mask_los": 2.0}})()
    for bad in (-1.0, None, "2", True, [1.0], float("inf"), float("nan")):
        with pytest.raises(ValueError, match=r"LOSS_WEIGHTS\['mrcnn_mask_loss'\]"):
            type("C", (Config,), {"LOSS_WEIGHTS": {"mrcnn_mask_loss": bad}})()
    for bad in ([1.0], None, "x"):
        with pytest.raises(ValueError, match="LOSS_WEIGHTS must be a dict"):
            type("C", (Config,), {"LOSS_WEIGHTS": bad})()
    partial = type("C", (Config,), {"LOSS_WEIGHTS": {"mrcnn_mask_loss": 2.0, "presence_loss": 0.5}})()
    assert partial.LOSS_WEIGHTS["mrcnn_mask_loss"] == 2.0


def _random_loss_inputs(seed=10):
    rng = np.random.default_rng(seed)
    b, a, r, c, m = 2, 6, 4, 3, 4
    rpn_match = rng.choice([-1, 0, 1], (b, a, 1)).astype(np.int32)
    rpn_match[:, 0] = 1
    rpn_bbox_t = rng.normal(size=(b, a, 4)).astype(np.float32)
    rpn_logits = rng.normal(size=(b, a, 2)).astype(np.float32)
    rpn_bbox = rng.normal(size=(b, a, 4)).astype(np.float32)
    tids = np.array([[1, 2, 0, 0], [2, 0, 0, 0]], np.int32)
    tbbox = rng.normal(size=(b, r, 4)).astype(np.float32)
    tmask = (rng.random((b, r, m, m)) > 0.5).astype(np.float32)
    rois = rng.uniform(0.1, 0.9, (b, r, 4)).astype(np.float32)
    rois[0, 3] = 0.0  # a padding ROI of image 0
    logits = rng.normal(size=(b, r, c)).astype(np.float32)
    pbbox = rng.normal(size=(b, r, c, 4)).astype(np.float32)
    pmask = rng.uniform(0.1, 0.9, (b, r, m, m, c)).astype(np.float32)
    active = np.ones((b, c), np.float32)
    return [rpn_match, rpn_bbox_t, rpn_logits, rpn_bbox, tids, tbbox, tmask, rois,
            logits, pbbox, pmask, active]


def test_mask_rcnn_losses_layer_is_per_image():
    """With ``per_image`` normalisation, each image's sum/count is its own per-image loss."""
    inputs = _random_loss_inputs()
    (rpn_match, rpn_bbox_t, rpn_logits, rpn_bbox, tids, tbbox, tmask, rois,
     logits, pbbox, pmask, active) = inputs
    b, r = tids.shape
    parts = LS.MaskRCNNLosses("per_image")([tf.constant(x) for x in inputs]).numpy()
    assert parts.shape == (2, 5, 2) and len(LS.LOSS_NAMES) == 5
    out = parts[..., 0] / parts[..., 1]
    for i in range(b):
        valid = np.any(rois[i] != 0, axis=1)
        want = [LS.rpn_class_loss_one(rpn_match[i], rpn_logits[i]),
                LS.rpn_bbox_loss_one(rpn_bbox_t[i], rpn_match[i], rpn_bbox[i]),
                LS.mrcnn_class_loss_one(tids[i], logits[i], active[i], valid),
                LS.mrcnn_bbox_loss_one(tbbox[i], tids[i], pbbox[i]),
                LS.mrcnn_mask_loss_one(tmask[i], tids[i], pmask[i])]
        np.testing.assert_allclose(out[i], [float(w) for w in want], rtol=1e-5)
    assert np.all(out > 0)
    # the padding ROI of image 0 is left out of its classification loss
    with_padding = LS.mrcnn_class_loss_one(tids[0], logits[0], active[0], np.ones(r, bool)).numpy()
    assert out[0, 2] != pytest.approx(with_padding)
    # per_image reduction: the mean over the batch of the per-image losses
    np.testing.assert_allclose(LS.reduce_losses(tf.constant(parts), "per_image", b).numpy(),
                               out.mean(axis=0), rtol=1e-6)


def test_release_losses_layer_counts_padding_rows_and_pools_the_batch():
    inputs = _random_loss_inputs()
    tids, logits, active = inputs[4], inputs[8], inputs[11]
    parts = LS.MaskRCNNLosses("release")([tf.constant(x) for x in inputs]).numpy()
    per_image = LS.MaskRCNNLosses("per_image")([tf.constant(x) for x in inputs]).numpy()
    # classifier: every row counts, the padding row of image 0 included
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -np.take_along_axis(logp, tids[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(parts[:, 2, 0], ce.sum(axis=1), rtol=1e-5)
    np.testing.assert_array_equal(parts[:, 2, 1], [4, 4])
    np.testing.assert_array_equal(per_image[:, 2, 1], [3, 4])
    # the other losses have the same parts in both normalisations
    np.testing.assert_allclose(np.delete(parts, 2, axis=1), np.delete(per_image, 2, axis=1), rtol=1e-6)
    # release reduction: pooled over the batch (sum of sums / sum of counts)
    np.testing.assert_allclose(LS.reduce_losses(tf.constant(parts), "release", 2).numpy(),
                               parts[..., 0].sum(0) / parts[..., 1].sum(0), rtol=1e-6)
    # a replica's share of the mean over 2 replicas is half its pooled loss
    np.testing.assert_allclose(LS.reduce_losses(tf.constant(parts), "release", 4, replicas=2).numpy(),
                               parts[..., 0].sum(0) / parts[..., 1].sum(0) / 2, rtol=1e-6)
    with pytest.raises(ValueError, match="LOSS_NORMALIZATION"):
        LS.MaskRCNNLosses("global")


def test_release_classifier_loss_averages_over_all_train_rois_padding_included():
    """60 sampled + 140 padding rows of TRAIN_ROIS_PER_IMAGE = 200 (the issue's example)."""
    sampled, padding = 60, 140
    rows = sampled + padding
    logits = np.zeros((1, rows, 2), np.float32)
    target = np.zeros((1, rows), np.int32)
    target[0, :33] = 1  # 33 positives, 27 negatives among the sampled rows
    logits[0, :33] = [0.0, -1.0]  # positives: CE = log(1 + e)
    logits[0, 33:sampled] = [0.0, 0.0]  # negatives: CE = log 2
    logits[0, sampled:] = [4.0, -4.0]  # padding rows: confident background, CE = log(1 + e^-8)
    rois = np.zeros((1, rows, 4), np.float32)
    rois[0, :sampled] = [0.1, 0.1, 0.5, 0.5]
    active = np.ones((1, 2), np.float32)
    ce_pos, ce_neg, ce_pad = math.log1p(math.e), math.log(2), math.log1p(math.exp(-8))
    release = (33 * ce_pos + 27 * ce_neg + 140 * ce_pad) / 200  # every row counts
    sampled_only = (33 * ce_pos + 27 * ce_neg) / 60
    assert release == pytest.approx(0.31, abs=0.005) and sampled_only == pytest.approx(1.03, abs=0.005)
    for normalization, want in (("release", release), ("per_image", sampled_only)):
        parts = tf.stack([LS.mrcnn_class_loss_parts(
            target[0], logits[0], active[0],
            np.ones(rows, bool) if normalization == "release" else np.any(rois[0] != 0, axis=1))])
        got = LS.reduce_losses(tf.pad(parts[:, None], [[0, 0], [2, 2], [0, 0]]), normalization, 1)
        assert got.numpy()[2] == pytest.approx(want, rel=1e-5), normalization


def test_release_box_loss_pools_the_positive_rois_of_the_batch():
    """One image with 1 positive ROI (loss 1.0), one with 30 (0.1 each): (1 + 30·0.1)/31."""
    rois = 32
    target_ids = np.zeros((2, rois), np.int32)
    target_ids[0, :1] = 1
    target_ids[1, :30] = 1
    target = np.zeros((2, rois, 4), np.float32)
    pred = np.zeros((2, rois, 2, 4), np.float32)
    # smooth-L1 per ROI averaged over its 4 coordinates: image 0 -> |d| = 1.5 on every
    # coordinate (1.5 - 0.5 = 1.0); image 1 -> 0.5·d² = 0.1 with d = sqrt(0.2)
    pred[0, 0, 1] = 1.5
    pred[1, :30, 1] = math.sqrt(0.2)
    pred[:, :, 0] = 50.0  # the background column is never read
    parts = tf.stack([LS.mrcnn_bbox_loss_parts(target[i], target_ids[i], pred[i]) for i in range(2)])
    parts = tf.pad(parts[:, None], [[0, 0], [3, 1], [0, 0]])
    release = LS.reduce_losses(parts, "release", 2).numpy()[3]
    per_image = LS.reduce_losses(parts, "per_image", 2).numpy()[3]
    assert release == pytest.approx((1.0 + 30 * 0.1) / 31, rel=1e-5)
    assert release == pytest.approx(0.129, abs=5e-4)
    assert per_image == pytest.approx((1.0 + 0.1) / 2, rel=1e-5)
    # the mask loss pools the same way: per pixel over all positive ROIs of the batch
    masks = np.zeros((2, rois, 2, 2), np.float32)
    pm = np.full((2, rois, 2, 2, 1), 0.5, np.float32)
    pm[0, 0] = math.exp(-1.0)  # BCE of target 0 at p: -log(1-p)
    pm[1, :30] = 1 - math.exp(-0.1)
    mparts = tf.stack([LS.mrcnn_mask_loss_parts(masks[i], target_ids[i], pm[i]) for i in range(2)])
    mparts = tf.pad(mparts[:, None], [[0, 0], [4, 0], [0, 0]])
    want = (4 * -math.log(1 - math.exp(-1.0)) + 120 * 0.1) / 124
    assert LS.reduce_losses(mparts, "release", 2).numpy()[4] == pytest.approx(want, rel=1e-4)


def test_weight_decay_loss_excludes_gamma_and_beta():
    inp = keras.Input((3,))
    dense = keras.layers.Dense(2, name="fc")
    bn = keras.layers.BatchNormalization(name="bn")
    keras.Model(inp, bn(dense(inp)))
    kernel = np.arange(6, dtype=np.float32).reshape(3, 2)
    dense.kernel.assign(kernel)
    dense.bias.assign([1.0, 3.0])
    bn.gamma.assign([100.0, 100.0])
    bn.beta.assign([50.0, 50.0])
    variables = dense.trainable_weights + bn.trainable_weights
    assert len(variables) == 4
    want = 0.01 * (np.sum(kernel ** 2) / 6 + (1 + 9) / 2)
    assert LS.weight_decay_loss(variables, 0.01).numpy() == pytest.approx(want, rel=1e-6)
    assert LS.weight_decay_loss(bn.trainable_weights, 0.01).numpy() == 0.0


# ----------------------------------------------------------------------------------------
# BatchNorm
# ----------------------------------------------------------------------------------------

def frozen_stats_bn(train_bn):
    layer = L.BatchNorm(train_bn=train_bn, name="bn_test")
    layer.build((None, 2))
    layer.moving_mean.assign([1.0, -2.0])
    layer.moving_variance.assign([4.0, 9.0])
    layer.gamma.assign([2.0, 1.0])
    layer.beta.assign([0.5, 0.0])
    return layer


def test_batchnorm_train_bn_false_ignores_training_flag():
    x = np.array([[10.0, 20.0], [30.0, 40.0]], np.float32)
    layer = frozen_stats_bn(train_bn=False)
    out = layer(tf.constant(x), training=True).numpy()
    want = (x - [1.0, -2.0]) / np.sqrt(np.array([4.0, 9.0]) + 1e-3) * [2.0, 1.0] + [0.5, 0.0]
    np.testing.assert_allclose(out, want, rtol=1e-5)
    np.testing.assert_allclose(layer.moving_mean.numpy(), [1.0, -2.0])
    np.testing.assert_allclose(layer.moving_variance.numpy(), [4.0, 9.0])
    assert layer.get_config()["train_bn"] is False


@pytest.mark.parametrize("train_bn", [True, None])
def test_batchnorm_trainable_follows_training_flag(train_bn):
    x = np.array([[10.0, 20.0], [30.0, 40.0]], np.float32)
    layer = frozen_stats_bn(train_bn=train_bn)
    inference = layer(tf.constant(x), training=False).numpy()
    want = (x - [1.0, -2.0]) / np.sqrt(np.array([4.0, 9.0]) + 1e-3) * [2.0, 1.0] + [0.5, 0.0]
    np.testing.assert_allclose(inference, want, rtol=1e-5)
    training = layer(tf.constant(x), training=True).numpy()
    # batch statistics: mean (20, 30), variance 100 → ±10/sqrt(100.001)
    np.testing.assert_allclose(training[:, 0], [-2.0 + 0.5, 2.0 + 0.5], atol=1e-3)
    assert not np.allclose(layer.moving_mean.numpy(), [1.0, -2.0])


# ---------------------------------------------------------------- get_config / from_config
LAYER_ARGS = {
    # every custom layer of the Mask R-CNN core, with plain (non-config) constructor arguments
    "BatchNorm": dict(train_bn=True),
    "Float32Layer": dict(),  # base of the layers that compute in float32 under mixed precision
    "AnchorsLayer": dict(anchors=[[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 1.0, 1.0]]),
    "NormBoxesLayer": dict(image_shape=(64, 96)),
    "ProposalLayer": dict(proposal_count=7, nms_threshold=0.6, pre_nms_limit=30, bbox_std_dev=STD),
    "PyramidROIAlign": dict(pool_shape=(5, 3)),
    "DetectionTargetLayer": dict(train_rois_per_image=12, roi_positive_ratio=0.25, bbox_std_dev=STD,
                                 mask_shape=(14, 10), use_mini_mask=False),
    "DetectionLayer": dict(max_instances=9, min_confidence=0.6, nms_threshold=0.4, bbox_std_dev=STD),
    "FoldRois": {}, "UnfoldRois": {}, "RpnOutputs": dict(k=4), "RepeatBoxDeltas": dict(num_classes=3),
    "ActiveClassIds": {}, "SliceDetectionBoxes": {}, "PadDetectionRows": {}, "MaskRCNNLosses": {},
    "LeadingRois": dict(count=3), "WindowConv2D": dict(filters=6, kernel_size=(5, 5)),
}


def custom_layer_classes():
    from siamese_mask_rcnn.mrcnn import model as M
    found = {}
    for module in (L, H, LS, M):
        for name, obj in vars(module).items():
            if (isinstance(obj, type) and issubclass(obj, keras.layers.Layer)
                    and obj.__module__ == module.__name__):
                found[name] = obj
    return found


def test_every_custom_layer_round_trips_through_get_config():
    classes = custom_layer_classes()
    assert set(classes) == set(LAYER_ARGS), "add new layers to LAYER_ARGS"
    for name, cls in classes.items():
        layer = cls(name=f"probe_{name.lower()}", **LAYER_ARGS[name])
        config = layer.get_config()
        for key in LAYER_ARGS[name]:
            assert key in config, f"{name}.get_config() lacks {key!r}"
        clone = cls.from_config(config)
        assert clone.get_config() == config, name
        assert clone.name == layer.name
        for key, value in LAYER_ARGS[name].items():  # the clone was built from the same values
            np.testing.assert_allclose(np.asarray(config[key], dtype=float), np.asarray(value, dtype=float),
                                       err_msg=f"{name}.{key}")


def test_reloaded_detection_layer_gives_the_same_detections():
    layer = detection_layer(detection_config())
    clone = L.DetectionLayer.from_config(layer.get_config())
    inputs = [tf.constant(x) for x in detection_inputs()]
    np.testing.assert_array_equal(clone(inputs).numpy(), layer(inputs).numpy())
