"""Siamese Mask R-CNN (paper §4): Mask R-CNN conditioned on a reference image.

The network is built from three separable parts that share weights:

1. ``encoder`` — backbone + FPN (one set of weights) mapping an image to P2..P6; it encodes
   the query (``IMAGE_SHAPE``) and the references (``TARGET_SHAPE``).
2. ``reference_model`` — encoder + global average pooling per level: a reference image
   becomes an embedding ``[5, C]`` (one C-vector per pyramid level). k-shot = the mean of
   the k embeddings. Embeddings can be cached and reused over many queries.
3. ``head_model`` — matching (``fpn_distance_P2..P6``: 1×1 conv of
   ``[P_query, |P_query − embedding|]`` to ``MATCHING_CHANNELS``) + RPN + heads with a
   two-way (background / match) classifier and one class-agnostic mask.

``keras_model`` chains them for training (losses) or inference (detections). For many
categories against one query, ``detect_embeddings`` runs the encoder once and the head
once per category.
"""
import logging

import numpy as np
import keras
import tensorflow as tf
from keras import layers as KL

from .mrcnn import utils
from .mrcnn.backbone import build_backbone_fpn
from .mrcnn.model import MaskRCNN, check_image_shape
from .mrcnn.molding import mold_image
from .mrcnn.pipeline import SkipExample
from .mrcnn.targets import prepare_gt

log = logging.getLogger(__name__)

LEVELS = ("P2", "P3", "P4", "P5", "P6")


# ----------------------------------------------------------------------------- layers
class FoldShots(KL.Layer):
    """``[B, K, h, w, c] → [B·K, h, w, c]``."""

    def call(self, x):
        return tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], axis=0))

    def compute_output_shape(self, s):
        return (None,) + tuple(s[2:])


class PooledEmbedding(KL.Layer):
    """Global average pooling of every pyramid level: ``[P2..P6] → [N, levels, C]``."""

    def call(self, maps):
        return tf.stack([tf.reduce_mean(m, axis=[1, 2]) for m in maps], axis=1)

    def compute_output_shape(self, shapes):
        return (shapes[0][0], len(shapes), shapes[0][-1])


class MeanOverShots(KL.Layer):
    """``[B·K, levels, C] → [B, levels, C]``: the k-shot average of embeddings."""

    def __init__(self, shots, **kwargs):
        super().__init__(**kwargs)
        self.shots = int(shots)

    def call(self, x):
        shape = tf.shape(x)
        return tf.reduce_mean(tf.reshape(x, [-1, self.shots, shape[1], shape[2]]), axis=1)

    def compute_output_shape(self, s):
        return (None,) + tuple(s[1:])

    def get_config(self):
        return {**super().get_config(), "shots": self.shots}


class DistanceConcat(KL.Layer):
    """``[P, |P − e_level|]`` for one level: ``(P [B, h, w, C], E [B, levels, C]) → [B, h, w, 2C]``."""

    def __init__(self, level, **kwargs):
        super().__init__(**kwargs)
        self.level = int(level)

    def call(self, inputs):
        feature_map, embedding = inputs
        ref = embedding[:, self.level][:, None, None, :]
        return tf.concat([feature_map, tf.abs(feature_map - ref)], axis=-1)

    def compute_output_shape(self, s):
        return tuple(s[0][:-1]) + (2 * s[0][-1],)

    def get_config(self):
        return {**super().get_config(), "level": self.level}


def matching_graph(query_maps, embedding, channels):
    """The paper's matching at every level → maps named after ``fpn_distance_P2..P6``."""
    out = []
    for i, (fmap, name) in enumerate(zip(query_maps, LEVELS)):
        x = DistanceConcat(i, name=f"fpn_distance_concat_{name}")([fmap, embedding])
        out.append(KL.Conv2D(channels, 1, name=f"fpn_distance_{name}")(x))
    return out


# ------------------------------------------------------------------------------ model
class SiameseMaskRCNN(MaskRCNN):
    """Siamese Mask R-CNN. ``config`` is a ``SiameseConfig``.

    Extra input after image and meta: ``input_targets`` ``[NUM_TARGETS, *TARGET_SHAPE]``
    (molded references). Attributes ``encoder``, ``reference_model`` and ``head_model``
    expose the three parts.
    """

    def extra_input_specs(self):
        c = self.config
        return [("input_targets", [c.NUM_TARGETS] + list(c.TARGET_SHAPE), "float32")]

    def num_mask_channels(self):
        return 1

    def build(self, mode, config):
        check_image_shape(config)
        if config.NUM_CLASSES != 2:
            raise ValueError(f"Siamese Mask R-CNN classifies background/match: NUM_CLASSES must be 2, "
                             f"got {config.NUM_CLASSES}")
        channels = config.IMAGE_CHANNEL_COUNT
        image_in = keras.Input([None, None, channels], name="encoder_image")
        self.encoder = keras.Model(image_in, build_backbone_fpn(image_in, config), name="siamese_encoder")

        ref_in = keras.Input(list(config.TARGET_SHAPE), name="reference_image")
        self.pooling = PooledEmbedding(name="reference_pooling")
        self.reference_model = keras.Model(ref_in, self.pooling(self.encoder(ref_in)), name="reference_encoder")

        self.head_model = self._build_head_model(mode)

        specs = self.input_specs(mode)
        inputs = [keras.Input(shape=shape, name=name, dtype=dtype) for name, shape, dtype in specs]
        image, meta, targets = inputs[:3]
        query_maps = self.encoder(image)
        ref_maps = self.encoder(FoldShots(name="fold_shots")(targets))
        embedding = MeanOverShots(config.NUM_TARGETS, name="k_shot_mean")(self.pooling(ref_maps))
        outputs = self.head_model([meta, embedding] + list(query_maps) + inputs[3:])
        return keras.Model(inputs, outputs, name="siamese_mask_rcnn")

    def _build_head_model(self, mode):
        """Matching + RPN + heads as one model: ``[meta, embedding, P2..P6, (targets)] → outputs``."""
        c = self.config
        depth = c.TOP_DOWN_PYRAMID_SIZE
        meta = keras.Input([c.IMAGE_META_SIZE], name="head_image_meta")
        embedding = keras.Input([len(LEVELS), depth], name="head_reference_embedding")
        strides = c.BACKBONE_STRIDES
        maps = [keras.Input([int(np.ceil(c.IMAGE_SHAPE[0] / s)), int(np.ceil(c.IMAGE_SHAPE[1] / s)), depth],
                            name=f"head_query_{name}") for s, name in zip(strides, LEVELS)]
        gt_inputs = []
        if mode == "training":
            gt_inputs = [keras.Input(shape=shape, name=f"head_{name}", dtype=dtype)
                         for name, shape, dtype in self.input_specs("training")[3:]]
        matched = matching_graph(maps, embedding, c.MATCHING_CHANNELS)
        outputs = self.build_heads(mode, meta, matched, matched[:4], gt_inputs)
        return keras.Model([meta, embedding] + maps + gt_inputs, outputs, name="siamese_heads")

    # -------------------------------------------------------------- training data
    def training_image_ids(self, dataset):
        """Query images that contain at least one reference-able training category."""
        return dataset.query_image_ids(dataset.train_class_ids)

    def load_training_example(self, dataset, image_id, rng, augmentation=None):
        """One (query, reference) pair (SPEC §3): a random training category present in the
        query, references of it from other images, targets = that category's instances."""
        c = self.config
        class_id = dataset.sample_target_class(image_id, rng)
        if class_id is None:
            raise SkipExample()
        refs = dataset.sample_references(class_id, c.NUM_TARGETS, rng, exclude_image_id=image_id)
        image = dataset.load_image(image_id)
        masks, labels = dataset.load_target(image_id, class_id)
        image, meta, class_ids, boxes, masks = prepare_gt(
            image, masks, labels, c, image_id=image_id, augmentation=augmentation, rng=rng)
        if not np.any(class_ids > 0):
            raise SkipExample()
        targets = np.stack([mold_reference(r, c) for r in refs])
        return self._pack_targets(image, meta, class_ids, boxes, masks, rng, extra=[targets])

    # ------------------------------------------------------------------ inference
    def encode_references(self, references):
        """Embeddings ``[N, 5, C]`` of reference crops (uint8 images of any size)."""
        c = self.config
        molded = np.stack([mold_reference(r, c) for r in references]).astype(np.float32)
        fn = self.cached_function("ref", lambda x: self.reference_model(x, training=False),
                         [tf.TensorSpec([None] + list(c.TARGET_SHAPE), tf.float32)])
        return fn(molded).numpy()

    def embed_category(self, references):
        """One k-shot embedding ``[5, C]``: the mean of the references' embeddings."""
        return self.encode_references(references).mean(axis=0)

    def encode_query(self, image):
        """Mold one query and run the encoder once: ``(molded, meta, window, maps)``."""
        molded, metas, windows = self.mold_inputs([image])
        fn = self.cached_function("query", lambda x: self.encoder(x, training=False),
                         [tf.TensorSpec([None] + list(self.config.IMAGE_SHAPE), tf.float32)])
        maps = [m.numpy() for m in fn(molded.astype(np.float32))]
        return molded, metas.astype(np.float32), windows, maps

    def detect_embeddings(self, image, embeddings):
        """Detect ``{key: embedding [5, C]}`` in one query image, encoding the query once.

        Returns ``{key: {"rois", "class_ids", "scores", "masks"}}`` (masks [H, W, N] bool).
        """
        if self.mode != "inference":
            raise RuntimeError("create the model in inference mode to detect")
        molded, metas, windows, maps = self.encode_query(image)
        c = self.config
        signature = ([tf.TensorSpec([None, c.IMAGE_META_SIZE], tf.float32),
                      tf.TensorSpec([None, len(LEVELS), c.TOP_DOWN_PYRAMID_SIZE], tf.float32)] +
                     [tf.TensorSpec([None] + list(m.shape[1:]), tf.float32) for m in maps])
        fn = self.cached_function("head", lambda *x: self.head_model(list(x), training=False), signature)
        maps = [tf.convert_to_tensor(m) for m in maps]  # once, not once per category
        results = {}
        for key, emb in embeddings.items():
            emb = np.asarray(emb, np.float32).reshape(1, len(LEVELS), -1)
            detections, _, _, mrcnn_mask, _, _, _ = [o.numpy() for o in fn(metas, emb, *maps)]
            results[key] = self.detection_result(detections[0], mrcnn_mask[0], image.shape,
                                                 molded[0].shape, windows[0])
        return results

    def detect(self, targets, images, verbose=0):
        """Detect in ``images`` the category shown by ``targets`` (one list of
        ``NUM_TARGETS`` reference crops per image, or one crop per image)."""
        if self.mode != "inference":
            raise RuntimeError("create the model in inference mode to detect")
        if len(targets) != len(images):
            raise ValueError(f"got {len(targets)} reference sets for {len(images)} images")
        molded, metas, windows = self.mold_inputs(images)
        refs = []
        for t in targets:
            t = [t] if isinstance(t, np.ndarray) and t.ndim == 3 else list(t)
            if len(t) != self.config.NUM_TARGETS:
                raise ValueError(f"each image needs NUM_TARGETS={self.config.NUM_TARGETS} references, got {len(t)}")
            refs.append(np.stack([mold_reference(r, self.config) for r in t]))
        return self._detect_molded_batch(images, molded, metas, windows, extra=[np.stack(refs)])

    def predict_fn(self):
        """A ``predict_fn(image, {class_id: [crops]})`` for ``siamese_mask_rcnn.evaluation``."""
        def predict(image, references):
            embeddings = {cid: self.embed_category(crops) for cid, crops in references.items()}
            return self.detect_embeddings(image, embeddings)
        return predict


def mold_reference(crop, config):
    """Resize a reference crop (matterport "square": min ``TARGET_MIN_DIM``, max
    ``TARGET_MAX_DIM``), zero-pad to ``TARGET_SHAPE`` and subtract the mean pixel."""
    crop = utils.to_uint8_rgb(crop)
    if crop.shape[0] < 1 or crop.shape[1] < 1:
        raise ValueError(f"empty reference crop of shape {crop.shape}")
    resized, _, _, _, _ = utils.resize_image(crop, min_dim=config.TARGET_MIN_DIM,
                                             max_dim=config.TARGET_MAX_DIM, mode="square")
    return mold_image(resized.astype(np.float32), config)


def build_predictor(weights, config=None, preset="small"):
    """Load an inference model from ``weights`` and return its evaluation ``predict_fn``.

    The config is ``config``, else the ``config.json`` training wrote beside the weights,
    else the ``preset``."""
    from .predict import load_model

    if config is None:
        return load_model(weights, preset=preset).predict_fn()
    model = SiameseMaskRCNN("inference", config, model_dir="logs")
    model.load_weights(weights, by_name=True)
    return model.predict_fn()
