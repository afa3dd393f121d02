"""Inference and training-step timings of the Siamese model presets on this machine.

Run by hand (not part of the tests)::

    python benchmarks/bench_inference.py [--presets paper small demo] [--repeats 5] [--train-steps 5]

Prints, per preset: graph build time, query encoding (backbone + FPN), one reference
embedding, the matching + heads pass for one category, a full ``detect`` call, and the
mean seconds per training step (random weights; only the speed is measured).
"""
import argparse
import os
import platform
import time

import numpy as np


def machine_description():
    import tensorflow as tf
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpus = tf.config.list_physical_devices("GPU")
    return (f"{cpu}, {os.cpu_count()} cores, GPUs: {len(gpus)}, Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}")


def config_for(preset):
    from siamese_mask_rcnn.config import siamese_config
    from siamese_mask_rcnn.demo import demo_config
    if preset == "demo":
        return demo_config(IMAGES_PER_GPU=1)
    return siamese_config(preset, IMAGES_PER_GPU=1)


def timed(fn, repeats):
    fn()  # warm-up / tracing
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def bench_preset(preset, repeats, train_steps):
    from siamese_mask_rcnn.siamese import SiameseMaskRCNN
    from siamese_mask_rcnn.datasets.synthetic import make_train_val

    config = config_for(preset)
    t0 = time.perf_counter()
    model = SiameseMaskRCNN("inference", config, model_dir="logs/bench")
    build = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    side = int(config.IMAGE_MAX_DIM)
    query = rng.integers(0, 255, (side * 3 // 4, side, 3), dtype=np.uint8)
    reference = rng.integers(0, 255, (int(config.TARGET_MAX_DIM), int(config.TARGET_MAX_DIM) * 2 // 3, 3),
                             dtype=np.uint8)
    embedding = model.embed_category([reference])
    row = {
        "build_s": build,
        "encode_query_s": timed(lambda: model.encode_query(query), repeats),
        "embed_reference_s": timed(lambda: model.embed_category([reference]), repeats),
        "detect_1_category_s": timed(lambda: model.detect_embeddings(query, {0: embedding}), repeats),
        "detect_5_categories_s": timed(lambda: model.detect_embeddings(query, {k: embedding for k in range(5)}),
                                       max(1, repeats // 2)),
        "detect_call_s": timed(lambda: model.detect([[reference]], [query]), repeats),
    }
    if train_steps:
        train_cfg = type(config).from_dict({**config.to_dict(), "IMAGES_PER_GPU": 2 if preset != "demo" else 4},
                                           strict=False)
        data, _ = make_train_val(num_categories=100, num_train=40, num_val=1, image_size=side)
        # Every train() call traces its step once: time a short and a long run and take the
        # difference, so the per-step figure excludes tracing.
        seconds = []
        for steps in (1, 1 + train_steps):
            trainer = SiameseMaskRCNN("training", train_cfg, model_dir="logs/bench")
            t0 = time.perf_counter()
            trainer.train(data, None, 0.001, epochs=1, layers="all", steps_per_epoch=steps, verbose=0)
            seconds.append(time.perf_counter() - t0)
        row["train_step_s"] = (seconds[1] - seconds[0]) / train_steps
        row["train_first_step_incl_tracing_s"] = seconds[0]
        row["train_batch"] = train_cfg.BATCH_SIZE
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["demo", "small", "paper"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {machine_description()}")
    for preset in args.presets:
        row = bench_preset(preset, args.repeats, args.train_steps)
        print(f"\npreset {preset}:")
        for key, value in row.items():
            print(f"  {key:<36} {value:8.3f}" if isinstance(value, float) else f"  {key:<36} {value}")


if __name__ == "__main__":
    main()
