"""The one-shot evaluation protocol and the paper's analyses (paper §5.2, §5.3, §6.4, §6.5).

Protocol (paper §5.2) for a set of categories (a split's one-shot or background categories):

1. for every query image and every category of the set with a non-crowd instance in it,
   draw ``shots`` reference instances of that category from **other** randomly chosen
   images (never the query itself, never a crowd annotation) — :func:`build_eval_pairs`
   (:mod:`.pairs`);
2. predict boxes and masks for every (query, references) pair — :func:`run_predictions`
   (:mod:`.predictions`);
3. give every prediction the reference's category;
4. AP50 per category with pycocotools, boxes and masks; mAP50 = the mean over the
   categories — :func:`coco_ap50`, :func:`evaluate` (:mod:`.protocol`).

Repeated with several seeds, :func:`evaluate_runs` reports the mean and a 95% interval.
Baselines (:mod:`.baselines`: :func:`ground_truth_predictor`, :func:`random_boxes_predictor`,
paper §5.3), the confusion matrix (§6.4, :func:`confusion_matrix`), the clutter analysis
(§6.5, :func:`clutter_analysis`), a false-positive test with absent categories
(:func:`absent_category_test`) and a breakdown of what each detection hit
(:func:`error_breakdown`) (:mod:`.analyses`) use the same prediction interface:

``predict_fn(image, references) -> detections``
    ``image``: ``uint8 [H, W, 3]`` query; ``references``: ``{class_id: [uint8 crop, ...]}``
    (k crops per category); returns ``{class_id: {"rois": [N, 4] (y1, x1, y2, x2) image
    pixels, "scores": [N], "masks": [H, W, N] bool}}``. One call per query image.

Tables, files and plots are written by :mod:`.report`; the command line
(``samples/coco/evaluate_siamese.py``, ``siamese-mrcnn evaluate``) lives in :mod:`.cli`.

Ids are the dataset's internal ids (``OneShotDataset.coco_gt`` uses the same ids); the
results files :func:`write_outputs` writes use the annotation file's own image and category
ids (``source_results``), so plain pycocotools scores them against the original file.
AP values are fractions in [0, 1]; tables print percentages. Same seed → same numbers.
No TensorFlow is imported by this package (only :mod:`.cli` does, for a trained model).
"""
from ..cocoformat import IOU_TYPES
from .analyses import (DEFAULT_CLUTTER_BINS, DETECTION_OUTCOMES, RECALL_FACTORS, absent_category_test,
                       classify_detections, clutter_analysis, confusion_matrix, error_breakdown,
                       format_error_breakdown, format_proposal_recall, format_recall_by,
                       instance_counts, instance_factors, proposal_recall)
from .baselines import ground_truth_predictor, random_boxes_predictor
from .openworld import (evaluate_open_world, format_open_world, open_world_summary,
                        write_open_world)
from .pairs import EvalPair, build_eval_pairs
from .predictions import detections_to_coco, run_predictions
from .protocol import (coco_ap50, confidence_interval95, evaluate, evaluate_runs,
                       evaluation_ground_truth)
from .report import (TABLE_ROW_ORDER, format_table, plot_clutter, plot_confusion,
                     plot_per_category, summarize, write_absent_csv, write_clutter_csv,
                     write_confusion_csv, write_confusion_json, write_json, write_outputs)

__all__ = [
    "IOU_TYPES", "DEFAULT_CLUTTER_BINS", "TABLE_ROW_ORDER", "EvalPair",
    "build_eval_pairs", "run_predictions", "detections_to_coco",
    "evaluate_open_world", "open_world_summary", "format_open_world", "write_open_world",
    "coco_ap50", "evaluation_ground_truth", "evaluate", "evaluate_runs", "confidence_interval95",
    "ground_truth_predictor", "random_boxes_predictor",
    "confusion_matrix", "clutter_analysis", "instance_counts", "absent_category_test",
    "DETECTION_OUTCOMES", "classify_detections", "error_breakdown", "format_error_breakdown",
    "format_recall_by", "instance_factors", "RECALL_FACTORS", "proposal_recall", "format_proposal_recall",
    "format_table", "summarize", "write_json", "write_outputs", "plot_per_category",
    "plot_confusion", "write_confusion_csv", "write_confusion_json", "plot_clutter",
    "write_clutter_csv", "write_absent_csv",
]
