"""Verification of detections against the reference (siamese_mask_rcnn.verification, issue #10)."""
import types

import numpy as np
import pytest

from siamese_mask_rcnn.verification import calibrate_min_similarity, keep_detections, level_cosine


def _result(n, height=6, width=7):
    masks = np.zeros((height, width, n), bool)
    for i in range(n):
        masks[i, i, i] = True
    return {"rois": np.array([[i, i, i + 2, i + 3] for i in range(n)]), "class_ids": np.ones(n, np.int32),
            "scores": np.linspace(0.9, 0.5, n).astype(np.float32), "masks": masks, "presence": 0.7}


def test_keep_detections_filters_every_field_and_adds_the_similarity():
    result = _result(3)
    kept = keep_detections(result, [True, False, True], [0.8, 0.1, 0.6])
    assert kept["rois"].tolist() == [[0, 0, 2, 3], [2, 2, 4, 5]]
    np.testing.assert_allclose(kept["scores"], [0.9, 0.5])
    assert kept["masks"].shape == (6, 7, 2) and kept["masks"][0, 0, 0] and kept["masks"][2, 2, 1]
    np.testing.assert_allclose(kept["similarity"], [0.8, 0.6])
    assert kept["presence"] == 0.7 and len(result["scores"]) == 3  # extras kept, input unchanged
    empty = keep_detections(result, [False] * 3, [0, 0, 0])
    assert empty["masks"].shape == (6, 7, 0) and empty["similarity"].shape == (0,)


class _ColourModel:
    """A stand-in encoder: a crop's embedding is its mean colour on each of 5 levels."""

    def encode_references(self, crops):
        return np.stack([np.tile(np.asarray(c, np.float64).reshape(-1, 3).mean(axis=0), (5, 1)) for c in crops])

    def embed_category(self, crops):
        return self.encode_references(crops).mean(axis=0)


def _colour_dataset():
    """Three scenes; category 1 objects are red (one with some green), category 2 green."""
    def scene(objects):
        image = np.zeros((20, 20, 3), np.uint8)
        anns = []
        for (y, x), colour, class_id in objects:
            image[y:y + 4, x:x + 4] = colour
            anns.append({"bbox": (y, x, y + 4, x + 4), "class_id": class_id})
        return image, anns

    scenes = {0: scene([((0, 0), (200, 0, 0), 1), ((10, 10), (0, 200, 0), 2)]),
              1: scene([((2, 2), (200, 100, 0), 1)]),
              2: scene([((5, 5), (200, 0, 0), 1), ((12, 0), (0, 0, 200), 3)])}
    return types.SimpleNamespace(
        image_ids=[2, 0, 1], load_image=lambda i: scenes[i][0],
        instance_annotations=lambda i: scenes[i][1],
        sample_reference=lambda c, rng, exclude_image_id=None: {1: np.full((3, 3, 3), (255, 0, 0), np.uint8),
                                                                 2: np.full((3, 3, 3), (0, 255, 0), np.uint8)}[c])


def test_calibration_keeps_the_asked_share_of_true_matches():
    dataset = _colour_dataset()
    # category 1: red objects have cosine 1, the red-green one 2/sqrt(5); category 2: 1;
    # category 3 is not asked for
    sims = sorted([1.0, 1.0, 2 / np.sqrt(5), 1.0])
    threshold, count = calibrate_min_similarity(_ColourModel(), dataset, [1, 2], keep=0.5, scenes=3)
    assert count == 4 and threshold == pytest.approx(np.quantile(sims, 0.5))
    threshold, _ = calibrate_min_similarity(_ColourModel(), dataset, [1, 2], keep=0.8, scenes=3)
    assert threshold == pytest.approx(np.quantile(sims, 0.2)) and threshold < 1.0
    assert calibrate_min_similarity(_ColourModel(), dataset, [1, 2], keep=1.0, scenes=3)[0] == -1.0
    # only the first scene (sorted ids: 0): one red and one green object
    assert calibrate_min_similarity(_ColourModel(), dataset, [1, 2], keep=0.5, scenes=1)[1] == 2


@pytest.mark.parametrize("kwargs, message", [({"keep": 0.0}, "keep must be in"), ({"keep": 1.5}, "keep must be in"),
                                             ({"scenes": 0}, "scenes must be >= 1"),
                                             ({"class_ids": [7]}, "nothing to calibrate")])
def test_calibration_refuses_bad_arguments(kwargs, message):
    args = {"keep": 0.5, "scenes": 3, "class_ids": [1]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        calibrate_min_similarity(_ColourModel(), _colour_dataset(), args.pop("class_ids"), **args)


@pytest.mark.parametrize("bad", [1.5, -2, float("nan"), True, "0.5"])
def test_config_refuses_a_bad_min_similarity(bad):
    from siamese_mask_rcnn.config import siamese_config

    with pytest.raises(ValueError, match="VERIFY_MIN_SIMILARITY"):
        siamese_config("tiny", VERIFY_MIN_SIMILARITY=bad)
    assert siamese_config("tiny", VERIFY_MIN_SIMILARITY=0.25).VERIFY_MIN_SIMILARITY == 0.25


def test_result_json_reports_the_similarities_and_the_threshold():
    from siamese_mask_rcnn.predict import result_to_json

    result = keep_detections(_result(2), [True, True], [0.75, 0.5])
    config = types.SimpleNamespace(DETECTION_MIN_CONFIDENCE=0.5, PRESENCE_GATING="multiply",
                                   VERIFY_MIN_SIMILARITY=0.4)
    payload = result_to_json(result, ["r.png"], "q.png", config=config)
    assert [d["similarity"] for d in payload["detections"]] == [0.75, 0.5]
    assert payload["min_similarity"] == 0.4
    config.VERIFY_MIN_SIMILARITY = None
    assert "min_similarity" not in result_to_json(_result(1), ["r.png"], "q.png", config=config)


def test_detect_embeddings_verifies_in_every_inference_path(tmp_path):
    keras = pytest.importorskip("keras")
    from siamese_mask_rcnn.config import siamese_config
    from siamese_mask_rcnn.datasets.base import crop_box
    from siamese_mask_rcnn.datasets.synthetic import make_train_val
    from siamese_mask_rcnn.siamese import SiameseMaskRCNN

    _, val = make_train_val(num_categories=40, num_train=2, num_val=3, image_size=128, seed=3)
    keras.utils.set_random_seed(2)
    model = SiameseMaskRCNN("inference", siamese_config("tiny", DETECTION_MIN_CONFIDENCE=0.0),
                            model_dir=str(tmp_path))
    image_id = val.image_ids[0]
    image = val.load_image(image_id)
    rng = np.random.default_rng(0)
    embeddings = {c: model.embed_category([val.sample_reference(c, rng)]) for c in val.image_categories[image_id][:2]}
    plain = model.detect_embeddings(image, embeddings, fold=False)
    assert all("similarity" not in r for r in plain.values())
    expected = {k: level_cosine(model.encode_references([crop_box(image, b)[0] for b in r["rois"]]), embeddings[k])
                for k, r in plain.items()}
    values = np.concatenate(list(expected.values()))
    assert len(values) >= 4 and len(np.unique(np.round(values, 5))) > 1
    threshold = float(np.median(values))
    model.config.VERIFY_MIN_SIMILARITY = threshold
    try:
        for fold in (False, True):
            verified = model.detect_embeddings(image, embeddings, fold=fold)
            for key, result in verified.items():
                keep = expected[key] >= threshold
                assert len(result["scores"]) == int(keep.sum()) == result["masks"].shape[-1]
                np.testing.assert_allclose(result["similarity"], expected[key][keep], atol=1e-4)
                np.testing.assert_allclose(result["scores"], plain[key]["scores"][keep], rtol=1e-4, atol=1e-5)
            for key, result in verified.items():
                assert result["verification_dropped"] == len(plain[key]["scores"]) - len(result["scores"])
                assert result["verification_threshold"] == pytest.approx(threshold)
        model.config.VERIFY_MIN_SIMILARITY = -1.0
        everything = model.detect_embeddings(image, embeddings, fold=False)
        assert all(len(everything[k]["scores"]) == len(plain[k]["scores"]) for k in plain)
        for bad in (5.0, float("nan"), "x", True):  # set after the model was built: checked at use
            model.config.VERIFY_MIN_SIMILARITY = bad
            with pytest.raises(ValueError, match="VERIFY_MIN_SIMILARITY must be None"):
                model.detect_embeddings(image, embeddings, fold=False)
    finally:
        model.config.VERIFY_MIN_SIMILARITY = None


def test_predict_command_line_turns_verification_off_or_on(monkeypatch, tmp_path, capsys):
    from siamese_mask_rcnn import cli

    calls = []

    def fake_predict(*args, **kwargs):
        calls.append(kwargs["min_similarity"])
        result = keep_detections(_result(2), [True, False], [0.9, 0.2])
        result.update(verification_dropped=1, verification_threshold=0.5)
        return result

    monkeypatch.setattr(cli, "predict", fake_predict)
    monkeypatch.setattr(cli, "check_inputs", lambda *a, **k: None)
    base = ["predict", "--weights", "w.h5", "--reference", "r.png", "--query", "q.png"]
    assert cli.main(base + ["--min-similarity", "none"]) == 0
    assert cli.main(base + ["--min-similarity", "0.5"]) == 0
    assert calls == ["none", 0.5]
    out = capsys.readouterr().out
    assert "1 dropped as less similar to the reference than 0.500 (--min-similarity)" in out
    assert "similarity 0.900" in out
    with pytest.raises(SystemExit) as info:
        cli.main(base + ["--min-similarity", "off"])
    assert info.value.code == 2 and "expected a number in [-1, 1] or 'none', got 'off'" in capsys.readouterr().err


# --------------------------------------------------------------------------- known-category rejection
def test_known_category_margins_on_a_hand_made_case():
    """Two levels of two channels (flattened: 4 values); three unit prototypes. The reference
    is nearest to prototype 0, so only prototypes 1 and 2 can reject."""
    from siamese_mask_rcnn.verification import known_category_margins

    prototypes = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], np.float64) * 3.0  # scale is ignored
    reference = np.array([[1.0, 0.0], [0.0, 0.0]])              # = prototype 0's direction
    detections = np.array([[[1.0, 0.0], [0.0, 0.0]],            # the reference itself: margin 0 - 1 = -1
                           [[0.0, 1.0], [0.0, 0.0]],            # prototype 1: 1 - 0 = 1
                           [[1.0, 1.0], [0.0, 0.0]],            # between 0 and 1: 1/√2 - 1/√2 = 0
                           [[0.0, 0.0], [0.0, 0.0]]])           # zero vector: 0 - 0 = 0
    margins = known_category_margins(detections, reference, prototypes)
    np.testing.assert_allclose(margins, [-1.0, 1.0, 0.0, 0.0], atol=1e-12)
    # a reference nearest to prototype 1 lets prototype 0 reject instead
    margins = known_category_margins(detections[:2], np.array([[0.0, 1.0], [0.0, 0.0]]), prototypes)
    np.testing.assert_allclose(margins, [1.0, -1.0], atol=1e-12)
    assert known_category_margins(np.zeros((0, 2, 2)), reference, prototypes).shape == (0,)
    with pytest.raises(ValueError, match="prototypes must be"):
        known_category_margins(detections, reference, prototypes[:3])
    with pytest.raises(ValueError, match="prototypes must be"):
        known_category_margins(detections, reference, prototypes[:, :1])
    with pytest.raises(ValueError, match="do not fit"):
        known_category_margins(np.zeros((1, 3, 2)), reference, prototypes)


@pytest.mark.parametrize("bad", [2.5, -3, float("nan"), True, "0.1"])
def test_config_and_check_refuse_a_bad_known_margin(bad):
    from siamese_mask_rcnn.config import siamese_config
    from siamese_mask_rcnn.verification import check_known_margin

    with pytest.raises(ValueError, match="VERIFY_KNOWN_MARGIN"):
        siamese_config("tiny", VERIFY_KNOWN_MARGIN=bad)
    with pytest.raises(ValueError, match="VERIFY_KNOWN_MARGIN"):
        check_known_margin(bad)
    assert siamese_config("tiny", VERIFY_KNOWN_MARGIN=-0.2).VERIFY_KNOWN_MARGIN == -0.2
    assert check_known_margin(None) is None and check_known_margin(0) == 0.0


def test_detect_embeddings_rejects_detections_closer_to_a_known_category(tmp_path):
    """With prototypes (as load_weights reads them), detections whose margin exceeds
    VERIFY_KNOWN_MARGIN are dropped, the others keep their scores and report their margin;
    without prototypes the setting is refused; load_weights reads the reference classifier's
    kernel from a legacy .h5 file and leaves None for a file without it."""
    keras = pytest.importorskip("keras")
    import h5py

    from siamese_mask_rcnn.config import siamese_config
    from siamese_mask_rcnn.datasets.base import crop_box
    from siamese_mask_rcnn.datasets.synthetic import make_train_val
    from siamese_mask_rcnn.siamese import SiameseMaskRCNN
    from siamese_mask_rcnn.verification import known_category_margins

    _, val = make_train_val(num_categories=40, num_train=2, num_val=3, image_size=128, seed=3)
    keras.utils.set_random_seed(2)
    model = SiameseMaskRCNN("inference", siamese_config("tiny", DETECTION_MIN_CONFIDENCE=0.0),
                            model_dir=str(tmp_path))
    path = str(tmp_path / "w.h5")
    model.save_weights(path)
    model.load_weights(path, by_name=True)
    assert model.known_prototypes is None  # no reference classifier in the file
    width = 5 * model.config.TOP_DOWN_PYRAMID_SIZE
    kernel = np.random.default_rng(0).normal(size=(width, 7)).astype(np.float32)
    with h5py.File(path, "a") as f:
        group = f.create_group("reference_class_logits")
        group.attrs["weight_names"] = [b"reference_class_logits/kernel:0"]
        group.create_dataset("reference_class_logits/kernel:0", data=kernel)
        f.attrs["layer_names"] = list(f.attrs["layer_names"]) + [b"reference_class_logits"]
    model.load_weights(path, by_name=True)
    np.testing.assert_array_equal(model.known_prototypes, kernel)

    image_id = val.image_ids[0]
    image = val.load_image(image_id)
    rng = np.random.default_rng(0)
    embeddings = {c: model.embed_category([val.sample_reference(c, rng)]) for c in val.image_categories[image_id][:2]}
    plain = model.detect_embeddings(image, embeddings, fold=False)
    expected = {k: known_category_margins(model.encode_references([crop_box(image, b)[0] for b in r["rois"]]),
                                          embeddings[k], kernel) for k, r in plain.items()}
    values = np.concatenate(list(expected.values()))
    assert len(values) >= 4 and len(np.unique(np.round(values, 5))) > 1
    margin = float(np.median(values))
    model.config.VERIFY_KNOWN_MARGIN = margin
    try:
        verified = model.detect_embeddings(image, embeddings, fold=False)
        for key, result in verified.items():
            keep = expected[key] <= margin
            assert len(result["scores"]) == int(keep.sum()) == result["masks"].shape[-1]
            np.testing.assert_allclose(result["known_margin"], expected[key][keep], atol=1e-4)
            np.testing.assert_allclose(result["scores"], plain[key]["scores"][keep], rtol=1e-4, atol=1e-5)
            assert result["verification_dropped"] == int((~keep).sum())
            assert result["known_margin_threshold"] == margin and result["verification_threshold"] is None
        model.known_prototypes = None
        with pytest.raises(ValueError, match="needs the known categories' prototypes"):
            model.detect_embeddings(image, embeddings, fold=False)
    finally:
        model.config.VERIFY_KNOWN_MARGIN = None


def test_result_json_and_command_line_report_the_known_margin(monkeypatch, capsys):
    from siamese_mask_rcnn import cli
    from siamese_mask_rcnn.predict import result_to_json

    result = keep_detections(_result(2), [True, True], [0.75, 0.5])
    result.update(known_margin=np.array([-0.3, 0.05], np.float32), verification_dropped=1,
                  verification_threshold=None, known_margin_threshold=0.1)
    config = types.SimpleNamespace(DETECTION_MIN_CONFIDENCE=0.5, PRESENCE_GATING="multiply",
                                   VERIFY_MIN_SIMILARITY=None, VERIFY_KNOWN_MARGIN=0.1)
    payload = result_to_json(result, ["r.png"], "q.png", config=config)
    assert [round(d["known_margin"], 3) for d in payload["detections"]] == [-0.3, 0.05]
    assert payload["max_known_margin"] == 0.1 and "min_similarity" not in payload

    calls = []
    monkeypatch.setattr(cli, "predict", lambda *a, **k: calls.append(k["known_margin"]) or result)
    checked = []
    monkeypatch.setattr(cli, "check_inputs", lambda *a, **k: checked.append(k["known_margin"]))
    base = ["predict", "--weights", "w.h5", "--reference", "r.png", "--query", "q.png"]
    assert cli.main(base + ["--known-margin", "0.1"]) == 0 and cli.main(base + ["--known-margin", "none"]) == 0
    assert calls == [0.1, "none"]
    assert checked == [0.1, "none"]  # the pre-TensorFlow checks see the option
    out = capsys.readouterr().out
    assert "1 dropped as closer to a known category than to the reference by more than 0.100 (--known-margin)" in out
    assert "known margin -0.300" in out
    for bad, message in (("3", "--known-margin must be in [-2, 2], got 3.0"),
                         ("off", "expected a number in [-2, 2] or 'none', got 'off'")):
        with pytest.raises(SystemExit) as info:
            cli.main(base + ["--known-margin", bad])
        assert info.value.code == 2 and message in capsys.readouterr().err
