"""Images are read as displayed, in every mode PIL can open (issue: bad input).

Every reader (``utils.read_image``, hence ``Dataset.load_image`` for training and evaluation
images, the COCO dataset, and ``predict``'s query and reference files) applies the EXIF
orientation and converts each PIL mode to its true RGB rendering.
"""
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from siamese_mask_rcnn.mrcnn import utils

RNG = np.random.default_rng(0)
SOURCE = Image.fromarray((RNG.random((9, 13, 3)) * 255).astype(np.uint8))
WIDE = (RNG.random((9, 13)) * 65535).astype(np.uint16)


def _wide_image(mode):
    if mode == "I;16B":
        return Image.frombytes(mode, (13, 9), WIDE.astype(">u2").tobytes())
    if mode == "I":
        return Image.fromarray(WIDE.astype(np.int32))
    return Image.fromarray(WIDE)


def _expected(path):
    """The true RGB rendering of the file, computed independently of the reader."""
    with Image.open(path) as image:
        image.load()
        mode = image.mode
        if mode.startswith("I;16") or mode == "I":
            grey = np.clip(np.asarray(image, dtype=np.float64), 0, 65535) / 65535 * 255
            return np.repeat(grey.round().astype(np.uint8)[..., None], 3, axis=2), mode
        if mode == "F":
            grey = np.asarray(image, dtype=np.float64)
            grey = grey * 255 if grey.max() <= 1 else grey
            return np.repeat(np.clip(grey, 0, 255).round().astype(np.uint8)[..., None], 3, axis=2), mode
        if mode == "LAB":
            transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"),
                                                "LAB", "RGB")
            return np.asarray(ImageCms.applyTransform(image, transform)), mode
        return np.asarray(image.convert("RGB")), mode


# (mode the file is written in, format, mode PIL opens it in)
MODES = [("1", "png", "1"), ("L", "png", "L"), ("LA", "png", "LA"), ("P", "png", "P"), ("PA", "tiff", "PA"),
         ("RGB", "png", "RGB"), ("RGBA", "png", "RGBA"), ("CMYK", "tiff", "CMYK"), ("CMYK", "jpg", "CMYK"),
         ("YCbCr", "tiff", "YCbCr"), ("LAB", "tiff", "LAB"), ("I;16", "png", "I;16"), ("I;16B", "png", "I;16"),
         ("I;16", "tiff", "I;16"), ("I", "tiff", "I"), ("F", "tiff", "F"), ("P", "gif", "P"),
         ("RGB", "bmp", "RGB"), ("RGB", "webp", "RGB"), ("L", "jpg", "L")]


@pytest.mark.parametrize("mode, fmt, opened", MODES, ids=[f"{m}-{f}" for m, f, _ in MODES])
def test_every_mode_reads_as_its_true_rgb(tmp_path, mode, fmt, opened):
    if mode.startswith("I"):
        image = _wide_image(mode)
    elif mode == "F":
        image = Image.fromarray(RNG.random((9, 13)).astype(np.float32), mode="F")
    else:
        image = SOURCE.convert(mode)
    path = tmp_path / f"image.{fmt}"
    image.save(path)
    expected, mode_on_disk = _expected(path)
    assert mode_on_disk == opened  # the file really is in the mode under test
    result = utils.read_image(str(path))
    assert result.dtype == np.uint8 and result.shape == (9, 13, 3)
    np.testing.assert_array_equal(result, expected)
    if mode_on_disk not in ("1", "L", "I", "F") and not mode_on_disk.startswith("I;16"):
        assert len({result[..., c].tobytes() for c in range(3)}) > 1 or mode_on_disk in ("LA", "P")


def test_palette_and_cmyk_are_not_read_as_raw_channels(tmp_path):
    """The reader applies the palette and the CMYK transform (index or ink values would differ)."""
    SOURCE.convert("P").save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as handle:
        indices = np.asarray(handle)
    result = utils.read_image(str(tmp_path / "p.png"))
    assert not np.array_equal(result[..., 0], indices)
    SOURCE.convert("CMYK").save(tmp_path / "c.tiff")
    np.testing.assert_array_equal(utils.read_image(str(tmp_path / "c.tiff")), np.asarray(SOURCE.convert("CMYK")
                                                                                          .convert("RGB")))


def _rotated_jpeg(path, orientation):
    """A JPEG stored 12 high x 24 wide: a white block in the stored top-left corner."""
    stored = np.zeros((12, 24, 3), np.uint8)
    stored[:6, :8] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, quality=100, exif=exif)
    return stored


def test_exif_orientation_6_gives_the_displayed_frame(tmp_path):
    path = tmp_path / "rotated.jpg"
    stored = _rotated_jpeg(path, 6)   # 6: rotate 90° clockwise to display
    image = utils.read_image(str(path))
    assert image.shape == (24, 12, 3)  # displayed: 24 high, 12 wide
    displayed = np.rot90(stored, k=-1)
    assert np.abs(image.astype(int) - displayed.astype(int)).max() < 40  # JPEG noise only
    assert image[:8, -6:].mean() > 200 and image[-8:, :6].mean() < 50  # block now top-right


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pil_transpose(tmp_path, orientation):
    path = tmp_path / f"o{orientation}.jpg"
    _rotated_jpeg(path, orientation)
    with Image.open(path) as handle:
        expected = np.asarray(ImageOps.exif_transpose(handle).convert("RGB"))
    result = utils.read_image(str(path))
    np.testing.assert_array_equal(result, expected)
    assert result.shape[:2] == ((24, 12) if orientation >= 5 else (12, 24))


def test_every_reader_applies_the_orientation(tmp_path):
    """Dataset images (training, evaluation), COCO images, and predict's inputs."""
    from siamese_mask_rcnn.predict import read_user_image

    path = tmp_path / "rotated.jpg"
    _rotated_jpeg(path, 6)
    dataset = utils.Dataset()
    dataset.add_image("files", 1, str(path))
    dataset.prepare()
    assert dataset.load_image(0).shape == (24, 12, 3)
    assert read_user_image(path, "query").shape == (24, 12, 3)
    assert read_user_image(path, "reference").shape == (24, 12, 3)


def test_coco_size_check_names_the_exif_orientation(tmp_path):
    import json

    from siamese_mask_rcnn.datasets.coco import ImageSizeError, OneShotCocoDataset

    (tmp_path / "img").mkdir()
    _rotated_jpeg(tmp_path / "img" / "a.jpg", 6)
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 24, "height": 12}],  # the stored frame
            "categories": [{"id": 1, "name": "thing"}], "annotations": []}
    (tmp_path / "a.json").write_text(json.dumps(data))
    ds = OneShotCocoDataset()
    ds.load_coco(annotation_file=str(tmp_path / "a.json"), image_dir=str(tmp_path / "img"))
    ds.prepare()
    with pytest.raises(ImageSizeError, match=r"a\.jpg: .* gives 24x12 .* the image is 12x24 as displayed "
                                             r"\(EXIF orientation 6; stored 24x12\)"):
        ds.load_image(0)
