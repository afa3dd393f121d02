"""Tests of the procedural one-shot dataset (siamese_mask_rcnn.datasets.synthetic)."""
import math
import pickle

import numpy as np
import pytest

from siamese_mask_rcnn.datasets import synthetic as syn
from siamese_mask_rcnn.datasets import synthetic_styles as styles_mod
from siamese_mask_rcnn.mrcnn import utils


@pytest.fixture(scope="module")
def dataset():
    return syn.SyntheticOneShotDataset(num_categories=400, num_images=60, seed=3)


def _style(family, shape, pattern="solid", pattern_params=None,
           primary=(200, 30, 30), secondary=(30, 30, 200)):
    return styles_mod.CategoryStyle(class_id=1, name="test", family=family, shape=shape,
                                    primary=primary, secondary=secondary, pattern=pattern,
                                    pattern_params=pattern_params or {}, signature=("test",))


# ---------------------------------------------------------------------------- categories
def test_category_styles_are_unique_deterministic_and_varied():
    styles = styles_mod.make_category_styles(400, seed=0)
    assert [s.class_id for s in styles] == list(range(1, 401))
    assert len({s.signature for s in styles}) == 400
    assert len({s.name for s in styles}) == 400
    assert {s.family for s in styles} == set(styles_mod.SHAPE_FAMILIES)
    assert {s.pattern for s in styles} == set(styles_mod.PATTERNS)
    again = styles_mod.make_category_styles(400, seed=0)
    assert [s.name for s in again] == [s.name for s in styles]
    other = styles_mod.make_category_styles(400, seed=1)
    assert sum(a.name != b.name for a, b in zip(styles, other)) > 300
    # Solid categories have one colour; others two different colours.
    for s in styles:
        assert (s.primary == s.secondary) == (s.pattern == "solid")


def test_make_category_styles_rejects_zero():
    with pytest.raises(ValueError, match="num_categories"):
        styles_mod.make_category_styles(0)


def test_shape_masks_match_hand_computed_points():
    # A square (4 sides, vertex at angle 0) with circumradius 1 is the diamond |u|+|v| <= 1.
    square = _style("polygon", {"sides": 4, "phase": 0.0})
    u = np.array([0.0, 0.95, 0.45, 0.55, 0.0])
    v = np.array([0.0, 0.0, 0.45, 0.55, -0.9])
    assert styles_mod.shape_mask(square, u, v).tolist() == [True, True, True, False, True]
    ring = _style("ring", {"sides": 0, "hole": 0.5, "phase": 0.0})
    assert styles_mod.shape_mask(ring, np.array([0.0, 0.3, 0.6, 0.99, 1.01]), np.zeros(5)).tolist() == \
        [False, False, True, True, False]
    cross = _style("cross", {"width": 0.3, "length": 0.9})
    assert styles_mod.shape_mask(cross, np.array([0.0, 0.8, 0.5, 0.0, 0.95]),
                          np.array([0.8, 0.0, 0.5, 0.0, 0.0])).tolist() == [True, True, False, True, False]
    crescent = _style("crescent", {"offset": 0.5, "bite": 0.8})
    # (-0.9, 0) is in the disc and 1.4 away from the bite centre; (0.3, 0) is bitten off.
    assert styles_mod.shape_mask(crescent, np.array([-0.9, 0.3]), np.zeros(2)).tolist() == [True, False]
    glyph = _style("glyph", {"segments": (((0.0, -0.75), (0.0, 0.75)),), "width": 0.2})
    assert styles_mod.shape_mask(glyph, np.array([0.0, 0.5, 0.9]), np.array([0.1, 0.3, 0.0])).tolist() == \
        [True, False, True]


def test_patterns_match_hand_computed_points():
    halves = _style("polygon", {"sides": 4, "phase": 0.0}, "halves", {"angle": 0.0})
    assert styles_mod.pattern_mask(halves, np.array([0.2, -0.2]), np.zeros(2)).tolist() == [True, False]
    # Horizontal-direction stripes with 1 period per unit: sin(2*pi*u) >= 0 on [0, 0.5].
    stripes = _style("polygon", {"sides": 4, "phase": 0.0}, "stripes", {"freq": 1.0, "angle": 0.0})
    assert styles_mod.pattern_mask(stripes, np.array([0.25, 0.75]), np.zeros(2)).tolist() == [True, False]
    dots = _style("polygon", {"sides": 4, "phase": 0.0}, "dots", {"freq": 1.0, "radius": 0.2})
    # Dots (secondary colour, False) sit on the integer grid.
    assert styles_mod.pattern_mask(dots, np.array([0.0, 1.0, 0.5]), np.array([0.0, 0.1, 0.5])).tolist() == \
        [False, False, True]


def test_render_instance_area_and_colours():
    ring = _style("ring", {"sides": 0, "hole": 0.5, "phase": 0.0})
    pose = syn.InstancePose(cy=50.0, cx=60.0, radius=20.0, angle=0.3, stretch=1.0,
                            brightness=1.0, colour_shift=(0.0, 0.0, 0.0))
    y0, x0, mask, colours = syn.render_instance(ring, pose, 128, 128)
    expected = math.pi * 20 ** 2 * (1 - 0.5 ** 2)  # 942.5 px
    assert abs(mask.sum() - expected) / expected < 0.03
    ys, xs = np.nonzero(mask)
    assert abs((ys + y0).mean() + 0.5 - 50) < 0.5 and abs((xs + x0).mean() + 0.5 - 60) < 0.5
    assert np.all(colours[mask] == np.array([200, 30, 30], dtype=np.float32))
    # Clipped at the canvas border: nothing is drawn outside the canvas.
    pose.cx = 2.0
    y0, x0, mask, _ = syn.render_instance(ring, pose, 128, 128)
    assert x0 == 0 and 0 < mask.sum() < expected


# ---------------------------------------------------------------------------- scenes
def test_scene_masks_are_the_visible_parts_of_the_rendered_instances():
    styles = styles_mod.make_category_styles(50, seed=0)
    by_id = {s.class_id: s for s in styles}
    checked_occlusion = False
    for index in range(15):
        scene = syn.generate_scene(styles, np.random.default_rng([7, index]), image_size=128,
                                   min_visible_area=40, min_visible_fraction=0.5)
        masks = scene.masks()
        n = len(scene.class_ids)
        assert masks.shape == (128, 128, n) and n >= 1
        assert masks.sum(axis=2).max() <= 1                       # visible parts never overlap
        poses = scene.info["poses"]
        full = np.zeros((128, 128, n), dtype=bool)
        colours = np.zeros((128, 128, n, 3), dtype=np.float32)
        for k, (class_id, pose) in enumerate(zip(scene.class_ids, poses)):
            y0, x0, m, c = syn.render_instance(by_id[int(class_id)], pose, 128, 128)
            full[y0:y0 + m.shape[0], x0:x0 + m.shape[1], k] = m
            colours[y0:y0 + m.shape[0], x0:x0 + m.shape[1], k] = c
        for k in range(n):
            later = full[:, :, k + 1:].any(axis=2)
            # Exact occlusion: visible = own pixels not covered by any later instance.
            np.testing.assert_array_equal(masks[:, :, k], full[:, :, k] & ~later)
            checked_occlusion |= bool((full[:, :, k] & later).any())
            area = masks[:, :, k].sum()
            assert area >= 40 and area >= 0.5 * full[:, :, k].sum()
            # The image shows the instance's colours there (up to the pixel noise).
            diff = np.abs(scene.image[masks[:, :, k]].astype(np.float32) - colours[:, :, k][masks[:, :, k]])
            assert diff.mean() < 5 and diff.max() < 30
    assert checked_occlusion, "no scene had an occluded instance; the test lost its purpose"


def test_dataset_masks_annotations_and_bboxes(dataset):
    total = 0
    for image_id in dataset.image_ids[:20]:
        image = dataset.load_image(image_id)
        masks, class_ids = dataset.load_mask(image_id)
        anns = dataset.instance_annotations(image_id)
        assert image.dtype == np.uint8 and image.shape == (128, 128, 3)
        assert masks.dtype == bool and masks.shape[:2] == (128, 128)
        assert class_ids.dtype == np.int32 and len(class_ids) == masks.shape[2] == len(anns)
        assert np.all(masks.reshape(-1, masks.shape[2]).sum(0) > 0)
        assert masks.sum(axis=2).max() <= 1
        boxes = utils.extract_bboxes(masks)
        for ann, box, class_id, k in zip(anns, boxes, class_ids, range(len(anns))):
            assert ann["class_id"] == class_id and ann["iscrowd"] is False
            assert tuple(ann["bbox"]) == tuple(box)
            assert ann["area"] == masks[:, :, k].sum()
        total += len(anns)
    assert total > 60


def test_determinism_same_seed_same_scene_other_seed_other_scene(dataset):
    twin = syn.SyntheticOneShotDataset(num_categories=400, num_images=5, seed=3)
    other = syn.SyntheticOneShotDataset(num_categories=400, num_images=5, seed=4)
    for image_id in range(5):
        np.testing.assert_array_equal(twin.load_image(image_id), dataset.load_image(image_id))
        m1, c1 = twin.load_mask(image_id)
        m2, c2 = dataset.load_mask(image_id)
        np.testing.assert_array_equal(m1, m2)
        np.testing.assert_array_equal(c1, c2)
        assert not np.array_equal(other.load_image(image_id), dataset.load_image(image_id))
    # Regenerating after the cache is emptied gives the same scene.
    image = dataset.load_image(0)
    dataset._scene_cache.clear()
    np.testing.assert_array_equal(dataset.load_image(0), image)


def test_scene_statistics_follow_the_plan():
    styles = styles_mod.make_category_styles(100, seed=0)
    counts, classes_per_scene = [], []
    for index in range(40):
        scene = syn.generate_scene(styles, np.random.default_rng([1, index]))
        counts.append(len(scene.class_ids))
        classes_per_scene.append(len(set(scene.class_ids.tolist())))
    # At most 2 x 3 present + 5 distractors; placements may fail but rarely all.
    assert max(counts) <= 11 and min(counts) >= 2
    assert np.mean(counts) > 4
    assert max(classes_per_scene) <= 7


# ---------------------------------------------------------------------------- split
def test_split_every_fourth_category_is_held_out(dataset):
    assert dataset.oneshot_class_ids == list(range(1, 401, 4))
    assert len(dataset.train_class_ids) == 300
    assert not set(dataset.train_class_ids) & set(dataset.oneshot_class_ids)
    split3 = syn.SyntheticOneShotDataset(num_categories=40, num_images=2, split=3)
    assert split3.oneshot_class_ids == [3, 7, 11, 15, 19, 23, 27, 31, 35, 39]
    explicit = syn.SyntheticOneShotDataset(num_categories=10, num_images=2, oneshot_class_ids=[2, 9])
    assert explicit.oneshot_class_ids == [2, 9]
    assert explicit.train_class_ids == [1, 3, 4, 5, 6, 7, 8, 10]
    with pytest.raises(ValueError, match="split"):
        syn.SyntheticOneShotDataset(num_categories=10, num_images=2, split=5)
    with pytest.raises(ValueError, match="radius_rnage"):
        syn.SyntheticOneShotDataset(num_categories=10, num_images=2,
                                    scene_options={"radius_rnage": (0.1, 0.2)})


def test_held_out_categories_are_never_reference_categories_in_training(dataset):
    oneshot = set(dataset.oneshot_class_ids)
    # Held-out categories do appear in the training scenes (as unlabelled clutter).
    assert any(set(cats) & oneshot for cats in dataset.image_categories.values())
    drawn = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        for image_id in dataset.image_ids:
            class_id = dataset.sample_reference_class(image_id, rng)
            if class_id is None:
                continue
            assert class_id not in oneshot and class_id in dataset.train_class_ids
            ref, info = dataset.sample_reference(class_id, rng, exclude_image_id=image_id,
                                                 return_info=True)
            assert info["class_id"] == class_id and info["rendered"] and not info["same_image"]
            assert ref.dtype == np.uint8 and ref.ndim == 3 and ref.shape[2] == 3
            masks, labels = dataset.load_class_gt(image_id, class_id)
            _, class_ids = dataset.load_mask(image_id)
            assert masks.shape[2] == int(np.sum(class_ids == class_id)) >= 1
            drawn += 1
    assert drawn > 200
    # Evaluation draws held-out categories when asked to.
    rng = np.random.default_rng(0)
    picks = [dataset.sample_reference_class(i, rng, class_ids=dataset.oneshot_class_ids)
             for i in dataset.image_ids]
    picks = [p for p in picks if p is not None]
    assert picks and set(picks) <= oneshot


def test_present_pool_restricts_present_categories():
    ds = syn.SyntheticOneShotDataset(num_categories=40, num_images=30, present_class_ids="oneshot")
    oneshot = set(ds.oneshot_class_ids)
    with_oneshot = sum(bool(set(ds.image_categories[i]) & oneshot) for i in ds.image_ids)
    assert with_oneshot >= 27
    # A present category has 1-3 instances; distractors have exactly one instance each,
    # so a training category never has more than one instance in these scenes.
    for i in ds.image_ids:
        _, class_ids = ds.load_mask(i)
        for c in set(class_ids.tolist()) - oneshot:
            assert np.sum(class_ids == c) == 1
    with pytest.raises(ValueError, match="present_class_ids"):
        syn.SyntheticOneShotDataset(num_categories=10, num_images=1, present_class_ids="all")


# ---------------------------------------------------------------------------- references
def test_rendered_reference_is_tight_on_neutral_background():
    style = styles_mod.make_category_styles(5, seed=0)[2]
    image, mask = syn.render_reference(style, np.random.default_rng(0), radius=14, margin=3,
                                       return_mask=True)
    ys, xs = np.nonzero(mask)
    assert (ys.min(), xs.min()) == (3, 3)
    assert (ys.max(), xs.max()) == (mask.shape[0] - 4, mask.shape[1] - 4)
    assert 24 <= max(mask.shape) <= 2 * 14 * 1.2 + 6 + 2
    background = image[~mask].astype(np.float32)
    assert np.abs(background - 128).mean() < 3
    assert np.abs(image[mask].astype(np.float32) - 128).mean() > 20


def test_references_vary_but_keep_the_category_colours(dataset):
    rng = np.random.default_rng(1)
    refs = dataset.sample_references(10, 3, rng)
    assert len(refs) == 3 and not all(r.shape == refs[0].shape and np.array_equal(r, refs[0])
                                      for r in refs[1:])
    style = dataset.style(10)
    for ref in refs:
        pixels = ref.reshape(-1, 3).astype(np.float32)
        near = np.minimum(np.abs(pixels - np.array(style.primary)).max(1),
                          np.abs(pixels - np.array(style.secondary)).max(1))
        assert np.mean(near < 40) > 0.25
    with pytest.raises(ValueError, match="unknown class id"):
        dataset.sample_reference(401, rng)


def test_crop_references_when_rendering_is_off():
    ds = syn.SyntheticOneShotDataset(num_categories=20, num_images=30, render_references=False)
    rng = np.random.default_rng(0)
    class_id = next(c for c in ds.train_class_ids if len(ds.category_index.get(c, [])) > 1)
    image_id = ds.category_index[class_id][0]
    crop, info = ds.sample_reference(class_id, rng, exclude_image_id=image_id, return_info=True)
    assert info["image_id"] != image_id and not info.get("rendered", False)
    y1, x1, y2, x2 = info["bbox"]
    np.testing.assert_array_equal(crop, ds.load_image(info["image_id"])[y1:y2, x1:x2])


# ---------------------------------------------------------------------------- helpers
def test_make_train_val_shares_categories_not_scenes():
    train, val = syn.make_train_val(num_categories=30, num_train=4, num_val=3, seed=0)
    assert train.class_names == val.class_names
    assert train.oneshot_class_ids == val.oneshot_class_ids == list(range(1, 31, 4))
    assert len(train.image_ids) == 4 and len(val.image_ids) == 3
    assert not np.array_equal(train.load_image(0), val.load_image(0))


def test_coco_export_and_pickle(dataset):
    coco = dataset.to_coco_dict(image_ids=[0, 1, 2])
    expected = sum(len(dataset.instance_annotations(i)) for i in (0, 1, 2))
    assert len(coco["annotations"]) == expected
    first = coco["annotations"][0]
    y1, x1, y2, x2 = dataset.instance_annotations(first["image_id"])[0]["bbox"]
    assert first["bbox"] == [x1, y1, x2 - x1, y2 - y1]
    clone = pickle.loads(pickle.dumps(dataset))
    np.testing.assert_array_equal(clone.load_image(4), dataset.load_image(4))
    assert "synthetic scene 4" in dataset.image_reference(4)


def _modules_loaded_by(imports, candidates):
    """Which of ``candidates`` a fresh interpreter has loaded after ``import imports``."""
    import subprocess
    import sys
    code = (f"import sys\nimport {imports}\n"
            f"print([m for m in {list(candidates)!r} if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_scene_machinery_and_omniglot_do_not_import_the_synthetic_categories():
    """The generic scene dataset (``datasets.scenes``) and Omniglot stand alone: importing
    them loads neither the procedural dataset, its category styles, the COCO module nor
    TensorFlow; the procedural dataset does not need the COCO module either."""
    pkg = "siamese_mask_rcnn.datasets"
    assert _modules_loaded_by(f"{pkg}.scenes, {pkg}.omniglot",
                              [f"{pkg}.synthetic", f"{pkg}.synthetic_styles", f"{pkg}.coco",
                               "tensorflow"]) == "[]"
    assert _modules_loaded_by(f"{pkg}.synthetic", [f"{pkg}.coco", "tensorflow"]) == "[]"
