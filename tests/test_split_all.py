"""``--split all`` (paper Table 1, Siamese row): no held-out categories; all 80 COCO
categories are training categories, and evaluation covers every category present.
On the real COCO subset, through the logic of ``samples/coco/train_siamese.py`` and
``evaluate_siamese.py`` (``siamese_mask_rcnn.train_coco`` and ``siamese_mask_rcnn.evaluation.cli``)."""
import argparse
import json

import pytest

from siamese_mask_rcnn.datasets import coco as C


def test_split_all_values():
    assert C.split_positions("all") == []
    oneshot, background = C.split_class_names("all")
    assert oneshot == [] and background == list(C.COCO_CLASS_NAMES)
    assert C.parse_split("all") == "all" and C.parse_split("ALL") == "all"
    assert C.parse_split("3") == 3 and C.split_label("all") == "all" and C.split_label(2) == "S2"
    for bad in ("0", "5", "none", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="invalid split"):
            C.parse_split(bad)
    with pytest.raises(ValueError, match="'all'"):
        C.OneShotCocoDataset().set_split("every")


def test_dataset_split_all_trains_on_every_category(coco_subset_annotations, coco_subset_dir):
    dataset = C.OneShotCocoDataset()
    dataset.load_coco(annotation_file=str(coco_subset_annotations),
                      image_dir=str(coco_subset_dir / "images"))
    dataset.set_split("all")
    dataset.prepare()
    assert len(dataset.train_class_ids) == 80 and dataset.oneshot_class_ids == []
    split1 = C.OneShotCocoDataset()
    split1.load_coco(annotation_file=str(coco_subset_annotations),
                     image_dir=str(coco_subset_dir / "images"))
    split1.set_split(1)
    split1.prepare()
    # every pair of S1's training and held-out sets is a training pair of "all"
    pairs_all = set(dataset.query_class_pairs())
    assert pairs_all == set(split1.query_class_pairs()) | set(split1.query_class_pairs(split1.oneshot_class_ids))
    assert set(split1.query_class_pairs()) < pairs_all


def test_train_siamese_split_all(coco_subset_annotations, coco_subset_dir, tmp_path, project_root,
                                 capsys):
    from siamese_mask_rcnn import train_coco as cli
    images = str(coco_subset_dir / "images")
    argv = ["--train-annotations", str(coco_subset_annotations), "--train-images", images,
            "--split", "all", "--backbone", "tiny", "--images-per-gpu", "1",
            "--steps-per-epoch", "1", "--validation-steps", "0", "--heads-epochs", "0",
            "--all-epochs", "1", "--total-epochs", "1", "--logs", str(tmp_path), "--quiet"]
    args = cli.build_parser().parse_args(argv)
    assert args.split == "all"
    train, _ = cli.load_datasets(args)
    assert len(train.train_class_ids) == 80 and train.oneshot_class_ids == []
    out = cli.main(argv)
    assert out["epoch"] == 1
    assert "split all: 80 training categories, 0 held out" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(argv[:4] + ["--split", "5"])


def test_evaluate_siamese_split_all_covers_present_categories(coco_subset_annotations, coco_subset_dir,
                                                              tmp_path, project_root, capsys):
    from siamese_mask_rcnn.evaluation import cli
    summary = cli.main(["--annotations", str(coco_subset_annotations), "--images",
                        str(coco_subset_dir / "images"), "--split", "all", "--model", "gt",
                        "--quiet", "--out", str(tmp_path / "ev")])
    assert list(summary) == ["ground truth (all categories)"]
    row = summary["ground truth (all categories)"]
    data = json.loads(coco_subset_annotations.read_text())
    present = {a["category_id"] for a in data["annotations"] if not a.get("iscrowd")}
    evaluated_coco_ids = {int(c["id"]) for c in data["categories"]
                          if C.COCO_CLASS_NAMES.index(c["name"]) + 1 in row["class_ids"]}
    # every present category with a reference in another image is evaluated, whatever S1..S4 says
    dataset = C.OneShotCocoDataset()
    dataset.load_coco(annotation_file=str(coco_subset_annotations),
                      image_dir=str(coco_subset_dir / "images"))
    dataset.prepare()
    expected = {dataset.get_source_class_id(cid, "coco") for image_id, cid in dataset.query_class_pairs()
                if any(other != image_id for other in dataset.category_index[cid])}
    assert expected <= present
    assert evaluated_coco_ids == expected and len(expected) >= 5
    for split in (1, 2, 3, 4):
        held_out = set(C.split_positions(split))
        assert held_out & set(row["class_ids"]) and set(row["class_ids"]) - held_out
    assert row["map50_bbox"] == pytest.approx(1.0) and row["map50_segm"] == pytest.approx(1.0)
    assert "split all" in capsys.readouterr().out
