"""The main job's in-memory training data: every scene kept (rendered once, in processes) and
the reference bank (no TensorFlow here)."""
import numpy as np
import pytest

from siamese_mask_rcnn.datasets.synthetic import SyntheticOneShotDataset, make_train_val

SMALL = dict(num_categories=12, num_images=10, image_size=64, seed=3)


def _same_data(a, b, image_ids):
    for i in image_ids:
        np.testing.assert_array_equal(a.load_image(i), b.load_image(i))
        (ma, ca), (mb, cb) = a.load_mask(i), b.load_mask(i)
        np.testing.assert_array_equal(ma, mb)
        np.testing.assert_array_equal(ca, cb)
    assert a.category_index == b.category_index and a.image_categories == b.image_categories


def test_keeping_every_scene_renders_once_and_changes_no_data():
    lazy = SyntheticOneShotDataset(**SMALL)
    kept = SyntheticOneShotDataset(**SMALL, cache_size=None)
    # construction rendered (and kept) every scene; its label maps are the compact uint8 ones
    assert sorted(kept._scene_cache) == list(range(10))
    assert {s.labels.dtype for s in kept._scene_cache.values()} == {np.dtype(np.uint8)}
    calls = []
    kept.generate_scene = lambda image_id: calls.append(image_id)  # would fail if called
    _same_data(lazy, kept, range(10))
    assert calls == []
    assert len(lazy._scene_cache) <= 16


def test_scenes_rendered_in_two_processes_equal_those_rendered_here():
    serial = SyntheticOneShotDataset(**SMALL, cache_size=None, workers=1)
    parallel = SyntheticOneShotDataset(**SMALL, cache_size=None, workers=2)
    _same_data(serial, parallel, range(10))
    serial.build_reference_bank(serial.train_class_ids, 3, 16, 16, seed=5, workers=1)
    parallel.build_reference_bank(parallel.train_class_ids, 3, 16, 16, seed=5, workers=2)
    for c in serial.train_class_ids:
        np.testing.assert_array_equal(serial.reference_bank["crops"][c], parallel.reference_bank["crops"][c])


def test_reference_bank_serves_molded_size_references_of_training_categories():
    train, _ = make_train_val(num_categories=12, num_train=10, num_val=2, image_size=64, cache_size=None)
    count = train.build_reference_bank(train.train_class_ids, 4, 20, 24, seed=1)
    assert count == 4 * len(train.train_class_ids)
    class_id = train.train_class_ids[0]
    bank = train.reference_bank["crops"][class_id]
    assert bank.shape == (4, 24, 24, 3) and bank.dtype == np.uint8
    assert not np.array_equal(bank[0], bank[1])  # different renders
    crops, infos = train.sample_references(class_id, 3, np.random.default_rng(0), exclude_image_id=1,
                                           return_info=True)
    picked = [info["bank_index"] for info in infos]
    assert len(set(picked)) == 3  # distinct while the bank has enough
    for crop, j in zip(crops, picked):
        np.testing.assert_array_equal(crop, bank[j])
    # the same generator state gives the same references
    again = train.sample_references(class_id, 3, np.random.default_rng(0), exclude_image_id=1)
    assert all(np.array_equal(a, b) for a, b in zip(crops, again))
    # more references than the bank holds: drawn with repetition
    assert len(train.sample_references(class_id, 6, np.random.default_rng(0))) == 6
    # categories outside the bank (one-shot) are still rendered fresh, at their own size
    fresh = train.sample_references(train.oneshot_class_ids[0], 1, np.random.default_rng(0))[0]
    assert fresh.shape[:2] != (24, 24) or not any(np.array_equal(fresh, b) for b in bank)


def test_bank_and_cache_reject_bad_arguments():
    train = SyntheticOneShotDataset(**SMALL)
    with pytest.raises(ValueError, match="per_class"):
        train.build_reference_bank(train.train_class_ids, 0, 16, 16)
    with pytest.raises(ValueError, match="unknown class ids \\[99\\]"):
        train.build_reference_bank([99], 2, 16, 16)
    crops_only = SyntheticOneShotDataset(**SMALL, render_references=False)
    with pytest.raises(ValueError, match="render_references=True"):
        crops_only.build_reference_bank(crops_only.train_class_ids, 2, 16, 16)
    with pytest.raises(ValueError, match="cache_size"):
        SyntheticOneShotDataset(**SMALL, cache_size=0)
    with pytest.raises(ValueError, match="workers"):
        SyntheticOneShotDataset(**SMALL, workers=0)


def test_omniglot_bank_never_serves_a_drawer_of_the_query(omniglot_dir):
    from siamese_mask_rcnn.datasets.omniglot import OmniglotOneShotDataset

    data = OmniglotOneShotDataset(omniglot_dir, num_images=12, seed=0, cache_size=None)
    image_id = next(i for i in data.image_ids if data.image_categories.get(i))
    class_id = data.image_categories[image_id][0]
    data.build_reference_bank([class_id], 20, 32, 32, seed=0)
    used = set(data.scene_drawers(image_id, class_id))
    _, infos = data.sample_references(class_id, 30, np.random.default_rng(0), exclude_image_id=image_id,
                                      return_info=True)
    assert used and not {info["drawer"] for info in infos} & used


class _Recorder:
    """A picklable stand-in dataset that logs when it is pickled (in this process only)."""

    log = []

    def __getstate__(self):
        import threading

        _Recorder.log.append("pickled" if threading.current_thread() is threading.main_thread()
                             else "pickled in another thread")
        return {}

    def __setstate__(self, state):
        pass


def _mark(dataset, chunk):
    _Recorder.log.append("ran")
    return [int(i) * 2 for i in chunk]


def test_parallel_chunks_pickles_the_dataset_before_its_own_chunk_runs():
    """The first chunk runs here and may fill the dataset's caches (Omniglot's glyph cache):
    pickling it at the same time in the pool's feeder thread failed with "dictionary changed
    size during iteration" (2 of 9 Omniglot reference banks in a new-user trial)."""
    from siamese_mask_rcnn.datasets.scenes import parallel_chunks

    _Recorder.log.clear()
    out = parallel_chunks(_mark, _Recorder(), range(6), 2)
    assert sorted(out) == [0, 2, 4, 6, 8, 10]
    assert _Recorder.log[0] == "pickled" and _Recorder.log.count("pickled") == 1
