"""Where a training step's time goes: the input pipeline alone, the training step alone.

Run by hand (not part of the tests), on an otherwise idle machine::

    python benchmarks/bench_pipeline.py [--presets demo small] [--threads 2] [--inter-op 2]
    python benchmarks/bench_pipeline.py --presets demo --sweep 1x1 2x1 2x2 4x1 8x2

Per preset, with the main job's data path (every scene rendered once and kept in memory,
references from a bank rendered once, see ``siamese_mask_rcnn.demo``), it prints:

* ``loader``: milliseconds of Python per training example (the per-example work that
  stays after the cache: ground truth, RPN targets, molding);
* ``pipeline``: examples per second of the real ``tf.data`` pipeline alone (the
  ``tf.numpy_function`` loader, batching, prefetch), no training;
* ``step``: steps per second of the compiled training step alone, on batches already in
  memory (no pipeline);
* ``training``: seconds per step of the real loop (pipeline feeding the step, the loss
  read back, TensorBoard scalars), as in ``siamese-mrcnn demo``;

and whether the pipeline is at least 3× faster than the step consumes. ``--sweep IxJ ...``
times the step alone with I intra-op and J inter-op threads, each in a fresh process.
"""
import argparse
import os
import platform
import subprocess
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no TensorFlow start-up and grappler warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def cpu_description():
    """CPU model, cores and the widest AVX level, from /proc/cpuinfo."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name in ("", platform.machine()):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{name}, {os.cpu_count()} cores, {isa}"


def config_for(preset, batch):
    from siamese_mask_rcnn.config import siamese_config
    from siamese_mask_rcnn.demo import demo_config

    overrides = {} if batch is None else {"IMAGES_PER_GPU": batch}
    if preset == "demo":
        return demo_config(**overrides)
    return siamese_config(preset, **overrides)


def make_data(config, scenes, references_per_class, workers):
    """Training scenes at the preset's size, all kept in memory, and a reference bank."""
    from siamese_mask_rcnn.demo import make_datasets

    t0 = time.perf_counter()
    train, val = make_datasets(num_train=scenes, num_val=8, image_size=int(config.IMAGE_MAX_DIM),
                               cache_size=None, workers=workers)
    scene_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    train.build_reference_bank(train.train_class_ids, references_per_class, config.TARGET_MIN_DIM,
                               config.TARGET_MAX_DIM, workers=workers)
    bank_s = time.perf_counter() - t0
    return train, val, scene_s, bank_s


def time_loader(model, train, n):
    """Milliseconds per example of ``load_training_example`` from the cache."""
    from siamese_mask_rcnn.mrcnn.pipeline import SkipExample

    ids = model.training_image_ids(train)
    t0 = time.perf_counter()
    done = 0
    for k in range(n):
        try:
            model.load_training_example(train, ids[k % len(ids)], np.random.default_rng([0, k]))
            done += 1
        except SkipExample:
            pass
    return 1000 * (time.perf_counter() - t0) / max(1, done)


def time_pipeline(model, train, batches):
    """Examples per second of the real tf.data training pipeline, nothing else running."""
    from siamese_mask_rcnn.mrcnn.pipeline import SkipCounter
    from siamese_mask_rcnn.mrcnn.training import make_training_dataset

    c = model.config
    ds, _ = make_training_dataset(model, train, None, 0, 0, SkipCounter(), c.BATCH_SIZE)
    it = iter(ds)
    for _ in range(3):  # warm-up: start the workers, fill the prefetch buffer
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * c.BATCH_SIZE / (time.perf_counter() - t0)


def step_functions(model):
    from siamese_mask_rcnn.mrcnn.training import (make_optimizer, make_step_functions,
                                                  select_trainable_layers)

    c = model.config
    layers = select_trainable_layers(model.keras_model, "all")
    optimizer = make_optimizer(c, model.strategy, c.LEARNING_RATE, c.LEARNING_MOMENTUM)
    with model.strategy.scope():
        train_step, _, _ = make_step_functions(model, layers, optimizer)
    return train_step


def time_step(model, train, train_step, steps):
    """Seconds of tracing and steps per second of the training step on in-memory batches."""
    import tensorflow as tf
    from siamese_mask_rcnn.mrcnn.pipeline import SkipCounter
    from siamese_mask_rcnn.mrcnn.training import make_training_dataset

    c = model.config
    ds, _ = make_training_dataset(model, train, None, 0, 0, SkipCounter(), c.BATCH_SIZE)
    batches = [tuple(tf.identity(t) for t in b) for b in ds.take(4)]
    t0 = time.perf_counter()
    train_step(batches[0]).numpy()
    trace = time.perf_counter() - t0
    train_step(batches[1]).numpy()
    t0 = time.perf_counter()
    for k in range(steps):
        train_step(batches[k % len(batches)]).numpy()
    return trace, steps / (time.perf_counter() - t0)


def time_training(model, train, steps):
    """Seconds per step of ``MaskRCNN.train`` (pipeline + step + logging), tracing excluded."""
    class Clock:
        def __init__(self):
            self.times = []

        def on_train_batch_end(self, step, logs=None):
            self.times.append(time.perf_counter())

    clock = Clock()
    model.train(train, None, model.config.LEARNING_RATE, epochs=model.epoch + 1, layers="all",
                steps_per_epoch=steps + 2, verbose=0, custom_callbacks=[clock])
    return (clock.times[-1] - clock.times[1]) / (len(clock.times) - 2)


def bench_preset(preset, args):
    from siamese_mask_rcnn.siamese import SiameseMaskRCNN

    config = config_for(preset, args.batch)
    demo = preset == "demo"
    scenes = args.scenes or (400 if demo else 40)
    train, _, scene_s, bank_s = make_data(config, scenes, args.references if demo else 2, args.workers)
    model = SiameseMaskRCNN("training", config, model_dir=os.path.join(args.logs, preset))
    loader_ms = time_loader(model, train, 200 if demo else 20)
    pipe = time_pipeline(model, train, args.batches or (50 if demo else 6))
    train_step = step_functions(model)
    steps = args.steps or (30 if demo else 3)
    trace, step_rate = time_step(model, train, train_step, steps)
    per_step = time_training(model, train, steps) if args.loop else float("nan")
    b = config.BATCH_SIZE
    need = step_rate * b
    print(f"\n[{preset}] batch {b}, {config.IMAGE_MAX_DIM}² queries, {config.TARGET_MAX_DIM}² references")
    print(f"  data cache   {scenes} scenes in {scene_s:.1f} s ({1000 * scene_s / scenes:.1f} ms/scene), "
          f"reference bank {bank_s:.1f} s")
    print(f"  loader       {loader_ms:.2f} ms/example of Python ({loader_ms * b:.1f} ms per batch)")
    print(f"  pipeline     {pipe:.1f} examples/s alone ({1000 * b / pipe:.1f} ms per batch)")
    print(f"  step         {step_rate:.2f} steps/s alone ({1000 / step_rate:.1f} ms/step, "
          f"tracing {trace:.1f} s) = {need:.1f} examples/s consumed")
    if args.loop:
        print(f"  training     {1000 * per_step:.1f} ms/step in the real loop (pipeline + step + logging)")
    ok = pipe >= 3 * need
    print(f"  pipeline / consumption = {pipe / need:.1f}x ({'OK' if ok else 'BELOW'} the 3x target)")
    return ok


def sweep(args):
    """The step alone (demo preset) for each ``IxJ`` thread setting, each in a new process."""
    for setting in args.sweep:
        intra, inter = (int(v) for v in setting.lower().split("x"))
        cmd = [sys.executable, os.path.abspath(__file__), "--presets", "demo", "--threads", str(intra),
               "--inter-op", str(inter), "--step-only", "--repeats", str(args.repeats)]
        cmd += ["--batch", str(args.batch)] if args.batch else []
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("step-only")]
        print(f"intra {intra} inter {inter}: {line[0] if line else out.stderr[-400:]}", flush=True)


def step_only(args):
    from siamese_mask_rcnn.siamese import SiameseMaskRCNN

    config = config_for("demo", args.batch)
    train, _, _, _ = make_data(config, 100, 4, 1)
    model = SiameseMaskRCNN("training", config, model_dir=os.path.join(args.logs, "sweep"))
    train_step = step_functions(model)
    rates = [time_step(model, train, train_step, args.steps or 30)[1] for _ in range(args.repeats)]
    print("step-only " + " ".join(f"{1000 / r:.1f}" for r in rates) + " ms/step")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["demo", "small"], choices=["demo", "small"])
    parser.add_argument("--threads", type=int, default=None,
                        help="TensorFlow intra-op threads (default: the demo's default; 0: "
                             "TensorFlow's own default)")
    parser.add_argument("--inter-op", type=int, default=2, help="TensorFlow inter-op threads (default 2)")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default: the preset's)")
    parser.add_argument("--scenes", type=int, default=None, help="training scenes to cache")
    parser.add_argument("--references", type=int, default=16, help="bank references per category")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes")
    parser.add_argument("--steps", type=int, default=None, help="timed steps")
    parser.add_argument("--batches", type=int, default=None, help="timed pipeline batches")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of --step-only")
    parser.add_argument("--no-loop", dest="loop", action="store_false",
                        help="skip timing the real training loop")
    parser.add_argument("--sweep", nargs="+", metavar="IxJ", help="thread settings to compare")
    parser.add_argument("--step-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--logs", default="logs/bench_training")
    args = parser.parse_args(argv)
    if args.sweep:
        print(cpu_description())
        return sweep(args)
    from siamese_mask_rcnn.demo import DEFAULT_THREADS, configure_threads

    threads = DEFAULT_THREADS if args.threads is None else args.threads
    if threads > 0:  # 0: TensorFlow's own default (every core it sees, both pools)
        configure_threads(threads, args.inter_op)
    if args.step_only:
        return step_only(args)
    import tensorflow as tf
    print(f"{cpu_description()}; Python {platform.python_version()}, TensorFlow {tf.__version__}, "
          f"{threads} intra-op / {args.inter_op} inter-op threads")
    results = [bench_preset(p, args) for p in args.presets]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
