"""``tf.data`` input pipeline around a per-example Python loader.

The loader is a plain function ``load(image_id, rng) -> tuple of numpy arrays`` (one
array per model input, without the batch axis). The pipeline draws image ids in a seeded
per-epoch permutation, runs the loader in parallel (``num_parallel_calls``), batches and
prefetches. Example ``k`` always gets the generator ``default_rng([seed, k])``, so the data
are the same for the same seed whatever the number of workers.

An example whose image cannot be read (``OSError``/``ValueError`` from the loader, e.g. a
corrupt JPEG) or which has no usable target is skipped: the pipeline counts it, warns
once per image id, and loads the next image of the permutation instead.
"""
import logging
import threading

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)


class SkipExample(Exception):
    """Raised by a loader for an example that has no usable target (not an error)."""


class SkipCounter:
    """Thread-safe counts of skipped examples (unreadable images, empty targets)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.unreadable = {}
        self.empty = 0

    def add_unreadable(self, image_id, error):
        with self._lock:
            first = image_id not in self.unreadable
            self.unreadable[image_id] = str(error)
        if first:
            log.warning("skipping unreadable image %s: %s", image_id, error)

    def add_empty(self):
        with self._lock:
            self.empty += 1

    def summary(self):
        return {"unreadable_images": len(self.unreadable), "empty_examples": self.empty}


def example_image_id(image_ids, seed, index, shuffle=True):
    """The image id of example ``index``: position ``index mod n`` of epoch ``index // n``'s
    permutation (seeded by ``(seed, epoch)``)."""
    n = len(image_ids)
    epoch, pos = divmod(int(index), n)
    if not shuffle:
        return image_ids[pos]
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return image_ids[order[pos]]


def make_loader(load_fn, image_ids, seed, counter, shuffle=True, max_tries=50):
    """Wrap ``load_fn`` into ``index -> arrays`` with skipping of bad examples."""
    image_ids = list(image_ids)
    if not image_ids:
        raise ValueError("the dataset has no images to train on")

    def load_index(index):
        index = int(index)
        for attempt in range(max_tries):
            k = index + attempt * 7919  # walk to another example, deterministically
            image_id = example_image_id(image_ids, seed, k, shuffle)
            rng = np.random.default_rng([seed, k])
            try:
                return load_fn(image_id, rng)
            except SkipExample:
                counter.add_empty()
            except (OSError, ValueError) as err:
                counter.add_unreadable(image_id, err)
        raise RuntimeError(f"{max_tries} consecutive examples could not be loaded "
                           f"(unreadable: {len(counter.unreadable)}, empty: {counter.empty}); "
                           "check the dataset")

    return load_index


def pipeline_example_index(local_index, batch_size, pipeline, num_pipelines):
    """The global example index of the ``local_index``-th example of input pipeline
    ``pipeline`` out of ``num_pipelines``: each global batch of ``batch_size`` consecutive
    examples is cut into ``num_pipelines`` equal chunks and pipeline ``i`` loads chunk ``i``.
    Works on Python ints and on int64 tensors."""
    chunk = batch_size // num_pipelines
    return (local_index // chunk) * batch_size + pipeline * chunk + local_index % chunk


def build_dataset(load_fn, image_ids, specs, batch_size, seed=0, start=0, workers=2,
                  shuffle=True, counter=None, prefetch=2, pipeline=0, num_pipelines=1,
                  replica_batch=None):
    """An infinite batched ``tf.data.Dataset`` of model inputs.

    ``specs`` is a list of ``(name, shape, dtype)`` (shape without the batch axis, fully
    static). ``start`` is the index of the first example (resume at the right place).

    Several machines (``tf.distribute`` input pipelines, one per worker): ``batch_size`` is
    the *global* batch; input pipeline ``pipeline`` of ``num_pipelines`` loads only its
    chunk of every global batch (see ``pipeline_example_index``) and yields batches of
    ``replica_batch`` examples (default: the whole chunk), which the strategy hands to the
    worker's replicas in turn. Replica ``r`` of the cluster therefore sees the same images
    as the ``r``-th slice of the one-device batch, and no worker loads another's images.
    Raises ``ValueError`` if the batch does not split evenly or ``start`` is not at a
    global batch boundary.
    """
    if batch_size % num_pipelines:
        raise ValueError(f"global batch {batch_size} does not split over {num_pipelines} input pipelines")
    chunk = batch_size // num_pipelines
    replica_batch = int(replica_batch or chunk)
    if chunk % replica_batch:
        raise ValueError(f"a pipeline's {chunk} examples per batch do not split into batches of {replica_batch}")
    if num_pipelines > 1 and start % batch_size:
        raise ValueError(f"start={start} must be a multiple of the global batch {batch_size} "
                         "with several input pipelines")
    counter = counter if counter is not None else SkipCounter()
    load_index = make_loader(load_fn, image_ids, seed, counter, shuffle)
    dtypes = [tf.as_dtype(dtype) for _, _, dtype in specs]

    def py_load(index):
        arrays = load_index(index)
        return [np.asarray(a, dtype=d.as_numpy_dtype) for a, d in zip(arrays, dtypes)]

    def tf_load(index):
        tensors = tf.numpy_function(py_load, [index], dtypes, stateful=False)
        for t, (_, shape, _) in zip(tensors, specs):
            t.set_shape(shape)
        return tuple(tensors)

    if num_pipelines == 1:
        ds = tf.data.Dataset.counter(start=start)
    else:
        ds = tf.data.Dataset.counter(start=start // batch_size * chunk).map(
            lambda k: pipeline_example_index(k, batch_size, pipeline, num_pipelines))
    ds = ds.map(tf_load, num_parallel_calls=max(1, int(workers)), deterministic=True)
    ds = ds.batch(replica_batch, drop_remainder=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(options)
    return ds.prefetch(prefetch), counter
