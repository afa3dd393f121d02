"""The numpy parts and argument checks of benchmarks/pretrained_backbone.py (run by hand)."""
import pathlib

import numpy as np
import pytest

from conftest import assert_benchmark_refuses, load_benchmark  # noqa: E402

from siamese_mask_rcnn.datasets.synthetic import make_train_val


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("pretrained_backbone")


def test_square_centres_the_render_on_its_mean_colour(bench):
    image = np.zeros((10, 30, 3), np.uint8)
    image[:, :15, 0] = 240  # left half red, right half blue: mean colour (120, 0, 100)
    image[:, 15:, 2] = 200
    out = bench.square(image, size=30)
    assert out.shape == (30, 30, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [120, 0, 100] and out[29, 29].tolist() == [120, 0, 100]  # padding
    assert out[15, 5].tolist() == [240, 0, 0] and out[15, 25].tolist() == [0, 0, 200]  # the render, centred
    assert bench.square(image, size=48).shape == (48, 48, 3)


def test_render_labels_only_the_given_training_categories(bench):
    train, _ = make_train_val(num_categories=40, num_train=4, num_val=2, image_size=128, seed=0)
    classes = list(train.train_class_ids)[:3]
    images, labels = bench.render(train, classes, 4, seed=0)
    assert images.shape == (12, bench.SIZE, bench.SIZE, 3) and images.dtype == np.uint8
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    again, _ = bench.render(train, classes, 4, seed=0)
    assert np.array_equal(images, again)  # a function of the seed
    assert not set(classes) & set(train.oneshot_class_ids)


@pytest.mark.parametrize("extra, words", [(["--renders", "0"], "--renders must be >= 1"),
                                          (["--pretrain-steps", "2"], "--pretrain-steps must be a positive multiple of 5"),
                                          (["--pretrain-steps", "7"], "--pretrain-steps must be a positive multiple of 5"),
                                          (["--seed", "-1"], "--seed must be >= 0"),
                                          (["--dataset", "omniglot"], "--dataset omniglot needs --data-dir"),
                                          (["--dataset", "omniglot", "--data-dir", "no_such_dir"],
                                           "--data-dir: Omniglot directory not found"),
                                          (["--data-dir", "."], "--data-dir is for --dataset omniglot"),
                                          (["--out", "afile/sub"], "--out: ")])
def test_bad_arguments_exit_2_before_any_training(extra, words, tmp_path):
    assert_benchmark_refuses("pretrained_backbone", extra, words, tmp_path)


def test_an_output_folder_that_cannot_be_created_is_refused_before_any_work(tmp_path):
    """/proc takes no new folders, even for root (the helper who found this ran the whole
    pre-training before the demo refused the folder)."""
    if not pathlib.Path("/proc/self").exists():
        pytest.skip("needs Linux's /proc")
    done = assert_benchmark_refuses("pretrained_backbone", ["--out", "/proc/siamese_mask_rcnn_test_out"],
                                    "--out: ", tmp_path)
    assert "renders" not in done.stdout  # nothing was rendered or trained
