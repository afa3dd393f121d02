"""The reference classification loss (open-world search, beyond the paper; issue #10).

The paper trains the encoder only through the detection losses of matched pairs, and a
model trained so learns "find objects" far better than "find *this* category": it fires on
objects sharing no appearance with the reference (``benchmarks/open_world_confusions.py``),
and the pooled embeddings of two crops of one category are hardly closer than those of two
categories (``benchmarks/open_world_verification.py``). Meta R-CNN (Yan et al., ICCV 2019)
met the same problem with a "meta loss": the class vectors are classified into their
categories, so that they differ by category. Here every training reference's embedding
(``[L, C]``, one pooled C-vector per level P2..P6, before the k-shot mean) is classified into
its category by a cosine classifier (:class:`ReferenceClassifier`, layer
``reference_class_logits``), with softmax cross-entropy (``reference_class_loss``, weighted
by ``LOSS_WEIGHTS``). Only training categories are ever labels; the loss shapes the shared
encoder, so the one-shot categories' embeddings differ by category as well.

``REFERENCE_CLASSES`` (0 by default: the paper's training) is the number of category ids
(``dataset.num_classes``, background included); ``siamese-mrcnn demo --reference-loss``
sets it from the data. The layer exists only in the training graph: inference models and
the release's weight files are unchanged.
"""
import keras
import tensorflow as tf
from keras import layers as KL

#: The cosine classifier's fixed logit scale (cosines lie in [-1, 1]; NormFace, Wang et al. 2017).
LOGIT_SCALE = 16.0


@keras.saving.register_keras_serializable(package="siamese_mask_rcnn")
class ReferenceClassifier(KL.Layer):
    """Cosine classifier of reference embeddings: ``[N, L, C] → logits [N, classes]``,
    ``LOGIT_SCALE`` × the cosine between the flattened embedding and each category's weight
    vector (computed in float32).

    Args:
        classes: number of category ids (an int ≥ 2; ``ValueError`` otherwise).
    """

    def __init__(self, classes, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(classes) < 2:
            raise ValueError(f"REFERENCE_CLASSES must be >= 2 (category ids, background included), got {classes}")
        self.classes = int(classes)

    def build(self, input_shape):
        dim = int(input_shape[1]) * int(input_shape[2])
        self.kernel = self.add_weight(name="kernel", shape=(dim, self.classes),
                                      initializer="glorot_uniform", trainable=True)

    def call(self, x):
        x = tf.cast(x, tf.float32)
        flat = tf.reshape(x, [tf.shape(x)[0], -1])
        return LOGIT_SCALE * tf.matmul(tf.math.l2_normalize(flat, axis=1),
                                       tf.math.l2_normalize(self.kernel, axis=0))

    def compute_output_shape(self, s):
        return (s[0], self.classes)

    def get_config(self):
        return {**super().get_config(), "classes": self.classes}


@keras.saving.register_keras_serializable(package="siamese_mask_rcnn")
class ReferenceClassLossParts(KL.Layer):
    """Softmax cross-entropy of the references' category logits as a ``[B, 1, 2]``
    ``[sum, count]`` part (the layout of ``losses.MaskRCNNLosses``).

    Inputs ``(logits [B·shots, classes], class_ids [B, 1] int)``: each query's ``shots``
    consecutive references all show its reference category. The count is ``shots``.

    Args:
        shots: references per query (``NUM_TARGETS``), an int ≥ 1 (``ValueError`` otherwise).
    """

    def __init__(self, shots, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(shots) < 1:
            raise ValueError(f"shots must be >= 1, got {shots}")
        self.shots = int(shots)

    def call(self, inputs):
        logits, class_ids = inputs
        labels = tf.repeat(tf.reshape(tf.cast(class_ids, tf.int32), [-1]), self.shots)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=tf.cast(logits, tf.float32))
        per_query = tf.reduce_sum(tf.reshape(loss, [-1, self.shots]), axis=1)
        return tf.stack([per_query, float(self.shots) * tf.ones_like(per_query)], axis=-1)[:, None, :]

    def compute_output_shape(self, shapes):
        return (shapes[1][0], 1, 2)

    def get_config(self):
        return {**super().get_config(), "shots": self.shots}
