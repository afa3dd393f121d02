"""The independent transfer composer (``datasets.transfer``): no shared code with the training
renderers, valid COCO annotations whose masks are the painted pixels, determinism, the
evaluation interface and the wider rendering ranges. Tiny scenes only."""
import ast
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from siamese_mask_rcnn.datasets import transfer
from siamese_mask_rcnn.datasets.synthetic_styles import make_category_styles
from siamese_mask_rcnn.datasets.transfer import (DEFAULT_RANGES, OmniglotGlyphs, ProceduralShapes,
                                                 TransferSceneDataset, transfer_dataset_like)

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "siamese_mask_rcnn"
COMPOSER = "siamese_mask_rcnn.datasets.transfer"
TRAINING_RENDERERS = ("siamese_mask_rcnn.datasets.scenes", "siamese_mask_rcnn.datasets.synthetic",
                      "siamese_mask_rcnn.datasets.synthetic_styles", "siamese_mask_rcnn.datasets.omniglot",
                      "siamese_mask_rcnn.datasets.randomised")
#: Small, fast scenes: short side 48-72 px.
SMALL = {"short_side": (48, 72)}
#: No image-wide filters, so every changed pixel comes from the objects.
LOCAL = {**SMALL, "blur_sigma": (0.0, 0.0), "jpeg_probability": 0.0}


def _styles(count=24):
    return make_category_styles(count, seed=0)


def procedural(num_images=6, seed=0, ranges=SMALL, **kwargs):
    return TransferSceneDataset(ProceduralShapes(_styles()), num_images=num_images, seed=seed,
                                oneshot_class_ids=range(1, 25, 4), ranges=ranges, **kwargs)


# --------------------------------------------------------------------------- independence
def _imports(module):
    """Package modules imported anywhere in ``module``'s source (function level included)."""
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    package = module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            base = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m.startswith("siamese_mask_rcnn")}


def _reachable(module):
    """Every package module ``module`` imports, directly or through others."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        path = PACKAGE.parent / (current.replace(".", "/") + ".py")
        if not path.exists():
            path = PACKAGE.parent / current.replace(".", "/") / "__init__.py"
            if not path.exists():
                continue
        if current in seen:
            continue
        seen.add(current)
        if path.name == "__init__.py":
            continue  # a package's __init__ is read by _imports only for real modules
        todo.extend(_imports(current))
    return seen - {module}


def test_composer_and_training_renderers_do_not_import_each_other():
    """Neither direction, directly or through other modules, at any level of the source."""
    assert not set(TRAINING_RENDERERS) & _reachable(COMPOSER), _reachable(COMPOSER)
    for renderer in TRAINING_RENDERERS:
        assert COMPOSER not in _reachable(renderer), renderer
    # the graph is read correctly: the training modules do reach each other
    assert "siamese_mask_rcnn.datasets.scenes" in _reachable("siamese_mask_rcnn.datasets.synthetic")


def test_importing_one_side_loads_nothing_of_the_other():
    code = ("import sys, importlib; importlib.import_module(sys.argv[1]); "
            "print(' '.join(m for m in sys.modules if m.startswith('siamese_mask_rcnn')))")
    loaded = subprocess.run([sys.executable, "-c", code, COMPOSER], capture_output=True, text=True,
                            check=True, cwd=ROOT).stdout.split()
    assert COMPOSER in loaded and not set(TRAINING_RENDERERS) & set(loaded), loaded
    for renderer in ("siamese_mask_rcnn.datasets.synthetic", "siamese_mask_rcnn.datasets.omniglot",
                      "siamese_mask_rcnn.datasets.randomised"):
        loaded = subprocess.run([sys.executable, "-c", code, renderer], capture_output=True, text=True,
                                check=True, cwd=ROOT).stdout.split()
        assert renderer in loaded and COMPOSER not in loaded, loaded


# --------------------------------------------------------------------------- COCO export
def _check_coco_export(dataset, tmp_path):
    from pycocotools.coco import COCO
    from PIL import Image

    path = dataset.export_coco(tmp_path / "transfer.json", image_dir=tmp_path / "images")
    coco = COCO(str(path))
    assert sorted(coco.getImgIds()) == list(dataset.image_ids)
    assert sorted(coco.getCatIds()) == list(range(1, dataset.num_classes))
    total = 0
    for image_id in dataset.image_ids:
        entry = coco.loadImgs([int(image_id)])[0]
        pixels = np.asarray(Image.open(tmp_path / "images" / entry["file_name"]))
        assert np.array_equal(pixels, dataset.load_image(image_id))
        assert (entry["height"], entry["width"]) == pixels.shape[:2]
        masks, class_ids = dataset.load_mask(image_id)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[int(image_id)]))
        assert len(anns) == len(class_ids) == masks.shape[2]
        covered = np.zeros(pixels.shape[:2], dtype=int)
        for ann, mask, class_id in zip(anns, np.moveaxis(masks, 2, 0), class_ids):
            decoded = coco.annToMask(ann).astype(bool)
            assert np.array_equal(decoded, mask)
            assert ann["category_id"] == class_id and ann["iscrowd"] == 0
            assert ann["area"] == decoded.sum() > 0
            x, y, w, h = ann["bbox"]
            ys, xs = np.nonzero(decoded)
            assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            covered += decoded
        assert covered.max() <= 1  # visible pixels: instances never overlap
        total += len(anns)
    assert total > 0
    return path


def test_procedural_scenes_export_valid_coco(tmp_path):
    _check_coco_export(procedural(num_images=4), tmp_path)


def test_omniglot_scenes_export_valid_coco(omniglot_dir, tmp_path):
    dataset = TransferSceneDataset(OmniglotGlyphs(omniglot_dir), num_images=4, seed=3, ranges=SMALL)
    path = _check_coco_export(dataset, tmp_path)
    # the export loads as any COCO-format dataset of the package
    from siamese_mask_rcnn.datasets.coco import OneShotCocoDataset

    loaded = OneShotCocoDataset()
    loaded.load_coco(annotation_file=str(path), image_dir=str(tmp_path / "images"))
    loaded.prepare()
    assert len(loaded.image_ids) == 4
    assert sum(len(loaded.instance_annotations(i)) for i in loaded.image_ids) == \
        sum(len(dataset.instance_annotations(i)) for i in dataset.image_ids)


@pytest.mark.parametrize("kind", ["procedural", "omniglot"])
def test_masks_are_the_pixels_each_instance_paints(kind, request):
    """Composing a scene without instance k changes its mask's pixels, and (anti-aliased
    edges and later objects aside) nothing else."""
    from scipy import ndimage

    if kind == "procedural":
        dataset = procedural(num_images=3, ranges=LOCAL)
    else:
        dataset = TransferSceneDataset(OmniglotGlyphs(request.getfixturevalue("omniglot_dir")),
                                       num_images=3, seed=1, ranges=LOCAL)
    checked = 0
    for image_id in dataset.image_ids:
        full = dataset.load_image(image_id).astype(int)
        masks, _ = dataset.load_mask(image_id)
        for k in range(masks.shape[2]):
            without, labels, _, _ = dataset.compose(image_id, skip_instance=k)
            changed = np.any(without.astype(int) != full, axis=2)
            mask = masks[:, :, k]
            later = masks[:, :, k + 1:].any(axis=2)
            assert np.array_equal(labels[:, :, None] == np.arange(1, masks.shape[2] + 1), masks)
            assert changed[mask].mean() >= 0.97, (image_id, k, changed[mask].mean())
            outside = changed & ~ndimage.binary_dilation(mask, structure=np.ones((3, 3))) & ~later
            assert outside.sum() <= 0.05 * mask.sum() + 2, (image_id, k, outside.sum(), mask.sum())
            checked += 1
    assert checked >= 5


# --------------------------------------------------------------------------- determinism
def test_same_seed_same_scenes_and_different_seeds_differ():
    a, b = procedural(num_images=4, seed=5), procedural(num_images=4, seed=5)
    for i in a.image_ids:
        assert np.array_equal(a.load_image(i), b.load_image(i))
        assert np.array_equal(a.load_mask(i)[0], b.load_mask(i)[0])
        assert a.instance_annotations(i) == b.instance_annotations(i)
        image, labels, class_ids, _ = a.compose(i)  # recomposing gives the stored scene
        assert np.array_equal(image, a.load_image(i)) and np.array_equal(class_ids, a.load_mask(i)[1])
    # a scene does not depend on how many scenes the dataset has
    more = procedural(num_images=6, seed=5)
    assert all(np.array_equal(more.load_image(i), a.load_image(i)) for i in a.image_ids)
    other = procedural(num_images=4, seed=6)
    assert not any(a.load_image(i).shape == other.load_image(i).shape
                   and np.array_equal(a.load_image(i), other.load_image(i)) for i in a.image_ids)
    assert a.to_coco_dict() != other.to_coco_dict()


def test_omniglot_scenes_are_deterministic(omniglot_dir):
    a = TransferSceneDataset(OmniglotGlyphs(omniglot_dir), num_images=2, seed=2, ranges=SMALL)
    b = TransferSceneDataset(OmniglotGlyphs(omniglot_dir), num_images=2, seed=2, ranges=SMALL)
    c = TransferSceneDataset(OmniglotGlyphs(omniglot_dir), num_images=2, seed=9, ranges=SMALL)
    assert json.dumps(a.to_coco_dict()) == json.dumps(b.to_coco_dict())
    assert all(np.array_equal(a.load_image(i), b.load_image(i)) for i in a.image_ids)
    assert a.to_coco_dict() != c.to_coco_dict()


# --------------------------------------------------------------------------- ranges
def test_rendering_ranges_are_wide():
    """Canvas size and aspect, background brightness and kind, object scale and image
    effects vary across scenes (the training scenes have one square size, mid-grey or light
    smooth backgrounds and no blur or JPEG)."""
    dataset = TransferSceneDataset(ProceduralShapes(_styles()), num_images=24, seed=0,
                                   ranges={"short_side": (40, 64), "distractors": (0, 2)})
    shapes = {dataset.load_image(i).shape[:2] for i in dataset.image_ids}
    assert len(shapes) >= 10 and any(h > w for h, w in shapes) and any(w > h for h, w in shapes)
    means = [dataset.load_image(i).mean() for i in dataset.image_ids]
    assert min(means) < 70 and max(means) > 170
    assert len({info["background"] for info in dataset.scene_info}) >= 4
    effects = [info["effects"] for info in dataset.scene_info]
    assert any(e["jpeg_quality"] for e in effects) and any(e["blur_sigma"] > 0 for e in effects)
    boxes = [a["bbox"] for i in dataset.image_ids for a in dataset.instance_annotations(i)]
    sides = [max(y2 - y1, x2 - x1) / min(dataset.load_image(i).shape[:2])
             for i in dataset.image_ids for (y1, x1, y2, x2) in
             (a["bbox"] for a in dataset.instance_annotations(i))]
    assert len(boxes) > 24 and max(sides) > 2.5 * min(sides)


def test_omniglot_strokes_take_any_brightness(omniglot_dir):
    """Dark and light strokes (the training scenes draw dark or saturated strokes on light
    paper only); strokes keep a contrast to their background."""
    dataset = TransferSceneDataset(OmniglotGlyphs(omniglot_dir), num_images=12, seed=0,
                                   ranges={**SMALL, "background_value": (12, 245)})
    stroke_means = []
    for i in dataset.image_ids:
        image = dataset.load_image(i).astype(float)
        masks, _ = dataset.load_mask(i)
        stroke_means += [image[masks[:, :, k]].mean() for k in range(masks.shape[2])]
    assert min(stroke_means) < 80 and max(stroke_means) > 170


def test_bad_settings_are_named(omniglot_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown composer range.*'canvas'"):
        procedural(ranges={"canvas": 3})
    with pytest.raises(ValueError, match="num_images"):
        procedural(num_images=-1)
    with pytest.raises(ValueError, match="1..24"):
        TransferSceneDataset(ProceduralShapes(_styles()), num_images=1, oneshot_class_ids=[30])
    with pytest.raises(FileNotFoundError, match="no Omniglot zip"):
        OmniglotGlyphs(tmp_path)
    with pytest.raises(ValueError, match="Atlantean/character99"):
        OmniglotGlyphs(omniglot_dir, categories=[("Atlantean", "character99")])
    assert set(DEFAULT_RANGES) >= {"short_side", "aspect", "background_value", "stroke_width",
                                   "object_scale", "distractors"}


# --------------------------------------------------------------------------- evaluation
def test_evaluation_scores_ground_truth_100_and_random_boxes_low():
    """The composer's scenes go through the one-shot protocol like any dataset: the
    ground truth scores AP50 = 1 for boxes and masks, the random-boxes baseline far less."""
    from siamese_mask_rcnn import evaluation

    dataset = procedural(num_images=10)
    classes = dataset.oneshot_class_ids
    truth = evaluation.evaluate(dataset, evaluation.ground_truth_predictor(dataset), classes,
                                progress=False)
    assert truth["n_pairs"] >= 5
    assert truth["map50_bbox"] == pytest.approx(1.0) and truth["map50_segm"] == pytest.approx(1.0)
    random = evaluation.evaluate(dataset, evaluation.random_boxes_predictor(dataset), classes,
                                 progress=False)
    assert random["n_pairs"] == truth["n_pairs"] and random["map50_bbox"] < 0.6


def test_every_scene_shares_a_category_with_its_neighbour():
    """Scenes 2j and 2j+1 hold the same one-shot category, so even few scenes give pairs
    with a reference in another scene."""
    dataset = procedural(num_images=6)
    for j in range(3):
        shared = set(dataset.image_categories[2 * j]) & set(dataset.image_categories[2 * j + 1])
        assert dataset.anchor(2 * j) in shared and shared <= set(range(1, 25))
        assert dataset.anchor(2 * j) in dataset.oneshot_class_ids


def test_like_an_in_distribution_dataset(omniglot_dir):
    """Same categories, names and held-out split as the dataset the model was trained on."""
    from siamese_mask_rcnn.datasets.omniglot import OmniglotOneShotDataset
    from siamese_mask_rcnn.datasets.synthetic import SyntheticOneShotDataset

    synthetic = SyntheticOneShotDataset(num_categories=16, num_images=2, image_size=64)
    like = transfer_dataset_like(synthetic, num_images=4, seed=1, ranges=SMALL)
    assert like.class_names == synthetic.class_names
    assert like.oneshot_class_ids == synthetic.oneshot_class_ids == [1, 5, 9, 13]
    present = {c for i in like.image_ids for c in like.load_mask(i)[1]}
    assert {like.anchor(i) for i in like.image_ids} <= present
    omniglot = OmniglotOneShotDataset(omniglot_dir, num_images=2, image_size=64)
    like = transfer_dataset_like(omniglot, num_images=2, seed=1, ranges=SMALL)
    assert like.class_names == omniglot.class_names
    assert like.oneshot_class_ids == omniglot.oneshot_class_ids
    with pytest.raises(ValueError, match="neither"):
        transfer_dataset_like(object())
    assert transfer.SOURCE == "transfer"
