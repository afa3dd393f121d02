"""The presence head: "is the reference's category anywhere in this query?" (beyond the paper).

Siamese Mask R-CNN (paper Section 4) scores boxes *within* one (query, reference) pair; the
paper's protocol (Section 5.2) only asks for categories present in the query, so nothing in
the model says whether the category is there at all, and a reference of an absent category
still gets confident detections. The presence head adds one number per pair:

* input: the matched maps of P2..P5 (the outputs of the matching convolutions
  ``fpn_distance_P2..P5`` of paper Section 4.3, the maps the ROI heads read). By default
  (``PRESENCE_GRADIENT = False``) behind a gradient stop, with its gradients clipped apart
  from the detector's, so training the head leaves the detector as without it (equal up to
  float rounding, ``tests/test_presence.py``); ``PRESENCE_GRADIENT = True`` (the ``demo``
  preset) lets its loss train the encoder and the matching too;
* a 3×3 convolution (``presence_conv``, ``PRESENCE_CHANNELS`` filters, ReLU) shared by the
  levels, the maximum and the mean of each level over all positions, layer normalisation
  (``presence_norm``), a hidden layer (``presence_fc``) and one logit (``presence_logit``);
  ``presence`` is its sigmoid;
* trained with binary cross-entropy: each training query is seen with its positive
  reference (label 1) and with a reference of a training category absent from it (label 0;
  drawn from a random stream of its own, so the positive pairs are the paper's);
* at inference (``PRESENCE_GATING = "multiply"``) every detection score is multiplied by
  the pair's presence and detections below ``DETECTION_MIN_CONFIDENCE`` are dropped
  (:func:`gate_detections`): a category judged absent yields an empty result, and scores
  become comparable across pairs; ``"none"`` only reports the presence.

``PRESENCE_HEAD = False`` (every preset's default) builds exactly the paper's model, so the
official release's weight files load with nothing missing; a model with the head loads them
with only the head's layers (:data:`PRESENCE_LAYER_NAMES`) left to train.
"""
import numpy as np
import keras
import tensorflow as tf
from keras import layers as KL

from .verification import select_detections

#: Names of the presence head's layers that own weights.
PRESENCE_LAYER_NAMES = ("presence_conv", "presence_norm", "presence_fc", "presence_logit")
#: Pyramid levels the head reads (those of the ROI heads).
PRESENCE_LEVELS = ("P2", "P3", "P4", "P5")


@keras.saving.register_keras_serializable(package="siamese_mask_rcnn")
class StopGradient(KL.Layer):
    """Identity whose gradient is zero (``tf.stop_gradient``): the presence loss does not
    reach the encoder or the matching."""

    def call(self, x):
        return tf.stop_gradient(x)


@keras.saving.register_keras_serializable(package="siamese_mask_rcnn")
class MaxMeanPool(KL.Layer):
    """Input: L maps ``[B, h_l, w_l, F]``; output ``[B, 2·L·F]``: per level the maximum then
    the mean over all positions, levels in order."""

    def call(self, maps):
        pooled = []
        for m in maps:
            pooled += [tf.reduce_max(m, axis=[1, 2]), tf.reduce_mean(m, axis=[1, 2])]
        return tf.concat(pooled, axis=-1)

    def compute_output_shape(self, shapes):
        return (shapes[0][0], 2 * len(shapes) * shapes[0][-1])


@keras.saving.register_keras_serializable(package="siamese_mask_rcnn")
class PresenceLossParts(KL.Layer):
    """Binary cross-entropy of the presence logits as a ``[B, 1, 2]`` ``[sum, count]`` part
    (the layout of ``losses.MaskRCNNLosses``): inputs ``(positive_logit [B, 1],
    negative_logit [B, 1])``, label 1 for the first and 0 for the second, count 2."""

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        positive, negative = (tf.cast(x[:, 0], tf.float32) for x in inputs)
        loss = tf.nn.softplus(-positive) + tf.nn.softplus(negative)  # -log σ(p) - log(1 - σ(n))
        return tf.stack([loss, 2.0 * tf.ones_like(loss)], axis=-1)[:, None, :]

    def compute_output_shape(self, shapes):
        return (shapes[0][0], 1, 2)


class PresenceHead:
    """The head's layers, built once and applied to any number of pairs' matched maps.

    Args:
        channels: filters of ``presence_conv`` and units of ``presence_fc`` (an int ≥ 1;
            ``ValueError`` otherwise).
    """

    def __init__(self, channels, stop_gradient=True):
        self.stop_gradient = bool(stop_gradient)
        if int(channels) < 1:
            raise ValueError(f"PRESENCE_CHANNELS must be >= 1, got {channels}")
        channels = int(channels)
        self.conv = KL.Conv2D(channels, 3, padding="same", activation="relu", name="presence_conv")
        self.pool = MaxMeanPool(name="presence_pool", dtype="float32")
        # the matched maps' scale drifts as the detector trains underneath the stop
        self.norm = KL.LayerNormalization(name="presence_norm", dtype="float32")
        self.fc = KL.Dense(channels, activation="relu", name="presence_fc", dtype="float32")
        self.logit = KL.Dense(1, name="presence_logit", dtype="float32")
        self._calls = 0

    def logits(self, matched_maps):
        """``matched_maps``: the matched P2..P5 ``[B, h_l, w_l, MATCHING_CHANNELS]`` → the
        presence logit ``[B, 1]``."""
        self._calls += 1
        suffix = "" if self._calls == 1 else f"_{self._calls}"
        stopped = ([StopGradient(name=f"presence_stop_{n}{suffix}")(m)
                    for n, m in zip(PRESENCE_LEVELS, matched_maps)] if self.stop_gradient else list(matched_maps))
        return self.logit(self.fc(self.norm(self.pool([self.conv(m) for m in stopped]))))

    def variables(self):
        """The head's trainable variables."""
        return [v for layer in (self.conv, self.norm, self.fc, self.logit) for v in layer.trainable_weights]


def gate_detections(result, presence, min_confidence):
    """Multiply one pair's detection scores by its presence and drop those below
    ``min_confidence`` (in [0, 1]).

    ``result``: ``{"rois" [N, 4], "class_ids" [N], "scores" [N], "masks" [H, W, N]}`` (any
    extra keys are kept); ``presence``: the pair's presence in [0, 1]. Returns a new dict
    with the kept detections, in their original order, and ``"presence"`` (a float).
    """
    presence = float(presence)
    scores = np.asarray(result["scores"], np.float32) * presence
    gated = select_detections(result, np.flatnonzero(scores >= min_confidence), scores)
    gated["presence"] = presence
    return gated
