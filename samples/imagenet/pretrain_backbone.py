"""Pre-train the ResNet backbone on ImageNet-687 (paper §5.1) — no label of a COCO
(one-shot) category is ever used, which is what makes the one-shot categories truly unseen.

Examples::

    # 4 GPUs x 64 images, the shipped ImageNet-687 class list, 90 epochs (resumable)
    python samples/imagenet/pretrain_backbone.py --data-dir /data/imagenet/train \\
        --val-dir /data/imagenet/val --gpus 4 --out logs/imagenet687_r50
    # then: train_siamese.py --weights logs/imagenet687_r50/backbone_resnet50.h5
    #       coco.py train --model imagenet --imagenet-weights logs/imagenet687_r50/backbone_resnet50.h5

All logic lives in ``siamese_mask_rcnn.imagenet_pretrain`` (see its docstring).
"""
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from siamese_mask_rcnn.imagenet_pretrain import main  # noqa: E402

if __name__ == "__main__":
    main()
