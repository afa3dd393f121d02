"""Mask R-CNN on Keras 3 / TensorFlow 2, with matterport's public API and layer names.

``MaskRCNN(mode, config, model_dir)`` builds the training or inference graph. The graph
is assembled from small pieces that live in their own modules:

* ``backbone``  — ResNet-50/101 (or a callable) + FPN,
* ``heads``     — RPN (nested ``rpn_model``), classifier, mask head,
* ``layers``    — proposal, ROI-target, pyramid ROIAlign and detection layers,
* ``losses``    — the five losses (release or per-image normalisation),
* ``pipeline``  — the ``tf.data`` input pipeline,
* ``weights``   — matterport-layout ``.h5`` files, read and written by layer name,
* ``training``  — the training loop, layer selection, optimizer and training ``tf.data``,
* ``run_dirs``  — run directories and checkpoint names (``find_last``, ``set_log_dir``),
* ``image_meta``, ``anchors``, ``molding``, ``targets`` — the numpy contracts (image meta,
  anchors, molding/unmolding, training targets).

Training uses a custom loop (``tf.GradientTape`` inside ``strategy.run``) so that the same
code runs on one device, on several GPUs (``MirroredStrategy``) and on several machines
(``MultiWorkerMirroredStrategy``), with losses averaged over the global batch.

matterport's module-level names stay importable from here (``compose_image_meta``,
``parse_image_meta``, ``parse_image_meta_graph``, ``mold_image``, ``unmold_image``,
``load_image_gt``, ``build_rpn_targets``, ``compute_backbone_shapes``, ``norm_boxes_graph``,
``trim_zeros_graph`` ...).
"""
import logging

import numpy as np
import keras
import tensorflow as tf
from keras import layers as KL

from . import run_dirs
from . import weights as mweights
from .anchors import compute_backbone_shapes, get_anchors
from .backbone import build_backbone_fpn
from .heads import build_fpn_mask_graph, build_rpn_model, fpn_classifier_graph
from .image_meta import compose_image_meta, parse_image_meta, parse_image_meta_graph
from .layers import (AnchorsLayer, BatchNorm, DetectionLayer, DetectionTargetLayer, NormBoxesLayer,
                     ProposalLayer, PyramidROIAlign, apply_box_deltas_graph, clip_boxes_graph,
                     max_positive_rois, norm_boxes_graph, overlaps_graph, trim_zeros_graph)
from .losses import LOSS_NAMES, MaskRCNNLosses
from .molding import mold_image, mold_inputs, unmold_detections, unmold_image
from .pipeline import SkipExample
from .targets import build_rpn_targets, describe_image, load_image_gt, pack_training_inputs
from .training import LAYER_PRESETS, make_optimizer, run_training, select_trainable_layers
from .winograd import use_winograd

log = logging.getLogger(__name__)

__all__ = [
    "MaskRCNN", "compose_image_meta", "parse_image_meta", "parse_image_meta_graph", "mold_image",
    "unmold_image", "load_image_gt", "build_rpn_targets", "compute_backbone_shapes",
    "norm_boxes_graph", "trim_zeros_graph", "apply_box_deltas_graph", "clip_boxes_graph",
    "overlaps_graph", "BatchNorm", "ProposalLayer", "PyramidROIAlign", "DetectionTargetLayer",
    "DetectionLayer", "LAYER_PRESETS", "select_trainable_layers",
]


class ActiveClassIds(KL.Layer):
    """Slice the active-class flags out of the image meta."""

    def call(self, image_meta):
        return parse_image_meta_graph(image_meta)["active_class_ids"]


class LeadingRois(KL.Layer):
    """The first ``count`` ROIs ``[B, count, 4]`` of ``[B, N, 4]``: in training, the rows
    that can be positive (the mask loss reads no other row, so the mask head skips them)."""

    def __init__(self, count, **kwargs):
        super().__init__(**kwargs)
        self.count = int(count)

    def get_config(self):
        return {**super().get_config(), "count": self.count}

    def call(self, rois):
        return rois[:, :self.count]


class SliceDetectionBoxes(KL.Layer):
    """The boxes of the detection rows that the mask head must see: ``[B, n, 4]`` of
    detection rows ``[B, N, 6]`` (normalised coordinates), where ``n`` is the largest
    number of real detections (class id > 0) of any image of the batch, at least 1.

    :class:`.layers.DetectionLayer` puts the real detections first (best score first)
    and zero-pads the rest, so the rows cut here are padding in every image: the mask head
    (paper Section 4.4) then runs only on detections that passed
    ``DETECTION_MIN_CONFIDENCE``, not on all ``DETECTION_MAX_INSTANCES`` slots.
    """

    def call(self, detections):
        real = tf.reduce_sum(tf.cast(detections[..., 4] > 0, tf.int32), axis=1)
        count = tf.maximum(1, tf.reduce_max(tf.concat([real, [0]], axis=0)))
        return detections[:, :count, :4]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None, 4)


class PadDetectionRows(KL.Layer):
    """Inputs ``[masks [B, n, h, w, C], detections [B, N, 6]]``: the mask-head output padded
    back to one mask per detection row, ``[B, N, h, w, C]``; rows that are not a real
    detection (class id 0) get an all-zero mask."""

    def call(self, inputs):
        masks, detections = inputs
        rows = tf.shape(detections)[1]
        masks = masks[:, :rows]
        masks = tf.pad(masks, [[0, 0], [0, rows - tf.shape(masks)[1]], [0, 0], [0, 0], [0, 0]])
        real = tf.cast(detections[..., 4] > 0, masks.dtype)
        return masks * real[:, :, None, None, None]

    def compute_output_shape(self, input_shape):
        masks, detections = input_shape
        return (masks[0], detections[1]) + tuple(masks[2:])


def default_strategy(config):
    """``MirroredStrategy`` when ``GPU_COUNT > 1``, the default strategy otherwise.

    Raises:
        ValueError: ``GPU_COUNT`` is larger than the number of visible GPUs.
    """
    if int(getattr(config, "GPU_COUNT", 1)) > 1:
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) < config.GPU_COUNT:
            raise ValueError(f"GPU_COUNT={config.GPU_COUNT} but only {len(gpus)} GPU(s) are visible")
        return tf.distribute.MirroredStrategy([g.name for g in gpus[:config.GPU_COUNT]])
    return tf.distribute.get_strategy()


MIXED_PRECISION_POLICIES = (None, "float32", "mixed_float16", "mixed_bfloat16")


class dtype_policy:
    """Context manager: build layers under the Keras dtype policy ``name`` (None: leave the
    global policy alone) and restore the previous global policy afterwards, so that one
    mixed-precision model does not change models built later in the same process.
    Raises ``ValueError`` for a policy other than those of ``MIXED_PRECISION_POLICIES``."""

    def __init__(self, name):
        if name not in MIXED_PRECISION_POLICIES:
            raise ValueError(f"MIXED_PRECISION={name!r}: use None, 'mixed_float16' (GPUs) "
                             "or 'mixed_bfloat16' (TPUs, recent CPUs)")
        self.name = name
        self.previous = None

    def __enter__(self):
        if self.name is not None:
            self.previous = keras.config.dtype_policy()
            keras.config.set_dtype_policy(self.name)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            keras.config.set_dtype_policy(self.previous)
        return False


def check_image_shape(config):
    """The pyramid needs image sides divisible by 2**6.

    Raises:
        ValueError: ``IMAGE_SHAPE``'s sides are not multiples of 64.
    """
    h, w = config.IMAGE_SHAPE[:2]
    if h % 64 or w % 64:
        raise ValueError(f"IMAGE_SHAPE {list(config.IMAGE_SHAPE[:2])} must be divisible by 64 "
                         "(e.g. 256, 320, 384, 448, 512, ..., 1024)")


class MaskRCNN:
    """Mask R-CNN with matterport's API.

    ``mode`` is ``"training"`` or ``"inference"``. ``strategy`` is a ``tf.distribute``
    strategy (default: ``MirroredStrategy`` over ``GPU_COUNT`` GPUs when > 1).

    Raises:
        ValueError: an unknown ``mode``, ``GPU_COUNT`` above the visible GPUs, or image sides
            that are not multiples of 64.
    """

    def __init__(self, mode, config, model_dir, strategy=None):
        if mode not in ("training", "inference"):
            raise ValueError(f"mode must be 'training' or 'inference', got {mode!r}")
        if callable(getattr(config, "validate", None)):
            config.validate()  # edits made after the config was constructed are checked too
        self.mode = mode
        self.config = config
        self.model_dir = str(model_dir)
        self.strategy = strategy or default_strategy(config)
        self.epoch = 0
        self.log_dir = None
        self.checkpoint_path = None
        self._functions = {}
        self.set_log_dir()
        with self.strategy.scope(), dtype_policy(getattr(config, "MIXED_PRECISION", None)):
            self.keras_model = self.build(mode=mode, config=config)

    # ------------------------------------------------------------------ graph
    def input_specs(self, mode):
        """``(name, shape, dtype)`` of every model input, in order (no batch axis)."""
        c = self.config
        specs = [("input_image", list(c.IMAGE_SHAPE), "float32"),
                 ("input_image_meta", [c.IMAGE_META_SIZE], "float32")]
        specs += self.extra_input_specs()
        if mode == "training":
            anchors = len(self.get_anchors(c.IMAGE_SHAPE))
            gt = c.MAX_GT_INSTANCES
            mask_shape = list(c.MINI_MASK_SHAPE) if c.USE_MINI_MASK else list(c.IMAGE_SHAPE[:2])
            specs += [("input_rpn_match", [anchors, 1], "int32"),
                      ("input_rpn_bbox", [c.RPN_TRAIN_ANCHORS_PER_IMAGE, 4], "float32"),
                      ("input_gt_class_ids", [gt], "int32"),
                      ("input_gt_boxes", [gt, 4], "float32"),
                      ("input_gt_masks", mask_shape + [gt], "bool")]
        return specs

    def extra_input_specs(self):
        """Inputs a subclass adds after image and meta (the Siamese model's references)."""
        return []

    def num_mask_channels(self):
        """Channels of the mask head: one per class (the Siamese model has one)."""
        return self.config.NUM_CLASSES

    def class_agnostic_bbox(self):
        """Whether ``mrcnn_bbox_fc`` predicts one box for all classes (False: one per class)."""
        return False

    def loss_names(self):
        """Names of the training losses, in the order of the training model's ``[B, n, 2]``
        loss parts: matterport's five (``losses.LOSS_NAMES``)."""
        return tuple(LOSS_NAMES)

    def clip_groups(self, variables):
        """Index lists into ``variables`` whose gradients are clipped together (each group
        to ``GRADIENT_CLIP_NORM`` by its own global norm): one group, all of them, as in
        matterport."""
        return [list(range(len(variables)))]

    def negatives_without_positives(self):
        """ROIs sampled as negatives from a training image without any positive ROI: 0, Mask
        R-CNN's rule (the Siamese model overrides it for negative pairs)."""
        return 0

    def build(self, mode, config):
        """Build the Keras model of ``mode`` (called by ``__init__``)."""
        check_image_shape(config)
        specs = self.input_specs(mode)
        inputs = [keras.Input(shape=shape, name=name, dtype=dtype) for name, shape, dtype in specs]
        input_image, input_image_meta = inputs[0], inputs[1]
        n_extra = len(self.extra_input_specs())
        rpn_maps = build_backbone_fpn(input_image, config)  # P2..P6; the heads use P2..P5
        outputs = self.build_heads(mode, input_image_meta, rpn_maps, rpn_maps[:4], inputs[2 + n_extra:])
        return keras.Model(inputs, outputs, name="mask_rcnn")

    def build_heads(self, mode, input_image_meta, rpn_maps, mrcnn_maps, gt_inputs=()):
        """RPN, proposals, classifier and mask heads on given feature maps.

        Training: ``gt_inputs`` are the RPN and GT target inputs and the output is the
        ``[B, 5, 2]`` per-image loss parts (``losses.reduce_losses``). Inference: the outputs are ``[detections,
        mrcnn_class, mrcnn_bbox, mrcnn_mask, rpn_rois, rpn_class, rpn_bbox]``; the mask head
        runs only on the rows that are real detections (:class:`SliceDetectionBoxes`) and
        the padding rows of ``mrcnn_mask`` are zero.
        """
        config = self.config
        anchors = AnchorsLayer(self.get_anchors(config.IMAGE_SHAPE), name="anchors")(input_image_meta)
        # CPU inference graphs compute the 3x3 convs of the RPN and mask head by Winograd F(2x2, 3x3)
        winograd = use_winograd(config, mode)
        rpn = build_rpn_model(config.RPN_ANCHOR_STRIDE, len(config.RPN_ANCHOR_RATIOS), rpn_maps[0].shape[-1],
                              conv_channels=config.RPN_CONV_CHANNELS, winograd=winograd)
        level_outputs = [rpn(p) for p in rpn_maps]
        rpn_class_logits, rpn_class, rpn_bbox = [
            KL.Concatenate(axis=1, name=n)([o[i] for o in level_outputs])
            for i, n in enumerate(["rpn_class_logits", "rpn_class", "rpn_bbox"])]

        proposal_count = config.POST_NMS_ROIS_TRAINING if mode == "training" else config.POST_NMS_ROIS_INFERENCE
        rpn_rois = ProposalLayer(proposal_count, config.RPN_NMS_THRESHOLD, config.PRE_NMS_LIMIT,
                                 config.RPN_BBOX_STD_DEV, name="ROI")([rpn_class, rpn_bbox, anchors])
        n_classes = config.NUM_CLASSES
        fc = config.FPN_CLASSIF_FC_LAYERS_SIZE

        if mode == "training":
            input_rpn_match, input_rpn_bbox, input_gt_class_ids, input_gt_boxes, input_gt_masks = gt_inputs
            active_class_ids = ActiveClassIds(name="active_class_ids")(input_image_meta)
            gt_boxes = NormBoxesLayer(config.IMAGE_SHAPE, name="norm_gt_boxes")(input_gt_boxes)
            rois, target_class_ids, target_bbox, target_mask = DetectionTargetLayer(
                config.TRAIN_ROIS_PER_IMAGE, config.ROI_POSITIVE_RATIO, config.BBOX_STD_DEV,
                config.MASK_SHAPE, config.USE_MINI_MASK, seed=getattr(config, "SEED", None),
                negatives_without_positives=self.negatives_without_positives(),
                hard_negative_fraction=getattr(config, "HARD_NEGATIVE_FRACTION", 0.0),
                name="proposal_targets")([rpn_rois, input_gt_class_ids, gt_boxes, input_gt_masks])
            class_logits, _, bbox = fpn_classifier_graph(
                rois, mrcnn_maps, input_image_meta, config.POOL_SIZE, n_classes,
                train_bn=config.TRAIN_BN, fc_layers_size=fc,
                class_agnostic_bbox=self.class_agnostic_bbox())
            # The mask loss reads positive ROIs only, which lead the sampled ROIs: the mask
            # head (most of a CPU step's work) runs on those rows alone. With frozen BN
            # (TRAIN_BN False) the loss is the same as on all rows.
            mask_rois = rois
            if config.TRAIN_BN is False:
                mask_rois = LeadingRois(max(1, max_positive_rois(config.TRAIN_ROIS_PER_IMAGE,
                                                                 config.ROI_POSITIVE_RATIO)),
                                        name="mrcnn_mask_rois")(rois)
            masks = build_fpn_mask_graph(mask_rois, mrcnn_maps, input_image_meta, config.MASK_POOL_SIZE,
                                         self.num_mask_channels(), train_bn=config.TRAIN_BN,
                                         conv_channels=config.MASK_CONV_CHANNELS)
            return MaskRCNNLosses(config.LOSS_NORMALIZATION,
                                  getattr(config, "MASK_FOREGROUND_BALANCE", 0.0), name="losses")([
                input_rpn_match, input_rpn_bbox, rpn_class_logits, rpn_bbox,
                target_class_ids, target_bbox, target_mask, rois,
                class_logits, bbox, masks, active_class_ids])

        _, class_probs, bbox = fpn_classifier_graph(
            rpn_rois, mrcnn_maps, input_image_meta, config.POOL_SIZE, n_classes,
            train_bn=config.TRAIN_BN, fc_layers_size=fc,
            class_agnostic_bbox=self.class_agnostic_bbox(), window_matmul=True)
        detections = DetectionLayer(config.DETECTION_MAX_INSTANCES, config.DETECTION_MIN_CONFIDENCE,
                                    config.DETECTION_NMS_THRESHOLD, config.BBOX_STD_DEV,
                                    getattr(config, "DETECTION_SCORE_RULE", "argmax"),
                                    name="mrcnn_detection")([rpn_rois, class_probs, bbox, input_image_meta])
        det_boxes = SliceDetectionBoxes(name="detection_boxes")(detections)
        masks = build_fpn_mask_graph(det_boxes, mrcnn_maps, input_image_meta, config.MASK_POOL_SIZE,
                                     self.num_mask_channels(), train_bn=config.TRAIN_BN,
                                     conv_channels=config.MASK_CONV_CHANNELS, winograd=winograd)
        masks = PadDetectionRows(name="mrcnn_mask_pad")([masks, detections])
        return [detections, class_probs, bbox, masks, rpn_rois, rpn_class, rpn_bbox]

    def get_anchors(self, image_shape):
        """Normalised float32 anchors ``[N, (y1, x1, y2, x2)]`` for ``image_shape`` (cached,
        read-only; see :mod:`.anchors`)."""
        return get_anchors(self.config, image_shape)

    # ----------------------------------------------------------- checkpoints
    def find_last(self):
        """Path of the last checkpoint of the newest run directory of this model's NAME.

        Raises:
            FileNotFoundError: no model directory or no checkpoint of this NAME in it.
        """
        return run_dirs.find_last_checkpoint(self.model_dir, run_dirs.run_name(self.config))

    def set_log_dir(self, model_path=None):
        """Set ``log_dir``, ``checkpoint_path`` and ``epoch``; resuming from ``model_path`` (a
        checkpoint of this layout) reuses its directory and continues after its epoch, and
        the next ``train`` restores the training state saved beside it (optimizer, data
        position, random generators; see :mod:`.checkpoints`). A fresh run's folder
        (``<name><YYYYmmddTHHMMSS>-<suffix>``) is created exclusively when training starts."""
        self.log_dir, self.checkpoint_path, self.epoch = run_dirs.run_location(
            self.model_dir, run_dirs.run_name(self.config), model_path)
        self.resumed_from = str(model_path) if self.epoch else None
        self.pending_resume = self.resumed_from
        self.data_position = None
        if self.epoch:
            log.info("resuming at epoch %d", self.epoch + 1)

    def load_weights(self, filepath, by_name=False, exclude=None, skip_mismatch=False):
        """Load a legacy-layout ``.h5`` (matterport, the official release, or ours).

        ``by_name=True`` matches layers by name (``exclude`` drops layers); a checkpoint
        path of this project also restores the epoch (``set_log_dir``). Returns the
        :class:`.weights.LoadReport`.

        Raises:
            FileNotFoundError / ValueError: see :func:`.weights.load_weights_by_name`.
        """
        report = mweights.load_weights_by_name(self.keras_model, filepath, by_name=by_name,
                                               exclude=exclude, skip_mismatch=skip_mismatch)
        self.set_log_dir(filepath)
        return report

    def save_weights(self, filepath):
        """Write the weights in the by-name legacy layout (atomically)."""
        mweights.save_weights_by_name(self.keras_model, filepath)

    def get_imagenet_weights(self):
        """Keras' ImageNet ResNet-50 weights cannot be downloaded here; pass a local file.

        Raises:
            RuntimeError: always.
        """
        raise RuntimeError("Downloading weights is not supported: pass a local ImageNet weights file "
                           "to load_weights(path, by_name=True)")

    # -------------------------------------------------------------- training
    def get_trainable_layers(self):
        """The layers that have weights, nested models flattened (matterport's helper)."""
        return [layer for _, layer in mweights.iter_weighted_layers(self.keras_model)]

    def find_trainable_layer(self, layer):
        """The layer holding the weights of ``layer``: ``layer`` itself (no ``TimeDistributed``
        wrappers here; kept for matterport's API)."""
        return layer

    def set_trainable(self, layer_regex, keras_model=None, indent=0, verbose=1):
        """Set ``trainable`` on the weighted layers of ``keras_model`` (default: this model's,
        nested models included): True where the name fully matches ``layer_regex`` (a regex or
        a preset of ``train``: "heads", "3+", "4+", "5+", "all"), False elsewhere; prints the
        trainable layers when ``verbose > 0``. ``train(layers=...)`` still trains what it
        selects. Returns the trainable layers (see :func:`.training.set_trainable`).

        Raises:
            ValueError: ``layer_regex`` is not a valid regex or matches no weighted layer.
        """
        from .training import set_trainable
        return set_trainable(self.keras_model if keras_model is None else keras_model, layer_regex,
                             indent=indent, verbose=verbose)

    def compile(self, learning_rate, momentum):
        """Create the SGD optimiser: momentum, and the *global* norm of all gradients clipped
        to ``GRADIENT_CLIP_NORM`` (Keras 2's ``clipnorm``, as in matterport and the release;
        Keras 3 calls it ``global_clipnorm``)."""
        self.optimizer = make_optimizer(self.config, self.strategy, learning_rate, momentum)
        return self.optimizer

    def load_training_example(self, dataset, image_id, rng, augmentation=None):
        """The training inputs of one image (after image and meta come the extra inputs, then
        RPN and GT targets), as numpy arrays in ``input_specs`` order.

        Raises:
            SkipExample: the image has no instance of a real class.
        """
        c = self.config
        image, image_meta, class_ids, boxes, masks = load_image_gt(
            dataset, c, image_id, augmentation=augmentation, use_mini_mask=c.USE_MINI_MASK, rng=rng)
        if not np.any(class_ids > 0):
            raise SkipExample()
        return self._pack_targets(image, image_meta, class_ids, boxes, masks, rng, extra=[],
                                  image_name=describe_image(dataset, image_id))

    def _pack_targets(self, image, image_meta, class_ids, boxes, masks, rng, extra, image_name=None):
        """:func:`.targets.pack_training_inputs` with this model's config."""
        return pack_training_inputs(self.config, image, image_meta, class_ids, boxes, masks, rng, extra,
                                    image_name=image_name)

    def training_image_ids(self, dataset):
        """Image ids a training epoch draws from (all, by default)."""
        return list(dataset.image_ids)

    def train(self, train_dataset, val_dataset, learning_rate, epochs, layers,
              augmentation=None, custom_callbacks=None, no_augmentation_sources=None,
              steps_per_epoch=None, validation_steps=None, verbose=1, max_seconds=None):
        """Train ``layers`` (preset or regex) from ``self.epoch`` up to ``epochs``.

        Writes a checkpoint per epoch (the ``.h5`` weights and, beside them, the training
        state for an exact resume; only from finite weights and losses), TensorBoard scalars
        to ``self.log_dir`` and the config (``config.json``) beside the checkpoints; a fresh
        run's folder is created exclusively, a resumed run's ``config.json`` is kept. Images of the dataset sources in
        ``no_augmentation_sources`` are not augmented. ``steps_per_epoch`` and
        ``validation_steps`` override the config; ``max_seconds`` stops after the epoch
        that exhausts a wall-clock budget. Returns the per-epoch history.

        Raises:
            RuntimeError: the model was built in inference mode.
            ValueError: ``layers`` matches no layer, or the batch does not split over replicas.
            checkpoints.TrainingDiverged: (a ``FloatingPointError``) a loss or a weight became
                NaN or infinite; the message names the last good checkpoint.
        """
        if self.mode != "training":
            raise RuntimeError("create the model in training mode to train")
        return run_training(self, train_dataset, val_dataset, learning_rate, epochs, layers,
                            augmentation=augmentation, custom_callbacks=custom_callbacks,
                            no_augmentation_sources=no_augmentation_sources,
                            steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
                            verbose=verbose, max_seconds=max_seconds)

    # ------------------------------------------------------------- inference
    def mold_inputs(self, images):
        """``(molded_images, image_metas, windows)`` of a list of images (see :func:`.molding.mold_inputs`)."""
        return mold_inputs(images, self.config)

    def unmold_detections(self, detections, mrcnn_mask, original_image_shape, image_shape, window):
        """One image's padded detection rows ``[N, 6]`` and mask-head output ``[N, h, w, C]``
        back to original-image pixels: ``(boxes, class_ids, scores, masks [H, W, n])``
        (see :func:`.molding.unmold_detections`)."""
        return unmold_detections(detections, mrcnn_mask, original_image_shape, image_shape, window)

    def cached_function(self, key, fn, signature):
        """``fn`` as a ``tf.function`` with a fixed input signature, built once per ``key``
        (inference never retraces per call)."""
        if key not in self._functions:
            self._functions[key] = tf.function(fn, input_signature=signature, reduce_retracing=True,
                                               autograph=False)
        return self._functions[key]

    def _predict(self, inputs):
        """Run the inference graph through one cached ``tf.function``."""
        specs = self.input_specs("inference")
        signature = [tf.TensorSpec([None] + list(s), tf.as_dtype(d), name=n) for n, s, d in specs]
        predict = self.cached_function("predict", lambda *x: self.keras_model(list(x), training=False), signature)
        outs = predict(*[tf.convert_to_tensor(np.asarray(x), dtype=s.dtype) for x, s in zip(inputs, signature)])
        return [o.numpy() for o in outs]

    def detection_result(self, detections, mrcnn_mask, original_image_shape, molded_shape, window):
        """One image's padded detection rows and masks → ``{"rois", "class_ids", "scores", "masks"}``
        in original-image pixels."""
        rois, class_ids, scores, masks = self.unmold_detections(
            detections, mrcnn_mask, original_image_shape, molded_shape, window)
        return {"rois": rois, "class_ids": class_ids, "scores": scores, "masks": masks}

    def detect(self, images, verbose=0):
        """Detect on a list of images (``len(images) == BATCH_SIZE``).

        Returns one dict per image: ``rois`` [N, (y1, x1, y2, x2)] in image pixels,
        ``class_ids`` [N], ``scores`` [N], ``masks`` [H, W, N] bool.

        Raises:
            RuntimeError: the model was built in training mode.
            ValueError: the resized images do not share one shape.
        """
        if self.mode != "inference":
            raise RuntimeError("create the model in inference mode to detect")
        molded, metas, windows = self.mold_inputs(images)
        return self._detect_molded_batch(images, molded, metas, windows, extra=[])

    def _detect_molded_batch(self, images, molded, metas, windows, extra):
        detections, _, _, mrcnn_mask, _, _, _ = self._predict([molded, metas] + list(extra))
        return [self.detection_result(detections[i], mrcnn_mask[i], image.shape, molded[i].shape, windows[i])
                for i, image in enumerate(images)]

    def detect_molded(self, molded_images, image_metas, verbose=0):
        """Detect on images already molded (resized, padded, mean-subtracted)."""
        molded_images = np.asarray(molded_images, np.float32)
        image_metas = np.asarray(image_metas, np.float32)
        meta = parse_image_meta(image_metas)
        images = [np.zeros(tuple(int(v) for v in s), np.uint8) for s in meta["original_image_shape"]]
        return self._detect_molded_batch(images, molded_images, image_metas, meta["window"], extra=[])

    def run_graph(self, images, outputs, image_metas=None, extra_inputs=()):
        """Intermediate tensors by layer name (matterport's ``run_graph``).

        Args:
            images: raw images (molded here with :meth:`mold_inputs`), or molded images
                ``[B, H, W, C]`` when ``image_metas`` is given.
            outputs: list of ``(label, layer_name)``.
            image_metas: ``[B, IMAGE_META_SIZE]`` of already molded ``images``.
            extra_inputs: the inputs a subclass adds after image and meta (the Siamese
                model's molded references ``[B, NUM_TARGETS, *TARGET_SHAPE]``).

        Returns:
            ``{label: numpy array}`` in the order of ``outputs``.

        Raises:
            ValueError: a layer name is not in the model.
        """
        if image_metas is None:
            molded, image_metas, _ = self.mold_inputs(images)
        else:
            molded = np.asarray(images, np.float32)
        tensors = [self.keras_model.get_layer(name).output for _, name in outputs]
        probe = keras.Model(self.keras_model.inputs, tensors)
        values = probe([molded, np.asarray(image_metas, np.float32)] + list(extra_inputs), training=False)
        if not isinstance(values, (list, tuple)):
            values = [values]
        return {label: np.asarray(v) for (label, _), v in zip(outputs, values)}
