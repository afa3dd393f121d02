"""matterport's public façade: names, argument names, order and defaults.

The table lists the signatures of matterport's public functions (read from its
``mrcnn/{model,utils,visualize,config}.py``, master branch). Ours must accept every call
a matterport client can make: the same parameters in the same order with the same
defaults; additions only after them, with defaults. Names matterport has that we do not
provide are listed in ``NOT_PROVIDED`` with the reason, so the gap is explicit.
"""
import importlib
import inspect

import pytest

pytest.importorskip("tensorflow")

E = inspect.Parameter.empty

# module -> {name: [(parameter, default or E)]}; methods as "Class.method" (self included)
MATTERPORT = {
    "model": {
        "compose_image_meta": [("image_id", E), ("original_image_shape", E), ("image_shape", E),
                               ("window", E), ("scale", E), ("active_class_ids", E)],
        "parse_image_meta": [("meta", E)],
        "parse_image_meta_graph": [("meta", E)],
        "mold_image": [("images", E), ("config", E)],
        "unmold_image": [("normalized_images", E), ("config", E)],
        "load_image_gt": [("dataset", E), ("config", E), ("image_id", E), ("augment", False),
                          ("augmentation", None), ("use_mini_mask", False)],
        "build_rpn_targets": [("image_shape", E), ("anchors", E), ("gt_class_ids", E), ("gt_boxes", E),
                              ("config", E)],
        "compute_backbone_shapes": [("config", E), ("image_shape", E)],
        "norm_boxes_graph": [("boxes", E), ("shape", E)],
        "trim_zeros_graph": [("boxes", E), ("name", "trim_zeros")],
        "apply_box_deltas_graph": [("boxes", E), ("deltas", E)],
        "clip_boxes_graph": [("boxes", E), ("window", E)],
        "overlaps_graph": [("boxes1", E), ("boxes2", E)],
        "MaskRCNN.__init__": [("self", E), ("mode", E), ("config", E), ("model_dir", E)],
        "MaskRCNN.build": [("self", E), ("mode", E), ("config", E)],
        "MaskRCNN.find_last": [("self", E)],
        "MaskRCNN.load_weights": [("self", E), ("filepath", E), ("by_name", False), ("exclude", None)],
        "MaskRCNN.get_imagenet_weights": [("self", E)],
        "MaskRCNN.compile": [("self", E), ("learning_rate", E), ("momentum", E)],
        "MaskRCNN.set_log_dir": [("self", E), ("model_path", None)],
        "MaskRCNN.train": [("self", E), ("train_dataset", E), ("val_dataset", E), ("learning_rate", E),
                           ("epochs", E), ("layers", E), ("augmentation", None), ("custom_callbacks", None),
                           ("no_augmentation_sources", None)],
        "MaskRCNN.mold_inputs": [("self", E), ("images", E)],
        "MaskRCNN.unmold_detections": [("self", E), ("detections", E), ("mrcnn_mask", E),
                                       ("original_image_shape", E), ("image_shape", E), ("window", E)],
        "MaskRCNN.detect": [("self", E), ("images", E), ("verbose", 0)],
        "MaskRCNN.detect_molded": [("self", E), ("molded_images", E), ("image_metas", E), ("verbose", 0)],
        "MaskRCNN.get_anchors": [("self", E), ("image_shape", E)],
        "MaskRCNN.find_trainable_layer": [("self", E), ("layer", E)],
        "MaskRCNN.get_trainable_layers": [("self", E)],
        "MaskRCNN.run_graph": [("self", E), ("images", E), ("outputs", E), ("image_metas", None)],
        "MaskRCNN.set_trainable": [("self", E), ("layer_regex", E), ("keras_model", None), ("indent", 0),
                                   ("verbose", 1)],
    },
    "utils": {
        "extract_bboxes": [("mask", E)],
        "compute_iou": [("box", E), ("boxes", E), ("box_area", E), ("boxes_area", E)],
        "compute_overlaps": [("boxes1", E), ("boxes2", E)],
        "compute_overlaps_masks": [("masks1", E), ("masks2", E)],
        "non_max_suppression": [("boxes", E), ("scores", E), ("threshold", E)],
        "apply_box_deltas": [("boxes", E), ("deltas", E)],
        "box_refinement": [("box", E), ("gt_box", E)],
        "resize_image": [("image", E), ("min_dim", None), ("max_dim", None), ("min_scale", None),
                         ("mode", "square")],
        "resize_mask": [("mask", E), ("scale", E), ("padding", E), ("crop", None)],
        "minimize_mask": [("bbox", E), ("mask", E), ("mini_shape", E)],
        "expand_mask": [("bbox", E), ("mini_mask", E), ("image_shape", E)],
        "unmold_mask": [("mask", E), ("bbox", E), ("image_shape", E)],
        "generate_anchors": [("scales", E), ("ratios", E), ("shape", E), ("feature_stride", E),
                             ("anchor_stride", E)],
        "generate_pyramid_anchors": [("scales", E), ("ratios", E), ("feature_shapes", E),
                                     ("feature_strides", E), ("anchor_stride", E)],
        "trim_zeros": [("x", E)],
        "compute_matches": [("gt_boxes", E), ("gt_class_ids", E), ("gt_masks", E), ("pred_boxes", E),
                            ("pred_class_ids", E), ("pred_scores", E), ("pred_masks", E),
                            ("iou_threshold", 0.5), ("score_threshold", 0.0)],
        "compute_ap": [("gt_boxes", E), ("gt_class_ids", E), ("gt_masks", E), ("pred_boxes", E),
                       ("pred_class_ids", E), ("pred_scores", E), ("pred_masks", E), ("iou_threshold", 0.5)],
        "compute_ap_range": [("gt_box", E), ("gt_class_id", E), ("gt_mask", E), ("pred_box", E),
                             ("pred_class_id", E), ("pred_score", E), ("pred_mask", E),
                             ("iou_thresholds", None), ("verbose", 1)],
        "compute_recall": [("pred_boxes", E), ("gt_boxes", E), ("iou", E)],
        "norm_boxes": [("boxes", E), ("shape", E)],
        "denorm_boxes": [("boxes", E), ("shape", E)],
        "resize": [("image", E), ("output_shape", E), ("order", 1), ("mode", "constant"), ("cval", 0),
                   ("clip", True), ("preserve_range", False), ("anti_aliasing", False),
                   ("anti_aliasing_sigma", None)],
        "Dataset.__init__": [("self", E), ("class_map", None)],
        "Dataset.add_class": [("self", E), ("source", E), ("class_id", E), ("class_name", E)],
        "Dataset.add_image": [("self", E), ("source", E), ("image_id", E), ("path", E)],
        "Dataset.image_reference": [("self", E), ("image_id", E)],
        "Dataset.prepare": [("self", E), ("class_map", None)],
        "Dataset.map_source_class_id": [("self", E), ("source_class_id", E)],
        "Dataset.get_source_class_id": [("self", E), ("class_id", E), ("source", E)],
        "Dataset.source_image_link": [("self", E), ("image_id", E)],
        "Dataset.load_image": [("self", E), ("image_id", E)],
        "Dataset.load_mask": [("self", E), ("image_id", E)],
        "batch_slice": [("inputs", E), ("graph_fn", E), ("batch_size", E), ("names", None)],
        "box_refinement_graph": [("box", E), ("gt_box", E)],
    },
    "visualize": {
        "display_images": [("images", E), ("titles", None), ("cols", 4), ("cmap", None), ("norm", None),
                           ("interpolation", None)],
        "random_colors": [("N", E), ("bright", True)],
        "apply_mask": [("image", E), ("mask", E), ("color", E), ("alpha", 0.5)],
        "display_instances": [("image", E), ("boxes", E), ("masks", E), ("class_ids", E), ("class_names", E),
                              ("scores", None), ("title", ""), ("figsize", (16, 16)), ("ax", None),
                              ("show_mask", True), ("show_bbox", True), ("colors", None), ("captions", None)],
        "plot_precision_recall": [("AP", E), ("precisions", E), ("recalls", E)],
        "draw_boxes": [("image", E), ("boxes", None), ("refined_boxes", None), ("masks", None),
                       ("captions", None), ("visibilities", None), ("title", ""), ("ax", None)],
        "display_differences": [("image", E), ("gt_box", E), ("gt_class_id", E), ("gt_mask", E),
                                ("pred_box", E), ("pred_class_id", E), ("pred_score", E), ("pred_mask", E),
                                ("class_names", E), ("title", ""), ("ax", None), ("show_mask", True),
                                ("show_box", True), ("iou_threshold", 0.5), ("score_threshold", 0.5)],
        "draw_rois": [("image", E), ("rois", E), ("refined_rois", E), ("mask", E), ("class_ids", E),
                      ("class_names", E), ("limit", 10)],
        "draw_box": [("image", E), ("box", E), ("color", E)],
        "display_top_masks": [("image", E), ("mask", E), ("class_ids", E), ("class_names", E), ("limit", 4)],
        "plot_overlaps": [("gt_class_ids", E), ("pred_class_ids", E), ("pred_scores", E), ("overlaps", E),
                          ("class_names", E), ("threshold", 0.5)],
        "display_table": [("table", E)],
        "display_weight_stats": [("model", E)],
    },
    "config": {
        "Config.__init__": [("self", E)],
        "Config.display": [("self", E)],
        "Config.to_dict": [("self", E)],
    },
}

# matterport names this port does not provide, and why
NOT_PROVIDED = {
    "utils": {
        "download_trained_weights": "no downloads: weights are local files",
        "mold_mask": "never implemented by matterport either",
    },
    "model": {
        "MaskRCNN.ancestor": "TF1 graph walking (Keras 3 has no tensor-name graph to walk)",
    },
}


def lookup(module, dotted):
    obj = module
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def cases():
    for module_name, table in MATTERPORT.items():
        for name, params in table.items():
            yield pytest.param(module_name, name, params, id=f"{module_name}.{name}")


@pytest.mark.parametrize("module_name, name, expected", list(cases()))
def test_signature_accepts_every_matterport_call(module_name, name, expected):
    module = importlib.import_module(f"siamese_mask_rcnn.mrcnn.{module_name}")
    params = list(inspect.signature(lookup(module, name)).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    got = [(p.name, p.default) for p in positional[:len(expected)]]
    assert got == expected, f"{module_name}.{name}: {got} != matterport {expected}"
    for extra in params[len(expected):]:
        assert extra.kind in (extra.VAR_POSITIONAL, extra.VAR_KEYWORD) or extra.default is not E, \
            f"{module_name}.{name}: added parameter {extra.name!r} needs a default"


def test_not_provided_list_is_accurate():
    for module_name, names in NOT_PROVIDED.items():
        module = importlib.import_module(f"siamese_mask_rcnn.mrcnn.{module_name}")
        for name in names:
            with pytest.raises(AttributeError):
                lookup(module, name)
