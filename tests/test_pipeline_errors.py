"""Loader errors in the ``tf.data`` input pipeline never hang training (issue: bad input).

An example that cannot be built (``OSError``/``ValueError``) is skipped and counted with its
image id and file named; any other exception stops the pipeline at once (no example is
loaded after it beyond those already in flight on the other workers) with the original
exception in the message, also when it escapes a script uncaught.

No assertion here depends on the machine's speed: "at once" is measured in examples loaded
after the error, not in seconds; the only clock is the subprocess timeout that turns a hang
into a failure.
"""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from siamese_mask_rcnn.mrcnn.pipeline import DataPipelineError, PipelineIterator, build_dataset  # noqa: E402

SPECS = [("x", (2,), "float32")]
IDS = list(range(10))


def _files(image_id):
    return f"/data/img_{image_id}.jpg"


def _loader(bad_id, error, calls=None):
    def load(image_id, rng):
        if calls is not None:
            calls.append(image_id)
        if image_id == bad_id:
            raise error
        return [np.full((2,), image_id, np.float32)]
    return load


def loads_after_the_error(calls, bad_id):
    """How many examples were loaded after the first (fatal) load of ``bad_id``."""
    assert bad_id in calls, "the bad example was never loaded"
    return len(calls) - calls.index(bad_id) - 1


@pytest.mark.parametrize("error", [TypeError("Argument 'bb' has incorrect type"), KeyError("segmentation"),
                                   RuntimeError("boom"), AttributeError("no attribute 'shape'"),
                                   ZeroDivisionError("division by zero"), IndexError("out of range"),
                                   AssertionError("bad state")])
def test_any_other_exception_stops_the_pipeline_at_once(error):
    calls = []
    ds, counter = build_dataset(_loader(3, error, calls), IDS, SPECS, batch_size=2, workers=2,
                                describe=_files)
    iterator = PipelineIterator(iter(ds), counter)
    with pytest.raises(DataPipelineError) as info:
        for _ in range(100):  # 200 examples: image 3 comes up in the first epoch
            next(iterator)
    # at most the load already running on the other worker finishes; 200 examples were asked for
    assert loads_after_the_error(calls, 3) <= 1, calls
    message = str(info.value)
    assert type(error).__name__ in message and str(error.args[0]) in message
    assert "image 3" in message and "/data/img_3.jpg" in message
    assert info.value.image_id == 3 and info.value.file == "/data/img_3.jpg"
    assert isinstance(info.value.original, type(error))
    assert counter.unreadable == {}


@pytest.mark.parametrize("error", [OSError("truncated JPEG"), ValueError("annotation 7: polygon with 2 points")])
def test_example_errors_are_skipped_and_counted_with_the_file(error, caplog):
    ds, counter = build_dataset(_loader(3, error), IDS, SPECS, batch_size=2, workers=2,
                                describe=_files)
    iterator = PipelineIterator(iter(ds), counter)
    seen = set()
    for _ in range(20):  # four epochs of 10 images
        seen.update(int(v) for v in next(iterator)[0].numpy()[:, 0])
    assert 3 not in seen and seen == set(IDS) - {3}
    assert list(counter.unreadable) == [3]
    assert "/data/img_3.jpg" in counter.unreadable[3] and str(error) in counter.unreadable[3]
    assert counter.summary()["unreadable_images"] == 1 and counter.fatal is None
    warnings = [r.getMessage() for r in caplog.records if "skipping image 3" in r.getMessage()]
    assert len(warnings) == 1  # once per image, not once per epoch


def test_all_examples_failing_stops_with_the_counts():
    def unreadable(image_id, rng):
        raise OSError("gone")

    ds, counter = build_dataset(unreadable, IDS, SPECS, batch_size=2, workers=1, describe=_files)
    with pytest.raises(DataPipelineError, match=r"50 consecutive examples could not be loaded \(unreadable: 10"):
        next(PipelineIterator(iter(ds), counter))


def _shapes_script(error_expr):
    return textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
        from test_train_shapes import ShapesConfig
        from siamese_mask_rcnn.mrcnn.model import MaskRCNN
        from siamese_mask_rcnn.mrcnn.shapes import ShapesDataset

        class Broken(ShapesDataset):
            def load_mask(self, image_id):
                if image_id == 3:
                    raise {error_expr}
                return super().load_mask(image_id)

        model = MaskRCNN("training", ShapesConfig(STEPS_PER_EPOCH=5, IMAGES_PER_GPU=2), sys.argv[1])
        model.train(Broken(12, seed=0), Broken(12, seed=1), 0.01, epochs=3, layers="heads", verbose=0)
        print("finished")
    """)


def test_training_script_with_an_uncaught_loader_error_exits(tmp_path):
    """The reported hang: the error escaped ``train`` uncaught and the process never ended."""
    script = tmp_path / "train.py"
    script.write_text(_shapes_script('TypeError("Argument bb has incorrect type")'))
    # the timeout only turns a hang into a failure: the run takes well under a minute
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "logs")], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "finished" not in proc.stdout
    assert "DataPipelineError" in proc.stderr
    assert "TypeError: Argument bb has incorrect type" in proc.stderr and "image 3" in proc.stderr


@pytest.mark.parametrize("error", [KeyError("category_id"), RuntimeError("worker state")])
def test_train_raises_the_loader_error_at_once(error, tmp_path):
    from siamese_mask_rcnn.mrcnn.model import MaskRCNN
    from siamese_mask_rcnn.mrcnn.shapes import ShapesDataset
    from test_train_shapes import ShapesConfig

    calls = []

    class Broken(ShapesDataset):
        def load_mask(self, image_id):
            calls.append(image_id)
            if image_id == 3:
                raise error
            return super().load_mask(image_id)

    config = ShapesConfig(STEPS_PER_EPOCH=5, IMAGES_PER_GPU=2)
    model = MaskRCNN("training", config, str(tmp_path))
    with pytest.raises(DataPipelineError) as info:
        model.train(Broken(12, seed=0), None, 0.01, epochs=3, layers="heads", verbose=0)
    # 3 epochs x 5 steps x 2 images were asked for; nothing starts after the error
    assert loads_after_the_error(calls, 3) <= config.DATA_WORKERS - 1, calls
    assert type(error).__name__ in str(info.value) and "image 3" in str(info.value)
