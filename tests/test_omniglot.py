"""Tests of the Omniglot one-shot data source on the real archives in ../shared/data/omniglot."""
import zipfile

import numpy as np
import pytest

from siamese_mask_rcnn.datasets import omniglot as omni
from siamese_mask_rcnn.mrcnn import utils

# Characters per alphabet in images_background_small1.zip / small2.zip (Greek and Latin
# are in both archives, byte-identical).
EXPECTED_CHARACTERS = {
    "Balinese": 24, "Early_Aramaic": 22, "Greek": 24, "Korean": 40, "Latin": 26,
    "Japanese_(katakana)": 47, "Sanskrit": 42, "Tagalog": 17,
}


@pytest.fixture(scope="module")
def dataset(omniglot_dir):
    return omni.OmniglotOneShotDataset(omniglot_dir, num_images=40, seed=0)


# ---------------------------------------------------------------------------- reading
def test_missing_directory_gives_a_clear_error(tmp_path):
    missing = tmp_path / "no_such_omniglot"
    with pytest.raises(FileNotFoundError, match="no_such_omniglot"):
        omni.OmniglotOneShotDataset(missing, num_images=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no Omniglot zip archive.*empty"):
        omni.find_archives(empty)


def test_bad_archives_are_named(tmp_path):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="broken.zip"):
        omni.index_archives([bad])
    unrelated = tmp_path / "other.zip"
    with zipfile.ZipFile(unrelated, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="other.zip"):
        omni.index_archives([unrelated])


def test_parse_member():
    assert omni.parse_member("images_background_small1/Latin/character01/0683_07.png") == \
        ("Latin", "character01", 7)
    assert omni.parse_member("images_background/Japanese_(katakana)/character47/0990_20.png") == \
        ("Japanese_(katakana)", "character47", 20)
    assert omni.parse_member("images_background_small1/Latin/character01/") is None
    assert omni.parse_member("images_background_small1/Latin/") is None


def test_archives_are_indexed_with_correct_counts(omniglot_dir):
    archives = omni.find_archives(omniglot_dir)
    assert [p.name for p in archives] == ["images_background_small1.zip", "images_background_small2.zip"]
    images, per_archive = omni.index_archives(archives)
    # 5 alphabet folders per archive, 10 in all; Greek and Latin are in both -> 8 distinct.
    assert [len(a) for a in per_archive.values()] == [5, 5]
    assert sorted(sum(per_archive.values(), [])).count("Greek") == 2
    alphabets = sorted({a for a, _ in images})
    assert alphabets == sorted(EXPECTED_CHARACTERS)
    for alphabet, count in EXPECTED_CHARACTERS.items():
        assert sum(a == alphabet for a, _ in images) == count
    assert len(images) == 242
    for drawers in images.values():
        assert sorted(drawers) == list(range(1, 21))


def test_glyphs_decode_as_thin_strokes(dataset):
    path, name = dataset._files[("Latin", "character01")][7]
    with zipfile.ZipFile(path) as archive:
        strokes = omni.decode_glyph(archive.read(name), name)
    assert strokes.shape == (105, 105) and strokes.dtype == bool
    assert 0.01 < strokes.mean() < 0.2      # ink is a small part of the white page
    glyph = dataset.glyph(dataset.class_names.index("Latin/character01"), 7)
    np.testing.assert_array_equal(glyph, omni.crop_to_strokes(strokes))
    with pytest.raises(ValueError, match="drawer 21"):
        dataset.glyph(1, 21)


def test_transform_glyph_scales_the_longer_side():
    strokes = np.zeros((60, 40), dtype=bool)
    strokes[:, 18:22] = True                # a vertical bar, 60 px long and 4 px wide
    small = omni.transform_glyph(strokes, 30)
    assert small.shape[0] == 30 and 1 <= small.shape[1] <= 4
    assert small.all(axis=1).all()          # the bar stays connected along its length
    rotated = omni.transform_glyph(strokes, 30, angle_deg=90)
    assert rotated.shape[1] >= 28 and rotated.shape[0] <= 5


# ---------------------------------------------------------------------------- split
def test_split_by_alphabet(dataset, omniglot_dir):
    assert dataset.alphabets == sorted(EXPECTED_CHARACTERS)
    # Every 4th alphabet starting at the 1st: Balinese (1st) and Korean (5th).
    assert dataset.oneshot_alphabets == ["Balinese", "Korean"]
    names = dataset.class_names
    assert len(dataset.oneshot_class_ids) == 24 + 40
    assert len(dataset.train_class_ids) == 242 - 64
    assert all(names[c].split("/")[0] in ("Balinese", "Korean") for c in dataset.oneshot_class_ids)
    assert all(names[c].split("/")[0] not in ("Balinese", "Korean") for c in dataset.train_class_ids)
    other = omni.OmniglotOneShotDataset(omniglot_dir, num_images=2, oneshot_alphabets=["Tagalog"])
    assert len(other.oneshot_class_ids) == 17
    with pytest.raises(ValueError, match="Klingon"):
        omni.OmniglotOneShotDataset(omniglot_dir, num_images=1, oneshot_alphabets=["Klingon"])


def test_held_out_alphabets_are_never_reference_categories_in_training(dataset):
    oneshot = set(dataset.oneshot_class_ids)
    assert any(set(c) & oneshot for c in dataset.image_categories.values())
    drawn = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        for image_id in dataset.image_ids:
            class_id = dataset.sample_reference_class(image_id, rng)
            if class_id is None:
                continue
            assert class_id not in oneshot
            _, info = dataset.sample_reference(class_id, rng, image_id, return_info=True)
            assert info["class_id"] == class_id
            drawn += 1
    assert drawn > 100


# ---------------------------------------------------------------------------- scenes
def test_scenes_have_right_categories_and_visible_stroke_masks(dataset):
    names = dataset.class_names
    for image_id in dataset.image_ids[:20]:
        image = dataset.load_image(image_id)
        masks, class_ids = dataset.load_mask(image_id)
        anns = dataset.instance_annotations(image_id)
        n = len(class_ids)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        assert n >= 2 and masks.shape == (128, 128, n) and len(anns) == n
        assert np.all(masks.reshape(-1, n).sum(0) > 0)
        assert masks.sum(axis=2).max() <= 1
        boxes = utils.extract_bboxes(masks)
        assert [tuple(a["bbox"]) for a in anns] == [tuple(b) for b in boxes]
        description = dataset.image_reference(image_id)
        assert all(names[c] in description for c in class_ids)
        # Strokes are dark or saturated (min channel <= ~80), the page is light (>= ~190),
        # and every stroke on the page belongs to an annotated instance.
        low = image.min(axis=2)
        union = masks.any(axis=2)
        assert low[union].max() < 110
        assert low[~union].min() > 150
        for k in range(n):
            assert image[masks[:, :, k]].astype(np.float32).std(axis=0).max() < 10  # one colour
        # Instances of one character in a scene are by different drawers.
        drawers = dataset.scene_drawers(image_id)
        for c in set(class_ids.tolist()):
            same = [d for d, cc in zip(drawers, class_ids) if cc == c]
            assert len(same) == len(set(same))


def test_instance_sizes_follow_the_size_range(dataset):
    # The visible strokes of an isolated (unoccluded) instance have the size of the
    # drawing scaled to 20-38 % of the scene side.
    scene = dataset.scene(3)
    for k, class_id in enumerate(scene.class_ids):
        ys, xs = np.nonzero(scene.labels == k + 1)
        longer = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
        assert 0.2 * 128 - 3 <= longer <= 0.38 * 128 * 1.45 + 2


def test_references_are_by_another_drawer(dataset):
    rng = np.random.default_rng(0)
    checked = 0
    for image_id in dataset.image_ids:
        for class_id in dataset.image_categories[int(image_id)]:
            ref, info = dataset.sample_reference(class_id, rng, image_id, return_info=True)
            used = dataset.scene_drawers(image_id, class_id)
            assert used and info["drawer"] not in used
            assert info["drawer"] in dataset.drawers[class_id]
            assert ref.dtype == np.uint8 and ref.shape[2] == 3
            corners = ref[[0, 0, -1, -1], [0, -1, 0, -1]].astype(np.float32)
            assert np.all(np.abs(corners - 240) < 12)          # plain light background
            assert ref.min() < 60                               # dark strokes
            checked += 1
    assert checked > 100


def test_determinism(dataset, omniglot_dir):
    twin = omni.OmniglotOneShotDataset(omniglot_dir, num_images=3, seed=0)
    other = omni.OmniglotOneShotDataset(omniglot_dir, num_images=3, seed=1)
    for image_id in range(3):
        np.testing.assert_array_equal(twin.load_image(image_id), dataset.load_image(image_id))
        np.testing.assert_array_equal(twin.load_mask(image_id)[0], dataset.load_mask(image_id)[0])
        assert not np.array_equal(other.load_image(image_id), dataset.load_image(image_id))
