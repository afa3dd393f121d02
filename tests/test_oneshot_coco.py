"""One-shot dataset layer and COCO splits (spec §3, §4; paper §3, §5.1, Table 3)."""
import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from siamese_mask_rcnn.datasets.base import OneShotDataset
from siamese_mask_rcnn.datasets.coco import (COCO_CLASS_NAMES, OneShotCocoDataset,
                                             split_class_names, split_positions)
from siamese_mask_rcnn.mrcnn import utils

# Paper, Appendix, Table 3 (typed from the table, lower-cased to COCO's spelling; the
# paper's "Tennis rocket" is COCO's "tennis racket" and its "TV" is COCO's "tv").
TABLE3 = {
    1: ["person", "airplane", "boat", "parking meter", "dog", "elephant", "backpack",
        "suitcase", "sports ball", "skateboard", "wine glass", "spoon", "sandwich", "hot dog",
        "chair", "dining table", "mouse", "microwave", "refrigerator", "scissors"],
    2: ["bicycle", "bus", "traffic light", "bench", "horse", "bear", "umbrella", "frisbee",
        "kite", "surfboard", "cup", "bowl", "orange", "pizza", "couch", "toilet", "remote",
        "oven", "book", "teddy bear"],
    3: ["car", "train", "fire hydrant", "bird", "sheep", "zebra", "handbag", "skis",
        "baseball bat", "tennis racket", "fork", "banana", "broccoli", "donut",
        "potted plant", "tv", "keyboard", "toaster", "clock", "hair drier"],
    4: ["motorcycle", "truck", "stop sign", "cat", "cow", "giraffe", "tie", "snowboard",
        "baseball glove", "bottle", "knife", "apple", "carrot", "cake", "bed", "laptop",
        "cell phone", "sink", "vase", "toothbrush"],
}

# pycocotools' decode triggers numpy 2's "__array__ copy keyword" deprecation
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CROWD_COCO_BBOX = [358, 187, 55, 27]          # the subset's one crowd RLE (a person)
CROWD_YXYX = (187, 358, 214, 413)


def _silent(fn, *args, **kwargs):
    """Call a pycocotools function with its prints swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def _load(annotations, image_dir, split=None, min_size=None):
    ds = OneShotCocoDataset()
    if min_size is not None:
        ds.REFERENCE_MIN_SIZE = min_size
    ds.load_coco(annotation_file=str(annotations), image_dir=str(image_dir))
    if split is not None:
        ds.set_split(split)
    ds.prepare()
    return ds


@pytest.fixture()
def coco_ds(coco_subset_annotations, coco_subset_dir):
    return _load(coco_subset_annotations, coco_subset_dir / "images")


@pytest.fixture()
def coco_ds16(coco_subset_annotations, coco_subset_dir):
    """The subset with a 16 px minimum reference size set by the user."""
    return _load(coco_subset_annotations, coco_subset_dir / "images", min_size=16)


@pytest.fixture(scope="module")
def raw_coco(coco_subset_annotations):
    return _silent(COCO, str(coco_subset_annotations))


def _internal_image(ds, coco_image_id):
    return [i for i, info in enumerate(ds.image_info) if info["id"] == coco_image_id][0]


def _cls(ds, name):
    return ds.class_names.index(name)


# ---------------------------------------------------------------- splits
def test_class_names_order_and_file_agree(coco_subset_annotations):
    assert len(COCO_CLASS_NAMES) == 80
    assert COCO_CLASS_NAMES[0] == "person" and COCO_CLASS_NAMES[-1] == "toothbrush"
    cats = json.load(open(coco_subset_annotations))["categories"]
    assert [c["name"] for c in sorted(cats, key=lambda c: c["id"])] == list(COCO_CLASS_NAMES)


def test_split_positions():
    assert split_positions(1)[:3] == [1, 5, 9] and split_positions(1)[-1] == 77
    assert split_positions(4)[-1] == 80
    assert all(len(split_positions(s)) == 20 for s in (1, 2, 3, 4))
    assert split_positions(2, num_categories=10) == [2, 6, 10]
    assert split_positions(3, num_categories=2) == []
    for bad in (0, 5, -1, 1.5, "1", None, True):
        with pytest.raises(ValueError, match="split"):
            split_positions(bad)


@pytest.mark.parametrize("split", [1, 2, 3, 4])
def test_split_tables_equal_paper_table3(split):
    oneshot, background = split_class_names(split)
    assert oneshot == TABLE3[split]
    assert len(background) == 60 and not set(background) & set(oneshot)
    assert set(background) | set(oneshot) == set(COCO_CLASS_NAMES)


def test_splits_partition_all_80_categories():
    held_out = [n for s in (1, 2, 3, 4) for n in split_class_names(s)[0]]
    assert len(held_out) == 80 and set(held_out) == set(COCO_CLASS_NAMES)


@pytest.mark.parametrize("split", [1, 2, 3, 4])
def test_dataset_split_by_position_matches_table3(coco_ds, split):
    coco_ds.set_split(split)
    assert [coco_ds.class_names[c] for c in coco_ds.oneshot_class_ids] == TABLE3[split]
    assert len(coco_ds.train_class_ids) == 60
    assert set(coco_ds.train_class_ids) | set(coco_ds.oneshot_class_ids) == set(range(1, 81))
    # COCO ids are not 1..80: 'toothbrush' has COCO id 90 but internal id / position 80
    assert coco_ds.get_source_class_id(80, "coco") == 90


def test_set_split_before_prepare_is_applied(coco_subset_annotations, coco_subset_dir):
    ds = _load(coco_subset_annotations, coco_subset_dir / "images", split=3)
    assert [ds.class_names[c] for c in ds.oneshot_class_ids] == TABLE3[3]


def test_unknown_split_and_missing_file_errors(coco_ds, tmp_path, coco_subset_dir):
    with pytest.raises(ValueError, match="7"):
        coco_ds.set_split(7)
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        OneShotCocoDataset().load_coco(annotation_file=str(missing),
                                       image_dir=str(coco_subset_dir / "images"))
    with pytest.raises(FileNotFoundError, match="instances_train2014.json"):
        OneShotCocoDataset().load_coco(str(tmp_path), "train", year="2014")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        OneShotCocoDataset().load_coco(annotation_file=str(bad), image_dir=str(tmp_path))


def test_matterport_path_convention(tmp_path, coco_subset_annotations, coco_subset_dir):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_bytes(
        coco_subset_annotations.read_bytes())
    (tmp_path / "val2017").symlink_to(coco_subset_dir / "images")
    ds = OneShotCocoDataset()
    coco = ds.load_coco(str(tmp_path), "val", return_coco=True)
    ds.prepare()
    assert isinstance(coco, COCO) and len(coco.getImgIds()) == 10 == ds.num_images
    assert ds.load_image(0).shape == (640, 480, 3)          # image 74646 is 480 wide, 640 high
    assert ds.image_reference(0) == "http://images.cocodataset.org/val2017/000000074646.jpg"


def test_set_class_split_validation(coco_ds):
    with pytest.raises(ValueError, match=r"\[5\].*airplane"):
        coco_ds.set_class_split([1, 5, 6], [5, 9])
    with pytest.raises(ValueError, match="81"):
        coco_ds.set_class_split([1, 81], [2])
    with pytest.raises(ValueError, match="0"):
        coco_ds.set_class_split([0], [2])
    coco_ds.set_class_split([3, 1], [2])
    assert coco_ds.train_class_ids == [1, 3] and coco_ds.oneshot_class_ids == [2]
    assert OneShotCocoDataset().train_class_ids == []


# ---------------------------------------------------------------- annotations and index
def test_instance_annotations_bbox_conversion(coco_ds):
    img = _internal_image(coco_ds, 176857)
    ann = [a for a in coco_ds.instance_annotations(img) if a["annotation_id"] == 51885][0]
    # COCO bbox [217.33, 139.78, 46.51, 81.39] -> y1=140, x1=217, y2=221.17->221, x2=263.84->264
    assert ann["bbox"] == (140, 217, 221, 264)
    assert ann["class_id"] == _cls(coco_ds, "cat") == 16 and ann["iscrowd"] is False
    crowd_img = _internal_image(coco_ds, 193245)
    crowd = [a for a in coco_ds.instance_annotations(crowd_img) if a["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["bbox"] == CROWD_YXYX and crowd[0]["class_id"] == 1


def test_index_hand_computed(coco_ds16, coco_ds):
    ids = {coco: _internal_image(coco_ds16, coco) for coco in
           (74646, 86956, 166563, 176857, 182202, 193245, 424349)}
    assert coco_ds16.category_index[_cls(coco_ds16, "elephant")] == [ids[166563]]
    assert coco_ds16.category_index[_cls(coco_ds16, "person")] == sorted(
        ids[i] for i in (74646, 86956, 176857, 193245, 424349))
    # 176857's two cell phones are both < 16 px: present there, but not a reference source
    phone = _cls(coco_ds16, "cell phone")
    assert coco_ds16.category_index[phone] == [ids[182202]]
    assert phone in coco_ds16.image_categories[ids[176857]]
    assert coco_ds16.skipped_small[phone] == 2
    assert coco_ds16.num_crowd == 1
    assert coco_ds16.image_categories[ids[166563]] == [_cls(coco_ds16, "elephant")]
    assert len(coco_ds16.category_index) == 18
    assert len(coco_ds16.unreferenceable_class_ids) == 80 - 18
    assert _cls(coco_ds16, "toothbrush") in coco_ds16.unreferenceable_class_ids
    # the default (paper §5.2, the release): no minimum size, every non-crowd instance is a
    # reference source, so 176857's small phones are too
    assert OneShotCocoDataset.REFERENCE_MIN_SIZE == 0 and coco_ds.REFERENCE_MIN_SIZE == 0
    assert coco_ds.category_index[phone] == [ids[176857], ids[182202]]
    assert coco_ds.skipped_small == {} and coco_ds.num_crowd == 1
    assert coco_ds.category_index[_cls(coco_ds, "person")] == coco_ds16.category_index[
        _cls(coco_ds16, "person")]  # the crowd person (193245) still never counts alone
    assert len(coco_ds.category_index) == 18


def test_index_agrees_with_raw_json(coco_ds, raw_coco):
    for image_id in coco_ds.image_ids:
        info = coco_ds.image_info[image_id]
        anns = raw_coco.loadAnns(raw_coco.getAnnIds(imgIds=[info["id"]]))
        present = sorted({coco_ds.map_source_class_id(f"coco.{a['category_id']}")
                          for a in anns if not a["iscrowd"]})
        assert coco_ds.image_categories[image_id] == present
        for a in anns:
            x, y, w, h = a["bbox"]
            usable = not a["iscrowd"] and min(round(y + h) - round(y),
                                              round(x + w) - round(x)) >= coco_ds.REFERENCE_MIN_SIZE
            cid = coco_ds.map_source_class_id(f"coco.{a['category_id']}")
            if usable:
                assert image_id in coco_ds.category_index[cid]


def test_min_size_policy_reports_unreferenceable(coco_subset_annotations, coco_subset_dir):
    ds = OneShotCocoDataset()
    ds.REFERENCE_MIN_SIZE = 10_000
    ds.load_coco(annotation_file=str(coco_subset_annotations),
                 image_dir=str(coco_subset_dir / "images"))
    ds.prepare()
    assert ds.category_index == {} and len(ds.unreferenceable_class_ids) == 80
    assert ds.sample_reference_class(0, np.random.default_rng(0)) is None
    with pytest.raises(ValueError, match="person.*no usable reference"):
        ds.sample_reference(1, np.random.default_rng(0))


# ---------------------------------------------------------------- samplers
@pytest.mark.parametrize("split", [1, 2, 3, 4])
def test_reference_class_sampler_never_returns_held_out(coco_ds, split):
    coco_ds.set_split(split)
    rng = np.random.default_rng(split)
    seen = set()
    for _ in range(40):
        for image_id in coco_ds.image_ids:
            c = coco_ds.sample_reference_class(image_id, rng)
            if c is None:
                assert not set(coco_ds.image_categories[image_id]) & (
                    set(coco_ds.train_class_ids) & set(coco_ds.category_index))
                continue
            assert c in coco_ds.train_class_ids and c not in coco_ds.oneshot_class_ids
            assert c in coco_ds.image_categories[image_id] and c in coco_ds.category_index
            seen.add(c)
    expected = {c for cats in coco_ds.image_categories.values() for c in cats
                if c in coco_ds.train_class_ids and c in coco_ds.category_index}
    assert seen == expected          # every eligible background category gets drawn


def test_reference_class_sampler_hand_cases(coco_ds):
    coco_ds.set_split(1)     # person, elephant, chair, dining table, mouse held out
    rng = np.random.default_rng(0)
    assert coco_ds.sample_reference_class(_internal_image(coco_ds, 166563), rng) is None
    img = _internal_image(coco_ds, 193245)      # persons (held out) and kites
    assert {coco_ds.sample_reference_class(img, rng) for _ in range(20)} == {_cls(coco_ds, "kite")}
    oneshot = coco_ds.sample_reference_class(img, rng, class_ids=coco_ds.oneshot_class_ids)
    assert oneshot == _cls(coco_ds, "person")
    ids = {coco: _internal_image(coco_ds, coco) for coco in (166563, 573008, 176857)}
    # S1 background: 166563 has only an elephant (held out) -> not a training query
    assert ids[166563] not in coco_ds.query_image_ids()
    assert ids[573008] in coco_ds.query_image_ids()            # clock is background in S1
    assert coco_ds.query_image_ids(coco_ds.oneshot_class_ids) == sorted(
        _internal_image(coco_ds, c) for c in
        (74646, 86956, 166563, 176857, 182202, 193245, 409630, 424349))
    # 176857: person (S1), cat, handbag, cell phone (tiny there but usable in 182202)
    pairs = [p for p in coco_ds.query_class_pairs(list(range(1, 81))) if p[0] == ids[176857]]
    assert pairs == [(ids[176857], c) for c in (1, 16, 27, 68)]


def test_sampler_is_reproducible(coco_ds):
    draws = []
    for _ in range(2):
        rng = np.random.default_rng(123)
        draws.append([coco_ds.sample_reference(1, rng, return_info=True)[1]["bbox"]
                      for _ in range(10)])
    assert draws[0] == draws[1]


@pytest.mark.parametrize("min_size", [0, 16])
def test_reference_from_other_image_and_never_crowd(coco_subset_annotations, coco_subset_dir,
                                                    min_size):
    coco_ds = _load(coco_subset_annotations, coco_subset_dir / "images", min_size=min_size)
    rng = np.random.default_rng(7)
    person = _cls(coco_ds, "person")
    crowd_img = _internal_image(coco_ds, 193245)
    crowd_index = [k for k, a in enumerate(coco_ds.instance_annotations(crowd_img))
                   if a["iscrowd"]][0]
    images_used = set()
    for trial in range(150):
        exclude = int(coco_ds.image_ids[trial % coco_ds.num_images])
        crop, info = coco_ds.sample_reference(person, rng, exclude_image_id=exclude,
                                              return_info=True)
        assert info["image_id"] != exclude and info["same_image"] is False
        assert info["bbox"] != CROWD_YXYX
        assert (info["image_id"], info["annotation_index"]) != (crowd_img, crowd_index)
        ann = coco_ds.instance_annotations(info["image_id"])[info["annotation_index"]]
        assert ann["class_id"] == person and not ann["iscrowd"]
        y1, x1, y2, x2 = info["bbox"]
        assert min(y2 - y1, x2 - x1) >= max(min_size, 1)
        assert crop.dtype == np.uint8 and crop.shape == (y2 - y1, x2 - x1, 3)
        images_used.add(info["image_id"])
    assert crowd_img in images_used        # the crowd's image is drawn, only its crowd is not
    person_images = coco_ds.category_index[person]
    for exclude in person_images:          # every other image is reachable, never the query
        used = {coco_ds.sample_reference(person, rng, exclude, return_info=True)[1]["image_id"]
                for _ in range(60)}
        assert used == set(person_images) - {exclude}
    image = coco_ds.load_image(info["image_id"])
    np.testing.assert_array_equal(crop, image[y1:y2, x1:x2])


def test_reference_falls_back_to_query_only_when_alone(coco_ds):
    rng = np.random.default_rng(0)
    elephant = _cls(coco_ds, "elephant")
    only = _internal_image(coco_ds, 166563)
    _, info = coco_ds.sample_reference(elephant, rng, exclude_image_id=only, return_info=True)
    assert info["image_id"] == only and info["same_image"] is True
    phone = _cls(coco_ds, "cell phone")   # usable only in 182202 (176857's phones are tiny)
    _, info = coco_ds.sample_reference(phone, rng, exclude_image_id=_internal_image(
        coco_ds, 176857), return_info=True)
    assert info["image_id"] == _internal_image(coco_ds, 182202) and not info["same_image"]
    with pytest.raises(ValueError, match="toothbrush"):
        coco_ds.sample_reference(_cls(coco_ds, "toothbrush"), rng)
    with pytest.raises(ValueError, match="unknown class id 99"):
        coco_ds.sample_reference(99, rng)


def test_k_shot_references(coco_ds):
    rng = np.random.default_rng(3)
    person = _cls(coco_ds, "person")
    exclude = _internal_image(coco_ds, 74646)
    crops, infos = coco_ds.sample_references(person, 5, rng, exclude_image_id=exclude,
                                             return_info=True)
    keys = [(i["image_id"], i["annotation_index"]) for i in infos]
    assert len(crops) == 5 and len(set(keys)) == 5
    assert exclude not in {k[0] for k in keys}
    # 4 other images hold usable persons: round robin uses each of them before repeating one
    assert len({k[0] for k in keys}) == 4
    crops, infos = coco_ds.sample_references(_cls(coco_ds, "elephant"), 3, rng,
                                             return_info=True)
    assert len(crops) == 3 and len({(i["image_id"], i["annotation_index"]) for i in infos}) == 1
    with pytest.raises(ValueError, match="k must be"):
        coco_ds.sample_references(person, 0, rng)


# ----------------------------------------------------------- ground truth and masks
def test_load_class_gt_matches_pycocotools(coco_ds, raw_coco):
    for coco_image, name in ((74646, "person"), (193245, "person"), (193245, "kite"),
                             (182202, "keyboard"), (166563, "person")):
        img = _internal_image(coco_ds, coco_image)
        cid = _cls(coco_ds, name)
        cat = coco_ds.get_source_class_id(cid, "coco")
        anns = raw_coco.loadAnns(raw_coco.getAnnIds(imgIds=[coco_image], catIds=[cat]))
        masks, labels = coco_ds.load_class_gt(img, cid)
        h, w = raw_coco.imgs[coco_image]["height"], raw_coco.imgs[coco_image]["width"]
        assert masks.dtype == bool and masks.shape == (h, w, len(anns))
        assert labels.dtype == np.int32
        assert list(labels) == [-1 if a["iscrowd"] else 1 for a in anns]
        for k, a in enumerate(anns):
            np.testing.assert_array_equal(masks[:, :, k], raw_coco.annToMask(a).astype(bool))
    _, labels = coco_ds.load_class_gt(_internal_image(coco_ds, 193245), 1)
    assert sorted(labels.tolist()).count(-1) == 1 and len(labels) == 14   # 13 persons + crowd


def test_load_mask_crowd_negative(coco_ds):
    masks, ids = coco_ds.load_mask(_internal_image(coco_ds, 193245))
    # 14 person annotations (one of them the crowd) + 12 kites
    assert masks.shape[-1] == 26 and (ids == -1).sum() == 1
    assert sorted(set(np.abs(ids).tolist())) == [1, _cls(coco_ds, "kite")]
    crowd = masks[:, :, list(ids).index(-1)]
    ys, xs = np.nonzero(crowd)
    # the crowd RLE's pixels span rows 187..214 and columns 358..413 (pycocotools toBbox
    # gives [358, 187, 56, 28]; the annotated bbox [358, 187, 55, 27] is one pixel tighter)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (187, 214, 358, 413)


# ---------------------------------------------------------------- COCO export
def _self_eval_ap50(gt, iou_type):
    results = []
    for ann in gt.loadAnns(gt.getAnnIds()):
        if ann["iscrowd"]:
            continue
        res = {"image_id": ann["image_id"], "category_id": ann["category_id"], "score": 1.0}
        if iou_type == "bbox":
            res["bbox"] = ann["bbox"]
        else:
            rle = gt.annToRLE(ann)
            res["segmentation"] = {"size": rle["size"], "counts": rle["counts"]}
        results.append(res)
    dt = _silent(gt.loadRes, results)
    ev = COCOeval(gt, dt, iou_type)
    _silent(ev.evaluate)
    _silent(ev.accumulate)
    _silent(ev.summarize)
    return ev.stats[1]


def test_to_coco_dict_round_trip_ap50(coco_ds):
    data = coco_ds.to_coco_dict()
    assert len(data["images"]) == 10 and len(data["annotations"]) == 77
    assert [c["id"] for c in data["categories"]] == list(range(1, 81))
    assert {a["category_id"] for a in data["annotations"]} <= set(coco_ds.category_index)
    gt = coco_ds.coco_gt()
    assert _self_eval_ap50(gt, "bbox") == 1.0
    assert _self_eval_ap50(gt, "segm") == 1.0
    crowd = [a for a in data["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["bbox"] == CROWD_COCO_BBOX
    assert data["images"][crowd[0]["image_id"]]["coco_id"] == 193245
    only_kite = coco_ds.to_coco_dict(class_ids=[_cls(coco_ds, "kite")])
    assert len(only_kite["annotations"]) == 13 and len(only_kite["categories"]) == 1


class _SlowCoco(OneShotCocoDataset):
    """The COCO dataset through the base's generic (load_mask) export path."""
    _coco_image_entry = OneShotDataset._coco_image_entry
    _coco_annotations_for_image = OneShotDataset._coco_annotations_for_image


def test_generic_export_path_equals_fast_path(coco_subset_annotations, coco_subset_dir, raw_coco):
    slow = _SlowCoco()
    slow.load_coco(annotation_file=str(coco_subset_annotations),
                   image_dir=str(coco_subset_dir / "images"))
    slow.prepare()
    data = slow.to_coco_dict()
    assert len(data["annotations"]) == 77
    assert sum(a["iscrowd"] for a in data["annotations"]) == 1
    fast = _load(coco_subset_annotations, coco_subset_dir / "images").to_coco_dict()
    for a_slow, a_fast in zip(data["annotations"], fast["annotations"]):
        h, w = a_slow["segmentation"]["size"]
        mask_slow = mask_utils.decode({"size": [h, w],
                                       "counts": a_slow["segmentation"]["counts"].encode()})
        mask_fast = raw_coco.annToMask({**a_fast, "image_id": slow.image_info[
            a_fast["image_id"]]["id"]})
        np.testing.assert_array_equal(mask_slow, mask_fast)
        assert a_slow["category_id"] == a_fast["category_id"]
    assert _self_eval_ap50(slow.coco_gt(), "segm") == 1.0


class _Boxes(OneShotDataset):
    """A tiny in-memory one-shot dataset: rectangles on grey images."""

    def load_boxes(self):
        self.add_class("boxes", 1, "square")
        self.add_class("boxes", 2, "bar")
        specs = [[(1, (5, 10, 21, 30), False), (2, (20, 5, 38, 9), False)],
                 [(1, (0, 0, 20, 20), False), (1, (22, 22, 40, 48), True)],
                 [(2, (2, 2, 30, 40), False)]]
        for k, objects in enumerate(specs):
            image = np.full((40, 50, 3), 30 * k, dtype=np.uint8)
            for cls, (y1, x1, y2, x2), _ in objects:
                image[y1:y2, x1:x2] = (200, 40 * cls, 10 * k)
            self.add_image("boxes", k, None, image=image, objects=objects)

    def load_image(self, image_id):
        return self.image_info[image_id]["image"]

    def instance_annotations(self, image_id):
        return [{"class_id": c, "bbox": box, "iscrowd": crowd,
                 "area": (box[2] - box[0]) * (box[3] - box[1])}
                for c, box, crowd in self.image_info[image_id]["objects"]]

    def load_mask(self, image_id):
        objects = self.image_info[image_id]["objects"]
        masks = np.zeros((40, 50, len(objects)), dtype=bool)
        for k, (_, (y1, x1, y2, x2), _) in enumerate(objects):
            masks[y1:y2, x1:x2, k] = True
        ids = np.array([-c if crowd else c for c, _, crowd in objects], dtype=np.int32)
        return masks, ids


def test_base_contract_on_in_memory_dataset():
    every = _Boxes()
    every.load_boxes()
    every.prepare()
    # no minimum size by default: the 4 px bar is a reference too; the crowd square never
    assert every.category_index == {1: [0, 1], 2: [0, 2]} and every.skipped_small == {}
    ds = _Boxes()
    ds.REFERENCE_MIN_SIZE = 16
    ds.load_boxes()
    ds.prepare()
    assert ds.train_class_ids == [1, 2] and ds.oneshot_class_ids == []
    # square in image 0 is exactly 16 px high (usable); its bar is 4 px wide (< 16):
    # present but not a reference; the crowd square is never one
    assert ds.category_index == {1: [0, 1], 2: [2]}
    assert ds.image_categories == {0: [1, 2], 1: [1], 2: [2]}
    assert ds.skipped_small == {2: 1} and ds.num_crowd == 1
    crop, info = ds.sample_reference(1, np.random.default_rng(0), exclude_image_id=0,
                                     return_info=True)
    assert info["image_id"] == 1 and info["bbox"] == (0, 0, 20, 20)
    assert crop.shape == (20, 20, 3) and (crop == (200, 40, 10)).all()
    masks, labels = ds.load_class_gt(1, 1)
    assert masks.shape == (40, 50, 2) and labels.tolist() == [1, -1]
    masks, labels = ds.load_class_gt(1, 2)
    assert masks.shape == (40, 50, 0) and labels.shape == (0,)
    data = ds.to_coco_dict()
    first = data["annotations"][0]
    assert first["bbox"] == [10.0, 5.0, 20.0, 16.0] and first["area"] == 320.0
    assert [a["iscrowd"] for a in data["annotations"]] == [0, 0, 0, 1, 0]


def test_export_coco_makes_a_loadable_dataset(tmp_path):
    ds = _Boxes()
    ds.load_boxes()
    ds.prepare()
    json_path = ds.export_coco(tmp_path / "out" / "boxes.json", image_dir=tmp_path / "img")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["boxes.json"]  # no temp
    back = OneShotCocoDataset()
    back.load_coco(annotation_file=str(json_path), image_dir=str(tmp_path / "img"))
    back.prepare()
    assert back.class_names == ["BG", "square", "bar"] and back.num_images == 3
    for image_id in range(3):
        np.testing.assert_array_equal(back.load_image(image_id), ds.load_image(image_id))
        m1, c1 = back.load_mask(image_id)
        m2, c2 = ds.load_mask(image_id)
        np.testing.assert_array_equal(m1, m2)
        np.testing.assert_array_equal(c1, c2)
    assert back.category_index == ds.category_index
    with pytest.raises(utils.ImageLoadError, match="000000000002.png"):
        (tmp_path / "img" / "000000000002.png").unlink()
        back.load_image(2)
