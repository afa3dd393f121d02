"""Plain Mask R-CNN on COCO (``samples/coco/coco.py`` → ``siamese_mask_rcnn.coco_maskrcnn``):
the paper's schedule and settings, two training steps of a tiny model on the real COCO subset,
the ground truth scoring 100 AP50 with COCOeval in the annotation file's own ids, and
matterport's ResNet-50 COCO weight layout loading with no mismatch and evaluating."""
import json

import numpy as np
import pytest

from siamese_mask_rcnn import coco_maskrcnn as cm


def subset_args(coco_subset_dir, *extra, train=False):
    ann = str(coco_subset_dir / "annotations" / "instances_val2017_subset.json")
    images = str(coco_subset_dir / "images")
    prefix = "--train" if train else "--val"
    return [f"{prefix}-annotations", ann, f"{prefix}-images", images, *extra]


def test_paper_schedule_and_config():
    stages = cm.schedule_stages()
    assert [(s.layers, s.until_epoch) for s in stages] == [("heads", 1), ("all", 240), ("all", 320)]
    assert [s.learning_rate for s in stages] == pytest.approx([0.02, 0.02, 0.002])
    config = cm.coco_config("paper")
    assert config.NUM_CLASSES == 81 and config.BACKBONE == "resnet50"
    assert config.LEARNING_RATE == 0.02 and config.LEARNING_MOMENTUM == 0.9
    assert config.WEIGHT_DECAY == 1e-4 and config.GRADIENT_CLIP_NORM == 5.0
    assert config.IMAGES_PER_GPU == 3 and list(config.IMAGE_SHAPE) == [1024, 1024, 3]
    assert set(config.LOSS_WEIGHTS.values()) == {1.0}  # matterport's, not the Siamese ones
    assert not getattr(config, "FPN_RELU", False)
    assert cm.coco_config("paper", GPU_COUNT=4).BATCH_SIZE == 12
    args = cm.build_parser().parse_args(["train", "--dataset", ".", "--model", "none"])
    assert args.steps_per_epoch * args.total_epochs == 320_000
    with pytest.raises(ValueError, match="backbone"):
        cm.coco_config("paper", "vgg")


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "none"], "--dataset"),
    (["train", "--dataset", ".", "--model", "gt"], "cannot be trained"),
    (["evaluate", "--dataset", ".", "--model", "missing.h5"], "missing.h5"),
    (["evaluate", "--dataset", ".", "--model", "imagenet"], "--imagenet-weights"),
    (["train", "--dataset", ".", "--model", "none", "--gpus", "0"], "--gpus"),
])
def test_cli_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cm.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_ground_truth_scores_100_ap50(coco_subset_dir, tmp_path):
    summary = cm.main(["evaluate", "--model", "gt", "--quiet", "--out", str(tmp_path / "ev"),
                       *subset_args(coco_subset_dir)])
    assert summary["images"] == 10
    assert summary["bbox"]["AP50"] == pytest.approx(100.0)
    assert summary["segm"]["AP50"] == pytest.approx(100.0)
    assert summary["segm"]["AP"] == pytest.approx(100.0)
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    data = json.loads((coco_subset_dir / "annotations" / "instances_val2017_subset.json").read_text())
    non_crowd = [a for a in data["annotations"] if not a.get("iscrowd")]
    assert len(results) == len(non_crowd)
    # the annotation file's own (non-contiguous) ids, not internal ones
    assert {r["image_id"] for r in results} <= {i["id"] for i in data["images"]}
    assert sorted(r["category_id"] for r in results) == sorted(a["category_id"] for a in non_crowd)
    assert max(r["category_id"] for r in results) > 80


def test_evaluation_penalises_wrong_categories(coco_subset_dir):
    ann = coco_subset_dir / "annotations" / "instances_val2017_subset.json"
    dataset = cm.load_coco_dataset(annotation_file=str(ann), image_dir=str(coco_subset_dir / "images"))
    gt = cm.ground_truth_predictor(dataset)

    def shifted(image, image_id):
        r = gt(image, image_id)
        return {**r, "class_ids": (r["class_ids"] % 80) + 1}   # every category wrong
    outcome = cm.evaluate_coco(dataset, shifted, ann, limit=4, progress=False)
    assert outcome["images"] == 4 and outcome["bbox"]["AP50"] < 1.0


def test_train_two_steps_tiny(coco_subset_dir, tmp_path):
    out = cm.main(["train", "--model", "none", "--backbone", "tiny", "--logs", str(tmp_path),
                   "--images-per-gpu", "1", "--steps-per-epoch", "2", "--validation-steps", "0",
                   "--heads-epochs", "0", "--all-epochs", "1", "--total-epochs", "1", "--quiet",
                   *subset_args(coco_subset_dir, train=True)])
    assert out["epoch"] == 1 and len(out["history"]) == 1
    losses = out["history"][0]
    assert np.isfinite(losses["loss"]) and losses["loss"] > 0
    checkpoint = tmp_path / out["log_dir"].split("/")[-1] / "mask_rcnn_coco_0001.h5"
    assert checkpoint.is_file()
    # the checkpoint evaluates through the same command line
    summary = cm.main(["evaluate", "--model", str(checkpoint), "--backbone", "tiny", "--limit", "1",
                       "--quiet", "--logs", str(tmp_path), "--out", str(tmp_path / "ev"),
                       *subset_args(coco_subset_dir)])
    assert summary["images"] == 1 and not summary["report"].missing_in_file


def tame_kernels(h5_path):
    """Rescale every kernel of a random file to variance 1/fan_in (values stay random), so
    activations stay finite through the 50 layers of ResNet-50."""
    import h5py

    def visit(name, node):
        if isinstance(node, h5py.Dataset) and name.endswith("kernel:0"):
            values = node[...]
            fan_in = int(np.prod(values.shape[:-1]))
            node[...] = values / (values.std() + 1e-12) / np.sqrt(fan_in)
    with h5py.File(h5_path, "r+") as handle:
        handle.visititems(visit)


def test_matterport_resnet50_coco_weights_load_and_evaluate(coco_subset_dir, matterport_layout_dir,
                                                            tmp_path):
    from siamese_mask_rcnn.mrcnn import weights as W
    from h5_fixtures import write_manifest_h5
    h5 = write_manifest_h5(matterport_layout_dir / "matterport_resnet50_coco_manifest.json",
                             tmp_path / "mask_rcnn_coco_r50.h5", seed=1)
    tame_kernels(h5)
    summary = cm.main(["evaluate", "--model", str(h5), "--backbone", "resnet50", "--image-size", "256",
                       "--limit", "1", "--quiet", "--logs", str(tmp_path), "--out", str(tmp_path / "ev"),
                       *subset_args(coco_subset_dir)])
    report = summary["report"]
    assert not report.skipped and not report.missing_in_file and not report.unused_in_file
    assert report.n_arrays == 384
    assert summary["images"] == 1 and 0.0 <= summary["bbox"]["AP50"] <= 100.0
    assert (tmp_path / "ev" / "summary.json").is_file()
