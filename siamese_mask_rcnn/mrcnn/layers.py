"""Custom Keras 3 layers of Mask R-CNN and the TensorFlow box operations they use.

Every TensorFlow op lives inside a ``Layer.call`` (Keras 3 cannot pass a KerasTensor to a
raw tf op). Boxes are ``(y1, x1, y2, x2)`` in normalised coordinates unless a name says
otherwise. Per-image work is mapped over the batch with ``tf.map_fn``.
"""
import numpy as np
import keras
import tensorflow as tf

from .config import DETECTION_SCORE_RULES
from .image_meta import parse_image_meta_graph


# ----------------------------------------------------------------------------------------
# Box operations (graph versions of the numpy helpers in utils)
# ----------------------------------------------------------------------------------------

#: Largest log-scale change a box delta may apply (a box grows at most 10⁶-fold): without it
#: a huge delta on a zero-height box gives 0·inf = NaN and crashes ROIAlign.
MAX_LOG_SCALE_DELTA = float(np.log(1e6))


def apply_box_deltas_graph(boxes, deltas):
    """Apply ``(dy, dx, log dh, log dw)`` deltas to ``(y1, x1, y2, x2)`` boxes; the log
    scales are capped at ``MAX_LOG_SCALE_DELTA`` (never reached by a trained model)."""
    height = boxes[:, 2] - boxes[:, 0]
    width = boxes[:, 3] - boxes[:, 1]
    cy = boxes[:, 0] + 0.5 * height + deltas[:, 0] * height
    cx = boxes[:, 1] + 0.5 * width + deltas[:, 1] * width
    height = height * tf.exp(tf.minimum(deltas[:, 2], MAX_LOG_SCALE_DELTA))
    width = width * tf.exp(tf.minimum(deltas[:, 3], MAX_LOG_SCALE_DELTA))
    return tf.stack([cy - 0.5 * height, cx - 0.5 * width, cy + 0.5 * height, cx + 0.5 * width], axis=1)


def clip_boxes_graph(boxes, window):
    """Clip boxes to ``window = (wy1, wx1, wy2, wx2)``."""
    wy1, wx1, wy2, wx2 = tf.unstack(window)
    y1, x1, y2, x2 = tf.unstack(boxes, axis=1)
    y1 = tf.clip_by_value(y1, wy1, wy2)
    x1 = tf.clip_by_value(x1, wx1, wx2)
    y2 = tf.clip_by_value(y2, wy1, wy2)
    x2 = tf.clip_by_value(x2, wx1, wx2)
    return tf.stack([y1, x1, y2, x2], axis=1)


def overlaps_graph(boxes1, boxes2):
    """IoU matrix ``[len(boxes1), len(boxes2)]``."""
    b1 = tf.expand_dims(boxes1, 1)
    b2 = tf.expand_dims(boxes2, 0)
    y1 = tf.maximum(b1[..., 0], b2[..., 0])
    x1 = tf.maximum(b1[..., 1], b2[..., 1])
    y2 = tf.minimum(b1[..., 2], b2[..., 2])
    x2 = tf.minimum(b1[..., 3], b2[..., 3])
    inter = tf.maximum(y2 - y1, 0.0) * tf.maximum(x2 - x1, 0.0)
    area1 = (b1[..., 2] - b1[..., 0]) * (b1[..., 3] - b1[..., 1])
    area2 = (b2[..., 2] - b2[..., 0]) * (b2[..., 3] - b2[..., 1])
    union = area1 + area2 - inter
    return tf.math.divide_no_nan(inter, union)


def box_refinement_graph(box, gt_box):
    """Deltas that turn ``box`` into ``gt_box`` (inverse of ``apply_box_deltas_graph``)."""
    box = tf.cast(box, tf.float32)
    gt_box = tf.cast(gt_box, tf.float32)
    h = box[:, 2] - box[:, 0]
    w = box[:, 3] - box[:, 1]
    cy = box[:, 0] + 0.5 * h
    cx = box[:, 1] + 0.5 * w
    gh = gt_box[:, 2] - gt_box[:, 0]
    gw = gt_box[:, 3] - gt_box[:, 1]
    gcy = gt_box[:, 0] + 0.5 * gh
    gcx = gt_box[:, 1] + 0.5 * gw
    return tf.stack([(gcy - cy) / h, (gcx - cx) / w, tf.math.log(gh / h), tf.math.log(gw / w)], axis=1)


def trim_zeros_graph(boxes, name="trim_zeros"):
    """Drop all-zero padding rows of ``[N, 4]``; returns ``(boxes [n, 4], non_zero_mask [N] bool)``.

    ``name`` is accepted for matterport's signature (Keras 3 has no graph names to set).
    """
    non_zeros = tf.cast(tf.reduce_sum(tf.abs(boxes), axis=1), tf.bool)
    return tf.boolean_mask(boxes, non_zeros), non_zeros


def norm_boxes_graph(boxes, shape):
    """Pixel boxes → normalised boxes (matterport convention, see ``utils.norm_boxes``)."""
    h, w = tf.split(tf.cast(shape, tf.float32), 2)
    scale = tf.concat([h, w, h, w], axis=-1) - 1.0
    shift = tf.constant([0.0, 0.0, 1.0, 1.0])
    return tf.math.divide(boxes - shift, scale)


def max_or_zero(matrix):
    """Row-wise maximum of ``[N, M]``, 0 for rows when ``M == 0``."""
    return tf.reduce_max(tf.pad(matrix, [[0, 0], [0, 1]]), axis=1)


def pad_to(tensor, size):
    """Zero-pad (or cut) the first axis of ``tensor`` to exactly ``size`` rows."""
    tensor = tensor[:size]
    pad = tf.maximum(size - tf.shape(tensor)[0], 0)
    paddings = [[0, pad]] + [[0, 0]] * (len(tensor.shape) - 1)
    return tf.pad(tensor, paddings)


# ----------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------

class BatchNorm(keras.layers.BatchNormalization):
    """Batch normalisation that stays frozen unless asked to train.

    ``train_bn=False`` (matterport's default with small batches): always inference mode,
    the statistics stay as loaded, whatever ``training`` flag the call gets. ``True`` or
    ``None``: follow the ``training`` flag of the call (batch statistics in the training
    step, moving statistics at detection time; unlike matterport, ``True`` never puts
    the inference graph in training mode). A training BatchNorm is synchronised
    (``synchronized=True``): under a ``tf.distribute`` strategy its batch statistics and
    moving statistics are those of the whole global batch, as on one device. Weights and
    layer names are unchanged, so weight files load either way.
    """

    def __init__(self, train_bn=False, **kwargs):
        kwargs.setdefault("epsilon", 1e-3)
        # Trained statistics are synchronised over tf.distribute replicas (mean and variance
        # of the global batch, not of each replica's images); one device: plain moments.
        kwargs.setdefault("synchronized", train_bn is not False)
        super().__init__(**kwargs)
        self.train_bn = train_bn

    def call(self, inputs, training=None):
        if self.train_bn is None:
            mode = bool(training)
        else:
            mode = bool(self.train_bn) and bool(training)
        return super().call(inputs, training=mode)

    def get_config(self):
        return {**super().get_config(), "train_bn": self.train_bn}


class Float32Layer(keras.layers.Layer):
    """A layer that always computes in float32, whatever the global (mixed) dtype policy:
    Keras casts its floating inputs to float32. Box decoding, NMS, ROI sampling and ROIAlign
    derive from it (mixed precision keeps coordinates and their arithmetic in float32)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)


class AnchorsLayer(Float32Layer):
    """Holds the normalised anchors of a fixed image shape and tiles them over the batch.

    Args:
        anchors: ``[A, (y1, x1, y2, x2)]`` normalised anchors.

    Input: any tensor whose first axis is the batch ``B``. Output: ``[B, A, 4]`` float32.

    Raises:
        ValueError: ``anchors`` is not ``[A, 4]``.
    """

    def __init__(self, anchors, **kwargs):
        super().__init__(**kwargs)
        self.anchors = np.asarray(anchors, dtype=np.float32)
        if self.anchors.ndim != 2 or self.anchors.shape[-1] != 4:
            raise ValueError(f"AnchorsLayer: anchors must be [A, 4], got shape {self.anchors.shape}")

    def get_config(self):
        return {**super().get_config(), "anchors": self.anchors.tolist()}

    def call(self, batch_reference):
        batch = tf.shape(batch_reference)[0]
        anchors = tf.constant(self.anchors)
        return tf.tile(anchors[None], [batch, 1, 1])

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.anchors.shape


class NormBoxesLayer(Float32Layer):
    """Normalise pixel GT boxes ``[batch, N, 4]`` by the image shape ``(h, w)`` (pixels).

    Output: ``[batch, N, 4]`` float32 normalised boxes (matterport convention).
    """

    def __init__(self, image_shape, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(v) for v in image_shape[:2])

    def get_config(self):
        return {**super().get_config(), "image_shape": list(self.image_shape)}

    def call(self, boxes):
        return norm_boxes_graph(tf.cast(boxes, tf.float32), tf.constant(self.image_shape))


class ProposalLayer(Float32Layer):
    """RPN scores + deltas + anchors → ``proposal_count`` boxes per image after NMS.

    Args:
        proposal_count: boxes kept per image after NMS (``POST_NMS_ROIS_*``).
        nms_threshold: IoU above which NMS drops a lower-scoring box.
        pre_nms_limit: the best-scoring anchors considered before NMS (``PRE_NMS_LIMIT``).
        bbox_std_dev: 4 values the RPN deltas are multiplied by (``RPN_BBOX_STD_DEV``).

    Inputs: ``[rpn_probs [B, A, 2], rpn_bbox [B, A, 4], anchors [B, A, 4] (normalised)]``.
    Output: ``[B, proposal_count, 4]`` normalised boxes clipped to the image, zero-padded.
    """

    def __init__(self, proposal_count, nms_threshold, pre_nms_limit, bbox_std_dev, **kwargs):
        super().__init__(**kwargs)
        self.proposal_count = int(proposal_count)
        self.nms_threshold = float(nms_threshold)
        self.pre_nms_limit = int(pre_nms_limit)
        self.bbox_std_dev = np.reshape(np.asarray(bbox_std_dev, np.float32), [1, 4])

    def get_config(self):
        return {**super().get_config(), "proposal_count": self.proposal_count,
                "nms_threshold": self.nms_threshold, "pre_nms_limit": self.pre_nms_limit,
                "bbox_std_dev": self.bbox_std_dev.ravel().tolist()}

    def _one(self, args):
        scores, deltas, anchors = args
        k = tf.minimum(self.pre_nms_limit, tf.shape(anchors)[0])
        scores, ix = tf.math.top_k(scores, k, sorted=True)
        deltas = tf.gather(deltas, ix) * self.bbox_std_dev
        anchors = tf.gather(anchors, ix)
        boxes = apply_box_deltas_graph(anchors, deltas)
        boxes = clip_boxes_graph(boxes, tf.constant([0.0, 0.0, 1.0, 1.0]))
        keep = tf.image.non_max_suppression(boxes, scores, self.proposal_count, self.nms_threshold)
        return pad_to(tf.gather(boxes, keep), self.proposal_count)

    def call(self, inputs):
        probs, deltas, anchors = inputs
        return tf.map_fn(self._one, (probs[:, :, 1], deltas, anchors),
                         fn_output_signature=tf.TensorSpec([self.proposal_count, 4], tf.float32))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.proposal_count, 4)


def _bilinear_positions(low, high, size, steps):
    """Sampling positions of ``crop_and_resize`` along one axis, as its kernel computes them:
    ``(valid, floor, ceil, fraction)``, each ``[N, steps]``, for box edges ``low``/``high``
    ``[N]`` (normalised) on an axis of ``size`` pixels; ``valid`` is False outside the map."""
    last = tf.cast(size - 1, tf.float32)
    if steps > 1:
        scale = (high - low) * last / float(steps - 1)
        pos = low[:, None] * last + tf.range(steps, dtype=tf.float32)[None, :] * scale[:, None]
    else:
        pos = (0.5 * (low + high) * last)[:, None]
    valid = tf.logical_and(pos >= 0.0, pos <= last)
    floor = tf.floor(pos)
    return valid, tf.cast(floor, tf.int32), tf.cast(tf.math.ceil(pos), tf.int32), pos - floor


def roi_align_image_gradient(grads, image_shape, boxes, box_indices):
    """The gradient of ``tf.image.crop_and_resize(image, boxes, box_indices, crop_size)``
    (bilinear, extrapolation value 0) with respect to ``image``, computed race-free.

    Each crop pixel passes its gradient to the (up to) four map pixels it interpolates, with
    the bilinear weights; one ``tf.math.unsorted_segment_sum`` adds all contributions of a map
    pixel in a fixed order (its CPU kernel splits the work by output pixel, so no two threads
    write the same value). Crop pixels outside the map (zero in the forward pass) pass nothing.

    Args:
        grads: ``[N, crop_h, crop_w, C]`` float32, the gradient of the crops.
        image_shape: ``[4]`` int32, the shape ``(B, H, W, C)`` of the feature maps.
        boxes: ``[N, (y1, x1, y2, x2)]`` float32, normalised (0..1 spans the map).
        box_indices: ``[N]`` int32, the map of each box in ``0..B-1``.

    Returns ``[B, H, W, C]`` float32. Costs ``N·crop_h·crop_w·4·C`` floats of temporary memory.
    """
    crop_h, crop_w = int(grads.shape[1]), int(grads.shape[2])
    batch, height, width = image_shape[0], image_shape[1], image_shape[2]
    y1, x1, y2, x2 = tf.unstack(boxes, axis=1)
    valid_y, top, bottom, fy = _bilinear_positions(y1, y2, height, crop_h)  # [N, crop_h]
    valid_x, left, right, fx = _bilinear_positions(x1, x2, width, crop_w)  # [N, crop_w]
    rows = tf.stack([top, top, bottom, bottom], axis=-1)[:, :, None, :]  # [N, crop_h, 1, 4]
    cols = tf.stack([left, right, left, right], axis=-1)[:, None, :, :]  # [N, 1, crop_w, 4]
    wy = tf.stack([1.0 - fy, 1.0 - fy, fy, fy], axis=-1)[:, :, None, :]
    wx = tf.stack([1.0 - fx, fx, 1.0 - fx, fx], axis=-1)[:, None, :, :]
    valid = tf.logical_and(valid_y[:, :, None], valid_x[:, None, :])[..., None]  # [N, crop_h, crop_w, 1]
    base = tf.cast(box_indices, tf.int32)[:, None, None, None] * height
    pixel = (base + rows) * width + cols  # [N, crop_h, crop_w, 4]
    pixel = tf.where(valid, pixel, -1)  # negative ids are dropped by the segment sum
    contributions = (wy * wx)[..., None] * grads[:, :, :, None, :]  # [N, crop_h, crop_w, 4, C]
    depth = tf.shape(grads)[-1]
    summed = tf.math.unsorted_segment_sum(tf.reshape(contributions, [-1, depth]),
                                          tf.reshape(pixel, [-1]), batch * height * width)
    return tf.reshape(summed, image_shape)


def roi_align_crops(image, boxes, box_indices, crop_size):
    """``tf.image.crop_and_resize(image, boxes, box_indices, crop_size, method="bilinear")``
    (ROIAlign's bilinear sampling, Mask R-CNN's as the paper uses it, §4) whose gradient with
    respect to ``image`` is :func:`roi_align_image_gradient` (no gradient flows to ``boxes``
    or ``box_indices``: ROIAlign takes the boxes as given).

    Why: TensorFlow's CPU kernel of that gradient (``CropAndResizeGradImage``) gives each of
    its threads a range of boxes, and the threads add into the shared output without
    synchronisation; where two boxes overlap, one thread's addition can overwrite the
    other's and a contribution is lost. The result varies from call to call (measured on
    2 cores, 64 overlapping 7×7 crops of a 32×32×64 map: 32 distinct results in 200 calls,
    up to 34 % of the largest gradient value off the float64 value; single-threaded, as under
    ``tf.config.experimental.enable_op_determinism``, 2e-6). The GPU kernel adds atomically
    (correct up to summation order) and needs less memory, so :class:`PyramidROIAlign`
    uses this function only for maps on a CPU when TensorFlow's ops do not run
    deterministically (then TensorFlow's CPU kernel runs on one thread and is correct).

    Args:
        image: ``[B, H, W, C]`` float32 feature maps.
        boxes: ``[N, (y1, x1, y2, x2)]`` float32, normalised.
        box_indices: ``[N]`` int32, the map of each box.
        crop_size: ``(crop_h, crop_w)`` Python ints.

    Returns ``[N, crop_h, crop_w, C]`` float32, equal to ``tf.image.crop_and_resize``'s.

    Raises:
        tf.errors.InvalidArgumentError: (from TensorFlow) a box index outside ``0..B-1``.
    """
    boxes = tf.stop_gradient(tf.convert_to_tensor(boxes, tf.float32))
    box_indices = tf.stop_gradient(tf.convert_to_tensor(box_indices, tf.int32))
    crop_size = [int(v) for v in crop_size]

    @tf.custom_gradient
    def crop(feature_map):
        crops = tf.image.crop_and_resize(feature_map, boxes, box_indices, crop_size, method="bilinear")

        def gradient(upstream):
            # (a gather after the crops hands over IndexedSlices)
            upstream = tf.cast(tf.convert_to_tensor(upstream), tf.float32)
            return roi_align_image_gradient(upstream, tf.shape(feature_map), boxes, box_indices)

        return crops, gradient

    return crop(image)


def _race_free_roi_align_gradient(device=""):
    """Whether ROIAlign's gradient should go through :func:`roi_align_crops`: when the maps
    are placed on a CPU, by ``device`` (the feature map's device string, e.g. a replica's
    ``.../device:CPU:0`` under a strategy) or, when that is empty (placement left to
    TensorFlow), in a process that sees no GPU; and TensorFlow does not run its ops
    deterministically (under ``tf.config.experimental.enable_op_determinism``, the demo's
    default, TensorFlow's CPU kernel runs on one thread, which is correct, and is kept)."""
    placed = (device or "").upper()
    if "GPU" in placed:
        return False
    if "CPU" not in placed and tf.config.list_logical_devices("GPU"):
        return False
    try:
        from tensorflow.python.framework import config as tf_config
        return not tf_config.is_op_determinism_enabled()
    except (ImportError, AttributeError):  # a TensorFlow without the query: be safe
        return True


class PyramidROIAlign(Float32Layer):
    """ROIAlign over the pyramid: each box is cropped from the level its size selects.

    Inputs: ``[boxes [B, N, 4], image_meta [B, META], P2, P3, P4, P5]``.
    Output: ``[B, N, pool, pool, C]``. Level = clip(4 + log2(sqrt(hw) / (224 / sqrt(image
    area))), 2, 5), matterport's (and the FPN paper's) assignment. When the maps are on a CPU
    (by their device, or in a process without a GPU) the crops' gradient reaches the maps
    through :func:`roi_align_crops` (TensorFlow's multi-threaded CPU kernel loses
    contributions of overlapping boxes); on a GPU, or with
    ``tf.config.experimental.enable_op_determinism`` (one thread), through TensorFlow's.
    """

    def __init__(self, pool_shape, **kwargs):
        super().__init__(**kwargs)
        self.pool_shape = tuple(int(v) for v in pool_shape)

    def get_config(self):
        return {**super().get_config(), "pool_shape": list(self.pool_shape)}

    def call(self, inputs):
        boxes, image_meta = inputs[0], inputs[1]
        feature_maps = inputs[2:]
        y1, x1, y2, x2 = tf.split(boxes, 4, axis=2)
        h, w = y2 - y1, x2 - x1
        image_shape = parse_image_meta_graph(image_meta)["image_shape"][0]
        image_area = tf.cast(image_shape[0] * image_shape[1], tf.float32)
        roi_level = tf.math.log(tf.sqrt(h * w) / (224.0 / tf.sqrt(image_area)) + 1e-12) / tf.math.log(2.0)
        roi_level = tf.minimum(5, tf.maximum(2, 4 + tf.cast(tf.round(roi_level), tf.int32)))
        roi_level = tf.squeeze(roi_level, 2)

        # On a CPU the race-free gradient (roi_align_crops); on a GPU or one thread, TensorFlow's.
        crop = (roi_align_crops if _race_free_roi_align_gradient(getattr(feature_maps[0], "device", ""))
                else tf.image.crop_and_resize)
        pooled, order = [], []
        for i, level in enumerate(range(2, 6)):
            ix = tf.where(tf.equal(roi_level, level))
            level_boxes = tf.stop_gradient(tf.gather_nd(boxes, ix))
            box_indices = tf.stop_gradient(tf.cast(ix[:, 0], tf.int32))
            pooled.append(crop(feature_maps[i], level_boxes, box_indices, self.pool_shape))
            order.append(ix)
        pooled = tf.concat(pooled, axis=0)
        order = tf.concat(order, axis=0)
        # Put the crops back in (batch, box) order.
        flat_index = order[:, 0] * tf.cast(tf.shape(boxes)[1], tf.int64) + order[:, 1]
        pooled = tf.gather(pooled, tf.argsort(flat_index))
        shape = tf.concat([tf.shape(boxes)[:2], tf.shape(pooled)[1:]], axis=0)
        return tf.reshape(pooled, shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:2]) + self.pool_shape + (input_shape[2][-1],)


def max_positive_rois(train_rois_per_image, roi_positive_ratio):
    """At most this many of the ROIs :class:`DetectionTargetLayer` samples per image are
    positive; they always come first in its outputs."""
    return int(int(train_rois_per_image) * float(roi_positive_ratio))


class DetectionTargetLayer(Float32Layer):
    """Sample training ROIs from proposals and build their class, box and mask targets.

    Inputs: ``[proposals [B, N, 4], gt_class_ids [B, G], gt_boxes [B, G, 4] (normalised),
    gt_masks [B, h, w, G]]``. Negative class ids are crowds: proposals overlapping a crowd
    are never negatives. Outputs: rois ``[B, R, 4]``, class ids ``[B, R]``, deltas
    ``[B, R, 4]`` (divided by BBOX_STD_DEV), masks ``[B, R, mh, mw]``, zero-padded.
    Positives have IoU >= 0.5 with a GT box, negatives < 0.5 (Mask R-CNN's rule; paper §4.1).
    The at most :func:`max_positive_rois` positives come first, then the negatives.

    Args:
        train_rois_per_image: ``R``, ROIs sampled per image (``TRAIN_ROIS_PER_IMAGE``).
        roi_positive_ratio: at most this fraction of the ``R`` ROIs is positive.
        bbox_std_dev: 4 values the box deltas are divided by (``BBOX_STD_DEV``).
        mask_shape: ``(mh, mw)`` of the mask targets (``MASK_SHAPE``).
        use_mini_mask: the GT masks are mini-masks cropped to their boxes.
        negatives_without_positives: how many negatives to sample from an image without any
            positive ROI. Mask R-CNN's rule (0, the default) keeps the negatives at
            ``positives · (1/ratio − 1)``, i.e. none; a one-shot model trained with negative
            pairs (a reference category absent from the query) needs them, so that the
            classifier learns that nothing matches.
        hard_negative_fraction: this fraction of the negatives (rounded) is taken from the
            negative proposals in the order the proposal layer gives them, best RPN score
            first (the proposals on other objects and near misses), the rest uniformly from
            the remaining negatives. 0 (the default) is Mask R-CNN's uniform sampling, the
            same graph as without the argument.
        seed: integer seed of the ROI subsampling (None: drawn from Python's seeded
            ``random``). The sampling is stateless, driven by a ``keras.random.SeedGenerator``
            whose state (not a weight: ``.h5`` files are unchanged) is saved with the
            training state, so a resumed run draws the same ROIs as an uninterrupted one.

    Raises:
        ValueError: ``hard_negative_fraction`` outside [0, 1] (the value is named).
    """

    def __init__(self, train_rois_per_image, roi_positive_ratio, bbox_std_dev, mask_shape,
                 use_mini_mask, seed=None, negatives_without_positives=0, hard_negative_fraction=0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.negatives_without_positives = int(negatives_without_positives)
        self.hard_negative_fraction = float(hard_negative_fraction)
        if not 0.0 <= self.hard_negative_fraction <= 1.0:
            raise ValueError(f"hard_negative_fraction must be between 0 and 1, got {hard_negative_fraction!r}")
        self.seed = None if seed is None else int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed, name=f"{self.name}_seed")
        self.train_rois = int(train_rois_per_image)
        self.positive_ratio = float(roi_positive_ratio)
        self.bbox_std_dev = np.asarray(bbox_std_dev, np.float32)
        self.mask_shape = tuple(int(v) for v in mask_shape)
        self.use_mini_mask = bool(use_mini_mask)

    def get_config(self):
        return {**super().get_config(), "train_rois_per_image": self.train_rois,
                "roi_positive_ratio": self.positive_ratio, "bbox_std_dev": self.bbox_std_dev.tolist(),
                "mask_shape": list(self.mask_shape), "use_mini_mask": self.use_mini_mask,
                "seed": self.seed, "negatives_without_positives": self.negatives_without_positives,
                "hard_negative_fraction": self.hard_negative_fraction}

    def _one(self, args):
        proposals, gt_class_ids, gt_boxes, gt_masks, seed = args
        pos_seed, neg_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        proposals, _ = trim_zeros_graph(proposals)
        gt_boxes, non_zeros = trim_zeros_graph(gt_boxes)
        gt_class_ids = tf.boolean_mask(gt_class_ids, non_zeros)
        gt_masks = tf.boolean_mask(gt_masks, non_zeros, axis=2)

        crowd = gt_class_ids < 0
        crowd_boxes = tf.boolean_mask(gt_boxes, crowd)
        gt_class_ids = tf.boolean_mask(gt_class_ids, ~crowd)
        gt_boxes = tf.boolean_mask(gt_boxes, ~crowd)
        gt_masks = tf.boolean_mask(gt_masks, ~crowd, axis=2)

        overlaps = overlaps_graph(proposals, gt_boxes)
        crowd_max = max_or_zero(overlaps_graph(proposals, crowd_boxes))
        no_crowd = crowd_max < 0.001
        best = max_or_zero(overlaps)
        positive = tf.where(best >= 0.5)[:, 0]
        negative = tf.where(tf.logical_and(best < 0.5, no_crowd))[:, 0]

        pos_count = max_positive_rois(self.train_rois, self.positive_ratio)
        positive = tf.random.experimental.stateless_shuffle(positive, seed=pos_seed)[:pos_count]
        pos_count = tf.shape(positive)[0]
        # float64 + a tiny epsilon: in float32, 66 / 0.33 is 199.99998 and one ROI was lost.
        total = tf.floor(tf.cast(pos_count, tf.float64) / self.positive_ratio + 1e-6)
        neg_count = tf.cast(total, tf.int32) - pos_count
        if self.negatives_without_positives:
            neg_count = tf.where(pos_count > 0, neg_count,
                                 tf.minimum(self.negatives_without_positives, self.train_rois))
        if self.hard_negative_fraction > 0:
            # proposals come best RPN score first, and tf.where keeps their order
            hard_count = tf.minimum(tf.shape(negative)[0], tf.cast(tf.round(
                tf.cast(neg_count, tf.float32) * self.hard_negative_fraction), tf.int32))
            rest = tf.random.experimental.stateless_shuffle(negative[hard_count:], seed=neg_seed)
            negative = tf.concat([negative[:hard_count], rest[:tf.maximum(0, neg_count - hard_count)]], 0)
        else:
            negative = tf.random.experimental.stateless_shuffle(negative, seed=neg_seed)[:neg_count]

        pos_rois = tf.gather(proposals, positive)
        neg_rois = tf.gather(proposals, negative)
        pos_overlaps = tf.gather(overlaps, positive)
        assignment = tf.cond(tf.shape(pos_overlaps)[1] > 0,
                             lambda: tf.argmax(pos_overlaps, axis=1, output_type=tf.int32),
                             lambda: tf.zeros([tf.shape(pos_overlaps)[0]], tf.int32))
        roi_gt_boxes = tf.gather(gt_boxes, assignment)
        roi_class_ids = tf.gather(gt_class_ids, assignment)
        deltas = box_refinement_graph(pos_rois, roi_gt_boxes) / self.bbox_std_dev

        masks = tf.gather(tf.transpose(gt_masks, [2, 0, 1]), assignment)[..., None]
        boxes = pos_rois
        if self.use_mini_mask:
            # Express the ROI in the coordinate frame of its GT box (mini-masks are box crops).
            y1, x1, y2, x2 = tf.split(pos_rois, 4, axis=1)
            gy1, gx1, gy2, gx2 = tf.split(roi_gt_boxes, 4, axis=1)
            gh, gw = gy2 - gy1, gx2 - gx1
            boxes = tf.concat([(y1 - gy1) / gh, (x1 - gx1) / gw, (y2 - gy1) / gh, (x2 - gx1) / gw], 1)
        box_ids = tf.range(tf.shape(masks)[0])
        masks = tf.image.crop_and_resize(tf.cast(masks, tf.float32), boxes, box_ids, self.mask_shape)
        masks = tf.round(tf.squeeze(masks, 3))

        rois = tf.concat([pos_rois, neg_rois], axis=0)
        rois = pad_to(rois, self.train_rois)
        roi_class_ids = pad_to(roi_class_ids, self.train_rois)
        deltas = pad_to(deltas, self.train_rois)
        masks = pad_to(masks, self.train_rois)
        return rois, roi_class_ids, deltas, masks

    def call(self, inputs):
        proposals, gt_class_ids, gt_boxes, gt_masks = inputs
        r = self.train_rois
        sig = (tf.TensorSpec([r, 4], tf.float32), tf.TensorSpec([r], tf.int32),
               tf.TensorSpec([r, 4], tf.float32), tf.TensorSpec([r] + list(self.mask_shape), tf.float32))
        # one stateless seed per call from the generator, split into one per image
        seeds = tf.random.experimental.stateless_split(tf.cast(self.seed_generator.next(), tf.int64),
                                                        tf.shape(proposals)[0])
        return tf.map_fn(self._one, (proposals, tf.cast(gt_class_ids, tf.int32),
                                     tf.cast(gt_boxes, tf.float32), tf.cast(gt_masks, tf.bool), seeds),
                         fn_output_signature=sig)

    def compute_output_shape(self, input_shape):
        b, r = input_shape[0][0], self.train_rois
        return [(b, r, 4), (b, r), (b, r, 4), (b, r) + self.mask_shape]


class DetectionLayer(Float32Layer):
    """Final detections: refine ROIs by class, drop background ROIs (``score_rule``) and weak
    scores, per-class NMS.

    Inputs: ``[rois [B, N, 4], mrcnn_class [B, N, C], mrcnn_bbox [B, N, C, 4], image_meta]``.
    Output: ``[B, max_instances, 6]`` rows ``(y1, x1, y2, x2, class_id, score)``
    in normalised coordinates, clipped to the image window, best score first, zero-padded.

    Args:
        max_instances: detections kept per image (``DETECTION_MAX_INSTANCES``).
        min_confidence: class score below which a ROI is dropped (``DETECTION_MIN_CONFIDENCE``).
        nms_threshold: per-class NMS IoU threshold (``DETECTION_NMS_THRESHOLD``).
        bbox_std_dev: 4 values the predicted deltas are multiplied by (``BBOX_STD_DEV``).
        score_rule: ``"argmax"`` (matterport: each ROI's most probable class; background
            drops it) or ``"foreground"`` (each ROI's most probable non-background class and
            its probability, even when the background is more probable), then
            ``min_confidence`` applies (``DETECTION_SCORE_RULE``).

    Raises:
        ValueError: an unknown ``score_rule``.
    """

    def __init__(self, max_instances, min_confidence, nms_threshold, bbox_std_dev, score_rule="argmax",
                 **kwargs):
        super().__init__(**kwargs)
        if score_rule not in DETECTION_SCORE_RULES:
            raise ValueError(f"score_rule must be one of {DETECTION_SCORE_RULES}, got {score_rule!r}")
        self.score_rule = score_rule
        self.max_instances = int(max_instances)
        self.min_confidence = float(min_confidence)
        self.nms_threshold = float(nms_threshold)
        self.bbox_std_dev = np.asarray(bbox_std_dev, np.float32)

    def get_config(self):
        return {**super().get_config(), "max_instances": self.max_instances,
                "min_confidence": self.min_confidence, "nms_threshold": self.nms_threshold,
                "bbox_std_dev": self.bbox_std_dev.tolist(), "score_rule": self.score_rule}

    def _one(self, args):
        rois, probs, deltas, window = args
        ranked = probs
        if self.score_rule == "foreground":  # the background column can never win
            ranked = tf.concat([tf.fill([tf.shape(probs)[0], 1], -1.0), probs[:, 1:]], axis=1)
        class_ids = tf.argmax(ranked, axis=1, output_type=tf.int32)
        index = tf.stack([tf.range(tf.shape(probs)[0]), class_ids], axis=1)
        scores = tf.gather_nd(probs, index)
        deltas = tf.gather_nd(deltas, index) * self.bbox_std_dev
        boxes = clip_boxes_graph(apply_box_deltas_graph(rois, deltas), window)
        keep = tf.where((class_ids > 0) & (scores >= self.min_confidence))[:, 0]

        def nms_for_class(class_id):
            ix = tf.gather(keep, tf.where(tf.equal(tf.gather(class_ids, keep), class_id))[:, 0])
            kept = tf.image.non_max_suppression(tf.gather(boxes, ix), tf.gather(scores, ix),
                                                self.max_instances, self.nms_threshold)
            kept = tf.gather(ix, kept)
            return tf.pad(kept, [[0, self.max_instances - tf.shape(kept)[0]]], constant_values=-1)

        unique = tf.unique(tf.gather(class_ids, keep))[0]
        kept = tf.map_fn(nms_for_class, unique, fn_output_signature=tf.TensorSpec([self.max_instances], tf.int64))
        kept = tf.reshape(kept, [-1])
        kept = tf.gather(kept, tf.where(kept > -1)[:, 0])
        top = tf.minimum(tf.shape(kept)[0], self.max_instances)
        order = tf.math.top_k(tf.gather(scores, kept), k=top, sorted=True)[1]
        kept = tf.gather(kept, order)
        det = tf.concat([tf.gather(boxes, kept),
                         tf.cast(tf.gather(class_ids, kept), tf.float32)[:, None],
                         tf.gather(scores, kept)[:, None]], axis=1)
        return pad_to(det, self.max_instances)

    def call(self, inputs):
        rois, probs, deltas, image_meta = inputs
        meta = parse_image_meta_graph(image_meta)
        shape = meta["image_shape"][0]
        window = norm_boxes_graph(meta["window"], shape[:2])
        return tf.map_fn(self._one, (rois, probs, deltas, window),
                         fn_output_signature=tf.TensorSpec([self.max_instances, 6], tf.float32))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.max_instances, 6)
