"""Synchronised BatchNorm: one training step with ``TRAIN_BN=True`` on one device vs. two
mirrored CPU replicas; prints ``REPORT {json}`` (run by ``tests/test_sync_batchnorm.py``).

From the same initial weights and the same global batch of 4 images, the tiny Mask R-CNN of
``distributed_check.py`` (every proposal kept as a training ROI, so the heads' BatchNorms
see the same ROIs whatever the replica layout) takes one step of
``training.make_step_functions``:

* on the default strategy (4 images on one device),
* on ``MirroredStrategy(["/cpu:0", "/cpu:1"])`` (2 images per replica) with the project's
  ``BatchNorm`` (synchronised when trained),
* on the same two replicas with ``synchronized=False`` forced, the behaviour before
  synchronisation (each replica's own batch statistics).

The report holds every BatchNorm layer's moving mean and variance before and after each
step.
"""
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import distributed_check as dc  # noqa: E402  (sets up paths and TF options)
import tensorflow as tf  # noqa: E402

GLOBAL_BATCH = 4


def make(images_per_gpu, gpu_count, strategy, model_dir):
    from siamese_mask_rcnn.mrcnn.config import Config
    from siamese_mask_rcnn.mrcnn.model import MaskRCNN
    settings = dc.tiny_settings(images_per_gpu, gpu_count, weight_decay=0.0)
    config = Config(NUM_CLASSES=4, TRAIN_BN=True, **settings)
    return MaskRCNN("training", config, model_dir, strategy=strategy)


def moving_statistics(model):
    from siamese_mask_rcnn.mrcnn.layers import BatchNorm
    out = {}
    for layer in model.keras_model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, BatchNorm):
            out[layer.name] = {"mean": layer.moving_mean.numpy().tolist(),
                               "variance": layer.moving_variance.numpy().tolist(),
                               "synchronized": bool(layer.synchronized)}
    return out


def main():
    from siamese_mask_rcnn.mrcnn import layers as mlayers
    devices = dc.configure_devices()
    dataset = dc.make_dataset("mrcnn")
    report = {"devices": devices}
    with tempfile.TemporaryDirectory() as tmp:
        one = make(GLOBAL_BATCH, 1, tf.distribute.get_strategy(), tmp)
        batch = dc.first_training_batch(one, dataset)
        init = os.path.join(tmp, "init.h5")
        one.save_weights(init)
        report["initial"] = moving_statistics(one)
        report["one_device_losses"] = dc.one_step(one, batch, 0.01, 0.9)[0].tolist()
        report["one_device"] = moving_statistics(one)
        dc.log("one device")

        mirrored = tf.distribute.MirroredStrategy(devices[:2])
        two = make(GLOBAL_BATCH // 2, 2, mirrored, tmp)
        two.load_weights(init, by_name=True)
        report["two_replicas_losses"] = dc.one_step(two, batch, 0.01, 0.9)[0].tolist()
        report["two_replicas"] = moving_statistics(two)
        dc.log("two replicas, synchronised")

        original = mlayers.BatchNorm.__init__

        def unsynchronised(self, train_bn=False, **kwargs):
            kwargs["synchronized"] = False
            original(self, train_bn=train_bn, **kwargs)

        mlayers.BatchNorm.__init__ = unsynchronised
        try:
            plain = make(GLOBAL_BATCH // 2, 2, mirrored, tmp)
        finally:
            mlayers.BatchNorm.__init__ = original
        plain.load_weights(init, by_name=True)
        dc.one_step(plain, batch, 0.01, 0.9)
        report["two_replicas_unsynchronised"] = moving_statistics(plain)
        dc.log("two replicas, not synchronised")
    print("REPORT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
