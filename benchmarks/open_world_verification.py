"""Does a trained model's encoder tell one category from another? (issue #10, open-world search)

Run by hand (not part of the tests)::

    python benchmarks/open_world_verification.py --weights logs/demo/checkpoints/<run>/mask_rcnn_demo_0030.h5 \
        [--scenes 150] [--threshold 0.5] [--seed 0]

A ``siamese-mrcnn demo`` checkpoint (``config.json`` beside it) embeds, with its reference
encoder (pooled P2..P6, paper Section 4.3), one fixed reference per one-shot category (drawn
from a seeded generator, as in ``open_world_confusions.py``) and every annotated object of
the evaluation scenes, cropped by its box as references are. The similarity of two
embeddings is the cosine of each level's C-vectors, averaged over the five levels.

It prints:

* **separability**: per one-shot reference, the area under the ROC curve of the similarity
  between the reference and the objects of its own category vs the objects of other
  categories (the mean over references), and how often an object of a one-shot category is
  most similar to its own category's reference among all of them (chance: one over the
  number of categories);
* **verification**: every one-shot category is searched in every evaluation scene; each
  detection at or above ``--threshold`` is cropped by its box, embedded and compared with
  the reference. It prints the recall on present pairs (ground truth found at IoU >= 0.5)
  and the false positives per absent pair when only detections at least that similar are
  kept, for similarity thresholds that keep all, 95 %, 90 %, 80 %, 70 % and 50 % of the true
  detections — what a second, verifying look at each detection could do for "not here".

It prints the CPU it ran on.
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no TensorFlow start-up and grappler warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for folder in (ROOT, HERE):  # the package, and demo_checkpoint also under ``python -m benchmarks.<name>``
    if folder not in sys.path:
        sys.path.insert(0, folder)

import numpy as np  # noqa: E402

import demo_checkpoint  # noqa: E402

#: Shares of the true detections that the verification thresholds keep.
KEPT_SHARES = (1.0, 0.95, 0.9, 0.8, 0.7, 0.5)


def verification_table(true_sims, present_fp_sims, absent_sims, n_gt, n_absent, shares=KEPT_SHARES):
    """Rows ``(similarity threshold, recall on present pairs, false positives per absent pair,
    false positives on present pairs)`` when detections less similar than the threshold are
    dropped; one row per share of the true detections kept."""
    true_sims = np.asarray(true_sims, np.float64)
    rows = []
    for share in shares:
        t = float(np.quantile(true_sims, 1.0 - share)) if len(true_sims) else 0.0
        if share >= 1.0:
            t = -np.inf
        rows.append((t, float(np.sum(true_sims >= t)) / max(n_gt, 1),
                     float(np.sum(np.asarray(absent_sims) >= t)) / max(n_absent, 1),
                     int(np.sum(np.asarray(present_fp_sims) >= t))))
    return rows


def main(argv=None):
    parser, args = demo_checkpoint.parse(__doc__, argv, threshold=True)  # checked before TensorFlow starts

    from siamese_mask_rcnn.datasets.base import crop_box
    from siamese_mask_rcnn.verification import level_cosine
    from siamese_mask_rcnn.evaluation.openworld import match_detections, open_world_categories, roc_auc

    _, val, model = demo_checkpoint.load(parser, args, 1, args.threshold)
    embeddings = demo_checkpoint.one_shot_embeddings(model, val, args.seed)
    keys = sorted(embeddings)
    references = np.stack([embeddings[c] for c in keys])

    t0 = time.time()
    object_embeddings, object_classes = [], []
    true_sims, present_fp_sims, absent_sims = [], [], []
    n_gt = n_present = n_absent = 0
    for image_id in sorted(val.image_ids):
        image = val.load_image(image_id)
        anns = [a for a in val.instance_annotations(image_id) if not a.get("iscrowd")]
        boxes = np.asarray([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        classes = np.asarray([abs(int(a["class_id"])) for a in anns], np.int64)
        if len(anns):
            object_embeddings.append(model.encode_references([crop_box(image, b)[0] for b in boxes]))
            object_classes.append(classes)
        present, absent = open_world_categories(val, image_id, keys, None, args.seed)
        detections = model.detect_embeddings(image, {c: embeddings[c] for c in present + absent})
        for c, det in detections.items():
            gt = boxes[classes == c] if c in present else np.zeros((0, 4))
            if c in present:
                n_present += 1
                n_gt += len(gt)
            else:
                n_absent += 1
            if len(det["scores"]) == 0:
                continue
            sims = level_cosine(model.encode_references([crop_box(image, b)[0] for b in det["rois"]]),
                                embeddings[c])
            if c in present:
                matched = match_detections(det["rois"], det["scores"], gt)
                true_sims += list(sims[matched])
                present_fp_sims += list(sims[~matched])
            else:
                absent_sims += list(sims)
    print(f"embedded and searched {len(keys)} one-shot categories in {args.scenes} scenes in "
          f"{time.time() - t0:.0f} s: {n_present} present pairs ({n_gt} instances), {n_absent} absent pairs")

    objects = np.concatenate(object_embeddings)
    classes = np.concatenate(object_classes)
    aucs = []
    for c, reference in zip(keys, references):
        own = classes == c
        if own.any() and (~own).any():
            sims = level_cosine(objects, reference)
            aucs.append(roc_auc(sims[own], sims[~own]))
    oneshot = np.isin(classes, keys)
    if oneshot.any():
        similarity = np.stack([level_cosine(objects[oneshot], r) for r in references], axis=1)
        top1 = float(np.mean(np.asarray(keys)[np.argmax(similarity, axis=1)] == classes[oneshot]))
        print(f"separability: AUC own vs other categories' objects {np.mean(aucs):.3f} (mean over {len(aucs)} "
              f"references); an object's most similar reference is its own for {top1 * 100:.1f} % of "
              f"{int(oneshot.sum())} one-shot objects (chance {100 / len(keys):.1f} %)")
    if not true_sims:
        print("verification: no true detection at the threshold")
        return
    print(f"verification of the detections at score >= {args.threshold} "
          f"(AUC true vs absent-pair detections {roc_auc(true_sims, absent_sims):.3f}):")
    print(f"{'true kept':>10}{'similarity >=':>15}{'recall':>9}{'FP per absent pair':>20}{'FP on present':>15}")
    for share, (t, recall, fp, fp_present) in zip(KEPT_SHARES, verification_table(
            true_sims, present_fp_sims, absent_sims, n_gt, n_absent)):
        print(f"{share * 100:>9.0f}%{t:>15.3f}{recall * 100:>8.1f}%{fp:>20.3f}{fp_present:>15d}")


if __name__ == "__main__":
    main()
