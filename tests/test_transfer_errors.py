"""The numpy parts of benchmarks/transfer_errors.py (the benchmark itself is run by hand)."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import load_benchmark  # noqa: E402

from siamese_mask_rcnn import evaluation as ev
from siamese_mask_rcnn.datasets.synthetic import make_train_val
from siamese_mask_rcnn.datasets.transfer import transfer_dataset_like


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("transfer_errors")


def test_references_come_from_the_other_dataset(bench):
    _, val = make_train_val(num_categories=40, num_train=2, num_val=6, image_size=128, seed=0)
    alone = transfer_dataset_like(val, num_images=2 * len(val.oneshot_class_ids), seed=1, ranges=bench.ALONE)
    assert all(len(alone.load_mask(i)[1]) == 1 for i in alone.image_ids)  # one instance, nothing else
    queries = transfer_dataset_like(val, num_images=6, seed=0)
    before = ev.build_eval_pairs(queries, queries.oneshot_class_ids, seed=0, load_crops=True)
    bench.references_from(queries, alone)
    pairs = ev.build_eval_pairs(queries, queries.oneshot_class_ids, seed=0, load_crops=True)
    assert [(p.image_id, p.class_id) for p in pairs] == [(p.image_id, p.class_id) for p in before]
    for pair in pairs:
        (info,), (crop,) = pair.reference_info, pair.references
        assert info["bbox"] is None and info["source"] == "other dataset"
        source_image = alone.load_image(info["image_id"])
        (y1, x1, y2, x2) = alone.instance_annotations(info["image_id"])[info["annotation_index"]]["bbox"]
        assert alone.load_mask(info["image_id"])[1][info["annotation_index"]] == pair.class_id
        assert np.array_equal(crop, source_image[y1:y2, x1:x2])  # the crop of the lone instance, intact


@pytest.mark.parametrize("extra, words", [(["--weights", "missing.h5"], "missing.h5"),
                                          (["--scenes", "0"], "--scenes must be in [1, 10000]"),
                                          (["--scenes", "100000000000"], "--scenes must be in [1, 10000]"),
                                          (["--seed", "-1"], "--seed must be >= 0"),
                                          (["--dataset", "omniglot"], "--dataset omniglot needs --data-dir"),
                                          (["--dataset", "omniglot", "--data-dir", "no_such_dir"],
                                           "--data-dir: Omniglot directory not found"),
                                          (["--data-dir", "."], "--data-dir is for --dataset omniglot"),
                                          ([], "not an HDF5 weights file: w.h5")])
def test_bad_arguments_exit_2_before_tensorflow(extra, words, tmp_path):
    (tmp_path / "w.h5").write_bytes(b"not a checkpoint")
    for name in ("tensorflow", "keras"):  # importing either would fail the run with a traceback
        (tmp_path / "fake" / name).mkdir(parents=True)
        (tmp_path / "fake" / name / "__init__.py").write_text(f"raise ImportError('{name} must not load')")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "fake"), os.environ.get("PYTHONPATH", "")]))
    script = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "transfer_errors.py"
    weights = [] if "--weights" in extra else ["--weights", "w.h5"]
    done = subprocess.run([sys.executable, str(script), *weights, *extra],
                          capture_output=True, text=True, timeout=120, cwd=str(tmp_path), env=env)
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
