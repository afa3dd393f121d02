"""Network heads: RPN (nested ``rpn_model``), box classifier and mask head.

matterport wraps the per-ROI layers in ``TimeDistributed``; Keras 3 unrolls that over a
static ROI axis, so here the ROI axis is folded into the batch axis
(``[B, N, h, w, c] → [B·N, h, w, c]``) and unfolded afterwards. The weighted layers keep
matterport's names and weight shapes (``mrcnn_class_conv1`` is a 7×7 valid conv, …).
"""
import keras
import tensorflow as tf
from keras import layers

from .layers import BatchNorm, PyramidROIAlign
from .winograd import Winograd3x3Conv2D


class FoldRois(keras.layers.Layer):
    """``[B, N, ...] → [B·N, ...]``."""

    def call(self, x):
        return tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], axis=0))

    def compute_output_shape(self, input_shape):
        lead = None if None in input_shape[:2] else input_shape[0] * input_shape[1]
        return (lead,) + tuple(input_shape[2:])


class UnfoldRois(keras.layers.Layer):
    """``[B·N, ...] → [B, N, ...]`` with ``N`` taken from a reference tensor ``[B, N, ...]``."""

    def call(self, inputs):
        x, reference = inputs
        return tf.reshape(x, tf.concat([tf.shape(reference)[:2], tf.shape(x)[1:]], axis=0))

    def compute_output_shape(self, input_shape):
        x, reference = input_shape
        return tuple(reference[:2]) + tuple(x[1:])


@keras.saving.register_keras_serializable(package="siamese_mask_rcnn")
class WindowConv2D(layers.Conv2D):
    """A ``valid`` ``Conv2D`` whose kernel covers its whole input (matterport's
    ``mrcnn_class_conv1``: a 7×7 kernel on 7×7 pooled ROIs, the fully connected layer of the
    box head written as a convolution), computed as one matrix product ``[N, kh·kw·C_in] ×
    [kh·kw·C_in, C_out]``: the same sums (up to float rounding) at about 20 % less time than
    the convolution kernel (measured on a 2-core AMD EPYC, 1,000 ROIs of 7×7×384 → 1,024:
    0.18 s vs 0.22 s). Same weights, shapes and name as a ``Conv2D``; any other input size,
    padding, stride or dilation runs the convolution."""

    def convolution_op(self, inputs, kernel):
        kh, kw, depth, channels = (int(v) for v in kernel.shape)
        whole = (tuple(inputs.shape[1:3]) == (kh, kw) and self.padding == "valid"
                 and self.data_format == "channels_last"
                 and tuple(self.strides) == (1, 1) and tuple(self.dilation_rate) == (1, 1)
                 and self.groups == 1)
        if not whole:
            return super().convolution_op(inputs, kernel)
        flat = tf.reshape(inputs, [-1, kh * kw * depth])
        return tf.reshape(tf.matmul(flat, tf.reshape(kernel, [kh * kw * depth, channels])), [-1, 1, 1, channels])


class RepeatBoxDeltas(keras.layers.Layer):
    """``[B·N, 4] → [B·N, C, 4]``: one class-agnostic set of box deltas used for all ``C``
    classes (the official Siamese Mask R-CNN release's box regressor)."""

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)

    def call(self, x):
        return tf.tile(x[:, None, :], [1, self.num_classes, 1])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


class RpnOutputs(keras.layers.Layer):
    """Reshape raw RPN conv maps to ``[B, anchors, k]``."""

    def __init__(self, k, **kwargs):
        super().__init__(**kwargs)
        self.k = int(k)

    def call(self, x):
        return tf.reshape(x, [tf.shape(x)[0], -1, self.k])

    def get_config(self):
        return {**super().get_config(), "k": self.k}

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None, self.k)


def rpn_conv_dtype(anchor_stride):
    """``"float32"`` for a strided (``anchor_stride > 1``) shared RPN conv under the
    ``mixed_bfloat16`` policy, else None (the global policy).

    TensorFlow's oneDNN CPU kernels compute the bfloat16 kernel gradient of a strided
    convolution wrongly when a side of its input is smaller than the stride (measured with
    TensorFlow 2.21: values up to 1e37 or inf instead of the float32 gradient), and the RPN
    runs on every pyramid level, down to P6 (1×1 for a 64² image). The weights stay float32
    either way; with the default ``RPN_ANCHOR_STRIDE = 1`` nothing changes.
    """
    if int(anchor_stride) > 1 and keras.config.dtype_policy().name == "mixed_bfloat16":
        return "float32"
    return None


def build_rpn_model(anchor_stride, anchors_per_location, depth, conv_channels=512, winograd=False):
    """The Region Proposal Network as a nested model named ``rpn_model``.

    Shared 3×3 conv (512 channels by default), then 1×1 convs for 2 logits and 4 deltas per anchor. Applied to
    every pyramid level with the same weights. Outputs
    ``[rpn_class_logits [B, A, 2], rpn_probs [B, A, 2], rpn_bbox [B, A, 4]]``. ``winograd``:
    the shared conv is a :class:`.winograd.Winograd3x3Conv2D` (for inference graphs).
    """
    feature_map = keras.Input(shape=[None, None, depth], name="input_rpn_feature_map")
    conv = Winograd3x3Conv2D if winograd else layers.Conv2D
    shared = conv(conv_channels, 3, padding="same", activation="relu", strides=anchor_stride,
                           dtype=rpn_conv_dtype(anchor_stride), name="rpn_conv_shared")(feature_map)
    x = layers.Conv2D(2 * anchors_per_location, 1, name="rpn_class_raw")(shared)
    logits = RpnOutputs(2, name="rpn_class_logits_reshape")(x)
    probs = layers.Activation("softmax", name="rpn_class_xxx")(logits)
    x = layers.Conv2D(4 * anchors_per_location, 1, name="rpn_bbox_pred")(shared)
    bbox = RpnOutputs(4, name="rpn_bbox_reshape")(x)
    return keras.Model(feature_map, [logits, probs, bbox], name="rpn_model")


def fpn_classifier_graph(rois, feature_maps, image_meta, pool_size, num_classes,
                         train_bn=False, fc_layers_size=1024, class_agnostic_bbox=False, window_matmul=False):
    """Classifier + box regressor on ROIs pooled from P2..P5.

    The box regressor ``mrcnn_bbox_fc`` predicts ``4·C`` deltas (one box per class, matterport,
    kernel ``[fc, 4·C]``) or, with ``class_agnostic_bbox``, 4 deltas shared by every class
    (kernel ``[fc, 4]``, the official Siamese Mask R-CNN release); the output shape is the same.
    ``window_matmul``: ``mrcnn_class_conv1`` is a :class:`WindowConv2D` (one matrix product;
    for inference graphs, so that training keeps its arithmetic).

    Returns ``(mrcnn_class_logits [B, N, C], mrcnn_probs [B, N, C], mrcnn_bbox [B, N, C, 4])``.
    """
    x = PyramidROIAlign([pool_size, pool_size], name="roi_align_classifier")([rois, image_meta] + feature_maps)
    x = FoldRois(name="mrcnn_class_fold")(x)
    x = (WindowConv2D if window_matmul else layers.Conv2D)(
        fc_layers_size, pool_size, padding="valid", name="mrcnn_class_conv1")(x)
    x = BatchNorm(name="mrcnn_class_bn1", train_bn=train_bn)(x)
    x = layers.Activation("relu")(x)
    x = layers.Conv2D(fc_layers_size, 1, name="mrcnn_class_conv2")(x)
    x = BatchNorm(name="mrcnn_class_bn2", train_bn=train_bn)(x)
    x = layers.Activation("relu")(x)
    shared = layers.Reshape([fc_layers_size], name="pool_squeeze")(x)
    logits = layers.Dense(num_classes, name="mrcnn_class_logits")(shared)
    logits = UnfoldRois(name="mrcnn_class_logits_unfold")([logits, rois])
    probs = layers.Activation("softmax", name="mrcnn_class")(logits)
    if class_agnostic_bbox:
        bbox = layers.Dense(4, name="mrcnn_bbox_fc")(shared)
        bbox = RepeatBoxDeltas(num_classes, name="mrcnn_bbox_reshape")(bbox)
    else:
        bbox = layers.Dense(num_classes * 4, name="mrcnn_bbox_fc")(shared)
        bbox = layers.Reshape([num_classes, 4], name="mrcnn_bbox_reshape")(bbox)
    bbox = UnfoldRois(name="mrcnn_bbox")([bbox, rois])
    return logits, probs, bbox


def build_fpn_mask_graph(rois, feature_maps, image_meta, pool_size, num_classes, train_bn=False,
                         conv_channels=256, winograd=False):
    """Mask head: four 3×3 convs (256 channels by default) + BN + ReLU, a 2×2 stride-2
    deconv, a 1×1 sigmoid conv. ``winograd``: the 3×3 convs are
    :class:`.winograd.Winograd3x3Conv2D` (for inference graphs).

    Returns masks ``[B, N, 2·pool, 2·pool, num_classes]``.
    """
    x = PyramidROIAlign([pool_size, pool_size], name="roi_align_mask")([rois, image_meta] + feature_maps)
    x = FoldRois(name="mrcnn_mask_fold")(x)
    for i in range(1, 5):
        x = (Winograd3x3Conv2D if winograd else layers.Conv2D)(
            conv_channels, 3, padding="same", name=f"mrcnn_mask_conv{i}")(x)
        x = BatchNorm(name=f"mrcnn_mask_bn{i}", train_bn=train_bn)(x)
        x = layers.Activation("relu")(x)
    x = layers.Conv2DTranspose(conv_channels, 2, strides=2, activation="relu", name="mrcnn_mask_deconv")(x)
    x = layers.Conv2D(num_classes, 1, activation="sigmoid", name="mrcnn_mask")(x)
    return UnfoldRois(name="mrcnn_mask_unfold")([x, rois])
