"""Winograd F(2×2, 3×3) convolutions (``mrcnn.winograd``) against TensorFlow's convolution."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from siamese_mask_rcnn.mrcnn import winograd as W  # noqa: E402


@pytest.mark.parametrize("shape,channels", [((1, 1, 1, 3), 2), ((2, 5, 7, 8), 4), ((3, 6, 6, 5), 7),
                                            ((1, 2, 9, 4), 3), ((4, 14, 14, 16), 8)])
def test_conv3x3_equals_same_padded_convolution(shape, channels):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    kernel = rng.standard_normal((3, 3, shape[-1], channels)).astype(np.float32)
    expected = tf.nn.conv2d(x, kernel, 1, "SAME").numpy()
    actual = W.conv3x3(x, W.winograd_kernel(kernel)).numpy()
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_conv3x3_with_unknown_batch_and_size_in_a_graph():
    fn = tf.function(W.conv3x3, input_signature=[tf.TensorSpec([None, None, None, 6]),
                                                 tf.TensorSpec([16, 6, 5])])
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3, 6, 5)).astype(np.float32)
    u = W.winograd_kernel(kernel)
    for shape in [(1, 3, 4, 6), (2, 8, 5, 6)]:  # one trace, two sizes
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(fn(x, u).numpy(), tf.nn.conv2d(x, kernel, 1, "SAME").numpy(), atol=1e-4)


def test_winograd_kernel_hand_case_and_bad_kernel():
    kernel = np.zeros((3, 3, 1, 1), np.float32)
    kernel[1, 1] = 1.0  # identity kernel: G g G^T = outer(G[:, 1], G[:, 1])
    u = W.winograd_kernel(kernel).numpy().reshape(4, 4)
    np.testing.assert_allclose(u, np.outer([0, .5, -.5, 0], [0, .5, -.5, 0]))
    with pytest.raises(ValueError, match="3x3"):
        W.winograd_kernel(np.zeros((5, 5, 1, 1), np.float32))


def test_bad_shapes_are_refused_with_the_argument_named():
    rng = np.random.default_rng(4)
    kernel = rng.standard_normal((3, 3, 4, 2)).astype(np.float32)
    with pytest.raises(ValueError, match=r"winograd_kernel: kernel must be \[3, 3, C_in, C_out\].*\(3, 3\)"):
        W.winograd_kernel(np.zeros((3, 3), np.float32))
    u = W.winograd_kernel(kernel.tolist())  # a nested list is a kernel too
    assert tuple(u.shape) == (16, 4, 2)
    x = rng.standard_normal((1, 5, 5, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"conv3x3: x must be \[B, H, W, C_in\]"):
        W.conv3x3(x[0], u)
    with pytest.raises(ValueError, match=r"conv3x3: u must be winograd_kernel"):
        W.conv3x3(x, kernel)
    with pytest.raises(ValueError, match="x has 3 channels but u expects C_in=4"):
        W.conv3x3(x[..., :3], u)
    np.testing.assert_allclose(W.conv3x3(x.tolist(), u.numpy().tolist()).numpy(),
                               tf.nn.conv2d(x, kernel, 1, "SAME").numpy(), atol=1e-4)


def test_documented_transform_matrices_are_the_ones_computed():
    """``BT`` and ``AT`` document the input and output transforms written out in the code."""
    rng = np.random.default_rng(5)
    d = rng.standard_normal(4).astype(np.float32)
    np.testing.assert_allclose(np.array(W._transform_pairs(*d)), W.BT @ d, atol=1e-6)
    # F(2, 3) in one dimension: Aᵀ[(G g) ⊙ (Bᵀ d)] is the valid correlation of d with g
    g = rng.standard_normal(3).astype(np.float32)
    y = W.AT @ ((W.G @ g) * (W.BT @ d))
    np.testing.assert_allclose(y, [d[0:3] @ g, d[1:4] @ g], atol=1e-5)


def test_layer_matches_conv2d_and_falls_back_where_winograd_does_not_apply():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 9, 10, 4)).astype(np.float32)
    for kwargs in [dict(kernel_size=3, padding="same"),                    # Winograd
                   dict(kernel_size=3, padding="same", strides=2),         # convolution
                   dict(kernel_size=3, padding="valid"),                   # convolution
                   dict(kernel_size=1, padding="same")]:                   # convolution
        fast = W.Winograd3x3Conv2D(5, activation="relu", **kwargs)
        plain = keras.layers.Conv2D(5, activation="relu", **kwargs)
        fast.build(x.shape)
        plain.build(x.shape)
        plain.set_weights(fast.get_weights())
        np.testing.assert_allclose(fast(x).numpy(), plain(x).numpy(), atol=1e-5, err_msg=str(kwargs))
    # float16 compute (mixed precision): TensorFlow's convolution, in float16
    half = W.Winograd3x3Conv2D(5, 3, padding="same", dtype="mixed_float16")
    half.build(x.shape)
    out = half(x)
    assert out.dtype == tf.float16
    reference = tf.nn.conv2d(tf.cast(x, tf.float16), tf.cast(half.kernel, tf.float16), 1, "SAME") + \
        tf.cast(half.bias, tf.float16)
    np.testing.assert_array_equal(out.numpy(), reference.numpy())


def test_use_winograd_only_for_cpu_inference(monkeypatch):
    class Settings:
        WINOGRAD_CONVS = True

    assert W.use_winograd(Settings, "inference")
    assert not W.use_winograd(Settings, "training")
    off = type("Off", (), {"WINOGRAD_CONVS": False})
    assert not W.use_winograd(off, "inference")
    auto = type("Auto", (), {"WINOGRAD_CONVS": "auto"})
    for has_avx512 in (True, False):
        monkeypatch.setattr(W, "cpu_has_avx512", lambda v=has_avx512: v)
        assert W.use_winograd(auto, "inference") is has_avx512
        assert not W.use_winograd(auto, "training")
    # a process that sees a GPU: cuDNN chooses its own algorithm
    monkeypatch.setattr(W, "cpu_has_avx512", lambda: True)
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: ["/GPU:0"] if kind == "GPU" else [])
    assert not W.use_winograd(Settings, "inference")
    assert not W.use_winograd(auto, "inference")


def test_cpu_has_avx512_reads_the_flags_and_respects_the_onednn_cap(tmp_path, monkeypatch):
    avx512 = tmp_path / "avx512"
    avx512.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512dq\n")
    avx2 = tmp_path / "avx2"
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512_bf16_not_f\n")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert W.cpu_has_avx512(str(avx512)) is True
    assert W.cpu_has_avx512(str(avx2)) is False
    assert W.cpu_has_avx512(str(tmp_path / "missing")) is False
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN capped below AVX-512
    assert W.cpu_has_avx512(str(avx512)) is False
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert W.cpu_has_avx512(str(avx512)) is True


@pytest.mark.parametrize("value", ["yes", 1, None, "AUTO"])
def test_winograd_setting_must_be_true_false_or_auto(value):
    from siamese_mask_rcnn.mrcnn.config import Config
    with pytest.raises(ValueError, match="WINOGRAD_CONVS must be True, False or 'auto'"):
        Config(WINOGRAD_CONVS=value)
    # objects that are not a Config (e.g. a settings class) are checked by use_winograd too
    settings = type("Settings", (), {"WINOGRAD_CONVS": value})
    with pytest.raises(ValueError, match="WINOGRAD_CONVS must be True, False or 'auto'"):
        W.use_winograd(settings, "inference")
    for good in (True, False, "auto"):
        assert Config(WINOGRAD_CONVS=good).WINOGRAD_CONVS == good


def test_cpu_has_avx512_refuses_a_path_that_is_not_a_path():
    with pytest.raises(TypeError, match="cpuinfo must be a file path, got None"):
        W.cpu_has_avx512(None)


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16, tf.float64])
def test_conv3x3_names_a_tensor_that_is_not_float32(dtype):
    u = W.winograd_kernel(np.ones((3, 3, 2, 4), np.float32))
    with pytest.raises(ValueError, match=f"conv3x3: x must be float32, got a {dtype.name} tensor"):
        W.conv3x3(tf.ones((1, 5, 5, 2), dtype), u)
    with pytest.raises(ValueError, match=f"winograd_kernel: kernel must be float32, got a {dtype.name}"):
        W.winograd_kernel(tf.ones((3, 3, 2, 4), dtype))
    with pytest.raises(ValueError, match="conv3x3: u must be float32 numbers, got str"):
        W.conv3x3(tf.ones((1, 5, 5, 2)), "kernel")
