"""The five Mask R-CNN losses and their two normalisations.

Every loss is a ratio ``sum / count`` (e.g. the summed box smooth-L1 over the number of
positive-ROI coordinates). The loss layer outputs, per image, the numerator and the
denominator of each loss (``[B, 5, 2]``); ``reduce_losses`` turns them into the losses with
``config.LOSS_NORMALIZATION``:

* ``"release"`` (default; matterport and the official Siamese Mask R-CNN release, paper §4):
  numerators and denominators are summed over the images of one replica (one GPU's batch in
  the release) and divided, then the replicas are averaged. The classifier loss counts all
  ``TRAIN_ROIS_PER_IMAGE`` rows of every image, padding rows (target class 0) included; the
  box and mask losses are pooled over all positive ROIs of the replica's batch, the RPN losses
  over its sampled / positive anchors. Pooling per replica and averaging replicas equals
  pooling over the global batch only when every replica has the same denominators (e.g. the
  same number of positive ROIs).
* ``"per_image"``: each loss is a mean over one image's valid rows (0 when it has none, padding
  rows excluded from the classifier loss), averaged over the global batch; the same on any
  number of replicas.

``*_loss_one`` give one image's ``"per_image"`` value; ``*_loss_parts`` its numerator and
denominator.
"""
import keras
import tensorflow as tf

from .config import LOSS_NAMES  # noqa: F401  (defined there without TensorFlow; re-exported)

NORMALIZATIONS = ("release", "per_image")


def smooth_l1(y_true, y_pred):
    """Elementwise smooth-L1 (Huber with δ = 1)."""
    diff = tf.abs(y_true - y_pred)
    return tf.where(diff < 1.0, 0.5 * diff ** 2, diff - 0.5)


def _ratio(parts):
    """``numerator / denominator`` of a ``[..., 2]`` pair, 0 where the denominator is 0."""
    return tf.math.divide_no_nan(parts[..., 0], parts[..., 1])


def _count(x):
    return tf.cast(tf.size(x), tf.float32)


def rpn_class_loss_parts(rpn_match, rpn_class_logits):
    """``[sum, count]`` of the match/no-match cross-entropy over the sampled anchors
    (``rpn_match`` ≠ 0) of one image; ``rpn_match`` ``[A, 1]``, logits ``[A, 2]``."""
    rpn_match = tf.reshape(rpn_match, [-1])
    labels = tf.cast(tf.equal(rpn_match, 1), tf.int32)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=rpn_class_logits)
    sampled = tf.cast(tf.not_equal(rpn_match, 0), tf.float32)
    return tf.stack([tf.reduce_sum(ce * sampled), tf.reduce_sum(sampled)])


def rpn_bbox_loss_parts(target_bbox, rpn_match, rpn_bbox):
    """``[sum, count]`` of the smooth-L1 between the positive anchors' deltas and their
    (packed) targets, counted per coordinate."""
    rpn_match = tf.reshape(rpn_match, [-1])
    positive = tf.where(tf.equal(rpn_match, 1))[:, 0]
    pred = tf.gather(rpn_bbox, positive)
    target = target_bbox[:tf.shape(positive)[0]]
    loss = smooth_l1(target, pred)
    return tf.stack([tf.reduce_sum(loss), _count(loss)])


def mrcnn_class_loss_parts(target_class_ids, logits, active_class_ids, valid):
    """``[sum, count]`` of the ROI classification cross-entropy over the rows where ``valid``
    is true; predictions of classes not active in the image's source are not counted
    (matterport's rule). ``valid`` all true = the release's normalisation over every
    ``TRAIN_ROIS_PER_IMAGE`` row, padding rows (target 0) included."""
    target_class_ids = tf.cast(target_class_ids, tf.int32)
    pred_ids = tf.argmax(logits, axis=1, output_type=tf.int32)
    pred_active = tf.gather(tf.cast(active_class_ids, tf.float32), pred_ids)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target_class_ids, logits=logits)
    weight = tf.cast(valid, tf.float32) * pred_active
    return tf.stack([tf.reduce_sum(ce * weight), tf.reduce_sum(weight)])


def mrcnn_bbox_loss_parts(target_bbox, target_class_ids, pred_bbox):
    """``[sum, count]`` of the smooth-L1 on the deltas of each positive ROI's own class
    (``pred_bbox`` ``[N, C, 4]``; a class-agnostic head repeats its deltas for every class),
    counted per coordinate."""
    target_class_ids = tf.cast(target_class_ids, tf.int32)
    positive = tf.where(target_class_ids > 0)[:, 0]
    classes = tf.gather(target_class_ids, positive)
    index = tf.stack([tf.cast(positive, tf.int32), classes], axis=1)
    pred = tf.gather_nd(pred_bbox, index)
    loss = smooth_l1(tf.gather(target_bbox, positive), pred)
    return tf.stack([tf.reduce_sum(loss), _count(loss)])


#: Foreground fractions are clipped to [MIN_FOREGROUND_FRACTION, 1 - MIN_FOREGROUND_FRACTION]
#: by :func:`mask_pixel_weights`, so no pixel weighs more than 0.5 / 0.02 = 25.
MIN_FOREGROUND_FRACTION = 0.02


def mask_pixel_weights(target, balance):
    """Per-pixel weights of the mask loss, float32 ``[N, h, w]`` for targets ``[N, h, w]``
    (0 / 1, one ROI per row).

    ``balance`` 0 gives 1 everywhere (the paper's loss); 1 weighs each ROI's foreground
    pixels ``0.5 / f`` and its background pixels ``0.5 / (1 - f)``, ``f`` its foreground
    fraction (clipped to :data:`MIN_FOREGROUND_FRACTION`), so foreground and background each
    carry half of the ROI's loss; in between the two are mixed linearly. The weights of every
    ROI average 1 (up to the clipping), so the loss keeps its scale; a target that is all
    foreground or all background keeps weight 1. Below the clipping (fewer than ~16 of a 28 x 28
    target's 784 pixels) foreground weighs less than half; a 1-pixel stroke across the target
    (~3.6 %) is above it.

    Beyond the paper: its mask loss (Section 4, Mask R-CNN's) is the plain per-pixel binary
    cross-entropy, ``balance`` 0 (the config default ``MASK_FOREGROUND_BALANCE``).
    """
    target = tf.cast(target, tf.float32)
    fraction = tf.reduce_mean(target, axis=[1, 2], keepdims=True)
    clipped = tf.clip_by_value(fraction, MIN_FOREGROUND_FRACTION, 1.0 - MIN_FOREGROUND_FRACTION)
    balanced = target * (0.5 / clipped) + (1.0 - target) * (0.5 / (1.0 - clipped))
    mixed_target = tf.logical_and(fraction > 0.0, fraction < 1.0)
    balanced = tf.where(mixed_target, balanced, tf.ones_like(balanced))
    return (1.0 - balance) + balance * balanced


def mrcnn_mask_loss_parts(target_masks, target_class_ids, pred_masks, foreground_balance=0.0):
    """``[sum, count]`` of the binary cross-entropy of each positive ROI's mask, counted per
    pixel; a single-channel (class-agnostic) mask head uses channel 0 for every class.
    ``foreground_balance`` > 0 weighs the pixels by :func:`mask_pixel_weights` (config
    ``MASK_FOREGROUND_BALANCE``; 0, the paper's loss, builds exactly the unweighted graph)."""
    target_class_ids = tf.cast(target_class_ids, tf.int32)
    positive = tf.where(target_class_ids > 0)[:, 0]
    pred = tf.transpose(pred_masks, [0, 3, 1, 2])  # [N, C, h, w]
    channels = tf.shape(pred)[1]
    classes = tf.gather(target_class_ids, positive)
    classes = tf.where(tf.equal(channels, 1), tf.zeros_like(classes), classes)
    pred = tf.gather_nd(pred, tf.stack([tf.cast(positive, tf.int32), classes], axis=1))
    target = tf.gather(target_masks, positive)
    bce = keras.losses.binary_crossentropy(target[..., None], pred[..., None])
    if foreground_balance:
        bce = bce * mask_pixel_weights(target, float(foreground_balance))
    return tf.stack([tf.reduce_sum(bce), _count(bce)])


def rpn_class_loss_one(rpn_match, rpn_class_logits):
    """Match/no-match cross-entropy, mean over the image's sampled anchors (rpn_match ≠ 0)."""
    return _ratio(rpn_class_loss_parts(rpn_match, rpn_class_logits))


def rpn_bbox_loss_one(target_bbox, rpn_match, rpn_bbox):
    """Smooth-L1 between the positive anchors' deltas and their (packed) targets, mean."""
    return _ratio(rpn_bbox_loss_parts(target_bbox, rpn_match, rpn_bbox))


def mrcnn_class_loss_one(target_class_ids, logits, active_class_ids, valid):
    """ROI classification cross-entropy, mean over the ``valid`` rows whose predicted class is
    active in the image's source (matterport's rule)."""
    return _ratio(mrcnn_class_loss_parts(target_class_ids, logits, active_class_ids, valid))


def mrcnn_bbox_loss_one(target_bbox, target_class_ids, pred_bbox):
    """Smooth-L1 on the deltas of each positive ROI's own class, mean."""
    return _ratio(mrcnn_bbox_loss_parts(target_bbox, target_class_ids, pred_bbox))


def mrcnn_mask_loss_one(target_masks, target_class_ids, pred_masks, foreground_balance=0.0):
    """Binary cross-entropy of each positive ROI's mask, mean over its pixels (weighted by
    :func:`mask_pixel_weights` when ``foreground_balance`` > 0)."""
    return _ratio(mrcnn_mask_loss_parts(target_masks, target_class_ids, pred_masks,
                                        foreground_balance))


def check_normalization(normalization):
    """Return ``normalization`` if it is a known ``LOSS_NORMALIZATION`` (``"release"`` or
    ``"per_image"``).

    Raises:
        ValueError: any other value.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"LOSS_NORMALIZATION must be one of {NORMALIZATIONS}, got {normalization!r}")
    return normalization


class MaskRCNNLosses(keras.layers.Layer):
    """The five losses of each image as ``[sum, count]`` pairs: output ``[B, 5, 2]`` in
    LOSS_NAMES order (``reduce_losses`` turns them into losses).

    ``normalization`` decides which classifier rows count: ``"release"`` all
    ``TRAIN_ROIS_PER_IMAGE`` rows (padding included), ``"per_image"`` only the sampled ROIs.
    ``mask_foreground_balance`` (0..1, config ``MASK_FOREGROUND_BALANCE``) weighs the mask
    loss's pixels by :func:`mask_pixel_weights`.

    Raises:
        ValueError: an unknown ``normalization`` or a balance outside 0..1.
    """

    def __init__(self, normalization="release", mask_foreground_balance=0.0, **kwargs):
        kwargs.setdefault("dtype", "float32")  # losses in float32 under mixed precision
        super().__init__(**kwargs)
        self.normalization = check_normalization(normalization)
        if not 0.0 <= float(mask_foreground_balance) <= 1.0:
            raise ValueError(f"mask_foreground_balance must be between 0 and 1, got {mask_foreground_balance!r}")
        self.mask_foreground_balance = float(mask_foreground_balance)

    def call(self, inputs):
        (rpn_match, rpn_bbox_target, rpn_class_logits, rpn_bbox,
         target_class_ids, target_bbox, target_mask, rois,
         class_logits, pred_bbox, pred_masks, active_class_ids) = inputs
        if self.normalization == "release":
            valid = tf.ones(tf.shape(rois)[:2], tf.bool)
        else:
            valid = tf.reduce_any(tf.not_equal(rois, 0.0), axis=2)

        def one(args):
            (m, rt, rl, rb, tc, tb, tm, v, cl, pb, pm, ac) = args
            return tf.stack([
                rpn_class_loss_parts(m, rl),
                rpn_bbox_loss_parts(rt, m, rb),
                mrcnn_class_loss_parts(tc, cl, ac, v),
                mrcnn_bbox_loss_parts(tb, tc, pb),
                mrcnn_mask_loss_parts(tm, tc, pm, self.mask_foreground_balance),
            ])

        return tf.map_fn(one, (rpn_match, rpn_bbox_target, rpn_class_logits, rpn_bbox,
                               target_class_ids, target_bbox, target_mask, valid,
                               class_logits, pred_bbox, pred_masks, active_class_ids),
                         fn_output_signature=tf.TensorSpec([len(LOSS_NAMES), 2], tf.float32))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], len(LOSS_NAMES), 2)

    def get_config(self):
        return {**super().get_config(), "normalization": self.normalization,
                "mask_foreground_balance": self.mask_foreground_balance}


def reduce_losses(parts, normalization, global_batch, replicas=1):
    """This replica's share ``[5]`` of the five losses from its images' ``[b, 5, 2]`` parts.

    Summed over the replicas (``ReduceOp.SUM``) the shares give the losses of the step:

    * ``"release"``: ``(Σ_i sum_i) / (Σ_i count_i)`` over the replica's images, divided by
      ``replicas`` (the mean over replicas);
    * ``"per_image"``: ``Σ_i sum_i / count_i`` over the replica's images divided by
      ``global_batch`` (the mean over the global batch).

    A ratio with a zero count is 0. On one device (``replicas=1``, ``global_batch = b``) the
    result is the loss of the batch.
    """
    check_normalization(normalization)
    if normalization == "release":
        return _ratio(tf.reduce_sum(parts, axis=0)) / float(replicas)
    return tf.reduce_sum(_ratio(parts), axis=0) / float(global_batch)


def weight_decay_loss(variables, weight_decay):
    """L2 on kernels (not on BN gamma/beta): Σ wd·Σw² / size(w), matterport's form."""
    terms = [weight_decay * tf.reduce_sum(tf.square(v)) / tf.cast(tf.size(v), tf.float32)
             for v in variables if not v.path.endswith(("gamma", "beta"))]
    return tf.add_n(terms) if terms else tf.constant(0.0)
