"""Can a trained model's scores say "not here" once they are calibrated per reference?

Run by hand (not part of the tests)::

    python benchmarks/open_world_calibration.py --weights logs/demo/checkpoints/<run>/mask_rcnn_demo_0030.h5 \
        [--scenes 150] [--calibration-scenes 100] [--seed 0]

A ``siamese-mrcnn demo`` checkpoint (``config.json`` beside it) searches every one-shot
category in every evaluation scene (one fixed reference per category, as a user would give,
drawn from a seeded generator), with the score threshold lowered to 0.05 so that the whole
score range is seen. It then compares, on the same detections, three ways to decide which
detections to keep (issue #10, open-world search):

* ``raw``: the detector's score, one threshold for every reference (what the model does);
* ``reference-calibrated``: the detection's score ranked against the same reference's best
  score on ``--calibration-scenes`` *training* scenes (scenes the evaluation never uses: the
  category is absent from nearly all of them). The calibrated score is the fraction of those
  scenes whose best score is lower; it needs only the reference and a fixed scene set, so it
  works on a single query image;
* ``collection-calibrated``: the same rank against the reference's best scores over the
  evaluation scenes themselves (a search through a collection in which the category is rare).

For each it prints the area under the ROC curve of the pair's best score (present vs absent
pairs), the recall on present pairs and the false positives per absent pair at a few
thresholds, and the lowest threshold with at most 0.1 and 0.2 false positives per absent
pair (recall there). It prints the CPU it ran on.
"""
import argparse
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

#: Score floor while searching: low enough to see the whole range of the detector's scores.
SEARCH_MIN_CONFIDENCE = 0.05


def pair_best(scores):
    """The best score of a pair (0 with no detection)."""
    return float(max(scores)) if len(scores) else 0.0


def calibrate(pairs, reference_best):
    """Pairs with each score replaced by its rank among ``reference_best[class_id]`` (the
    fraction of calibration scenes whose best score for that reference is lower)."""
    out = []
    for p in pairs:
        table = np.sort(np.asarray(reference_best[p["class_id"]], np.float64))
        ranks = [float(np.searchsorted(table, s, side="left")) / len(table) for s in p["scores"]]
        out.append({**p, "scores": ranks})
    return out


def report(label, present, absent, thresholds):
    from siamese_mask_rcnn.evaluation.openworld import presence_auc, recall_fp_curve

    grid = np.round(np.arange(0.0, 1.0001, 0.005), 3)
    curve = recall_fp_curve(present, absent, grid)
    a = presence_auc([{"presence": pair_best(p["scores"])} for p in present],  # the best score as presence
                     [{"presence": pair_best(p["scores"])} for p in absent])
    print(f"\n{label}: AUC of the pair's best score, present vs absent pairs {a:.3f}")
    for t in thresholds:
        row = min(curve, key=lambda r: abs(r["threshold"] - t))
        print(f"  threshold {row['threshold']:.3f}: recall {100 * row['recall']:5.1f} %, "
              f"{row['fp_per_absent_pair']:.3f} FP per absent pair "
              f"({100 * row['fraction_absent_pairs_with_fp']:.1f} % of absent pairs with any)")
    for cap in (0.2, 0.1):
        ok = [r for r in curve if r["fp_per_absent_pair"] <= cap]
        if ok:
            r = min(ok, key=lambda r: r["threshold"])
            print(f"  <= {cap} FP per absent pair from threshold {r['threshold']:.3f}: "
                  f"recall {100 * r['recall']:.1f} %")
        else:
            print(f"  <= {cap} FP per absent pair: not reached")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    demo_checkpoint.add_arguments(parser)
    parser.add_argument("--calibration-scenes", type=int, default=100,
                        help="training scenes each reference is calibrated on (default 100)")
    args = parser.parse_args(argv)
    if args.calibration_scenes < 1:
        parser.error(f"--calibration-scenes must be >= 1, got {args.calibration_scenes}")
    demo_checkpoint.check_arguments(parser, args)  # before TensorFlow starts

    from siamese_mask_rcnn.cocoformat import box_xywh_to_yxyx
    from siamese_mask_rcnn.evaluation.openworld import match_detections, open_world_categories

    train, val, model = demo_checkpoint.load(parser, args, args.calibration_scenes, SEARCH_MIN_CONFIDENCE)
    print(f"weights: {args.weights}; {args.scenes} evaluation scenes, {args.calibration_scenes} "
          f"calibration (training) scenes, seed {args.seed}")

    embeddings = demo_checkpoint.one_shot_embeddings(model, val, args.seed)
    print(f"{len(embeddings)} one-shot categories with a reference")

    def search(dataset, image_id):
        return model.detect_embeddings(dataset.load_image(image_id), embeddings)

    t0 = time.time()
    reference_best = {c: [] for c in embeddings}
    for k, image_id in enumerate(sorted(train.image_ids)):
        for c, det in search(train, image_id).items():
            reference_best[c].append(pair_best(det["scores"]))
    t1 = time.time()
    gt = {}
    for ann in val.to_coco_dict(class_ids=list(embeddings))["annotations"]:
        if not ann.get("iscrowd"):
            gt.setdefault((int(ann["image_id"]), int(ann["category_id"])), []).append(box_xywh_to_yxyx(ann["bbox"]))
    present, absent = [], []
    for image_id in sorted(val.image_ids):
        here, missing = open_world_categories(val, image_id, list(embeddings), None, args.seed)
        wanted = set(here) | set(missing)
        for c, det in search(val, image_id).items():
            if c not in wanted:
                continue
            scores = [float(s) for s in det["scores"]]
            if c in here:
                boxes = np.asarray(gt.get((int(image_id), c), []), np.float64).reshape(-1, 4)
                matched = match_detections(det["rois"], scores, boxes)
                present.append({"class_id": c, "scores": scores, "matched": list(matched), "n_gt": len(boxes)})
            else:
                absent.append({"class_id": c, "scores": scores})
    t2 = time.time()
    print(f"searched {len(embeddings)} categories in {args.calibration_scenes} calibration scenes "
          f"({t1 - t0:.0f} s) and {args.scenes} evaluation scenes ({t2 - t1:.0f} s): "
          f"{len(present)} present and {len(absent)} absent pairs")

    if not present or not absent:
        parser.exit(2, f"{parser.prog}: error: no {'present' if not present else 'absent'} pair in "
                       f"{args.scenes} evaluation scenes: nothing to compare (raise --scenes)\n")
    report("raw detector scores", present, absent, (0.5, 0.7, 0.9))
    report("reference-calibrated (rank among the reference's best scores on training scenes)",
           calibrate(present, reference_best), calibrate(absent, reference_best), (0.9, 0.95, 0.99))
    collection_best = {c: [] for c in embeddings}
    for p in present + absent:
        collection_best[p["class_id"]].append(pair_best(p["scores"]))
    report("collection-calibrated (rank among the reference's best scores on the evaluation scenes)",
           calibrate(present, collection_best), calibrate(absent, collection_best), (0.9, 0.95, 0.99))


if __name__ == "__main__":
    main()
