"""``tf.data`` input pipeline around a per-example Python loader.

The loader is a plain function ``load(image_id, rng) -> tuple of numpy arrays`` (one
array per model input, without the batch axis). The pipeline draws image ids in a seeded
per-epoch permutation, runs the loader in parallel (``num_parallel_calls``), batches and
prefetches. Example ``k`` always gets the generator ``default_rng([seed, k])``, so the data
are the same for the same seed whatever the number of workers.

Errors raised by the loader never hang training:

* an example that cannot be built (``OSError``/``ValueError`` from the loader: a corrupt
  JPEG, an annotation that cannot be decoded, an image whose size differs from its
  annotation file) or that has no usable target (``SkipExample``) is skipped: the pipeline
  counts it, warns once per image naming the image id and its file (the error names the
  annotation id when one is at fault), and loads the next image of the permutation instead;
* any other exception (``TypeError``, ``KeyError``, ``RuntimeError``, ... : a bug or an
  error that is not about one example) stops the pipeline: every worker gives up at once
  and :func:`next_batch` (or :class:`PipelineIterator`) raises :class:`DataPipelineError`
  naming the image, its file and the original exception; no example starts loading after
  it (those already running on other workers finish).

Read batches through :class:`PipelineIterator` (``PipelineIterator(iter(ds), counter)``):
it drops the TensorFlow iterator as soon as the error surfaces. A bare ``iter(ds)`` that is
still alive when the interpreter exits after such an error can hang the process at exit
(measured here: 3 of 5 runs of a script that caught the error and ended; none of 5 with
``PipelineIterator``).
"""
import atexit
import logging
import threading
import weakref

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)


class SkipExample(Exception):
    """Raised by a loader for an example that has no usable target (not an error)."""


class DataPipelineError(RuntimeError):
    """The input pipeline stopped on an error that is not about one example.

    ``image_id`` / ``file`` name the example being built; ``original`` is the exception the
    loader raised (its type and message are part of this error's message).
    """

    def __init__(self, message, image_id=None, file=None, original=None):
        super().__init__(message)
        self.image_id = image_id
        self.file = file
        self.original = original


def _describe(image_id, file):
    return f"image {image_id}" + (f" ({file})" if file else "")


class SkipCounter:
    """Thread-safe counts of skipped examples (unreadable images, empty targets) and the
    first fatal loader error (see the module docstring)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.unreadable = {}
        self.empty = 0
        self.fatal = None

    def add_unreadable(self, image_id, error, file=None):
        """Count a skipped example; warn once per image, naming the image id, its file and
        the error (which names the annotation id when one is at fault)."""
        message = f"{_describe(image_id, file)}: {error}"
        with self._lock:
            first = image_id not in self.unreadable
            self.unreadable[image_id] = message
        if first:
            log.warning("skipping %s", message)

    def set_fatal(self, image_id, error, file=None):
        """Record the first error that must stop training; returns the recorded error."""
        with self._lock:
            if self.fatal is None:
                self.fatal = DataPipelineError(
                    f"the input pipeline stopped: the loader failed on {_describe(image_id, file)} "
                    f"with {type(error).__name__}: {error}", image_id, file, error)
            return self.fatal

    def stopped(self):
        """A fresh copy of the fatal error, for the other workers to give up with."""
        fatal = self.fatal
        return DataPipelineError(str(fatal), fatal.image_id, fatal.file, fatal.original)

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


def make_loader(load_fn, image_ids, seed, counter, shuffle=True, max_tries=50, describe=None):
    """Wrap ``load_fn`` into ``index -> arrays`` with skipping of bad examples.

    ``describe(image_id)`` gives the file of an image for messages (optional). A fatal
    error is recorded in ``counter.fatal`` and raised (as :class:`DataPipelineError`) by
    this and every later call, so all workers stop at once.

    Raises:
        ValueError: ``image_ids`` is empty.
    """
    image_ids = list(image_ids)
    if not image_ids:
        raise ValueError("the dataset has no images to train on")

    def file_of(image_id):
        if describe is None:
            return None
        try:
            return describe(image_id)
        except Exception:  # a message helper must never fail the pipeline
            return None

    def load_index(index):
        if counter.fatal is not None:
            raise counter.stopped()
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
                counter.add_unreadable(image_id, err, file_of(image_id))
            except Exception as err:  # not about one example: stop everything
                raise counter.set_fatal(image_id, err, file_of(image_id)) from None
            if counter.fatal is not None:
                raise counter.stopped()
        error = RuntimeError(f"{max_tries} consecutive examples could not be loaded "
                             f"(unreadable: {len(counter.unreadable)}, empty: {counter.empty}); "
                             "check the dataset")
        raise counter.set_fatal(image_id, error, file_of(image_id))

    return load_index


def pipeline_example_index(local_index, batch_size, pipeline, num_pipelines):
    """The global example index of the ``local_index``-th example of input pipeline
    ``pipeline`` out of ``num_pipelines``: each global batch of ``batch_size`` consecutive
    examples is cut into ``num_pipelines`` equal chunks and pipeline ``i`` loads chunk ``i``.
    Works on Python ints and on int64 tensors."""
    chunk = batch_size // num_pipelines
    return (local_index // chunk) * batch_size + pipeline * chunk + local_index % chunk



class PipelineIterator:
    """Iterate batches of a (distributed) dataset built by :func:`build_dataset`.

    ``next()`` raises the pipeline's :class:`DataPipelineError` (see :func:`next_batch`)
    and then drops the TensorFlow iterator at once, stopping its workers. Iterators still
    open at interpreter exit are closed by an ``atexit`` hook: an error escaping a script
    uncaught keeps the frames (and so this object) alive, and TensorFlow workers still
    calling Python during interpreter shutdown would hang the process forever.
    """

    _live = weakref.WeakSet()

    def __init__(self, iterator, counter):
        self._iterator = iterator
        self.counter = counter
        PipelineIterator._live.add(self)

    def __iter__(self):
        return self

    def __next__(self):
        if self._iterator is None:
            raise RuntimeError("the input pipeline was closed")
        try:
            return next_batch(self._iterator, self.counter)
        except DataPipelineError:
            self.close()
            raise

    def close(self):
        """Drop the TensorFlow iterator (its workers stop); idempotent."""
        self._iterator = None

    @classmethod
    def close_all(cls):
        for iterator in list(cls._live):
            iterator.close()


atexit.register(PipelineIterator.close_all)


def next_batch(iterator, counter):
    """``next(iterator)``, raising the pipeline's :class:`DataPipelineError` (with the
    loader's original exception in its message) instead of TensorFlow's wrapped error.

    Raises:
        DataPipelineError: a loader error stopped the pipeline (names the image, its file and the original exception).
        tf.errors.OpError: any other TensorFlow error of the iterator.
    """
    try:
        return next(iterator)
    except (tf.errors.OpError, DataPipelineError) as err:
        if counter is not None and counter.fatal is not None:
            raise counter.fatal from None
        raise err



def build_dataset(load_fn, image_ids, specs, batch_size, seed=0, start=0, workers=2,
                  shuffle=True, counter=None, prefetch=2, pipeline=0, num_pipelines=1,
                  replica_batch=None, describe=None):
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
    ``describe(image_id)`` names an image's file in messages. Returns ``(dataset, counter)``;
    read batches with ``PipelineIterator(iter(dataset), counter)`` so a fatal loader error
    surfaces as :class:`DataPipelineError` and the workers stop (see the module docstring).
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
    load_index = make_loader(load_fn, image_ids, seed, counter, shuffle, describe=describe)
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
