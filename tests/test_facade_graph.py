"""matterport names that touch Keras / TensorFlow: ``utils.batch_slice``,
``utils.box_refinement_graph``, ``MaskRCNN.set_trainable`` and ``visualize.display_weight_stats``
on this project's Keras 3 model (nested ``rpn_model``)."""
import re
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from siamese_mask_rcnn.mrcnn import model as modellib  # noqa: E402
from siamese_mask_rcnn.mrcnn import utils, visualize  # noqa: E402
from siamese_mask_rcnn.mrcnn.training import LAYER_PRESETS  # noqa: E402
from test_matterport_client import ShapesConfig, make_dataset  # noqa: E402


def test_utils_import_does_not_load_tensorflow(project_root):
    code = ("import sys; from siamese_mask_rcnn.mrcnn import utils; from siamese_mask_rcnn.mrcnn.utils import *; "
            "assert callable(utils.batch_slice); assert 'tensorflow' not in sys.modules, 'tensorflow loaded'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=project_root)


def test_batch_slice_stacks_per_item_results():
    a = tf.constant(np.arange(24, dtype=np.float32).reshape(3, 2, 4))
    b = tf.constant([1.0, 10.0, 100.0])
    scaled = utils.batch_slice([a, b], lambda x, s: x * s, 3)
    np.testing.assert_allclose(scaled.numpy(), a.numpy() * np.array([1, 10, 100])[:, None, None])
    # several outputs -> a list; a single tensor input works too; only batch_size items are used
    sums, maxes = utils.batch_slice(a, lambda x: (tf.reduce_sum(x), tf.reduce_max(x)), 2,
                                    names=["sums", "maxes"])
    np.testing.assert_allclose(sums.numpy(), a.numpy()[:2].sum(axis=(1, 2)))
    np.testing.assert_allclose(maxes.numpy(), [7.0, 15.0])
    with pytest.raises(ValueError, match="batch of 3 < batch_size 4"):
        utils.batch_slice(a, tf.reduce_sum, 4)
    with pytest.raises(ValueError, match="2 names for 1 outputs"):
        utils.batch_slice(a, tf.reduce_sum, 1, names=["x", "y"])
    with pytest.raises(ValueError, match="positive integer"):
        utils.batch_slice(a, tf.reduce_sum, 0)


def test_box_refinement_graph_is_the_inverse_of_apply_box_deltas():
    boxes = np.array([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 8.0, 16.0]])
    gt = np.array([[12.0, 18.0, 56.0, 70.0], [1.0, 2.0, 9.0, 12.0]])
    deltas = utils.box_refinement_graph(tf.constant(boxes), tf.constant(gt)).numpy()
    np.testing.assert_allclose(deltas, utils.box_refinement(boxes, gt), rtol=1e-5)
    np.testing.assert_allclose(utils.apply_box_deltas(boxes, deltas), gt, rtol=1e-5)


@pytest.fixture(scope="module")
def training_model(tmp_path_factory):
    tf.random.set_seed(0)
    return modellib.MaskRCNN(mode="training", config=ShapesConfig(),
                             model_dir=str(tmp_path_factory.mktemp("logs")))


def flags(model):
    return {layer.name: layer.trainable for layer in model.get_trainable_layers()}


def test_set_trainable_matches_train_selection_nested_included(training_model, capsys):
    model = training_model
    nested = [layer.name for layer in model.keras_model.get_layer("rpn_model").layers if layer.weights]
    assert nested  # rpn_conv_shared ... live inside the nested rpn_model
    chosen = model.set_trainable(r"(rpn\_.*)|(fpn\_.*)")
    got = flags(model)
    expected = {name: re.fullmatch(r"(rpn\_.*)|(fpn\_.*)", name) is not None for name in got}
    assert got == expected and any(expected.values()) and not all(expected.values())
    assert all(got[name] for name in nested)
    assert [layer.name for layer in chosen] == [name for name, on in expected.items() if on]
    assert model.keras_model.get_layer("rpn_model").trainable  # the container keeps its flag
    out = capsys.readouterr().out
    assert "In model: rpn_model" in out and "rpn_conv_shared" in out and "tiny_conv1" not in out
    # a preset name selects what train(layers=...) would train
    heads = {layer.name for layer in modellib.select_trainable_layers(model.keras_model, "heads")}
    model.set_trainable("heads", verbose=0)
    assert {name for name, on in flags(model).items() if on} == heads
    frozen = [v for layer in model.get_trainable_layers() if not layer.trainable for v in layer.weights]
    assert frozen and not any(v.trainable for v in frozen)
    assert capsys.readouterr().out == ""
    # a regex that matches nothing changes nothing
    with pytest.raises(ValueError, match="matches no weighted layer"):
        model.set_trainable("no_such_layer.*")
    assert {name for name, on in flags(model).items() if on} == heads
    model.set_trainable(LAYER_PRESETS["all"], verbose=0)
    assert all(flags(model).values())


def test_train_all_after_set_trainable_heads_trains_the_backbone(training_model):
    model = training_model
    model.set_trainable("heads", verbose=0)
    backbone = model.keras_model.get_layer("tiny_c2_conv_a")
    assert not backbone.trainable
    before = backbone.get_weights()[0].copy()
    dataset = make_dataset(2, seed=1)
    model.train(dataset, dataset, learning_rate=0.01, epochs=1, layers="all", steps_per_epoch=1,
                validation_steps=0, verbose=0)
    assert backbone.trainable
    assert not np.allclose(backbone.get_weights()[0], before)


def test_display_weight_stats_on_the_keras_3_model(training_model, capsys):
    model = training_model
    kernel = model.keras_model.get_layer("rpn_model").get_layer("rpn_conv_shared").weights[0]
    kernel.assign(np.full(kernel.shape, 2000.0, np.float32))  # constant and too large
    bias = model.keras_model.get_layer("tiny_conv1").weights[1]
    bias.assign(np.zeros(bias.shape, np.float32))
    table = visualize.display_weight_stats(model)
    assert table[0] == ["WEIGHT NAME", "SHAPE", "MIN", "MAX", "STD"]
    rows = {row[0].split(" ")[0]: row for row in table[1:]}
    n_arrays = sum(len(layer.weights) for layer in model.get_trainable_layers())
    assert len(rows) == len(table) - 1 == n_arrays
    row = rows["rpn_conv_shared/kernel"]
    assert row[0].endswith("*** dead? *** Overflow?")
    assert row[1] == str(tuple(kernel.shape)) and float(row[2]) == float(row[3]) == 2000.0
    conv = model.keras_model.get_layer("tiny_conv1")
    values = conv.weights[0].numpy()
    low, high, std = (float(x) for x in rows["tiny_conv1/kernel"][2:])
    assert low == pytest.approx(values.min(), abs=1e-4) and high == pytest.approx(values.max(), abs=1e-4)
    assert std == pytest.approx(values.std(), abs=1e-4)
    assert [float(x) for x in rows["tiny_conv1/bias"][2:4]] == [0.0, 0.0]
    assert "*** dead?" not in rows["tiny_conv1/bias"][0]  # a constant (zero) bias is normal
    assert "rpn_conv_shared/kernel *** dead?" in capsys.readouterr().out
    assert visualize.display_weight_stats(model.keras_model)[1:] == table[1:]  # a Keras model too
    with pytest.raises(TypeError, match="MaskRCNN or a Keras model"):
        visualize.display_weight_stats(object())
