"""Winograd F(2×2, 3×3) against TensorFlow's convolution on this CPU, at the paper preset's sizes.

Run by hand (not part of the tests)::

    python benchmarks/bench_winograd.py [--threads 2] [--calls 3]

Times, for the 3×3 convolutions of an inference graph at the paper preset (1024² query),
``tf.nn.conv2d`` and :func:`siamese_mask_rcnn.mrcnn.winograd.conv3x3` on the same random
input and kernel, each inside a ``tf.function``, fastest of ``--calls`` (at least 3) calls after a warm-up;
prints the CPU, both times, the direct-convolution GFLOP/s, the largest difference of the
outputs, and which one ``WINOGRAD_CONVS="auto"`` picks on this CPU. The result decides the
"auto" rule (:func:`siamese_mask_rcnn.mrcnn.winograd.use_winograd`).
"""
import argparse
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no TensorFlow start-up and grappler warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

#: (name, input shape, output channels): the RPN's shared conv on P2 and P3 (512 channels
#: from the 256-channel pyramid) and one mask-head conv on 100 detections' 14×14 ROI features.
SHAPES = [("RPN conv on P2", (1, 256, 256, 256), 512),
          ("RPN conv on P3", (1, 128, 128, 256), 512),
          ("mask-head conv, 100 ROIs", (100, 14, 14, 256), 256)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="TensorFlow intra-op threads")
    parser.add_argument("--calls", type=int, default=3, help="timed calls per figure after a warm-up (at least 3 are made)")
    args = parser.parse_args()
    if args.threads < 1 or args.calls < 1:
        parser.error(f"--threads and --calls must be >= 1, got {args.threads} and {args.calls}")
    import tensorflow as tf
    from bench_inference import fastest, machine_description
    from siamese_mask_rcnn.mrcnn.winograd import conv3x3, cpu_has_avx512, winograd_kernel

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    print(f"machine: {machine_description()}")
    print("| conv | TensorFlow conv2d s | Winograd s | Winograd ÷ conv2d | conv2d GFLOP/s | max |difference| |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name, shape, channels in SHAPES:
        x = tf.constant(rng.standard_normal(shape).astype(np.float32))
        kernel = tf.constant((rng.standard_normal((3, 3, shape[-1], channels)) * 0.05).astype(np.float32))
        transformed = winograd_kernel(kernel)
        direct = tf.function(lambda v, k=kernel: tf.nn.conv2d(v, k, 1, "SAME"))
        winograd = tf.function(lambda v, u=transformed: conv3x3(v, u))
        t_direct = fastest(lambda: direct(x).numpy(), args.calls)
        t_winograd = fastest(lambda: winograd(x).numpy(), args.calls)
        gflop = 2 * np.prod(shape[:3]) * 9 * shape[-1] * channels / 1e9
        diff = float(np.abs(direct(x).numpy() - winograd(x).numpy()).max())
        print(f"| {name} {shape} → {channels} | {t_direct:.3f} | {t_winograd:.3f} | "
              f"{t_winograd / t_direct:.2f} | {gflop / t_direct:.0f} | {diff:.1e} |")
    print(f'WINOGRAD_CONVS="auto" on this CPU: {"Winograd" if cpu_has_avx512() else "TensorFlow conv2d"} '
          f"(AVX-512 for oneDNN: {cpu_has_avx512()})")


if __name__ == "__main__":
    main()
