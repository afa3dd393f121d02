"""Plain Mask R-CNN on MS COCO's 80 categories (matterport's sample interface; paper Table 1).

Examples::

    # train from an ImageNet(-687) backbone, the paper's schedule (320k steps), 4 GPUs
    python samples/coco/coco.py train --dataset /data/coco --year 2017 --model imagenet \\
        --imagenet-weights backbone_resnet50.h5 --gpus 4
    # resume the newest run in ./logs
    python samples/coco/coco.py train --dataset /data/coco --model last
    # COCO evaluation (bbox + segm, AP50 and AP) on val2017
    python samples/coco/coco.py evaluate --dataset /data/coco --model logs/coco.../mask_rcnn_coco_0320.h5
    # matterport's released weights (ResNet-101)
    python samples/coco/coco.py evaluate --dataset /data/coco --model mask_rcnn_coco.h5 --backbone resnet101
    # sanity check: the ground truth scores 100 AP50
    python samples/coco/coco.py evaluate --dataset /data/coco --model gt

All logic lives in ``siamese_mask_rcnn.coco_maskrcnn``.
"""
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from siamese_mask_rcnn.coco_maskrcnn import main  # noqa: E402

if __name__ == "__main__":
    main()
