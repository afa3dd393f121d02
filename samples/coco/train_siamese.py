"""Train Siamese Mask R-CNN on COCO with a one-shot class split (paper §5.1, §3).

Only the split's 60 background (training) categories are ever used as references or
targets; the 20 held-out categories of the split are background. The default schedule is
the paper's: an epoch is ``STEPS_PER_EPOCH`` = 1,000 steps; the heads (RPN, matching,
classifier, mask head and FPN) train alone to epoch 1, then all layers to epoch 120 at the
learning rate, then all layers to epoch 160 at a tenth of it.

Examples::

    # one GPU, split S1, ImageNet(-687) backbone weights in matterport's layer names
    python samples/coco/train_siamese.py --dataset /data/coco --split 1 \\
        --weights /data/resnet50_imagenet687.h5

    # resume the newest run of ./logs at the right epoch and learning rate
    python samples/coco/train_siamese.py --dataset /data/coco --split 1 --weights last

    # the paper's setting: 4 GPUs x 3 images = batch 12
    python samples/coco/train_siamese.py --dataset /data/coco --split 1 --gpus 4 \\
        --weights /data/resnet50_imagenet687.h5

    # several machines: the same command on every machine, each with its own TF_CONFIG
    # task (see the README's "Training on COCO"); checked before training starts
    python samples/coco/train_siamese.py --dataset /data/coco --split 1 --multi-worker ...

    # a CPU smoke run on any COCO-format files
    python samples/coco/train_siamese.py --train-annotations a.json --train-images imgs/ \\
        --backbone tiny --steps-per-epoch 2 --validation-steps 0 --heads-epochs 1 \\
        --all-epochs 2 --total-epochs 2

Checkpoints (``mask_rcnn_siamese_NNNN.h5``), ``config.json``, ``history.jsonl`` and
TensorBoard scalars go to ``<logs>/siamese<YYYYmmddTHHMMSS>-<suffix>/`` (written by the
chief alone when several machines train). The logic lives in
``siamese_mask_rcnn.train_coco`` (also ``siamese-mrcnn train``); this script only runs it.
"""
import os
import sys

if __package__ in (None, ""):
    # allow `python samples/coco/train_siamese.py` from a source checkout
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from siamese_mask_rcnn.train_coco import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run())
