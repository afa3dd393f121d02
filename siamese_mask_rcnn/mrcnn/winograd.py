"""3×3 convolutions with Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, "Fast
Algorithms for Convolutional Neural Networks", CVPR 2016), for inference.

A ``SAME``, stride-1 3×3 convolution computes each 2×2 block of outputs from a 4×4 input
tile. Winograd's algorithm transforms the tile (``Bᵀ d B``) and the kernel (``G g Gᵀ``, once),
multiplies them elementwise — 16 products per channel pair instead of 36 — and transforms
back (``Aᵀ m A``). Over all tiles and channel pairs the 16 elementwise products are 16
matrix products ``[tiles, C_in] × [C_in, C_out]``: 2.25× fewer multiply-adds than the
convolution, plus transforms that are only additions. The result equals the convolution in
exact arithmetic; in float32 it differs by rounding (measured: 2.5e-5 on outputs of
magnitude 8 for a 256 → 512-channel conv).

Measured on a 2-core AMD EPYC (AVX-512), TensorFlow 2.21, float32, fastest of 3 calls:
the paper preset's RPN-sized conv (P2, 1×256×256×256 → 512) 0.72 s → 0.53 s, (P3,
1×128×128×256 → 512) 0.19 s → 0.13 s; a mask-head conv (100×14×14×256 → 256) 0.15 s →
0.12 s; on small maps (16×16) the convolution is faster (3 ms vs 5 ms). On a 2-core AMD
EPYC with AVX2 only (no AVX-512), the same TensorFlow, it is slower than TensorFlow's
convolution (``benchmarks/bench_winograd.py``, 2026-12-01: P2-sized 1.73 s vs 1.14 s,
P3-sized 0.30 s vs 0.28 s, mask-head sized 0.26 s vs 0.21 s); hence
``WINOGRAD_CONVS="auto"`` (:func:`use_winograd`).

Used only where a graph does inference on a CPU (:func:`use_winograd`:
:class:`Winograd3x3Conv2D` in inference-mode heads, the folded matching of the Siamese
model): training keeps TensorFlow's convolution, and on a GPU cuDNN chooses its own
algorithm (Winograd among them).
"""
import functools
import os

import keras
import numpy as np
import tensorflow as tf
from keras import layers

#: ``G`` (4×3), ``Bᵀ`` (4×4) and ``Aᵀ`` (2×4) of F(2×2, 3×3).
G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]], np.float32)
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def cpu_has_avx512(cpuinfo="/proc/cpuinfo"):
    """Whether this CPU's oneDNN kernels use AVX-512: the ``avx512f`` flag in ``cpuinfo``
    (Linux), unless ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below AVX-512. False where the flags
    cannot be read (other systems). Raises ``TypeError`` when ``cpuinfo`` is not a path."""
    if not isinstance(cpuinfo, (str, bytes, os.PathLike)):
        raise TypeError(f"cpu_has_avx512: cpuinfo must be a file path, got {cpuinfo!r}")
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if cap and cap != "ALL" and "AVX512" not in cap and "AVX10" not in cap:
        return False
    return "avx512f" in _cpu_flags(cpuinfo)


@functools.lru_cache(maxsize=None)
def _cpu_flags(cpuinfo):
    """The first ``flags`` line of ``cpuinfo`` as a frozenset (empty if unreadable); read
    once per path, since inference asks on every detect call."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[-1].split())
    except OSError:
        pass
    return frozenset()


def use_winograd(config, mode):
    """Whether a ``mode`` graph of ``config`` computes its 3×3 head convs by Winograd: in
    inference, in a process that sees no GPU, with ``WINOGRAD_CONVS`` True, or ``"auto"``
    (the default) on a CPU with AVX-512 (:func:`cpu_has_avx512`). Measured on 2-core AMD
    EPYCs: with AVX-512 Winograd is faster than TensorFlow's convolution, with AVX2 only it
    is slower (module docstring), so "auto" keeps TensorFlow's convolution there. Raises
    ``ValueError`` for any other ``WINOGRAD_CONVS`` value."""
    setting = getattr(config, "WINOGRAD_CONVS", False)
    if not (setting == "auto" or isinstance(setting, (bool, np.bool_))):
        raise ValueError(f"WINOGRAD_CONVS must be True, False or 'auto', got {setting!r}")
    if mode != "inference" or tf.config.list_logical_devices("GPU"):
        return False
    if setting == "auto":
        return cpu_has_avx512()
    return bool(setting)


def _float32(value, name):
    """``value`` as a float32 tensor; ``ValueError`` naming ``name`` for a tensor of another
    dtype (e.g. a bfloat16 activation of a mixed-precision model: cast it first)."""
    if tf.is_tensor(value) and value.dtype != tf.float32:
        raise ValueError(f"{name} must be float32, got a {value.dtype.name} tensor (cast it "
                         f"with tf.cast(..., tf.float32) first)")
    try:
        return tf.convert_to_tensor(value, tf.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be float32 numbers, got {type(value).__name__} ({exc})") from None


def winograd_kernel(kernel):
    """``G g Gᵀ`` of every channel pair: ``[3, 3, C_in, C_out] → [16, C_in, C_out]`` (row-major
    over the 4×4 transformed tile). Raises ``ValueError`` for a kernel that is not
    ``[3, 3, C_in, C_out]`` (a list or array is accepted)."""
    kernel = _float32(kernel, "winograd_kernel: kernel")
    if kernel.shape.rank != 4 or tuple(kernel.shape[:2]) != (3, 3):
        raise ValueError(f"winograd_kernel: kernel must be [3, 3, C_in, C_out] (Winograd "
                         f"F(2x2, 3x3)), got shape {tuple(kernel.shape)}")
    u = tf.einsum("ai,ijcr,bj->abcr", tf.constant(G), kernel, tf.constant(G))
    return tf.reshape(u, [16, kernel.shape[2], kernel.shape[3]])


def _transform_pairs(p0, p1, p2, p3):
    """``Bᵀ`` applied to four rows (or columns) of tiles: ``(p0 − p2, p1 + p2, p2 − p1, p1 − p3)``."""
    return [p0 - p2, p1 + p2, p2 - p1, p1 - p3]


def conv3x3(x, u):
    """``tf.nn.conv2d(x, g, 1, "SAME")`` for a 3×3 kernel ``g`` given as ``u =
    winograd_kernel(g)``, by Winograd F(2×2, 3×3).

    Args:
        x: ``[B, H, W, C_in]`` float32 (any B, H, W ≥ 1; static ``C_in``).
        u: ``[16, C_in, C_out]`` float32 from :func:`winograd_kernel`.

    Returns ``[B, H, W, C_out]`` float32, equal to the convolution up to float rounding.
    Raises ``ValueError`` when ``x`` is not a float32 rank-4 tensor, ``u`` not float32
    ``[16, C_in, C_out]`` or their ``C_in`` differ.
    """
    x = _float32(x, "conv3x3: x")
    u = _float32(u, "conv3x3: u")
    if x.shape.rank != 4:
        raise ValueError(f"conv3x3: x must be [B, H, W, C_in], got shape {tuple(x.shape)}")
    if u.shape.rank != 3 or u.shape[0] != 16 or u.shape[1] is None or u.shape[2] is None:
        raise ValueError(f"conv3x3: u must be winograd_kernel(kernel) of shape [16, C_in, C_out], "
                         f"got shape {tuple(u.shape)}")
    if x.shape[3] is not None and x.shape[3] != u.shape[1]:
        raise ValueError(f"conv3x3: x has {x.shape[3]} channels but u expects C_in={u.shape[1]}")
    depth, channels = int(u.shape[1]), int(u.shape[2])
    shape = tf.shape(x)
    b, h, w = shape[0], shape[1], shape[2]
    th, tw = (h + 1) // 2, (w + 1) // 2
    # Zero padding: one row/column before (SAME), and after up to 2·tiles + 2 so that tile t
    # reads rows 2t .. 2t + 3 of the padded map.
    padded = tf.pad(x, [[0, 0], [1, 2 * th + 1 - h], [1, 2 * tw + 1 - w], [0, 0]])
    rows = tf.reshape(padded, [b, th + 1, 2, 2 * tw + 2, depth])
    # rows 2t, 2t+1, 2t+2, 2t+3 of every tile, without strided slices
    tiles = _transform_pairs(rows[:, :th, 0], rows[:, :th, 1], rows[:, 1:, 0], rows[:, 1:, 1])
    transformed = []
    for row in tiles:
        cols = tf.reshape(row, [b, th, tw + 1, 2, depth])
        transformed += _transform_pairs(cols[:, :, :tw, 0], cols[:, :, :tw, 1], cols[:, :, 1:, 0], cols[:, :, 1:, 1])
    v = tf.reshape(tf.stack(transformed), [16, -1, depth])                # [16, tiles, C_in]
    m = tf.matmul(v, u)                                                   # [16, tiles, C_out]
    m = [m[i] for i in range(16)]
    # Aᵀ over the tile's rows, then over its columns
    t = [[m[j] + m[4 + j] + m[8 + j] for j in range(4)], [m[4 + j] - m[8 + j] - m[12 + j] for j in range(4)]]
    y = [[r[0] + r[1] + r[2], r[1] - r[2] - r[3]] for r in t]             # y[row][col]: [tiles, C_out]
    out = tf.stack([tf.stack(y[0], axis=1), tf.stack(y[1], axis=1)], axis=1)  # [tiles, 2, 2, C_out]
    out = tf.reshape(out, [b, th, tw, 2, 2, channels])
    out = tf.reshape(tf.transpose(out, [0, 1, 3, 2, 4, 5]), [b, 2 * th, 2 * tw, channels])
    return out[:, :h, :w]


@keras.saving.register_keras_serializable(package="siamese_mask_rcnn")
class Winograd3x3Conv2D(layers.Conv2D):
    """A ``Conv2D`` (same name, weights and outputs up to float rounding) whose 3×3, stride-1,
    ``same``-padded convolution runs as Winograd F(2×2, 3×3) (:func:`conv3x3`) when it
    computes in float32; any other configuration, or a float16/bfloat16 compute dtype (mixed
    precision), runs TensorFlow's convolution. For inference graphs: the heads of an
    inference-mode model build their RPN and mask-head 3×3 convs with it."""

    def convolution_op(self, inputs, kernel):
        usable = (tuple(kernel.shape[:2]) == (3, 3) and self.padding == "same"
                  and self.data_format == "channels_last" and tuple(self.strides) == (1, 1)
                  and tuple(self.dilation_rate) == (1, 1) and self.groups == 1
                  and inputs.dtype == tf.float32 and kernel.dtype == tf.float32)
        if not usable:
            return super().convolution_op(inputs, kernel)
        return conv3x3(inputs, winograd_kernel(kernel))
