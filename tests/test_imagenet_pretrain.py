"""ImageNet(-687) backbone pre-training (``samples/imagenet/pretrain_backbone.py`` →
``siamese_mask_rcnn.imagenet_pretrain``): the shipped class list, folder scanning with
missing classes and unreadable images, a few training steps on a generated ImageNet-format
folder, resumption, and the written backbone filling every backbone layer of a Siamese model."""
import logging
import os
import re

import numpy as np
import pytest
from PIL import Image

from siamese_mask_rcnn import imagenet_pretrain as ip

CLASSES = ["n01440764", "n01443537", "n01484850"]


def test_shipped_imagenet_687_list():
    ids = ip.read_class_list("imagenet-687")
    assert len(ids) == 687 and len(set(ids)) == 687
    assert all(re.fullmatch(r"n\d{8}", i) for i in ids)
    assert os.path.isfile(os.path.join(ip.DATA_DIR, "LICENSE-imagenet-subsets"))
    assert "MIT License" in open(os.path.join(ip.DATA_DIR, "LICENSE-imagenet-subsets")).read()
    import setuptools  # noqa: F401 - the list is declared as package data
    setup_text = open(os.path.join(os.path.dirname(ip.__file__), "..", "setup.py")).read()
    assert "data/imagenet-687.txt" in setup_text and "LICENSE-imagenet-subsets" in setup_text


def test_bad_class_lists(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("n01440764\ncat\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: 'cat'"):
        ip.read_class_list(str(bad))
    bad.write_text("n01440764\n\nn01440764\n")
    with pytest.raises(ValueError, match="repeats line 1"):
        ip.read_class_list(str(bad))
    with pytest.raises(FileNotFoundError, match="nothere.txt"):
        ip.read_class_list(str(tmp_path / "nothere.txt"))


def make_folder(root, classes, per_class=4, size=(48, 40), seed=0):
    rng = np.random.default_rng(seed)
    for k, wnid in enumerate(classes):
        os.makedirs(root / wnid, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, size=(size[1], size[0], 3), dtype=np.uint8)
            pixels[..., k % 3] += 150  # a class-coloured image
            Image.fromarray(pixels).save(root / wnid / f"{wnid}_{i}.JPEG")
    return root


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = make_folder(tmp_path_factory.mktemp("imagenet") / "train", CLASSES)
    (root / CLASSES[0] / "broken.JPEG").write_bytes(b"not an image")
    os.makedirs(root / "n09999999")  # an unlisted class: ignored
    Image.new("RGB", (8, 8)).save(root / "n09999999" / "x.png")
    return root


def test_scan_reports_missing_classes(image_folder, caplog):
    listed = CLASSES + ["n00000001", "n00000002"]
    with caplog.at_level(logging.WARNING):
        files, labels, classes = ip.scan_image_folder(str(image_folder), listed)
    assert classes == CLASSES and len(files) == 13 and sorted(set(labels)) == [0, 1, 2]
    assert not any("n09999999" in f for f in files)
    assert "2 of 5 listed classes have no folder" in caplog.text
    with pytest.raises(ValueError, match="none of the 2 listed classes"):
        ip.scan_image_folder(str(image_folder), ["n00000001", "n00000002"])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ip.scan_image_folder(str(image_folder / "nowhere"), CLASSES)


def test_pipeline_augments_and_skips_unreadable(image_folder, caplog):
    files, labels, _ = ip.scan_image_folder(str(image_folder), CLASSES)
    counter = ip.UnreadableImages()
    with caplog.at_level(logging.WARNING):
        batches = list(ip.make_dataset(files, labels, 32, 4, training=False, counter=counter))
    images = np.concatenate([b[0].numpy() for b in batches])
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.float32
    assert counter.count == 1 and counter.examples[0][0].endswith("broken.JPEG")
    assert "broken.JPEG" in caplog.text
    train = ip.make_dataset(files, labels, 32, 4, training=True, seed=1, counter=counter)
    first, second = [b[0].numpy() for b in train.take(2)]
    assert first.shape == (4, 32, 32, 3) and not np.allclose(first, second)
    assert ip.learning_rate_at(0, 90, 0.1) == pytest.approx(0.1)
    assert ip.learning_rate_at(60, 90, 0.1) == pytest.approx(0.001)
    assert ip.learning_rate_at(89, 90, 0.1) == pytest.approx(0.0001)


def test_pretrain_resume_and_load_into_siamese(image_folder, tmp_path, capsys):
    from siamese_mask_rcnn.demo import demo_config
    from siamese_mask_rcnn.mrcnn import weights as W
    from siamese_mask_rcnn.siamese import SiameseMaskRCNN

    class_file = tmp_path / "classes.txt"
    class_file.write_text("\n".join(CLASSES + ["n00000001"]) + "\n")
    out = tmp_path / "run"
    argv = ["--data-dir", str(image_folder), "--classes", str(class_file), "--backbone", "tiny",
            "--image-size", "64", "--batch-size", "4", "--epochs", "1", "--steps-per-epoch", "2",
            "--out", str(out), "--quiet"]
    result = ip.main(argv)
    assert result["step"] == 2 and result["classes"] == CLASSES
    assert result["unreadable"] >= 1
    assert np.isfinite(result["history"][0]["loss"])
    backbone_file = result["backbone_file"]
    assert os.path.isfile(backbone_file) and os.path.isdir(out / "checkpoints")
    first = W.read_h5_weights(backbone_file)
    assert "imagenet_fc" not in first  # the classification head is not part of the backbone

    # resume: two more epochs continue from step 2
    resumed = ip.main(argv[:-7] + ["--epochs", "2", "--steps-per-epoch", "2", "--out", str(out), "--quiet"])
    assert resumed["step"] == 4 and [h["epoch"] for h in resumed["history"]] == [2]
    second = W.read_h5_weights(backbone_file)
    assert not np.array_equal(dict(first["tiny_conv1"])["kernel"], dict(second["tiny_conv1"])["kernel"])

    # every backbone layer of a Siamese model is filled from the file, by name
    model = SiameseMaskRCNN("inference", demo_config(IMAGES_PER_GPU=1), model_dir=str(tmp_path / "logs"))
    report = model.load_weights(backbone_file, by_name=True)
    backbone_layers = {name for name, _ in W.iter_weighted_layers(model.keras_model)
                       if name.startswith("tiny_")}
    assert backbone_layers and set(report.loaded) == backbone_layers == set(second)
    assert not report.skipped and not report.unused_in_file
    flat = dict(W.iter_weighted_layers(model.keras_model))
    for name in backbone_layers:
        arrays = dict(second[name])
        for variable in flat[name].weights:
            np.testing.assert_array_equal(variable.numpy(), arrays[variable.name], err_msg=name)

    # user errors: exit code 2 and a message
    with pytest.raises(SystemExit) as exit_info:
        ip.main(["--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "x"), "--quiet"])
    assert exit_info.value.code == 2 and "image folder not found" in capsys.readouterr().err


def test_resnet50_backbone_file_has_matterport_names(matterport_layout_dir, tmp_path):
    """A ResNet-50 classifier (built, not trained) writes exactly the backbone layers of
    matterport's COCO model, with their shapes."""
    import json
    from siamese_mask_rcnn.mrcnn import weights as W
    _, backbone = ip.build_classifier("resnet50", 687, 64)
    W.save_weights_by_name(backbone, tmp_path / "r50.h5")
    written = W.read_h5_weights(tmp_path / "r50.h5")
    manifest = json.loads((matterport_layout_dir / "matterport_resnet50_coco_manifest.json").read_text())
    expected = {layer["name"]: [tuple(w["shape"]) for w in layer["weights"]]
                for layer in manifest["layers"]
                if re.fullmatch(r"(conv1|bn_conv1|res\d\w+_branch\w+|bn\d\w+_branch\w+)", layer["name"])}
    assert set(written) == set(expected)
    for name, weights in written.items():
        assert [tuple(a.shape) for _, a in weights] == expected[name], name
