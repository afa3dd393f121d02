"""The five Mask R-CNN losses, computed per image.

Each function returns one value per image (``[B]``): the mean over that image's valid
anchors/ROIs, 0 when it has none. The training step sums them and divides by the
*global* batch size, so a loss is the same on one device and on any number of replicas
under ``tf.distribute`` (a per-replica ``reduce_mean`` would be summed over replicas).
"""
import keras
import tensorflow as tf

LOSS_NAMES = ("rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss", "mrcnn_mask_loss")


def smooth_l1(y_true, y_pred):
    """Elementwise smooth-L1 (Huber with δ = 1)."""
    diff = tf.abs(y_true - y_pred)
    return tf.where(diff < 1.0, 0.5 * diff ** 2, diff - 0.5)


def _safe_mean(values, mask):
    mask = tf.cast(mask, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(values * mask), tf.reduce_sum(mask))


def rpn_class_loss_one(rpn_match, rpn_class_logits):
    """Match/no-match cross-entropy over the image's sampled anchors (rpn_match ≠ 0)."""
    rpn_match = tf.reshape(rpn_match, [-1])
    labels = tf.cast(tf.equal(rpn_match, 1), tf.int32)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=rpn_class_logits)
    return _safe_mean(ce, tf.not_equal(rpn_match, 0))


def rpn_bbox_loss_one(target_bbox, rpn_match, rpn_bbox):
    """Smooth-L1 between the positive anchors' deltas and their (packed) targets."""
    rpn_match = tf.reshape(rpn_match, [-1])
    positive = tf.where(tf.equal(rpn_match, 1))[:, 0]
    pred = tf.gather(rpn_bbox, positive)
    target = target_bbox[:tf.shape(positive)[0]]
    loss = smooth_l1(target, pred)
    return tf.math.divide_no_nan(tf.reduce_sum(loss), tf.cast(tf.size(loss), tf.float32))


def mrcnn_class_loss_one(target_class_ids, logits, active_class_ids, valid):
    """ROI classification cross-entropy; predictions of classes not active in the image's
    source are not penalised (matterport's rule); padding ROIs are ignored."""
    target_class_ids = tf.cast(target_class_ids, tf.int32)
    pred_ids = tf.argmax(logits, axis=1, output_type=tf.int32)
    pred_active = tf.gather(tf.cast(active_class_ids, tf.float32), pred_ids)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target_class_ids, logits=logits)
    return _safe_mean(ce * pred_active, tf.cast(valid, tf.float32) * pred_active)


def mrcnn_bbox_loss_one(target_bbox, target_class_ids, pred_bbox):
    """Smooth-L1 on the deltas of each positive ROI's own class."""
    target_class_ids = tf.cast(target_class_ids, tf.int32)
    positive = tf.where(target_class_ids > 0)[:, 0]
    classes = tf.gather(target_class_ids, positive)
    index = tf.stack([tf.cast(positive, tf.int32), classes], axis=1)
    pred = tf.gather_nd(pred_bbox, index)
    loss = smooth_l1(tf.gather(target_bbox, positive), pred)
    return tf.math.divide_no_nan(tf.reduce_sum(loss), tf.cast(tf.size(loss), tf.float32))


def mrcnn_mask_loss_one(target_masks, target_class_ids, pred_masks):
    """Binary cross-entropy of each positive ROI's mask; a single-channel (class-agnostic)
    mask head uses channel 0 for every class."""
    target_class_ids = tf.cast(target_class_ids, tf.int32)
    positive = tf.where(target_class_ids > 0)[:, 0]
    pred = tf.transpose(pred_masks, [0, 3, 1, 2])  # [N, C, h, w]
    channels = tf.shape(pred)[1]
    classes = tf.gather(target_class_ids, positive)
    classes = tf.where(tf.equal(channels, 1), tf.zeros_like(classes), classes)
    pred = tf.gather_nd(pred, tf.stack([tf.cast(positive, tf.int32), classes], axis=1))
    target = tf.gather(target_masks, positive)
    bce = keras.losses.binary_crossentropy(target[..., None], pred[..., None])
    return tf.math.divide_no_nan(tf.reduce_sum(bce), tf.cast(tf.size(bce), tf.float32))


class MaskRCNNLosses(keras.layers.Layer):
    """Computes the five per-image losses; outputs a ``[B, 5]`` tensor in LOSS_NAMES order."""

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")  # losses in float32 under mixed precision
        super().__init__(**kwargs)

    def call(self, inputs):
        (rpn_match, rpn_bbox_target, rpn_class_logits, rpn_bbox,
         target_class_ids, target_bbox, target_mask, rois,
         class_logits, pred_bbox, pred_masks, active_class_ids) = inputs
        valid = tf.reduce_any(tf.not_equal(rois, 0.0), axis=2)

        def one(args):
            (m, rt, rl, rb, tc, tb, tm, v, cl, pb, pm, ac) = args
            return tf.stack([
                rpn_class_loss_one(m, rl),
                rpn_bbox_loss_one(rt, m, rb),
                mrcnn_class_loss_one(tc, cl, ac, v),
                mrcnn_bbox_loss_one(tb, tc, pb),
                mrcnn_mask_loss_one(tm, tc, pm),
            ])

        return tf.map_fn(one, (rpn_match, rpn_bbox_target, rpn_class_logits, rpn_bbox,
                               target_class_ids, target_bbox, target_mask, valid,
                               class_logits, pred_bbox, pred_masks, active_class_ids),
                         fn_output_signature=tf.TensorSpec([len(LOSS_NAMES)], tf.float32))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], len(LOSS_NAMES))


def weight_decay_loss(variables, weight_decay):
    """L2 on kernels (not on BN gamma/beta): Σ wd·Σw² / size(w), matterport's form."""
    terms = [weight_decay * tf.reduce_sum(tf.square(v)) / tf.cast(tf.size(v), tf.float32)
             for v in variables if not v.path.endswith(("gamma", "beta"))]
    return tf.add_n(terms) if terms else tf.constant(0.0)
