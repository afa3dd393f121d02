"""Randomised rendering of the training scenes (siamese_mask_rcnn/datasets/randomised.py and
the ``rendering`` option of the procedural data and the demo). No TensorFlow."""
import numpy as np
import pytest

from siamese_mask_rcnn.datasets import randomised
from siamese_mask_rcnn.datasets.synthetic import (SyntheticOneShotDataset, make_train_val,
                                                  render_reference, rendering_options)
from siamese_mask_rcnn.datasets.synthetic_styles import make_category_styles


@pytest.mark.parametrize("kind", randomised.BACKGROUND_KINDS)
def test_every_background_kind_has_the_canvas_shape_and_range(kind):
    image = randomised.random_background(np.random.default_rng(3), 37, 53, kind=kind)
    assert image.shape == (37, 53, 3) and image.dtype == np.float32
    assert image.min() >= 0 and image.max() <= 255
    if kind == "flat":
        assert np.ptp(image.reshape(-1, 3), axis=0).max() == 0


def test_unknown_background_kind_is_named():
    with pytest.raises(ValueError, match="plaid"):
        randomised.random_background(np.random.default_rng(0), 8, 8, kind="plaid")


def test_backgrounds_span_dark_to_light_and_all_kinds_occur():
    rng = np.random.default_rng(0)
    means = [randomised.random_background(rng, 16, 16).mean() for _ in range(200)]
    assert min(means) < 40 and max(means) > 215


def test_outline_is_the_boundary_ring():
    mask = np.zeros((9, 9), dtype=bool)
    mask[2:7, 2:7] = True
    ring = randomised.outline(mask, 1)
    expected = mask.copy()
    expected[3:6, 3:6] = False
    np.testing.assert_array_equal(ring, expected)
    assert not (randomised.outline(mask, 2) & ~mask).any()
    assert randomised.outline(mask, 3).sum() == mask.sum()  # 5x5 square: all within 3 px
    assert not randomised.outline(mask, 0).any()  # no ring, not "erode until empty"
    full = np.ones((4, 5), dtype=bool)  # outside the image is background: the frame is the ring
    frame = full.copy()
    frame[1:-1, 1:-1] = False
    np.testing.assert_array_equal(randomised.outline(full, 1), frame)


def test_finish_keeps_the_geometry_and_changes_the_pixels():
    rng = np.random.default_rng(1)
    image = np.full((32, 48, 3), 120.0, dtype=np.float32)
    image[8:20, 10:30] = 30.0
    outs = [randomised.random_finish(image, rng, blur_probability=1.0, jpeg_probability=1.0)
            for _ in range(5)]
    for out in outs:
        assert out.shape == image.shape and out.dtype == np.uint8
        # the dark rectangle stays where it was
        assert out[10:18, 12:28].mean() < out[24:, :].mean()
    assert len({out.tobytes() for out in outs}) == 5


def test_rendering_options():
    assert rendering_options("paper") == {}
    options = rendering_options("randomised")
    assert options["randomise"] is True and options["radius_range"] == randomised.SCENE_OPTIONS["radius_range"]
    with pytest.raises(ValueError, match="watercolour"):
        rendering_options("watercolour")
    with pytest.raises(ValueError, match="watercolour"):
        make_train_val(num_categories=8, num_train=2, num_val=2, rendering="watercolour")


def test_paper_rendering_is_unchanged_by_the_option():
    plain = SyntheticOneShotDataset(num_categories=12, num_images=3, image_size=64, seed=5)
    named, _ = make_train_val(num_categories=12, num_train=3, num_val=0, image_size=64, seed=0,
                              rendering="paper")
    named_same_seed = SyntheticOneShotDataset(num_categories=12, num_images=3, image_size=64, seed=5,
                                              scene_options=rendering_options("paper"))
    for i in range(3):
        np.testing.assert_array_equal(plain.load_image(i), named_same_seed.load_image(i))
    assert named.scene_options == {}


def test_randomised_scenes_are_deterministic_with_masks_on_the_objects():
    train, val = make_train_val(num_categories=24, num_train=6, num_val=2, image_size=96, seed=2,
                                rendering="randomised")
    again, _ = make_train_val(num_categories=24, num_train=6, num_val=0, image_size=96, seed=2,
                              rendering="randomised")
    assert val.scene_options == train.scene_options and train.scene_options["randomise"]
    backgrounds = []
    for i in range(6):
        image = train.load_image(i)
        np.testing.assert_array_equal(image, again.load_image(i))
        masks, class_ids = train.load_mask(i)
        assert masks.shape[:2] == image.shape[:2] and len(class_ids) == masks.shape[2]
        assert not (masks.sum(axis=2) > 1).any()  # visible masks never overlap
        background = ~masks.any(axis=2)
        scene = train.scene(i)
        # every labelled pixel is annotated, nothing else
        np.testing.assert_array_equal(scene.labels > 0, ~background)
        backgrounds.append(image[background].mean())
    # the look varies from scene to scene much more than the paper renderer's mid-grey
    assert np.ptp(backgrounds) > 60


def test_randomised_reference_has_a_random_background_and_finish():
    style = make_category_styles(4, seed=0)[0]
    crops = [render_reference(style, np.random.default_rng(k), radius=12, randomise=True, return_mask=True)
             for k in range(8)]
    corners = [image[0, 0].astype(float).mean() for image, _ in crops]
    assert np.ptp(corners) > 60
    for image, mask in crops:
        assert image.shape[:2] == mask.shape and mask.any() and not mask[0, 0]
    plain = render_reference(style, np.random.default_rng(0), radius=12)
    assert abs(plain[0, 0].astype(float).mean() - 128) < 12  # neutral grey, as before


def test_dataset_references_follow_the_rendering():
    train, _ = make_train_val(num_categories=16, num_train=2, num_val=0, image_size=64, seed=0,
                              rendering="randomised")
    rng = np.random.default_rng(0)
    refs = train.sample_references(train.train_class_ids[0], 6, rng)
    assert np.ptp([ref[0, 0].astype(float).mean() for ref in refs]) > 30


def test_thicken_grows_by_whole_pixels():
    from siamese_mask_rcnn.datasets.omniglot import thicken

    mask = np.zeros((5, 5), dtype=bool)
    mask[2, 2] = True
    np.testing.assert_array_equal(thicken(mask, 0), mask)
    grown = thicken(mask, 1)
    assert grown.shape == (7, 7) and grown.sum() == 9 and grown[2:5, 2:5].all()
    assert thicken(mask, 2).sum() == 25


def test_contrasting_colour_has_the_contrast():
    from siamese_mask_rcnn.datasets.omniglot import contrasting_colour

    rng = np.random.default_rng(0)
    luma = np.array((0.299, 0.587, 0.114))
    for background in ((250, 250, 250), (5, 5, 5), (128, 90, 40)):
        for _ in range(20):
            colour = contrasting_colour(rng, background, min_contrast=60)
            assert abs(colour @ luma - np.asarray(background) @ luma) >= 60


def test_randomised_omniglot_scenes_and_references(omniglot_dir):
    from siamese_mask_rcnn.datasets.omniglot import RANDOMISED_SCENE_OPTIONS, OmniglotOneShotDataset

    plain = OmniglotOneShotDataset(omniglot_dir, num_images=4, image_size=96, seed=3)
    rand = OmniglotOneShotDataset(omniglot_dir, num_images=4, image_size=96, seed=3,
                                  scene_options=RANDOMISED_SCENE_OPTIONS)
    again = OmniglotOneShotDataset(omniglot_dir, num_images=4, image_size=96, seed=3,
                                   scene_options=RANDOMISED_SCENE_OPTIONS)
    backgrounds = []
    for i in range(4):
        image = rand.load_image(i)
        np.testing.assert_array_equal(image, again.load_image(i))
        masks, class_ids = rand.load_mask(i)
        assert len(class_ids) == masks.shape[2] > 0 and not (masks.sum(axis=2) > 1).any()
        backgrounds.append(image[~masks.any(axis=2)].mean())
        # the paper look: light backgrounds only
        assert plain.load_image(i)[~plain.load_mask(i)[0].any(axis=2)].mean() > 180
    assert min(backgrounds) < 150 or np.ptp(backgrounds) > 40
    rng = np.random.default_rng(1)
    refs = rand.sample_references(rand.train_class_ids[0], 6, rng)
    assert np.ptp([ref[0, 0].astype(float).mean() for ref in refs]) > 30


def test_demo_datasets_take_the_rendering_for_omniglot(omniglot_dir):
    from siamese_mask_rcnn.datasets.omniglot import RANDOMISED_SCENE_OPTIONS
    from siamese_mask_rcnn.demo import make_datasets

    train, val = make_datasets("omniglot", str(omniglot_dir), num_train=2, num_val=2, rendering="randomised")
    for ds in (train, val):
        assert all(ds.scene_options[k] == v for k, v in RANDOMISED_SCENE_OPTIONS.items())
    paper, _ = make_datasets("omniglot", str(omniglot_dir), num_train=2, num_val=2)
    assert paper.scene_options["randomise"] is False
    with pytest.raises(ValueError, match="'oil'"):
        make_datasets("omniglot", str(omniglot_dir), num_train=2, num_val=2, rendering="oil")


def test_applies_a_probability_per_call_and_fixed_choices_without_a_draw():
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert randomised.applies(rng, True) and not randomised.applies(rng, False)
    assert randomised.applies(rng, 1.0) and not randomised.applies(rng, 0)
    assert rng.bit_generator.state == state  # no draw for a fixed choice
    share = np.mean([randomised.applies(rng, 0.5) for _ in range(2000)])
    assert 0.45 < share < 0.55
    for bad in (1.5, -0.1, "often", "0.5", None):
        with pytest.raises(ValueError, match="randomise"):
            randomised.applies(rng, bad)


def test_mixed_rendering_randomises_about_half_of_the_scenes(monkeypatch):
    calls = []
    original = randomised.random_background
    monkeypatch.setattr(randomised, "random_background", lambda *a, **k: calls.append(1) or original(*a, **k))
    train, _ = make_train_val(num_categories=24, num_train=60, num_val=0, image_size=48, seed=0,
                              rendering="mixed")
    assert 0 < train.scene_options["randomise"] < 1
    scenes = len(calls)  # one randomised background per randomised scene, counted at indexing
    assert 18 <= scenes <= 42, scenes
    rng = np.random.default_rng(0)
    train.sample_references(train.train_class_ids[0], 60, rng)
    assert 18 <= len(calls) - scenes <= 42


def test_omniglot_thickening_option_grows_the_strokes(omniglot_dir):
    from siamese_mask_rcnn.datasets.omniglot import RANDOMISED_SCENE_OPTIONS, OmniglotOneShotDataset

    areas = {}
    for thickening in (0, 2):
        ds = OmniglotOneShotDataset(omniglot_dir, num_images=6, image_size=96, seed=4,
                                    scene_options={**RANDOMISED_SCENE_OPTIONS, "thickening": thickening})
        areas[thickening] = np.mean([ds.load_mask(i)[0].sum(axis=(0, 1)).mean() for i in range(6)])
    assert RANDOMISED_SCENE_OPTIONS["thickening"] == 0
    assert areas[2] > 1.3 * areas[0]


def test_omniglot_stroke_threshold_option_thins_the_strokes(omniglot_dir):
    """A higher coverage threshold draws thinner strokes; the default (a single value) draws
    nothing, so default scenes are unchanged; a range outside (0, 1) is refused at once."""
    from siamese_mask_rcnn.datasets.omniglot import RANDOMISED_SCENE_OPTIONS, OmniglotOneShotDataset

    def scenes(**extra):
        return OmniglotOneShotDataset(omniglot_dir, num_images=6, image_size=96, seed=4,
                                      scene_options={**RANDOMISED_SCENE_OPTIONS, **extra})

    default, explicit = scenes(), scenes(stroke_threshold=(0.3, 0.3))
    for i in range(6):
        np.testing.assert_array_equal(default.load_image(i), explicit.load_image(i))
    ink = {}
    for name, ds in {"default": default, "thin": scenes(stroke_threshold=(0.8, 0.9))}.items():
        ink[name] = np.mean([ds.load_mask(i)[0].sum(axis=(0, 1)).mean() for i in range(6)])
    assert ink["thin"] < 0.8 * ink["default"]
    for bad in [(0.0, 0.5), (0.6, 0.4), (0.5, 1.0), "thin", ("0.3", "0.8"), {0.3, 0.8}, (True, 0.5), (0.5,)]:
        with pytest.raises(ValueError, match="stroke_threshold"):
            scenes(stroke_threshold=bad)
