"""Siamese Mask R-CNN (paper Section 4): Mask R-CNN conditioned on a reference image.

The network is three separable parts; the encoder's weights are shared by all of them:

1. **Encoder** (``encoder``, paper Section 4.2 and Appendix 1.2) — ResNet + FPN mapping an
   image to the pyramid P2..P6 (``TOP_DOWN_PYRAMID_SIZE`` channels each). The same
   weights encode the query (``IMAGE_SHAPE``) and the references (``TARGET_SHAPE``).
2. **Reference embedding** (``reference_model``, Section 4.3 step 1) — the encoder followed
   by global average pooling of every level: one reference image becomes an embedding
   ``[5, C]`` (one C-vector per level P2..P6). k-shot = the mean of the k embeddings
   (:class:`MeanOverShots`). Embeddings can be computed once and reused for many queries.
3. **Matching and heads** (``head_model``, Sections 4.3 and 4.4) — per level,
   ``[P_query, |P_query − embedding|]`` reduced by a 1×1 convolution to
   ``MATCHING_CHANNELS`` (layers ``fpn_distance_P2..P6``), then matterport's RPN, ROI
   classifier with two classes (background / match) and one class-agnostic mask.

With ``PRESENCE_HEAD`` (beyond the paper; :mod:`siamese_mask_rcnn.presence`) the heads also
give one presence score per pair, which gates the detection scores (:meth:`SiameseMaskRCNN.gate`).
With ``REFERENCE_CLASSES`` (beyond the paper; :mod:`siamese_mask_rcnn.reference_loss`) training
also classifies every reference's embedding into its category; with ``VERIFY_MIN_SIMILARITY``
(beyond the paper; :mod:`siamese_mask_rcnn.verification`) every detection is cropped, embedded
and compared with the reference (:meth:`SiameseMaskRCNN.verify`).

``keras_model`` chains the three parts for training (it outputs the losses) or inference
(detections). For many categories against one query, :meth:`SiameseMaskRCNN.detect_embeddings`
runs the encoder once and the categories through the heads in batched calls; with several
categories it computes the query's share of the matching and RPN convolutions once
(:meth:`SiameseMaskRCNN.matching_costs`).

Naming: inside the code the example image is the *reference*; "target" means a
ground-truth training target only. The configuration keys ``NUM_TARGETS``,
``TARGET_MAX_DIM``, ``TARGET_MIN_DIM``, ``TARGET_PADDING`` and ``TARGET_SHAPE`` describe the
references; they keep the official release's names so its configurations and calls work
unchanged.
"""
import os

import numpy as np
import keras
import tensorflow as tf
from keras import layers as KL

from .mrcnn import utils
from .mrcnn import weights as mweights
from .mrcnn.backbone import build_backbone_fpn
from .mrcnn.boxes import norm_boxes
from .mrcnn.heads import FoldRois
from .mrcnn.model import MaskRCNN, check_image_shape
from .mrcnn.molding import mold_image, unmold_boxes
from .mrcnn.pipeline import SkipExample
from .mrcnn.targets import describe_image, prepare_gt
from .mrcnn.winograd import conv3x3 as winograd_conv3x3, use_winograd, winograd_kernel
from .presence import PresenceHead, PresenceLossParts, gate_detections
from .reference_loss import ReferenceClassifier, ReferenceClassLossParts
from .verification import (PROTOTYPES_LAYER, check_known_margin, check_min_similarity, detection_crops,
                           keep_detections, known_category_margins, level_cosine)

#: The pyramid levels that are matched, in order (the embedding's second axis).
LEVELS = ("P2", "P3", "P4", "P5", "P6")


# ----------------------------------------------------------------------------- layers
@keras.saving.register_keras_serializable(package="siamese_mask_rcnn")
class PooledEmbedding(KL.Layer):
    """Global average pooling of every pyramid level (paper Section 4.3, step 1).

    Input: a list of L maps ``[N, h_l, w_l, C]``; output ``[N, L, C]`` (the mean feature
    of each level), computed in float32 under mixed precision. No arguments besides the
    standard layer ones.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, maps):
        return tf.stack([tf.reduce_mean(m, axis=[1, 2]) for m in maps], axis=1)

    def compute_output_shape(self, shapes):
        return (shapes[0][0], len(shapes), shapes[0][-1])


@keras.saving.register_keras_serializable(package="siamese_mask_rcnn")
class MeanOverShots(KL.Layer):
    """The k-shot embedding: ``[B·shots, L, C] → [B, L, C]``, the mean over each image's
    ``shots`` consecutive reference embeddings.

    Args:
        shots: references per query (``NUM_TARGETS``), an int ≥ 1. Raises ``ValueError``
            otherwise.
    """

    def __init__(self, shots, **kwargs):
        super().__init__(**kwargs)
        if int(shots) < 1:
            raise ValueError(f"shots must be >= 1, got {shots}")
        self.shots = int(shots)

    def call(self, x):
        shape = tf.shape(x)
        return tf.reduce_mean(tf.reshape(x, [-1, self.shots, shape[1], shape[2]]), axis=1)

    def compute_output_shape(self, s):
        return (None,) + tuple(s[1:])

    def get_config(self):
        return {**super().get_config(), "shots": self.shots}


@keras.saving.register_keras_serializable(package="siamese_mask_rcnn")
class DistanceConcat(KL.Layer):
    """Matching at one level (paper Section 4.3, steps 2-3): ``[P, |P − e_level|]``.

    Inputs ``(P [B, h, w, C], E [B, L, C])``; output ``[B, h, w, 2C]``: the query map
    followed by its absolute difference to the reference embedding of level ``level``
    (broadcast over every position).

    Args:
        level: index of the level in the embedding's second axis (0 = P2), an int ≥ 0.
            Raises ``ValueError`` otherwise.
    """

    def __init__(self, level, **kwargs):
        kwargs.setdefault("dtype", "float32")  # the matching distance stays float32 (mixed precision)
        super().__init__(**kwargs)
        if int(level) < 0:
            raise ValueError(f"level must be >= 0, got {level}")
        self.level = int(level)

    def call(self, inputs):
        feature_map, embedding = inputs
        reference = embedding[:, self.level][:, None, None, :]
        return tf.concat([feature_map, tf.abs(feature_map - reference)], axis=-1)

    def compute_output_shape(self, s):
        return tuple(s[0][:-1]) + (2 * s[0][-1],)

    def get_config(self):
        return {**super().get_config(), "level": self.level}


def matching_graph(query_maps, embedding, channels, convs=None, prefix="fpn_distance_concat"):
    """The matching of paper Section 4.3 at every level.

    ``query_maps``: the query's P2..P6 (``[B, h_l, w_l, C]``); ``embedding``: ``[B, 5, C]``.
    Returns the matched maps ``[B, h_l, w_l, channels]`` (layers ``<prefix>_P*`` and the 1×1
    convolutions ``fpn_distance_P*``), a drop-in replacement for the pyramid in the heads.
    ``convs``: the 1×1 convolutions to use (shared weights, e.g. to match a second
    embedding against the same query); new ones by default.
    """
    if convs is None:
        convs = [KL.Conv2D(channels, 1, name=f"fpn_distance_{name}") for name in LEVELS[:len(query_maps)]]
    return [conv(DistanceConcat(i, name=f"{prefix}_{name}")([fmap, embedding]))
            for i, (fmap, name, conv) in enumerate(zip(query_maps, LEVELS, convs))]


# ------------------------------------------------------------------------------ model
class SiameseMaskRCNN(MaskRCNN):
    """Siamese Mask R-CNN (paper Section 4) with matterport's ``MaskRCNN`` API.

    ``mode`` is ``"training"`` or ``"inference"``; ``config`` is a ``SiameseConfig``
    (``NUM_CLASSES`` must be 2: background / match, else ``ValueError``).

    Model inputs: matterport's ``input_image`` and ``input_image_meta``, then
    ``input_references`` ``[B, NUM_TARGETS, *TARGET_SHAPE]`` (molded references, see
    :func:`mold_reference`), then in training the RPN and ground-truth targets. Input
    layers own no weights, so weight files do not depend on these names. The attributes
    ``encoder``, ``reference_model`` and ``head_model`` are the three parts described in
    the module docstring.
    """

    def extra_input_specs(self):
        """The references input: ``[("input_references", [NUM_TARGETS, *TARGET_SHAPE], "float32")]``."""
        c = self.config
        return [("input_references", [c.NUM_TARGETS] + list(c.TARGET_SHAPE), "float32")]

    def has_presence_head(self):
        """Whether the model has the presence head (``PRESENCE_HEAD``; :mod:`.presence`)."""
        return bool(getattr(self.config, "PRESENCE_HEAD", False))

    def has_reference_loss(self):
        """Whether training adds the reference classification loss (``REFERENCE_CLASSES`` >
        0; :mod:`.reference_loss`)."""
        return int(getattr(self.config, "REFERENCE_CLASSES", 0) or 0) > 0

    def input_specs(self, mode):
        """Matterport's inputs with the references after the meta; in training with the
        presence head, then ``input_negative_references`` ``[NUM_TARGETS, *TARGET_SHAPE]``
        (references of a category absent from the query), and with the reference loss, last,
        ``input_reference_class_ids`` ``[1]`` int32 (the references' category id)."""
        specs = super().input_specs(mode)
        if mode == "training" and self.has_presence_head():
            specs.append(("input_negative_references", [self.config.NUM_TARGETS] + list(self.config.TARGET_SHAPE),
                          "float32"))
        if mode == "training" and self.has_reference_loss():
            specs.append(("input_reference_class_ids", [1], "int32"))
        return specs

    def loss_names(self):
        """Matterport's five losses, then ``presence_loss`` with the presence head and
        ``reference_class_loss`` with the reference loss."""
        return (super().loss_names() + (("presence_loss",) if self.has_presence_head() else ())
                + (("reference_class_loss",) if self.has_reference_loss() else ()))

    def clip_groups(self, variables):
        """The presence head's variables are clipped on their own, so that its gradients do
        not change the clipping of the detector's (which then trains exactly as without the
        head); see ``MaskRCNN.clip_groups``."""
        if not self.has_presence_head() or not self.presence_head.stop_gradient:
            return super().clip_groups(variables)
        own = {id(v) for v in self.presence_head.variables()}
        head = [i for i, v in enumerate(variables) if id(v) in own]
        rest = [i for i, v in enumerate(variables) if id(v) not in own]
        return [group for group in (rest, head) if group]

    def num_mask_channels(self):
        """One class-agnostic mask (the release's ``mrcnn_mask`` kernel ``[1, 1, 256, 1]``)."""
        return 1

    def class_agnostic_bbox(self):
        """One class-agnostic box regressor (the release's ``mrcnn_bbox_fc`` kernel ``[FC, 4]``)."""
        return True

    def build(self, mode, config):
        """Build the three parts and the chained ``keras_model`` (called by ``__init__``).

        Raises ``ValueError`` for an invalid ``IMAGE_SHAPE`` or ``NUM_CLASSES != 2``.
        """
        check_image_shape(config)
        if config.NUM_CLASSES != 2:
            raise ValueError(f"Siamese Mask R-CNN classifies background/match: NUM_CLASSES must be 2, "
                             f"got {config.NUM_CLASSES}")
        self.encoder = self._build_encoder()
        self.pooling = PooledEmbedding(name="reference_pooling")
        self.reference_model = self._build_reference_model()
        self.presence_head = None  # built after the heads (see _build_head_model)
        self.head_model = self._build_head_model(mode)

        inputs = [keras.Input(shape=shape, name=name, dtype=dtype)
                  for name, shape, dtype in self.input_specs(mode)]
        image, meta, references = inputs[:3]
        gt_inputs = inputs[3:]
        reference_class_ids = gt_inputs.pop() if mode == "training" and self.has_reference_loss() else None
        query_maps = self.encoder(image)
        # [B, K, h, w, 3] -> [B·K, h, w, 3]: every reference through the shared encoder.
        reference_maps = self.encoder(FoldRois(name="fold_shots")(references))
        shot_embeddings = self.pooling(reference_maps)  # [B·K, 5, C]
        embedding = MeanOverShots(config.NUM_TARGETS, name="k_shot_mean")(shot_embeddings)
        if mode == "training" and self.has_presence_head():
            # the last input: references of an absent category -> the negative embedding,
            # which the head model takes last (the presence loss, siamese_mask_rcnn.presence)
            negative_maps = self.encoder(FoldRois(name="fold_negative_shots")(gt_inputs[-1]))
            gt_inputs = gt_inputs[:-1] + [MeanOverShots(config.NUM_TARGETS, name="k_shot_mean_negative")(
                self.pooling(negative_maps))]
        outputs = self.head_model([meta, embedding] + list(query_maps) + gt_inputs)
        if reference_class_ids is not None:
            # the last loss row: every reference's embedding classified into its category
            logits = ReferenceClassifier(config.REFERENCE_CLASSES, name="reference_class_logits")(shot_embeddings)
            parts = ReferenceClassLossParts(config.NUM_TARGETS, name="reference_class_loss_parts")(
                [logits, reference_class_ids])
            outputs = KL.Concatenate(axis=1, name="all_loss_parts_with_reference", dtype="float32")(
                [outputs, parts])
        return keras.Model(inputs, outputs, name="siamese_mask_rcnn")

    def _build_encoder(self):
        """Part 1: ``image [B, H, W, channels] → [P2..P6]`` (model ``siamese_encoder``)."""
        image = keras.Input([None, None, self.config.IMAGE_CHANNEL_COUNT], name="encoder_image")
        return keras.Model(image, build_backbone_fpn(image, self.config), name="siamese_encoder")

    def _build_reference_model(self):
        """Part 2: ``reference [B, *TARGET_SHAPE] → embedding [B, 5, C]`` (model
        ``reference_encoder``, sharing the encoder's weights)."""
        reference = keras.Input(list(self.config.TARGET_SHAPE), name="reference_image")
        return keras.Model(reference, self.pooling(self.encoder(reference)), name="reference_encoder")

    def _build_head_model(self, mode):
        """Part 3: ``[meta, embedding, P2..P6, (training targets)] → outputs`` (model
        ``siamese_heads``): matching, then RPN, classifier and mask heads."""
        c = self.config
        depth = c.TOP_DOWN_PYRAMID_SIZE
        meta = keras.Input([c.IMAGE_META_SIZE], name="head_image_meta")
        embedding = keras.Input([len(LEVELS), depth], name="head_reference_embedding")
        maps = [keras.Input([int(np.ceil(c.IMAGE_SHAPE[0] / s)), int(np.ceil(c.IMAGE_SHAPE[1] / s)), depth],
                            name=f"head_query_{name}") for s, name in zip(c.BACKBONE_STRIDES, LEVELS)]
        gt_inputs = []
        if mode == "training":
            n_first = 2 + len(self.extra_input_specs())
            gt_inputs = [keras.Input(shape=shape, name=f"head_{name}", dtype=dtype)
                         for name, shape, dtype in MaskRCNN.input_specs(self, "training")[n_first:]]
        convs = [KL.Conv2D(c.MATCHING_CHANNELS, 1, name=f"fpn_distance_{name}") for name in LEVELS]
        matched = matching_graph(maps, embedding, c.MATCHING_CHANNELS, convs)
        outputs = self.build_heads(mode, meta, matched, matched[:4], gt_inputs)
        presence_inputs = []
        if self.has_presence_head():
            # constructed only now: a Keras initializer draws its seed when constructed, so
            # the detector's layers get the same initial weights with and without the head
            self.presence_head = PresenceHead(c.PRESENCE_CHANNELS, not getattr(c, "PRESENCE_GRADIENT", False))
            if mode == "inference":
                # outputs[7]: the presence [B, 1] (its sigmoid layer is named "presence")
                logit = self.presence_head.logits(matched[:4])
                outputs = outputs + [KL.Activation("sigmoid", name="presence", dtype="float32")(logit)]
            else:
                # training: the loss parts [B, 5, 2] get a sixth row, the presence loss of the
                # positive pair and of the negative one (the last input, matched by the same convs)
                negative = keras.Input([len(LEVELS), depth], name="head_negative_embedding")
                presence_inputs = [negative]
                rematched = matching_graph(maps[:4], negative, c.MATCHING_CHANNELS, convs[:4],
                                           prefix="presence_negative_concat")
                logits = [self.presence_head.logits(matched[:4]), self.presence_head.logits(rematched)]
                parts = PresenceLossParts(name="presence_loss_parts")(logits)
                outputs = KL.Concatenate(axis=1, name="all_loss_parts", dtype="float32")([outputs, parts])
        return keras.Model([meta, embedding] + maps + gt_inputs + presence_inputs, outputs, name="siamese_heads")

    # -------------------------------------------------------------- training data
    def training_image_ids(self, dataset):
        """Query images that contain at least one reference-able training category."""
        return dataset.query_image_ids(dataset.train_class_ids)

    def negatives_without_positives(self):
        """ROIs sampled as negatives from a negative pair (no positive ROI): as many as an
        image with its full share of positives gets, when ``NEGATIVE_PAIR_FRACTION`` > 0."""
        c = self.config
        if getattr(c, "NEGATIVE_PAIR_FRACTION", 0.0) <= 0:
            return 0
        return max(1, int(round(c.TRAIN_ROIS_PER_IMAGE * (1.0 - c.ROI_POSITIVE_RATIO))))

    def pair_augmentation(self):
        """The :class:`~siamese_mask_rcnn.augmentation.PairAugmentation` of
        ``PAIR_AUGMENTATION`` (built once), or None when it is off (the default)."""
        if not getattr(self.config, "PAIR_AUGMENTATION", False):
            return None
        if getattr(self, "_pair_augmentation", None) is None:
            from .augmentation import PairAugmentation
            self._pair_augmentation = PairAugmentation()
        return self._pair_augmentation

    def load_training_example(self, dataset, image_id, rng, augmentation=None):
        """One (query, references) training example (paper Section 5.1).

        A random training category present in query ``image_id`` is drawn, ``NUM_TARGETS``
        references of it are cropped from other images, and the ground truth is that
        category's instances in the query only. With probability ``NEGATIVE_PAIR_FRACTION``
        (beyond the paper; 0 by default) the pair is a *negative* one instead: the reference
        category is a training category absent from the query, and the ground truth is
        empty (every anchor and ROI is background). With ``PAIR_AUGMENTATION`` (beyond the
        paper; off by default) each reference crop and the query (unless ``augmentation`` is
        given) get independent photometric and geometric augmentation
        (:mod:`siamese_mask_rcnn.augmentation`). Returns the model inputs as numpy arrays
        in ``input_specs("training")`` order (with ``REFERENCE_CLASSES``, last, the reference
        category's id ``[1]``); raises ``SkipExample`` when the query has no usable category or
        no instance survives augmentation, ``ValueError`` when the reference category's id is
        not below ``REFERENCE_CLASSES``.
        """
        c = self.config
        fraction = float(getattr(c, "NEGATIVE_PAIR_FRACTION", 0.0))
        # The draw is made only when negatives are on, so fraction 0 keeps the paper's stream.
        class_id = None
        if fraction > 0 and rng.random() < fraction:
            class_id = dataset.sample_absent_reference_class(image_id, rng)
        negative = class_id is not None
        if not negative:
            class_id = dataset.sample_reference_class(image_id, rng)
        if class_id is None:
            raise SkipExample()
        crops = dataset.sample_references(class_id, c.NUM_TARGETS, rng, exclude_image_id=image_id)
        pair_augmentation = self.pair_augmentation()
        if pair_augmentation is not None:  # references and query drawn independently
            crops = pair_augmentation.augment_references(crops, rng)
            if augmentation is None:
                augmentation = pair_augmentation.query_transform
        image = dataset.load_image(image_id)
        if negative:
            masks = np.zeros(image.shape[:2] + (0,), dtype=bool)
            labels = np.zeros((0,), dtype=np.int32)
        else:
            masks, labels = dataset.load_class_gt(image_id, class_id)
        image, meta, class_ids, boxes, masks = prepare_gt(
            image, masks, labels, c, image_id=image_id, augmentation=augmentation, rng=rng)
        if not negative and not np.any(class_ids > 0):
            raise SkipExample()
        references = np.stack([mold_reference(r, c) for r in crops])
        arrays = self._pack_targets(image, meta, class_ids, boxes, masks, rng, extra=[references],
                                    image_name=describe_image(dataset, image_id))
        if self.has_presence_head():
            arrays.append(self._negative_references(dataset, image_id, rng))
        if self.has_reference_loss():
            if not 0 < int(class_id) < int(c.REFERENCE_CLASSES):
                raise ValueError(f"reference category id {int(class_id)} is outside the reference classifier's "
                                 f"1..{int(c.REFERENCE_CLASSES) - 1}: set REFERENCE_CLASSES to the dataset's "
                                 f"num_classes ({getattr(dataset, 'num_classes', '?')})")
            arrays.append(np.array([class_id], np.int32))
        return arrays

    def _negative_references(self, dataset, image_id, rng):
        """Molded ``NUM_TARGETS`` references ``[k, *TARGET_SHAPE]`` of a training category
        absent from query ``image_id``, for the presence head's negative pair. They come from
        a random stream spawned from ``rng``'s seed, which leaves ``rng`` untouched: the
        positive pair is the one the model without the head gets. Raises ``SkipExample``
        when every training category is in the query."""
        c = self.config
        seed_seq = getattr(rng.bit_generator, "seed_seq", None)
        own = np.random.default_rng(seed_seq.spawn(1)[0]) if seed_seq is not None else rng
        class_id = dataset.sample_absent_reference_class(image_id, own)
        if class_id is None:
            raise SkipExample()
        crops = dataset.sample_references(class_id, c.NUM_TARGETS, own, exclude_image_id=image_id)
        pair_augmentation = self.pair_augmentation()
        if pair_augmentation is not None:
            crops = pair_augmentation.augment_references(crops, own)
        return np.stack([mold_reference(r, c) for r in crops])

    # ------------------------------------------------------------------ inference
    def encode_references(self, references):
        """Embeddings ``[N, 5, C]`` (float32 feature units) of N reference crops.

        ``references``: a non-empty list of images (uint8 or any layout accepted by
        ``utils.to_uint8_rgb``, any size) or image file paths; a single path or a single
        crop array (``[h, w]`` or ``[h, w, 1..4]``) counts as one reference, and an array
        ``[N, h, w, 3]`` (or ``[N, h, w]`` of grey crops wider than 4 pixels) as N. Raises
        ``ValueError`` for an empty list or an empty crop, ``TypeError`` for anything that is
        not a path, an array or a list / tuple of them (``None`` included), ``ImageLoadError``
        for an unreadable file.
        """
        if not isinstance(references, (str, bytes, os.PathLike, np.ndarray, list, tuple)):
            raise TypeError(f"references must be a crop array, an image file path or a list of them, "
                            f"got {type(references).__name__}")
        if isinstance(references, (str, bytes, os.PathLike)):
            references = [references]
        elif isinstance(references, np.ndarray) and (
                references.ndim == 2 or (references.ndim == 3 and references.shape[-1] in (1, 2, 3, 4))):
            references = [references]  # one crop (grey, or with channels last), not a stack
        if len(references) == 0:
            raise ValueError("encode_references needs at least one reference crop")
        c = self.config
        molded = np.stack([mold_reference(self._query_image(r), c) for r in references]).astype(np.float32)
        # float32 whatever the compute dtype (MIXED_PRECISION): the heads' signatures are float32
        fn = self.cached_function("ref", lambda x: tf.cast(self.reference_model(x, training=False), tf.float32),
                                  [tf.TensorSpec([None] + list(c.TARGET_SHAPE), tf.float32)])
        return fn(molded).numpy()

    def embed_category(self, references):
        """One k-shot embedding ``[5, C]``: the mean of the references' embeddings
        (``references``: crops or image file paths, as :meth:`encode_references`)."""
        return self.encode_references(references).mean(axis=0)

    def encode_query(self, image):
        """Mold one query image ``[H, W, 3]`` and run the encoder once.

        Returns ``(molded [1, *IMAGE_SHAPE], metas [1, IMAGE_META_SIZE], windows [1, 4]
        (molded pixels), maps [P2..P6 float32 numpy arrays, whatever MIXED_PRECISION computes
        in])``.
        """
        molded, metas, windows = self.mold_inputs([image])
        fn = self.cached_function("query", lambda x: [tf.cast(m, tf.float32) for m in self.encoder(x, training=False)],
                                  [tf.TensorSpec([None] + list(self.config.IMAGE_SHAPE), tf.float32)])
        maps = [m.numpy() for m in fn(molded.astype(np.float32))]
        return molded, metas.astype(np.float32), windows, maps

    #: Bytes of activations one batched head call over several categories may hold; the
    #: number of categories per call (:meth:`category_batch_size`) follows from it.
    CATEGORY_BATCH_BYTES = 2 ** 31

    def _level_shapes(self):
        """``(h, w)`` of the query's P2..P6 in the heads."""
        c = self.config
        return [(int(np.ceil(c.IMAGE_SHAPE[0] / s)), int(np.ceil(c.IMAGE_SHAPE[1] / s)))
                for s in c.BACKBONE_STRIDES]

    def category_batch_size(self):
        """How many categories one batched head call takes (at least 1, at most 32): the
        float32 activations of the matching and the RPN conv of one category (input, matched
        maps and RPN features, counted twice for temporaries) fit ``CATEGORY_BATCH_BYTES``."""
        c = self.config
        pixels = sum(h * w for h, w in self._level_shapes())
        channels = 2 * c.TOP_DOWN_PYRAMID_SIZE + c.MATCHING_CHANNELS + c.RPN_CONV_CHANNELS
        return int(max(1, min(32, self.CATEGORY_BATCH_BYTES // (pixels * channels * 4 * 2))))

    def matching_costs(self):
        """Multiply-accumulates of the matching and RPN convolution (paper Section 4.3) on
        one query: ``(plain, folded_once, folded_per_category)``.

        *plain* is the graph's cost per category: the 1×1 conv of ``[P, |P − e|]`` (2C →
        M channels) on P2..P6 and the 3×3 RPN conv (M → R) on its output. The matching
        conv is linear and the RPN conv follows it with no activation in between, so the
        query term (``P·W_query + bias`` and its RPN conv) can be computed once per query
        (*folded_once*: the query term on P2..P5, which the ROI heads read; its RPN conv as
        one 3×3 conv of P (C → R) with ``W_query`` composed into the RPN kernel, plus a
        1-channel conv of the bias for the zero-padded border; the two kernel compositions),
        and each category then pays only its reference term (*folded_per_category*): the
        1×1 conv of ``|P − e|`` (C → M) on P2..P5, which the ROI heads read, and the
        composed 3×3 conv (C → R) on P2..P6.
        """
        c = self.config
        C, M, R = c.TOP_DOWN_PYRAMID_SIZE, c.MATCHING_CHANNELS, c.RPN_CONV_CHANNELS
        stride = c.RPN_ANCHOR_STRIDE
        shapes = self._level_shapes()
        pixels = [h * w for h, w in shapes]
        rpn_pixels = sum(int(np.ceil(h / stride)) * int(np.ceil(w / stride)) for h, w in shapes)
        plain = sum(pixels) * 2 * C * M + rpn_pixels * 9 * M * R
        once = (sum(pixels[:4]) * C * M + rpn_pixels * 9 * C * R + rpn_pixels * 9 * R
                + 2 * len(shapes) * 9 * C * M * R)
        per_category = sum(pixels[:4]) * C * M + rpn_pixels * 9 * C * R
        return plain, once, per_category

    def fold_pays(self, categories):
        """Whether the folded matching (see :meth:`matching_costs`) costs fewer operations
        than the plain graph for ``categories`` categories of one query, and can run (the
        matching and RPN convs compute in float32)."""
        hm = self.head_model
        layers = [hm.get_layer(f"fpn_distance_{n}") for n in LEVELS]
        layers.append(hm.get_layer("rpn_model").get_layer("rpn_conv_shared"))
        if any(layer.compute_dtype != "float32" for layer in layers):
            return False
        plain, once, per_category = self.matching_costs()
        return categories * plain > once + categories * per_category

    def _head_signature(self, *extra):
        c = self.config
        return ([tf.TensorSpec([None, c.IMAGE_META_SIZE], tf.float32),
                 tf.TensorSpec([None, len(LEVELS), c.TOP_DOWN_PYRAMID_SIZE], tf.float32)] +
                [tf.TensorSpec([None, h, w, c.TOP_DOWN_PYRAMID_SIZE], tf.float32)
                 for h, w in self._level_shapes()] + list(extra))

    def _plain_heads_fn(self):
        """``(meta [1, META], embeddings [K, 5, C], P2..P6 [1, h, w, C]) → (detections,
        masks, rpn_class, rpn_bbox)``: the head model on the query repeated K times (one
        batched call)."""
        def heads(meta, embeddings, *maps):
            k = tf.shape(embeddings)[0]
            maps = [tf.repeat(m, k, axis=0) for m in maps]
            outputs = self.head_model([tf.repeat(meta, k, axis=0), embeddings] + maps, training=False)
            return [outputs[0], outputs[3], outputs[5], outputs[6]] + outputs[7:]
        return self.cached_function("heads_batch", heads, self._head_signature())

    def _fold_parts(self):
        """The layers of the folded path: the matching convs, the RPN conv, and two
        sub-models sharing the head model's layers (built once): the RPN after its
        shared conv, and the heads after the RPN (proposals, classifier, detections,
        mask head)."""
        if "fold_parts" not in self._functions:
            hm = self.head_model
            rpn = hm.get_layer("rpn_model")
            shared = rpn.get_layer("rpn_conv_shared")
            rpn_tail = keras.Model(shared.output, rpn.outputs, name="rpn_after_shared_conv")
            matched = [hm.get_layer(f"fpn_distance_{n}").output for n in LEVELS[:4]]
            inputs = ([hm.get_layer("head_image_meta").output] + matched +
                      [hm.get_layer("rpn_class").output, hm.get_layer("rpn_bbox").output])
            # rpn_class / rpn_bbox are inputs here, so they must not be outputs as well;
            # the presence (outputs[7], from the matched P2..P5) follows the first five.
            tail = keras.Model(inputs, hm.outputs[:5] + hm.outputs[7:], name="heads_after_rpn")
            convs = [hm.get_layer(f"fpn_distance_{n}") for n in LEVELS]
            self._functions["fold_parts"] = (convs, shared, rpn_tail, tail)
        return self._functions["fold_parts"]

    def _fold_winograd(self):
        """Whether the folded path computes its 3×3 convs by Winograd F(2×2, 3×3)
        (``WINOGRAD_CONVS``, on a CPU, stride-1 RPN; :mod:`.mrcnn.winograd`)."""
        c = self.config
        return use_winograd(c, self.mode) and int(c.RPN_ANCHOR_STRIDE) == 1

    def _fold_conv3x3(self):
        """``(prepare, conv)`` of the folded path's 3×3 RPN convs: ``prepare(kernel [3, 3,
        C, R])`` gives the form ``conv(x, prepared)`` takes (its Winograd transform
        [16, C, R], or the kernel itself for the strided ``SAME`` convolution)."""
        if self._fold_winograd():
            return winograd_kernel, winograd_conv3x3
        stride = self.config.RPN_ANCHOR_STRIDE
        return (lambda kernel: kernel), (lambda x, kernel: tf.nn.conv2d(x, kernel, stride, "SAME"))

    def _fold_query_fn(self):
        """``P2..P6 [1, h, w, C] → (query terms of P2..P5 [1, h, w, M], RPN pre-activations
        of the query terms on P2..P6 [1, h', w', R], composed reference kernels
        [3, 3, C, R] per level, or their Winograd transforms [16, C, R])``: the
        once-per-query part of the folded matching."""
        c = self.config

        def fold_query(*maps):
            convs, shared, _, _ = self._fold_parts()
            depth = c.TOP_DOWN_PYRAMID_SIZE
            prepare, conv3x3 = self._fold_conv3x3()
            query, pre, kernels = [], [], []
            for i, (fmap, conv) in enumerate(zip(maps, convs)):
                kernel = conv.kernel  # [1, 1, 2C, M]: rows [0, C) see P, rows [C, 2C) see |P - e|
                query_kernel = tf.einsum("cm,yxmo->yxco", kernel[0, 0, :depth], shared.kernel)
                composed = tf.einsum("cm,yxmo->yxco", kernel[0, 0, depth:], shared.kernel)
                # The RPN conv of the query term P·W_query + b, as one conv of P (C input
                # channels, not M) with the composed kernel, plus the conv of the constant
                # map b, which differs from a constant only where the zero padding cuts
                # taps off (a 1-channel conv of ones).
                ones = tf.ones(tf.concat([tf.shape(fmap)[:3], [1]], axis=0))
                bias_map = tf.nn.conv2d(ones, tf.einsum("m,yxmo->yxo", conv.bias, shared.kernel)[:, :, None],
                                        c.RPN_ANCHOR_STRIDE, "SAME")
                pre.append(conv3x3(fmap, prepare(query_kernel)) + bias_map + shared.bias)
                kernels.append(prepare(composed))
                if i < 4:  # the ROI heads read the matched P2..P5
                    query.append(tf.nn.conv2d(fmap, kernel[:, :, :depth], 1, "SAME") + conv.bias)
            return query + pre + kernels
        return self.cached_function("fold_query", fold_query, self._head_signature()[2:])

    def _fold_heads_fn(self):
        """``(meta [1, META], embeddings [K, 5, C], P2..P6, fold_query outputs) →
        (detections, masks, rpn_class, rpn_bbox)``: the per-category part of the folded matching and the heads,
        for K categories in one call."""
        c = self.config
        depth = c.TOP_DOWN_PYRAMID_SIZE
        shapes = self._level_shapes()
        stride = c.RPN_ANCHOR_STRIDE
        query_specs = [tf.TensorSpec([None, h, w, c.MATCHING_CHANNELS], tf.float32) for h, w in shapes[:4]]
        pre_specs = [tf.TensorSpec([None, int(np.ceil(h / stride)), int(np.ceil(w / stride)),
                                    c.RPN_CONV_CHANNELS], tf.float32) for h, w in shapes]
        winograd = self._fold_winograd()
        kernel_specs = [tf.TensorSpec([16, depth, c.RPN_CONV_CHANNELS] if winograd else
                                      [3, 3, depth, c.RPN_CONV_CHANNELS], tf.float32) for _ in shapes]

        _, conv3x3 = self._fold_conv3x3()

        def heads(meta, embeddings, *tensors):
            convs, _, rpn_tail, tail = self._fold_parts()
            maps, query, pre, kernels = tensors[:5], tensors[5:9], tensors[9:14], tensors[14:19]
            k = tf.shape(embeddings)[0]
            matched, level_outputs = [], []
            for i, fmap in enumerate(maps):
                diff = tf.abs(fmap - embeddings[:, i][:, None, None, :])  # [K, h, w, C]
                if i < 4:
                    matched.append(query[i] + tf.nn.conv2d(diff, convs[i].kernel[:, :, depth:], 1, "SAME"))
                shared = tf.nn.relu(pre[i] + conv3x3(diff, kernels[i]))
                level_outputs.append(rpn_tail(shared, training=False))
            rpn_class = tf.concat([o[1] for o in level_outputs], axis=1)
            rpn_bbox = tf.concat([o[2] for o in level_outputs], axis=1)
            outputs = tail([tf.repeat(meta, k, axis=0)] + matched + [rpn_class, rpn_bbox], training=False)
            return [outputs[0], outputs[3], rpn_class, rpn_bbox] + outputs[5:]
        return self.cached_function("fold_heads", heads,
                                    self._head_signature(*query_specs, *pre_specs, *kernel_specs))

    def detect_embeddings(self, image, embeddings, batch_size=None, fold=None):
        """Detect the categories ``{key: embedding [5, C]}`` in one query image ``[H, W, 3]``.

        The query is encoded once; the categories then run through the matching and heads
        (paper Sections 4.3-4.4) in batched calls of ``batch_size`` categories (default
        :meth:`category_batch_size`; 1 runs them one by one). ``fold``: True computes the
        query term of the matching once and gives each category only its reference term
        (:meth:`matching_costs`), False runs the plain graph, None (default) folds when
        that costs fewer operations (:meth:`fold_pays`: from about three categories on).
        All give the same detections up to float rounding.

        Returns ``{key: {"rois" [N, 4] (y1, x1, y2, x2 image pixels), "class_ids" [N],
        "scores" [N], "masks" [H, W, N] bool}}``; with the presence head (``PRESENCE_HEAD``)
        also ``"presence"`` (the pair's presence in [0, 1]), the scores multiplied by it and
        only those ≥ ``DETECTION_MIN_CONFIDENCE`` kept (:func:`.presence.gate_detections`), so an
        absent category gives an empty result. With ``VERIFY_MIN_SIMILARITY`` set, detections
        are then verified against the reference (:meth:`verify`) and carry ``"similarity"``.

        ``image``: an array in any layout :func:`.mrcnn.utils.to_uint8_rgb` accepts (grey,
        RGBA, float in [0, 1] ...) or an image file path (read with
        :func:`.mrcnn.utils.read_image`); ``embeddings``: each ``[5, C]`` (P2..P6 by
        ``TOP_DOWN_PYRAMID_SIZE``, e.g. from :meth:`embed_category`) or flat ``[5 * C]``.

        Raises ``RuntimeError`` outside inference mode; ``ValueError`` for an embedding of
        another shape or with non-finite values, a ``batch_size`` that is not an integer ≥ 1
        or a ``fold`` that is not True, False or None; ``ImageLoadError`` for an unreadable
        file or an array that is not an image.
        """
        if self.mode != "inference":
            raise RuntimeError("create the model in inference mode to detect")
        c = self.config
        image = self._query_image(image)
        embeddings = self._check_embeddings(embeddings)
        if batch_size is None:
            batch_size = self.category_batch_size()
        if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1 (categories per batched call), "
                             f"got {batch_size!r}")
        if fold is not None and not isinstance(fold, (bool, np.bool_)):
            raise ValueError(f"fold must be True, False or None (choose by cost), got {fold!r}")
        batch_size = int(batch_size)
        keys = list(embeddings)
        if not keys:
            return {}
        stacked = np.stack([embeddings[key].reshape(len(LEVELS), -1) for key in keys])
        molded, metas, windows, maps = self.encode_query(image)
        maps = [tf.convert_to_tensor(m) for m in maps]  # once, not once per category
        if fold is None:
            fold = self.fold_pays(len(keys))
        if fold:
            self._fold_parts()  # builds the sub-models outside any tf.function trace
            prepared = self._fold_query_fn()(*maps)
            fn = self._fold_heads_fn()
        else:
            prepared = []
            fn = self._plain_heads_fn()
        results = {}
        for start in range(0, len(keys), batch_size):
            outputs = fn(metas, stacked[start:start + batch_size], *maps, *prepared)
            detections, masks = outputs[0].numpy(), outputs[1].numpy()
            presence = outputs[4].numpy()[:, 0] if len(outputs) > 4 else None
            for row, key in enumerate(keys[start:start + batch_size]):
                results[key] = self.detection_result(detections[row], masks[row], image.shape,
                                                     molded[0].shape, windows[0])
                if presence is not None:
                    results[key] = self.gate(results[key], presence[row])
        if getattr(c, "VERIFY_MIN_SIMILARITY", None) is not None or getattr(c, "VERIFY_KNOWN_MARGIN", None) is not None:
            results = self.verify(image, results, dict(zip(keys, stacked)))
        return results

    #: Detection crops one reference-encoder call of :meth:`verify` takes.
    VERIFY_BATCH = 64

    def verify(self, image, results, embeddings):
        """Verification (beyond the paper; :mod:`.verification`): every detection of
        ``results`` (``{key: result}`` of :meth:`detect_embeddings`, boxes in ``image``
        pixels) is cropped from ``image`` ``[H, W, 3]`` by its box, embedded by the reference
        encoder and compared with ``embeddings[key]`` ``[5, C]``: those less similar
        (level-averaged cosine) than ``VERIFY_MIN_SIMILARITY`` are dropped, and with
        ``VERIFY_KNOWN_MARGIN`` those closer to a known category's prototype than to the
        reference by more than that margin (:func:`.verification.known_category_margins`;
        the prototypes are read from the weights file by :meth:`load_weights`).

        Returns new results with ``"similarity"`` (float32 ``[N]``) per detection kept, with
        the margin also ``"known_margin"``, ``"verification_dropped"`` (how many were dropped),
        ``"verification_threshold"`` and ``"known_margin_threshold"`` (None when off).

        Raises ``ValueError`` when ``VERIFY_MIN_SIMILARITY`` or ``VERIFY_KNOWN_MARGIN`` (which
        may have been set after the model was built) is out of range, or when the margin is
        set and the loaded weights hold no reference classifier (``reference_class_logits``:
        a model trained with ``REFERENCE_CLASSES`` > 0)."""
        threshold = check_min_similarity(self.config.VERIFY_MIN_SIMILARITY)
        margin = check_known_margin(getattr(self.config, "VERIFY_KNOWN_MARGIN", None))
        prototypes = getattr(self, "known_prototypes", None)
        if margin is not None and prototypes is None:
            raise ValueError("VERIFY_KNOWN_MARGIN needs the known categories' prototypes, the weights of the "
                             f"reference classifier '{PROTOTYPES_LAYER}': load a checkpoint trained with "
                             "REFERENCE_CLASSES > 0 (siamese-mrcnn demo --reference-loss) with load_weights")
        crops, owners = detection_crops(image, results)
        found = [self.encode_references(crops[i:i + self.VERIFY_BATCH])
                 for i in range(0, len(crops), self.VERIFY_BATCH)]
        sims = {key: np.zeros(len(result["scores"])) for key, result in results.items()}
        margins = {key: np.zeros(len(result["scores"])) for key, result in results.items()}
        if found:
            found = np.concatenate(found)
            rows = {}
            for row, (key, index) in enumerate(owners):
                rows.setdefault(key, ([], []))
                rows[key][0].append(row)
                rows[key][1].append(index)
            for key, (crop_rows, indices) in rows.items():  # one call per category
                sims[key][indices] = level_cosine(found[crop_rows], embeddings[key])
                if margin is not None:
                    margins[key][indices] = known_category_margins(found[crop_rows], embeddings[key], prototypes)
        verified = {}
        for key, result in results.items():
            keep = np.ones(len(result["scores"]), bool)
            if threshold is not None:
                keep &= sims[key] >= threshold
            if margin is not None:
                keep &= margins[key] <= margin
            verified[key] = keep_detections(result, keep, sims[key])
            if margin is not None:
                verified[key]["known_margin"] = margins[key][keep].astype(np.float32)
            verified[key]["verification_dropped"] = int(len(result["scores"]) - int(keep.sum()))
            verified[key]["verification_threshold"] = threshold
            verified[key]["known_margin_threshold"] = margin
        return verified

    def load_weights(self, filepath, by_name=False, exclude=None, skip_mismatch=False):
        """Matterport's ``load_weights`` (see :meth:`.mrcnn.model.MaskRCNN.load_weights`); in
        inference mode also the known categories' prototypes for ``VERIFY_KNOWN_MARGIN``: the
        kernel of the reference classifier (``reference_class_logits``, a training-only
        layer) when the file holds one (``known_prototypes`` ``[5 * C, classes]``, else None)."""
        report = super().load_weights(filepath, by_name=by_name, exclude=exclude, skip_mismatch=skip_mismatch)
        if self.mode == "inference":
            self.known_prototypes = None
            entries = mweights.read_h5_layer_weights(filepath, PROTOTYPES_LAYER)
            for name, array in entries or ():
                if name == "kernel" and array.ndim == 2 \
                        and array.shape[0] == len(LEVELS) * int(self.config.TOP_DOWN_PYRAMID_SIZE):
                    self.known_prototypes = np.asarray(array, np.float32)
        return report

    @staticmethod
    def _query_image(image):
        """A query or reference given as a path or an array of any common layout → uint8
        ``[H, W, 3]``."""
        if isinstance(image, (str, bytes, os.PathLike)):
            if os.path.isdir(image):
                raise utils.ImageLoadError(image, "a directory, not an image file")
            return utils.read_image(image)
        return utils.to_uint8_rgb(image)

    def _check_embeddings(self, embeddings):
        """``{key: [5, C] float32}`` from ``{key: [5, C] or [5 * C]}``, or ``ValueError``
        naming the key."""
        if not isinstance(embeddings, dict):
            raise ValueError(f"embeddings must be a dict {{key: embedding [5, C]}}, got {type(embeddings).__name__}")
        return {key: self._check_embedding(emb, f"embedding {key!r}") for key, emb in embeddings.items()}

    def _check_embedding(self, emb, label):
        """One embedding ``[5, C]`` or ``[5 * C]`` → float32 ``[5, C]``, or ``ValueError``
        starting with ``label``."""
        depth = self.config.TOP_DOWN_PYRAMID_SIZE
        shape = (len(LEVELS), depth)
        try:
            if emb is None or isinstance(emb, (str, bytes)):
                raise TypeError("expected an array")
            emb = np.asarray(emb, np.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{label} is not an array of numbers ({type(emb).__name__}: {exc})") from None
        if emb.shape != shape and emb.shape != (len(LEVELS) * depth,):
            raise ValueError(f"{label} has shape {emb.shape}, expected {shape} "
                             f"(P2..P6 x TOP_DOWN_PYRAMID_SIZE) or ({len(LEVELS) * depth},)")
        if not np.all(np.isfinite(emb)):
            raise ValueError(f"{label} has {int(np.sum(~np.isfinite(emb)))} non-finite values")
        return emb.reshape(shape)

    def _detect_molded_batch(self, images, molded, metas, windows, extra):
        """Matterport's batch detection, with the presence gating when the model has the head."""
        outputs = self._predict([molded, metas] + list(extra))
        results = [self.detection_result(outputs[0][i], outputs[3][i], image.shape, molded[i].shape, windows[i])
                   for i, image in enumerate(images)]
        if len(outputs) > 7:
            results = [self.gate(r, p) for r, p in zip(results, outputs[7][:, 0])]
        return results

    def gate(self, result, presence):
        """One pair's result with its presence (``PRESENCE_GATING``): ``"multiply"`` scales
        the scores by it and keeps those ≥ ``DETECTION_MIN_CONFIDENCE``
        (:func:`.presence.gate_detections`); ``"none"`` leaves the detections as they are and
        only adds ``"presence"``."""
        if getattr(self.config, "PRESENCE_GATING", "multiply") == "none":
            return {**result, "presence": float(presence)}
        return gate_detections(result, presence, self.config.DETECTION_MIN_CONFIDENCE)

    def detect(self, references, images, verbose=0):
        """Detect in ``images`` the category shown by ``references`` (the release's
        ``detect(targets, images)``, called positionally).

        ``references``: per image, a list of ``NUM_TARGETS`` reference crops, or one crop
        ``[h, w, 3]`` (or its file path) when ``NUM_TARGETS`` is 1; ``images``: ``BATCH_SIZE``
        query images (crops and images as arrays in any layout :func:`.mrcnn.utils.to_uint8_rgb`
        accepts, or file paths).
        Returns one dict per image as matterport's ``detect`` (``rois`` in image pixels,
        ``class_ids``, ``scores``, ``masks`` [H, W, N] bool). Raises ``RuntimeError``
        outside inference mode, ``ValueError`` when the counts do not match and
        ``ImageLoadError`` for an image that is unreadable or has NaN or infinite values.
        """
        if self.mode != "inference":
            raise RuntimeError("create the model in inference mode to detect")
        if len(references) != len(images):
            raise ValueError(f"got {len(references)} reference sets for {len(images)} images")
        # as detect_embeddings: any layout or a path; NaN/inf refused (ImageLoadError)
        images = [self._query_image(image) for image in images]
        molded, metas, windows = self.mold_inputs(images)
        molded_references = []
        for crops in references:
            if isinstance(crops, (str, bytes, os.PathLike)) or (isinstance(crops, np.ndarray) and crops.ndim == 3):
                crops = [crops]
            crops = list(crops)
            if len(crops) != self.config.NUM_TARGETS:
                raise ValueError(f"each image needs NUM_TARGETS={self.config.NUM_TARGETS} references, "
                                 f"got {len(crops)}")
            molded_references.append(np.stack([mold_reference(self._query_image(r), self.config) for r in crops]))
        return self._detect_molded_batch(images, molded, metas, windows, extra=[np.stack(molded_references)])

    def proposals(self, image, embedding):
        """The region proposals of one (query, reference) pair, before the heads.

        The RPN runs on the query's features matched with the reference (paper Section 4.3),
        so its proposals depend on the reference. ``image``: as for :meth:`detect_embeddings`;
        ``embedding``: ``[5, C]`` or ``[5 * C]`` (e.g. :meth:`embed_category`).

        Returns int32 ``[N, 4]`` ``(y1, x1, y2, x2)`` original-image pixels, in the RPN's
        score order, at most ``POST_NMS_ROIS_INFERENCE``, clipped to the image as detections
        are (padding rows and boxes left with zero area dropped): what proposal recall
        (:func:`.evaluation.proposal_recall`) is measured on.

        Raises:
            RuntimeError: the model was built in training mode.
            ValueError: an embedding of another shape or with non-finite values.
            ImageLoadError: an unreadable image file or an array that is not an image.
        """
        if self.mode != "inference":
            raise RuntimeError("create the model in inference mode to get proposals")
        image = self._query_image(image)
        return self._proposals(image, {"reference": self._check_embedding(embedding, "the embedding")})["reference"]

    def _proposals(self, image, embeddings):
        """:meth:`proposals` of a uint8 query ``[H, W, 3]`` for checked embeddings ``{key: [5, C]}``,
        the query encoded once."""
        molded, metas, windows, maps = self.encode_query(image)

        def rois(meta, batch, *levels):
            return self.head_model([meta, batch] + list(levels), training=False)[4]

        fn = self.cached_function("proposals", rois, self._head_signature())
        # clipped to the image inside the molded square, as the detection layer clips its boxes
        wy1, wx1, wy2, wx2 = norm_boxes(np.asarray(windows[0], dtype=np.float64)[None], molded[0].shape[:2])[0]
        results = {}
        for key, embedding in embeddings.items():
            normalised = fn(metas, embedding[None], *maps).numpy()[0]
            normalised = normalised[np.any(normalised != 0, axis=1)]
            normalised = np.clip(normalised, [wy1, wx1, wy1, wx1], [wy2, wx2, wy2, wx2])
            boxes = unmold_boxes(normalised, image.shape, molded[0].shape, windows[0])
            results[key] = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
        return results

    def proposal_fn(self):
        """A ``proposal_fn(image, {class_id: [crops]}) → {class_id: boxes [N, 4]}`` of
        :meth:`proposals` (one k-shot embedding per category, the query encoded once) for
        :func:`.evaluation.proposal_recall`."""
        def proposals(image, references):
            return self._proposals(self._query_image(image), self._embed_categories(references))
        return proposals

    def _embed_categories(self, references):
        """``{class_id: embedding}`` of ``{class_id: crops}`` (checked).

        Raises:
            TypeError: ``references`` is not a dict, or a category's crops are not a crop, a
                path or a list of them (the class id named).
            ValueError: a category without crops or with an empty crop (the class id named).
            ImageLoadError: an unreadable reference file (the file named).
        """
        if not isinstance(references, dict):
            raise TypeError(f"references must be a dict {{class_id: crops}}, got {type(references).__name__}")
        embeddings = {}
        for cid, crops in references.items():
            try:
                embeddings[cid] = self._check_embedding(self.embed_category(crops), "the embedding")
            except (TypeError, ValueError) as err:
                if type(err) not in (TypeError, ValueError):  # e.g. an unreadable file: names itself
                    raise
                raise type(err)(f"category {cid!r}: {err}") from None
        return embeddings

    def predict_fn(self):
        """A ``predict_fn(image, {class_id: [crops]}) → {class_id: result}`` for
        ``siamese_mask_rcnn.evaluation`` (one k-shot embedding per category, the query
        encoded once); its ``config`` attribute is the model's config."""
        def predict(image, references):
            return self.detect_embeddings(image, self._embed_categories(references))
        predict.config = self.config  # what the detections follow (thresholds, cap, score rule)
        return predict


def mold_reference(crop, config):
    """Mold one reference crop for the encoder (paper Section 5.1, reference step 3).

    The crop (any image layout accepted by ``utils.to_uint8_rgb``) is resized with
    matterport's "square" mode (shorter side at least ``TARGET_MIN_DIM``, longer side
    at most ``TARGET_MAX_DIM`` pixels), zero-padded to ``TARGET_SHAPE`` and the mean pixel
    is subtracted. Returns float32 ``TARGET_SHAPE``. Raises ``ValueError`` for an empty
    crop.
    """
    crop = utils.to_uint8_rgb(crop)
    if crop.shape[0] < 1 or crop.shape[1] < 1:
        raise ValueError(f"empty reference crop of shape {crop.shape}")
    resized, _, _, _, _ = utils.resize_image(crop, min_dim=config.TARGET_MIN_DIM,
                                             max_dim=config.TARGET_MAX_DIM, mode="square")
    return mold_image(resized.astype(np.float32), config)
