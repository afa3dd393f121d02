"""The training mask head runs on the ROIs that can be positive only (the leading
``max_positive_rois`` rows of the sampled ROIs), and the losses do not change."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from siamese_mask_rcnn.mrcnn import layers as L  # noqa: E402
from siamese_mask_rcnn.mrcnn import losses as LS  # noqa: E402


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_positive_rois_always_lead_the_sampled_rois(seed):
    """With more positive proposals than allowed, exactly the first P rows are positive."""
    rng = np.random.default_rng(seed)
    train_rois, ratio = 10, 0.33
    p = L.max_positive_rois(train_rois, ratio)
    assert p == 3
    gt = np.array([[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]], np.float32)
    near = np.concatenate([g + rng.uniform(-0.01, 0.01, (5, 4)) for g in gt]).astype(np.float32)
    far = rng.uniform(0.0, 0.05, (6, 4)).astype(np.float32)
    far[:, 2:] += 0.05
    proposals = rng.permutation(np.concatenate([near, far]))[None]
    masks = np.ones((1, 8, 8, 2), bool)
    layer = L.DetectionTargetLayer(train_rois, ratio, [0.1, 0.1, 0.2, 0.2], (8, 8), True)
    _, ids, _, _ = [o.numpy() for o in layer([tf.constant(proposals), tf.constant([[1, 1]], tf.int32),
                                              tf.constant(gt[None]), tf.constant(masks)])]
    assert np.all(ids[0, :p] > 0) and np.all(ids[0, p:] == 0)


def test_losses_are_the_same_with_the_mask_head_on_the_leading_rows_only():
    rng = np.random.default_rng(3)
    b, a, r, p, c, m = 2, 6, 8, 3, 2, 4
    tids = np.array([[1, 1, 1, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]], np.int32)
    inputs = [rng.choice([-1, 0, 1], (b, a, 1)).astype(np.int32), rng.normal(size=(b, a, 4)),
              rng.normal(size=(b, a, 2)), rng.normal(size=(b, a, 4)), tids, rng.normal(size=(b, r, 4)),
              (rng.random((b, r, m, m)) > 0.5), rng.uniform(0.1, 0.9, (b, r, 4)),
              rng.normal(size=(b, r, c)), rng.normal(size=(b, r, c, 4)),
              rng.uniform(0.1, 0.9, (b, r, m, m, 1)), np.ones((b, c))]
    inputs = [tf.constant(np.asarray(x, np.int32 if x.dtype.kind in "ib" else np.float32)) for x in inputs]
    full = LS.MaskRCNNLosses()(inputs).numpy()
    leading = LS.MaskRCNNLosses()(inputs[:10] + [inputs[10][:, :p]] + inputs[11:]).numpy()
    np.testing.assert_allclose(leading, full, rtol=1e-6)
    assert full.shape == (2, 5, 2)  # [sum, count] of each loss
    assert full[0, 4, 0] > 0 and full[0, 4, 1] > 0  # the mask loss was computed


def test_training_graph_feeds_the_mask_head_the_leading_rois(tmp_path):
    from siamese_mask_rcnn.config import siamese_config
    from siamese_mask_rcnn.siamese import SiameseMaskRCNN

    config = siamese_config("tiny")
    model = SiameseMaskRCNN("training", config, model_dir=str(tmp_path))
    heads = model.keras_model.get_layer("siamese_heads")
    layer = heads.get_layer("mrcnn_mask_rois")
    want = L.max_positive_rois(config.TRAIN_ROIS_PER_IMAGE, config.ROI_POSITIVE_RATIO)
    assert layer.count == want and tuple(layer.output.shape[1:]) == (want, 4)
    assert heads.get_layer("mrcnn_mask_unfold").output.shape[1] == want
    # trainable batch norm needs every row's statistics: no slicing then
    trainable_bn = SiameseMaskRCNN("training", siamese_config("tiny", TRAIN_BN=None), model_dir=str(tmp_path))
    names = [layer.name for layer in trainable_bn.keras_model.get_layer("siamese_heads").layers]
    assert "mrcnn_mask_rois" not in names
