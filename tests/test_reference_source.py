"""The numpy parts of benchmarks/reference_source.py (the benchmark itself is run by hand)."""

import numpy as np
import pytest

from conftest import assert_benchmark_refuses, load_benchmark  # noqa: E402

from siamese_mask_rcnn.datasets.synthetic import make_train_val


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("reference_source")


def test_crop_fraction_chooses_the_reference_source(bench):
    train, _ = make_train_val(num_categories=40, num_train=12, num_val=2, image_size=128, seed=0)
    class_id = next(c for c in train.train_class_ids if c in train.category_index and len(train.category_index[c]) > 1)
    query = train.category_index[class_id][0]
    sources = {}
    for fraction in (0.0, 1.0, 0.5):
        train.reference_crop_fraction = fraction
        rng = np.random.default_rng(0)
        infos = [bench._sample_references(train, class_id, 1, rng, exclude_image_id=query, return_info=True)[1][0]
                 for _ in range(40)]
        sources[fraction] = [info.get("rendered", False) for info in infos]
        for info in infos:
            if not info.get("rendered"):  # a crop of an instance in another training scene
                assert info["image_id"] != query and info["class_id"] == class_id and info["bbox"] is not None
    assert all(sources[0.0]) and not any(sources[1.0])
    assert 10 <= sum(sources[0.5]) <= 30
    del train.reference_crop_fraction
    assert bench._sample_references(train, class_id, 1, np.random.default_rng(0), return_info=True)[1][0]["rendered"]


@pytest.mark.parametrize("extra, words", [(["evaluate"], "evaluate needs --weights"),
                                          (["train", "--crop-fraction", "0"], "--crop-fraction must be in (0, 1]"),
                                          (["train", "--dataset", "omniglot"], "--dataset omniglot needs --data-dir"),
                                          (["evaluate", "--weights", "missing.h5"], "missing.h5"),
                                          (["evaluate", "--weights", "w.h5", "--crop-fraction", "0.3"],
                                           "--crop-fraction is for train"),
                                          (["train", "--weights", "w.h5"], "--weights is for evaluate"),
                                          (["train", "--dataset", "omniglot", "--data-dir", "no_such_dir"],
                                           "--data-dir: Omniglot directory not found"),
                                          (["train", "--out", "afile/sub"], "--out: "),
                                          (["train", "--data-dir", "."], "--data-dir is for --dataset omniglot")])
def test_bad_arguments_exit_2(extra, words, tmp_path):
    assert_benchmark_refuses("reference_source", extra, words, tmp_path)
