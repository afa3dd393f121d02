"""Run a trained model on your own reference and query images.

Python::

    from siamese_mask_rcnn.predict import predict
    result = predict("mask_rcnn_demo_0010.h5", ["ref.jpg"], "scene.jpg", out_png="result.png")

Command line: ``siamese-mrcnn predict --weights W.h5 --reference ref.jpg --query scene.jpg
--out result.png --json result.json``.

The model's configuration comes from ``--config``, else from the ``config.json`` that
training writes beside its checkpoints, else from a preset.
"""
import json
import os
import pathlib

import numpy as np

from .cocoformat import box_yxyx_to_xywh, encode_mask
from .mrcnn import utils
from .mrcnn.fileio import UnwritableOutputError, ensure_writable_dir


class InputError(ValueError):
    """A user-supplied file is missing or unusable (the message names it)."""


def read_user_image(path, role):
    """Read an image file as uint8 RGB ``[H, W, 3]``; raises ``InputError`` naming ``path``
    (and ``role``, e.g. "query") if it is missing, a directory or unreadable."""
    path = pathlib.Path(path)
    if not path.exists():
        raise InputError(f"{role} image not found: {path}")
    if path.is_dir():
        raise InputError(f"{role} image is a directory, not an image file: {path}")
    try:
        return utils.read_image(str(path))
    except (OSError, ValueError) as err:
        raise InputError(f"{role} image {path} is not a readable image ({err})") from None


def resolve_config(weights, config_path=None, preset="small", **overrides):
    """The single-image inference config for ``weights``: an explicit JSON, the run's
    ``config.json``, or a preset; ``overrides`` (config keys) are applied on top.
    Raises ``InputError`` naming an explicit config file that does not exist."""
    from .config import SiameseConfig, siamese_config

    overrides = {"IMAGES_PER_GPU": 1, "GPU_COUNT": 1, **overrides}
    if config_path and not os.path.exists(config_path):
        raise InputError(f"config file not found: {config_path}")
    path = config_path or os.path.join(os.path.dirname(os.path.abspath(weights)), "config.json")
    if not os.path.exists(path):
        return siamese_config(preset, **overrides)
    saved = SiameseConfig.load(path, strict=False).to_dict()
    return SiameseConfig.from_dict({**saved, **overrides}, strict=False)


def load_model(weights, config_path=None, preset="small", min_confidence=None):
    """An inference ``SiameseMaskRCNN`` with ``weights`` loaded by layer name (config as in
    :func:`resolve_config`). Raises ``InputError`` naming a missing weights or config file."""
    from .siamese import SiameseMaskRCNN

    if not os.path.exists(weights):
        raise InputError(f"weights file not found: {weights}")
    overrides = {} if min_confidence is None else {"DETECTION_MIN_CONFIDENCE": float(min_confidence)}
    config = resolve_config(weights, config_path, preset, **overrides)
    model = SiameseMaskRCNN("inference", config, model_dir=os.path.dirname(os.path.abspath(weights)))
    model.load_weights(weights, by_name=True)
    return model


def build_predictor(weights, config=None, preset="small"):
    """Load an inference model from ``weights`` and return its evaluation ``predict_fn``
    (``predict_fn(image, {class_id: [crops]}) → {class_id: result}``, see
    ``SiameseMaskRCNN.predict_fn``).

    The config is ``config``, else the ``config.json`` training wrote beside the weights,
    else the ``preset``. Raises ``InputError`` naming a missing weights file.
    """
    if config is None:
        return load_model(weights, preset=preset).predict_fn()
    from .siamese import SiameseMaskRCNN

    if not os.path.exists(weights):
        raise InputError(f"weights file not found: {weights}")
    model = SiameseMaskRCNN("inference", config, model_dir="logs")
    model.load_weights(weights, by_name=True)
    return model.predict_fn()


def result_to_json(result, reference_paths, query_path):
    """A JSON-ready description: boxes (x1, y1, x2, y2 and y1, x1, y2, x2), scores, RLE masks."""
    detections = []
    for i in range(len(result["scores"])):
        y1, x1, y2, x2 = (int(v) for v in result["rois"][i])
        detections.append({"score": float(result["scores"][i]), "box_yxyx": [y1, x1, y2, x2],
                           "box_xywh": box_yxyx_to_xywh((y1, x1, y2, x2)),
                           "mask_area": int(result["masks"][:, :, i].sum()),
                           "mask_rle": encode_mask(result["masks"][:, :, i])})
    return {"query": str(query_path), "references": [str(p) for p in reference_paths],
            "count": len(detections), "detections": detections}


def predict(weights, references, query, out_png=None, out_json=None, config_path=None, preset="small",
            min_confidence=None, model=None):
    """Find every instance of the references' category in ``query``.

    ``references``: one path/array or a list (k-shot: their embeddings are averaged).
    Returns ``{"rois", "scores", "masks", "class_ids"}``; writes a picture and/or JSON.

    Raises:
        InputError: an image or the weights cannot be used, or the folder of ``out_png`` /
            ``out_json`` cannot be written (checked before the model is loaded).
    """
    for out in (out_png, out_json):
        if out:
            try:
                ensure_writable_dir(os.path.dirname(os.path.abspath(os.fspath(out))), "output folder")
            except UnwritableOutputError as err:
                raise InputError(str(err)) from None
    refs = references if isinstance(references, (list, tuple)) else [references]
    ref_images = [read_user_image(r, "reference") if not isinstance(r, np.ndarray) else r for r in refs]
    query_image = read_user_image(query, "query") if not isinstance(query, np.ndarray) else query
    if model is None:
        model = load_model(weights, config_path, preset, min_confidence)
    result = model.detect_embeddings(query_image, {0: model.embed_category(ref_images)})[0]
    if out_png:
        import matplotlib.pyplot as plt
        from .mrcnn import visualize
        fig = visualize.display_siamese_instances(ref_images[0], query_image, result["rois"], result["masks"],
                                                  result["scores"], title=f"{len(result['scores'])} detections")
        visualize.save_figure(fig, out_png)
        plt.close(fig)
    if out_json:
        names = [r if not isinstance(r, np.ndarray) else "<array>" for r in refs]
        payload = result_to_json(result, names, query if not isinstance(query, np.ndarray) else "<array>")
        pathlib.Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(out_json).write_text(json.dumps(payload, indent=2))
    return result
