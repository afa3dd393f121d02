"""Inference timings of the Siamese model presets on this machine, stage by stage.

Run by hand (not part of the tests)::

    python benchmarks/bench_inference.py [--presets paper small demo] [--repeats 3]
        [--categories 5] [--threads N] [--no-real-threshold]

Prints the CPU, then per preset the seconds of each inference stage for one query and one
category: query encoding (ResNet + FPN), one reference embedding, matching (paper Section
4.3), RPN + proposals, ROI heads (classifier + detection layer), mask head (on the detections
that pass the threshold) and unmolding, each stage's convolution GFLOP and achieved GFLOP/s,
and, measured in the same run, a plain Keras ResNet-50 forward at the query size (the
machine's practical convolution throughput, the "ceiling"). Then ``detect_embeddings``
with 1 and with ``--categories`` categories (the batched, folded path; then one call per
category, plain and folded) and the cost of each extra category. When ``torch`` and ``torchvision`` are importable (they are not
dependencies), torchvision's ``maskrcnn_resnet50_fpn`` is timed too, at a true query-size
input (its transform's ``min_size`` / ``max_size`` set to the query side, not its default
800 / 1333), 100 detections (score threshold 0) and the same intra-op threads, and every
figure is also given as a multiple of its time. Random weights (only the speed is measured)
(seeded: the same in every run) and a score threshold of 0, so the mask head runs on every
detection slot that the random classifier fills (its worst case; the count is printed); then ``detect_embeddings`` again at the preset's own
``DETECTION_MIN_CONFIDENCE`` with the same weights (how many random-weight detections pass
it is printed). Stage figures, the ResNet-50 ceiling and torchvision's backbone are the
fastest of at least 3 calls (stages are differences of timed prefixes); the end-to-end
figures (``detect_embeddings``, torchvision's whole model) are the mean of ``--repeats``
calls (``--paper-repeats`` for paper); every figure comes after one warm-up call. At the
paper preset the issue's targets are checked and printed as met / NOT met.

The conv GFLOP of the head stages are those of direct convolutions. Inference graphs compute
the RPN's and the mask head's 3×3 convolutions by Winograd F(2×2, 3×3) (``WINOGRAD_CONVS``,
2.25× fewer multiply-adds in their matrix products), so those stages can run above 100 % of
the ceiling: the figure is then the direct-convolution work per second.
"""
import argparse
import os
import platform
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no TensorFlow start-up and grappler warnings


def machine_description():
    import tensorflow as tf
    cpu = platform.processor() or platform.machine()
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.readlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        cpu = names[0] if names else cpu
        flag_lines = [line for line in lines if line.startswith("flags")]
        flags = flag_lines[0] if flag_lines else ""
    except OSError:
        pass
    isa = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
    gpus = tf.config.list_physical_devices("GPU")
    return (f"{cpu} ({isa}), {os.cpu_count()} cores, GPUs: {len(gpus)}, intra/inter-op threads "
            f"{tf.config.threading.get_intra_op_parallelism_threads()}/"
            f"{tf.config.threading.get_inter_op_parallelism_threads()} (0 = TensorFlow's default), "
            f"Python {platform.python_version()}, TensorFlow {tf.__version__}")


def config_for(preset, min_confidence=0.0):
    """The preset's inference config with ``DETECTION_MIN_CONFIDENCE`` ``min_confidence``
    (None: the preset's own). At 0, with random weights, every detection slot fills: the mask
    head's worst case (with a trained model it runs only on the detections that pass the
    preset's threshold)."""
    from siamese_mask_rcnn.config import siamese_config
    from siamese_mask_rcnn.demo import demo_config
    overrides = {"IMAGES_PER_GPU": 1}
    if min_confidence is not None:
        overrides["DETECTION_MIN_CONFIDENCE"] = float(min_confidence)
    if preset == "demo":
        return demo_config(**overrides)
    return siamese_config(preset, **overrides)


def timed(fn, repeats):
    """Mean seconds of ``fn()`` over ``repeats`` calls after one warm-up (tracing) call."""
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


#: Stage figures are the fastest of at least this many calls: they are differences of timed
#: prefixes of the head model, which one call disturbed by another job would make meaningless.
STAGE_CALLS = 3


def fastest(fn, calls):
    """Fewest seconds of ``fn()`` over ``max(calls, STAGE_CALLS)`` calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(max(int(calls), STAGE_CALLS)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def graph_conv_flops(fn, specs):
    """FLOPs (2 per multiply-add) of the convolutions of ``fn`` traced at the fixed ``specs``."""
    import tensorflow as tf
    graph = tf.function(fn).get_concrete_function(*specs).graph
    flops = 0
    for op in graph.get_operations():
        if op.type not in ("Conv2D", "DepthwiseConv2dNative", "Conv2DBackpropInput"):
            continue
        kernel = op.inputs[1].shape
        out = op.outputs[0].shape
        if op.type == "Conv2DBackpropInput":  # transposed conv: input pixels x kernel taps
            x = op.inputs[2].shape
            flops += 2 * x[0] * x[1] * x[2] * kernel[0] * kernel[1] * kernel[2] * kernel[3]
        elif op.type == "DepthwiseConv2dNative":
            flops += 2 * out[0] * out[1] * out[2] * out[3] * kernel[0] * kernel[1]
        else:
            flops += 2 * out[0] * out[1] * out[2] * kernel[0] * kernel[1] * kernel[2] * kernel[3]
    return int(flops)


def head_conv_flops(model, detections):
    """Convolution FLOPs of the head stages for one category and ``detections`` masks."""
    c = model.config
    C, M, R = c.TOP_DOWN_PYRAMID_SIZE, c.MATCHING_CHANNELS, c.RPN_CONV_CHANNELS
    anchors = len(c.RPN_ANCHOR_RATIOS)
    shapes = model._level_shapes()
    pixels = sum(h * w for h, w in shapes)
    s = c.RPN_ANCHOR_STRIDE
    rpn_pixels = sum(int(np.ceil(h / s)) * int(np.ceil(w / s)) for h, w in shapes)
    fc, pool, rois = c.FPN_CLASSIF_FC_LAYERS_SIZE, c.POOL_SIZE, c.POST_NMS_ROIS_INFERENCE
    mp, mc = c.MASK_POOL_SIZE, c.MASK_CONV_CHANNELS
    return {
        "matching": 2 * pixels * 2 * C * M,
        "rpn": 2 * rpn_pixels * (9 * M * R + R * 6 * anchors),
        "roi_heads": 2 * rois * (pool * pool * M * fc + fc * fc + fc * 6),
        "mask_head": 2 * detections * (mp * mp * 9 * (M * mc + 3 * mc * mc) + mp * mp * 4 * mc * mc
                                       + 4 * mp * mp * mc),
    }


def resnet50_ceiling(config, repeats):
    """Seconds and GFLOP/s of a plain Keras ResNet-50 forward (no top) at the query size."""
    import keras
    import tensorflow as tf
    shape = [1] + [int(v) for v in config.IMAGE_SHAPE[:2]] + [3]
    net = keras.applications.ResNet50(weights=None, include_top=False, input_shape=shape[1:])
    spec = tf.TensorSpec(shape, tf.float32)
    flops = graph_conv_flops(lambda x: net(x, training=False), [spec])
    fn = tf.function(lambda x: net(x, training=False), input_signature=[spec])
    x = tf.random.uniform(shape)
    seconds = fastest(lambda: fn(x).numpy(), repeats)
    return seconds, flops


def torchvision_seconds(side, repeats, threads, real_threshold=False):
    """torchvision ``maskrcnn_resnet50_fpn`` (random weights) on one ``side``² image, or None
    when ``torch`` / ``torchvision`` do not import.

    A true ``side``²: torchvision's transform rescales every image so that its shorter side
    is ``min_size`` (800 by default) and its longer at most ``max_size`` (1333), so both are
    set to ``side`` and the image is ``side``² (scale 1; checked on the transformed batch).
    ``box_score_thresh=0`` and ``box_detections_per_img=100`` make its mask head run on 100
    detections, like ours at threshold 0; ``threads`` intra-op threads (as TensorFlow's).
    Returns ``{"seconds", "detections", "backbone_fpn_s", "input_hw"}`` and, with
    ``real_threshold``, ``"default_threshold_s"`` / ``"default_threshold_detections"``
    (torchvision's default ``box_score_thresh`` 0.05).
    """
    try:
        import torch
        import torchvision
    except ImportError:
        return None
    if threads:
        torch.set_num_threads(threads)
    detection = torchvision.models.detection

    def build(score_thresh):
        torch.manual_seed(0)
        return detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=side,
                                               max_size=side, box_detections_per_img=100,
                                               box_score_thresh=score_thresh).eval()

    net = build(0.0)
    x = [torch.rand(3, side, side, generator=torch.Generator().manual_seed(0))]
    result = {"threads": torch.get_num_threads(), "torch": torch.__version__,
              "torchvision": torchvision.__version__}
    with torch.no_grad():
        batch, _ = net.transform(x)
        result["input_hw"] = tuple(int(v) for v in batch.tensors.shape[-2:])
        if result["input_hw"] != (side, side):
            raise RuntimeError(f"torchvision resized the {side}² image to {result['input_hw']}")
        result["seconds"] = timed(lambda: net(x), repeats)
        result["detections"] = int(net(x)[0]["boxes"].shape[0])
        result["backbone_fpn_s"] = fastest(lambda: net.backbone(batch.tensors), repeats)
        if real_threshold:
            default = build(0.05)
            result["default_threshold_s"] = timed(lambda: default(x), repeats)
            result["default_threshold_detections"] = int(default(x)[0]["boxes"].shape[0])
    return result


def count_detections(results):
    """Detections over all categories of ``detect_embeddings``' results."""
    return sum(len(r["scores"]) for r in results.values())


def bench_preset(preset, repeats, categories, real_threshold=False):
    import keras
    import tensorflow as tf
    from siamese_mask_rcnn.siamese import LEVELS, SiameseMaskRCNN

    config = config_for(preset)
    keras.utils.set_random_seed(0)  # the same random weights (and so detections) in every run
    t0 = time.perf_counter()
    model = SiameseMaskRCNN("inference", config, model_dir="logs/bench")
    build = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    side = int(config.IMAGE_MAX_DIM)
    query = rng.integers(0, 255, (side * 3 // 4, side, 3), dtype=np.uint8)
    references = [rng.integers(0, 255, (int(config.TARGET_MAX_DIM), int(config.TARGET_MAX_DIM) * 2 // 3, 3),
                               dtype=np.uint8) for _ in range(categories)]
    embeddings = model.encode_references(references)
    molded, metas, windows, maps = model.encode_query(query)

    # Stage boundaries inside the head model: cumulative prefixes, timed one by one.
    hm = model.head_model
    inputs = hm.inputs
    prefixes = {
        "matching": [hm.get_layer(f"fpn_distance_{n}").output for n in LEVELS],
        "rpn": [hm.get_layer("ROI").output],
        "roi_heads": [hm.get_layer("mrcnn_detection").output],
        "mask_head": [hm.outputs[0], hm.outputs[3]],
    }
    signature = model._head_signature()
    args = [tf.constant(metas), tf.constant(embeddings[:1])] + [tf.constant(m) for m in maps]
    cumulative, outputs = {}, None
    for stage, tensors in prefixes.items():
        probe = keras.Model(inputs, tensors)
        fn = tf.function(lambda *x, p=probe: p(list(x), training=False), input_signature=signature)
        cumulative[stage] = fastest(lambda f=fn: [o.numpy() for o in tf.nest.flatten(f(*args))], repeats)
        if stage == "mask_head":
            outputs = [o.numpy() for o in fn(*args)]
    detections, masks = outputs
    real = int((detections[0, :, 4] > 0).sum())
    stages = {"encode_query": fastest(lambda: model.encode_query(query), repeats),
              "embed_reference": fastest(lambda: model.encode_references(references[:1]), repeats)}
    previous = 0.0
    for stage in prefixes:
        stages[stage] = max(0.0, cumulative[stage] - previous)
        previous = cumulative[stage]
    stages["unmolding"] = fastest(lambda: model.detection_result(detections[0], masks[0], query.shape,
                                                               molded[0].shape, windows[0]), repeats)

    shape = [1] + [int(v) for v in config.IMAGE_SHAPE]
    flops = {"encode_query": graph_conv_flops(lambda x: model.encoder(x, training=False),
                                              [tf.TensorSpec(shape, tf.float32)]),
             "embed_reference": graph_conv_flops(lambda x: model.reference_model(x, training=False),
                                                 [tf.TensorSpec([1] + list(config.TARGET_SHAPE), tf.float32)])}
    flops.update(head_conv_flops(model, max(1, real)))

    one = {0: embeddings[0]}
    many = {i: e for i, e in enumerate(embeddings)}
    detect_one = timed(lambda: model.detect_embeddings(query, one), repeats)
    detect_many = timed(lambda: model.detect_embeddings(query, many), max(1, repeats // 2))
    detect_many_plain = timed(lambda: model.detect_embeddings(query, many, batch_size=1, fold=False),
                              max(1, repeats // 2))
    detect_many_single = timed(lambda: model.detect_embeddings(query, many, batch_size=1, fold=True),
                               max(1, repeats // 2))
    at_threshold = None
    if real_threshold:
        # The same weights with the preset's DETECTION_MIN_CONFIDENCE (random weights: few
        # detections pass, so little mask-head and unmolding work).
        real_config = config_for(preset, min_confidence=None)
        real_model = SiameseMaskRCNN("inference", real_config, model_dir="logs/bench")
        real_model.keras_model.set_weights(model.keras_model.get_weights())
        at_threshold = {"threshold": float(real_config.DETECTION_MIN_CONFIDENCE),
                "detect_1": timed(lambda: real_model.detect_embeddings(query, one), repeats),
                "detect_k": timed(lambda: real_model.detect_embeddings(query, many), max(1, repeats // 2)),
                "detections_1": count_detections(real_model.detect_embeddings(query, one)),
                "detections_k": count_detections(real_model.detect_embeddings(query, many))}
    return {"real_threshold": at_threshold, "build_s": build, "stages": stages, "flops": flops, "detections": real,
            "detect_1": detect_one, "detect_k": detect_many, "detect_k_plain": detect_many_plain,
            "detect_k_single": detect_many_single,
            "categories": categories, "fold": model.fold_pays(categories),
            "batch": min(categories, model.category_batch_size()), "config": config}


def print_report(preset, row, ceiling, torch_row):
    stages, flops = row["stages"], row["flops"]
    ceiling_s, ceiling_flops = ceiling
    ceiling_rate = ceiling_flops / ceiling_s / 1e9
    torch_s = torch_row["seconds"] if torch_row else None

    def vs_torch(seconds):
        return f"{seconds / torch_s:.2f}" if torch_s else "-"

    def versus(seconds):
        return f"{seconds / torch_s:.2f}× torchvision" if torch_s else "torchvision not measured"

    print(f"\npreset {preset} (graph build {row['build_s']:.1f} s, mask head on {row['detections']} "
          f"detections)")
    print("| stage | seconds | × torchvision | conv GFLOP | GFLOP/s | % of ResNet-50 |")
    print("|---|---|---|---|---|---|")
    if torch_row:
        print(f"| torchvision maskrcnn_resnet50_fpn, {torch_row['input_hw'][0]}×{torch_row['input_hw'][1]}, "
              f"{torch_row['detections']} detections | {torch_s:.3f} | 1 | - | - | - |")
        print(f"| its backbone + FPN | {torch_row['backbone_fpn_s']:.3f} | "
              f"{vs_torch(torch_row['backbone_fpn_s'])} | - | - | - |")
    print(f"| plain ResNet-50 forward (ceiling) | {ceiling_s:.3f} | {vs_torch(ceiling_s)} | "
          f"{ceiling_flops / 1e9:.1f} | {ceiling_rate:.1f} | 100 |")
    lowest, unresolved = None, []
    for stage, seconds in stages.items():
        f = flops.get(stage)
        if f is None:
            print(f"| {stage} | {seconds:.3f} | {vs_torch(seconds)} | - | - | - |")
            continue
        if seconds <= 0:
            # a stage is the difference of two timed prefixes; ≤ 0 means its time is below
            # the method's noise, so no throughput can be given
            unresolved.append(stage)
            print(f"| {stage} | ≤ 0 (below the prefix timings' noise) | - | {f / 1e9:.2f} | - | - |")
            continue
        rate = f / seconds / 1e9
        share = 100 * rate / ceiling_rate
        lowest = share if lowest is None else min(lowest, share)
        print(f"| {stage} | {seconds:.3f} | {vs_torch(seconds)} | {f / 1e9:.2f} | {rate:.1f} | {share:.0f} |")
    k = row["categories"]
    extra = (row["detect_k"] - row["detect_1"]) / max(1, k - 1)
    extra_plain = (row["detect_k_plain"] - row["detect_1"]) / max(1, k - 1)
    print(f"detect_embeddings, 1 category: {row['detect_1']:.3f} s ({versus(row['detect_1'])})")
    print(f"detect_embeddings, {k} categories (batch {row['batch']}, folded {row['fold']}): "
          f"{row['detect_k']:.3f} s, {extra:.3f} s per extra category ({versus(extra)})")
    print(f"  one call per category, plain graph: {row['detect_k_plain']:.3f} s, "
          f"{extra_plain:.3f} s per extra category ({versus(extra_plain)})")
    if "detect_k_single" in row:
        extra_single = (row["detect_k_single"] - row["detect_1"]) / max(1, k - 1)
        print(f"  one call per category, query term folded: {row['detect_k_single']:.3f} s, "
              f"{extra_single:.3f} s per extra category ({versus(extra_single)})")
    real = row.get("real_threshold")
    if real:
        extra_real = (real["detect_k"] - real["detect_1"]) / max(1, k - 1)
        print(f"at the preset's DETECTION_MIN_CONFIDENCE {real['threshold']} (same random weights; "
              f"{real['detections_1']} detection(s) for 1 category, {real['detections_k']} over {k}): "
              f"1 category {real['detect_1']:.3f} s ({versus(real['detect_1'])}), {k} categories "
              f"{real['detect_k']:.3f} s, {extra_real:.3f} s per extra category ({versus(extra_real)})")
    if torch_row and "default_threshold_s" in torch_row:
        print(f"torchvision at its default box_score_thresh 0.05: {torch_row['default_threshold_s']:.3f} s "
              f"({torch_row['default_threshold_detections']} detections)")
    if unresolved:
        print(f"note: stage(s) {', '.join(unresolved)} took no measurable time beyond the previous "
              f"prefix (noise of the stage-difference method); their throughput is not given")
    if torch_row is None:
        print("torchvision: not installed, not compared")
        return
    print(f"torchvision {torch_row['torchvision']} (torch {torch_row['torch']}, {torch_row['threads']} "
          f"threads): {torch_s:.3f} s")
    if preset == "paper":
        checks = [("one category <= 0.85x torchvision", row["detect_1"] / torch_s <= 0.85),
                  ("each extra category <= 0.35x torchvision", extra / torch_s <= 0.35),
                  ("every stage >= 85 % of the ResNet-50 ceiling", lowest is not None and lowest >= 85)]
        for name, met in checks:
            verdict = "met" if met else "NOT met"
            if name.startswith("every stage") and unresolved and met:
                verdict = f"met by the measured stages ({', '.join(unresolved)} not measurable)"
            print(f"issue-16 target {name}: {verdict}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["demo", "small", "paper"],
                        choices=["demo", "small", "paper", "tiny", "smoke"])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per figure (after a warm-up)")
    parser.add_argument("--paper-repeats", type=int, default=1,
                        help="timed calls per figure for the slow paper preset (default 1)")
    parser.add_argument("--categories", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="intra-op threads of TensorFlow and of torch (default: the CPU count)")
    parser.add_argument("--inter-op-threads", type=int, default=None)
    parser.add_argument("--no-real-threshold", action="store_true",
                        help="skip the timings at the presets' own DETECTION_MIN_CONFIDENCE")
    args = parser.parse_args()
    for flag, value in (("--repeats", args.repeats), ("--paper-repeats", args.paper_repeats),
                        ("--categories", args.categories), ("--threads", args.threads),
                        ("--inter-op-threads", args.inter_op_threads)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    try:
        # before TensorFlow: torchvision's import of triton crashes (segmentation fault, torch
        # 2.14 / TensorFlow 2.21) when TensorFlow's libraries are already loaded
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError:
        pass
    import tensorflow as tf
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    print(f"machine: {machine_description()}")
    for preset in args.presets:
        repeats = args.paper_repeats if preset == "paper" else args.repeats
        row = bench_preset(preset, repeats, args.categories, real_threshold=not args.no_real_threshold)
        ceiling = resnet50_ceiling(row["config"], repeats)
        torch_row = torchvision_seconds(int(row["config"].IMAGE_SHAPE[0]), repeats, args.threads,
                                        real_threshold=not args.no_real_threshold)
        print_report(preset, row, ceiling, torch_row)

if __name__ == "__main__":
    main()
