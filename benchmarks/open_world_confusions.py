"""What does a trained model mistake an absent category for? (issue #10, open-world search)

Run by hand (not part of the tests)::

    python benchmarks/open_world_confusions.py --weights logs/demo/checkpoints/<run>/mask_rcnn_demo_0030.h5 \
        [--scenes 150] [--threshold 0.5] [--seed 0]

A ``siamese-mrcnn demo`` checkpoint (``config.json`` beside it) on the embedded data searches
every one-shot category in every evaluation scene (one fixed reference per category, drawn
from a seeded generator, as in ``open_world_calibration.py``). Every detection at or above
``--threshold`` on a scene *without* the reference's category is a false positive; each is
attributed to the annotated object it overlaps best (box IoU >= 0.5) or to "no object".
The object's category is then compared with the reference's on the synthetic data's coarse
appearance (shape family, primary colour, secondary colour, pattern; see
``siamese_mask_rcnn/datasets/synthetic.py``).

It prints, for each attribute, the share of such false positives whose object shares it with
the reference, beside the share among *all* objects of those absent pairs' scenes (what a
model blind to that attribute would give). An attribute whose share among the false
positives is far above its base rate is what the matching relies on; one near its base rate
is ignored. It also prints the false positives per absent pair split by how many attributes
are shared, and the CPU it ran on.
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
from siamese_mask_rcnn.mrcnn.boxes import compute_overlaps  # noqa: E402  (numpy only)

#: The coarse appearance attributes compared, as named in ``CategoryStyle``.
ATTRIBUTES = ("family", "primary", "secondary", "pattern")


def shared_attributes(style_a, style_b):
    """The tuple of :data:`ATTRIBUTES` two categories' styles have in common."""
    return tuple(a for a in ATTRIBUTES if getattr(style_a, a) == getattr(style_b, a))


def attribute_false_positives(rois, scores, gt_boxes, gt_class_ids, reference_style, style_of,
                              threshold, iou_threshold=0.5):
    """Attribute one absent pair's false positives (score >= ``threshold``) to objects.

    Returns a list with, per false positive, ``None`` (no annotated object at IoU >=
    ``iou_threshold``) or the tuple of attributes the best-overlapping object's category
    shares with ``reference_style``.
    """
    out = []
    overlaps = compute_overlaps(rois, gt_boxes)  # [N, G]
    for ious, score in zip(overlaps, scores):
        if score < threshold:
            continue
        if len(gt_boxes) == 0:
            out.append(None)
            continue
        k = int(np.argmax(ious))
        out.append(shared_attributes(reference_style, style_of(int(gt_class_ids[k])))
                   if ious[k] >= iou_threshold else None)
    return out


def summarise(hits, base, n_pairs):
    """Lines of the report: per attribute the share among false positives vs the base rate,
    and false positives per absent pair by the number of shared attributes."""
    on_objects = [h for h in hits if h is not None]
    lines = [f"{len(hits)} false positives on {n_pairs} absent pairs ({len(hits) / max(n_pairs, 1):.2f} per pair); "
             f"{len(hits) - len(on_objects)} on no annotated object (IoU < 0.5)",
             f"{'attribute shared with the reference':<40}{'false positives':>16}{'all objects':>14}"]
    for a in ATTRIBUTES:
        fp = np.mean([a in h for h in on_objects]) * 100 if on_objects else float("nan")
        br = np.mean([a in h for h in base]) * 100 if base else float("nan")
        lines.append(f"{a:<40}{fp:>15.1f}%{br:>13.1f}%")
    lines.append(f"{'number of attributes shared':<40}{'FP per pair':>16}{'objects per pair':>18}")
    for n in range(len(ATTRIBUTES)):
        fp = sum(len(h) == n for h in on_objects) / max(n_pairs, 1)
        br = sum(len(h) == n for h in base) / max(n_pairs, 1)
        lines.append(f"{n:<40}{fp:>16.3f}{br:>18.3f}")
    return lines


def main(argv=None):
    parser, args = demo_checkpoint.parse(__doc__, argv, threshold=True)  # checked before TensorFlow starts

    from siamese_mask_rcnn.evaluation.openworld import open_world_categories

    _, val, model = demo_checkpoint.load(parser, args, 1, args.threshold)

    embeddings = demo_checkpoint.one_shot_embeddings(model, val, args.seed)
    t0 = time.time()
    hits, base, n_pairs = [], [], 0
    for image_id in sorted(val.image_ids):
        _, missing = open_world_categories(val, image_id, list(embeddings), None, args.seed)
        anns = [a for a in val.instance_annotations(image_id) if not a.get("iscrowd")]
        gt_boxes = np.asarray([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        gt_ids = [abs(int(a["class_id"])) for a in anns]
        detections = model.detect_embeddings(val.load_image(image_id), {c: embeddings[c] for c in missing})
        for c, det in detections.items():
            n_pairs += 1
            ref = val.style(c)
            hits += attribute_false_positives(det["rois"], det["scores"], gt_boxes, gt_ids, ref,
                                              val.style, args.threshold)
            base += [shared_attributes(ref, val.style(g)) for g in gt_ids]
    print(f"searched {len(embeddings)} categories in {args.scenes} scenes in {time.time() - t0:.0f} s")
    if not n_pairs:
        parser.exit(2, f"{parser.prog}: error: no absent pair in {args.scenes} scenes\n")
    print("\n".join(summarise(hits, base, n_pairs)))


if __name__ == "__main__":
    main()
