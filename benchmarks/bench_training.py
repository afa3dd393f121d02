"""Training-step timings behind the README's "Reproducing the paper" estimates (run by hand).

    python benchmarks/bench_training.py [--steps 3] [--coco DIR]

Measures on this machine, with random weights (only the speed matters): one training step
of plain Mask R-CNN (``coco.py``, ``small`` preset, batch 2) and of Siamese Mask R-CNN
(``small`` preset, batch 2) on the COCO images of ``--coco`` (default: the shared val2017
subset), and of the ImageNet classifier (ResNet-50, 224², batch 16) on generated images.
Every ``train()`` call traces its step once, so a 1-step and a (1 + N)-step run are timed
and the difference divided by N.
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_detector(kind, coco_dir, steps, logs):
    """Seconds per training step of ``kind`` ("maskrcnn" or "siamese"), small preset, batch 2."""
    ann = os.path.join(coco_dir, "annotations", "instances_val2017_subset.json")
    images = os.path.join(coco_dir, "images")
    if kind == "maskrcnn":
        from siamese_mask_rcnn.coco_maskrcnn import coco_config, load_coco_dataset
        from siamese_mask_rcnn.mrcnn.model import MaskRCNN as Model
        config = coco_config("small", IMAGES_PER_GPU=2)
        data = load_coco_dataset(annotation_file=ann, image_dir=images)
    else:
        from siamese_mask_rcnn.config import siamese_config
        from siamese_mask_rcnn.datasets.coco import OneShotCocoDataset
        from siamese_mask_rcnn.siamese import SiameseMaskRCNN as Model
        config = siamese_config("small", IMAGES_PER_GPU=2)
        data = OneShotCocoDataset()
        data.load_coco(annotation_file=ann, image_dir=images)
        data.set_split("all")
        data.prepare()
    seconds = []
    for n in (1, 1 + steps):
        model = Model("training", config, model_dir=logs)
        seconds.append(_timed(lambda: model.train(data, None, 0.001, epochs=1, layers="all",
                                                  steps_per_epoch=n, verbose=0)))
    return {"step_s": (seconds[1] - seconds[0]) / steps, "first_step_s": seconds[0], "batch": 2}


def bench_imagenet(steps, logs):
    """Seconds per ResNet-50 classification step (224², batch 16) on generated images."""
    import numpy as np
    from PIL import Image
    from siamese_mask_rcnn import imagenet_pretrain as ip
    root = os.path.join(logs, "fake_imagenet")
    rng = np.random.default_rng(0)
    for k in range(4):
        os.makedirs(os.path.join(root, f"n0000000{k}"), exist_ok=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(
                os.path.join(root, f"n0000000{k}", f"{i}.JPEG"))
    classes = os.path.join(logs, "classes.txt")
    with open(classes, "w") as handle:
        handle.write("\n".join(f"n0000000{k}" for k in range(4)) + "\n")
    seconds = []
    for n in (1, 1 + steps):
        out = os.path.join(logs, f"run{n}")
        seconds.append(_timed(lambda: ip.pretrain(root, out, class_list=classes, image_size=224,
                                                  batch_size=16, epochs=1, steps_per_epoch=n,
                                                  progress=False)))
    return {"step_s": (seconds[1] - seconds[0]) / steps, "first_step_s": seconds[0], "batch": 16}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--coco", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                       "shared", "data", "coco_val2017_subset"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as logs:
        rows = {"maskrcnn_small": bench_detector("maskrcnn", args.coco, args.steps, logs),
                "siamese_small": bench_detector("siamese", args.coco, args.steps, logs),
                "imagenet_resnet50_224": bench_imagenet(args.steps, logs)}
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
