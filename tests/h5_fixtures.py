"""Test helper: synthetic matterport-layout ``.h5`` weight files from the layout manifests.

Moved out of the package (``mrcnn.weights``) because only the tests use it.
"""
import json
import os

import numpy as np

from siamese_mask_rcnn.mrcnn import weights as W


def _random_weight(rng, weight_name, shape):
    """Random float32 array; scales and variances are kept positive so models stay finite."""
    short = weight_name.rsplit("/", 1)[-1]
    if short in ("gamma", "moving_variance"):
        return rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
    return (rng.standard_normal(size=shape, dtype=np.float32) * np.float32(0.05))


def write_manifest_h5(manifest_json_path, out_path, seed=0, full_model=False):
    """Write a matterport-layout ``.h5`` with random values of the shapes in a manifest.

    Args:
        manifest_json_path: a ``matterport_layout/*_manifest.json`` file (key ``layers``:
            name, ``h5_group``, ``weights`` with ``h5_weight_name`` and ``shape``).
        out_path: output file (written atomically, parent directories created).
        seed: seed of the numpy Generator that draws the values.
        full_model: nest everything under a ``model_weights`` group like a full-model file.

    Returns:
        the output path.
    """
    path = os.fspath(manifest_json_path)
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
        layers = manifest["layers"]
    except FileNotFoundError:
        raise FileNotFoundError(f"manifest not found: {path}") from None
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a matterport layout manifest: {err}") from None
    rng = np.random.default_rng(seed)

    def write(h5file):
        root = h5file.create_group("model_weights") if full_model else h5file
        groups = [layer.get("h5_group", layer["name"]) for layer in layers]
        W._write_root_attrs(root, groups)
        for group_name, layer in zip(groups, layers):
            entries = [(w["h5_weight_name"],
                        _random_weight(rng, w["h5_weight_name"].split(":")[0], tuple(w["shape"])))
                       for w in layer["weights"]]
            W._write_layer_group(root, group_name, entries)

    W._atomic_h5_write(out_path, write)
    return out_path
