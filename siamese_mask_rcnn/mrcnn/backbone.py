"""ResNet backbone and Feature Pyramid Network with matterport's layer names.

``resnet_graph`` builds ResNet-50/101 with the layer names matterport uses (``conv1``,
``bn_conv1``, ``res2a_branch2a``, ``bn2a_branch2a`` ... ``res5c_branch2c``), so matterport
and Keras-2 ImageNet weight files load by name. ``fpn_graph`` builds the pyramid
(``fpn_c5p5`` ... ``fpn_p2``..``fpn_p5``, ``fpn_p6``).

A backbone may also be any callable ``fn(input_image, stage5=True, train_bn=None)``
returning ``[C1, C2, C3, C4, C5]`` (matterport's convention); ``tiny_backbone`` is such a
callable, a few-layer CNN used by the tests and the CPU demo.
"""
from keras import layers

from .layers import BatchNorm

RESNET_BLOCKS = {"resnet50": 6, "resnet101": 23}
# The stages C2..C5 and how many blocks each has (stage 4 depends on the depth).


def _block_letters(count):
    """Block suffixes of a stage: a, b, c, ... (101 uses letters beyond z never: max 23)."""
    return [chr(ord("a") + i) for i in range(count)]


def bottleneck_block(x, filters, stage, block, strides=1, projection=False, use_bias=True, train_bn=None):
    """ResNet bottleneck (1x1, 3x3, 1x1 convs + BN) with matterport's layer names.

    The shortcut is the identity, or with ``projection=True`` a strided 1x1 conv + BN
    (``res{stage}{block}_branch1``), as in the first block of every stage.
    """
    f1, f2, f3 = filters
    conv = f"res{stage}{block}_branch"
    bn = f"bn{stage}{block}_branch"
    y = layers.Conv2D(f1, 1, strides=strides, name=conv + "2a", use_bias=use_bias)(x)
    y = BatchNorm(name=bn + "2a", train_bn=train_bn)(y)
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(f2, 3, padding="same", name=conv + "2b", use_bias=use_bias)(y)
    y = BatchNorm(name=bn + "2b", train_bn=train_bn)(y)
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(f3, 1, name=conv + "2c", use_bias=use_bias)(y)
    y = BatchNorm(name=bn + "2c", train_bn=train_bn)(y)
    shortcut = x
    if projection:
        shortcut = layers.Conv2D(f3, 1, strides=strides, name=conv + "1", use_bias=use_bias)(x)
        shortcut = BatchNorm(name=bn + "1", train_bn=train_bn)(shortcut)
    y = layers.Add()([y, shortcut])
    return layers.Activation("relu", name=f"res{stage}{block}_out")(y)


def _stage(x, stage, blocks, filters, strides, train_bn):
    letters = _block_letters(blocks)
    x = bottleneck_block(x, filters, stage, letters[0], strides=strides, projection=True, train_bn=train_bn)
    for letter in letters[1:]:
        x = bottleneck_block(x, filters, stage, letter, train_bn=train_bn)
    return x


def resnet_graph(input_image, architecture, stage5=True, train_bn=None):
    """ResNet-50/101 on ``input_image``; returns ``[C1, C2, C3, C4, C5]``.

    The outputs are the stage ends res2c, res3d, res4f (res4w for 101) and res5c, i.e.
    the taps the paper calls C2..C5 (256, 512, 1024 and 2048 channels).

    Raises:
        ValueError: ``architecture`` is neither ``"resnet50"``, ``"resnet101"`` nor a callable.
    """
    if architecture not in RESNET_BLOCKS:
        raise ValueError(f"BACKBONE must be one of {sorted(RESNET_BLOCKS)} or a callable, got {architecture!r}")
    x = layers.ZeroPadding2D((3, 3))(input_image)
    x = layers.Conv2D(64, 7, strides=2, name="conv1", use_bias=True)(x)
    x = BatchNorm(name="bn_conv1", train_bn=train_bn)(x)
    x = layers.Activation("relu")(x)
    c1 = x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    c2 = x = _stage(x, 2, 3, [64, 64, 256], 1, train_bn)
    c3 = x = _stage(x, 3, 4, [128, 128, 512], 2, train_bn)
    c4 = x = _stage(x, 4, RESNET_BLOCKS[architecture], [256, 256, 1024], 2, train_bn)
    c5 = _stage(x, 5, 3, [512, 512, 2048], 2, train_bn) if stage5 else None
    return [c1, c2, c3, c4, c5]


def tiny_backbone(input_image, stage5=True, train_bn=None, widths=(16, 32, 64, 128)):
    """A small CPU-friendly backbone with ResNet's strides (4, 8, 16, 32).

    Returns ``[C1, C2, C3, C4, C5]`` like ``resnet_graph``. Used by the tests, the
    embedded-data demo and anywhere a full ResNet is too slow to train on a CPU.
    """
    x = layers.Conv2D(widths[0], 3, strides=2, padding="same", name="tiny_conv1")(input_image)
    x = BatchNorm(name="tiny_bn1", train_bn=train_bn)(x)
    c1 = x = layers.Activation("relu")(x)
    outs = []
    for i, width in enumerate(widths):
        x = layers.Conv2D(width, 3, strides=2, padding="same", name=f"tiny_c{i + 2}_conv_a")(x)
        x = BatchNorm(name=f"tiny_c{i + 2}_bn_a", train_bn=train_bn)(x)
        x = layers.Activation("relu")(x)
        x = layers.Conv2D(width, 3, padding="same", name=f"tiny_c{i + 2}_conv_b")(x)
        x = BatchNorm(name=f"tiny_c{i + 2}_bn_b", train_bn=train_bn)(x)
        x = layers.Activation("relu")(x)
        outs.append(x)
    return [c1] + outs


REGISTERED_BACKBONES = {"tiny_backbone": tiny_backbone}
# Callables a saved config can name (``Config.to_dict`` stores "<callable:name>").


def build_backbone(input_image, config):
    """C1..C5 for ``config.BACKBONE`` (a ResNet name, a matterport-style callable, or the
    ``"<callable:name>"`` placeholder a saved config holds for a registered callable).

    Raises:
        ValueError: ``config.BACKBONE`` names no registered backbone.
    """
    backbone = config.BACKBONE
    if isinstance(backbone, str) and backbone.startswith("<callable:"):
        name = backbone[len("<callable:"):-1]
        if name not in REGISTERED_BACKBONES:
            raise ValueError(f"config.BACKBONE {backbone!r} is not a registered backbone "
                             f"{sorted(REGISTERED_BACKBONES)}; pass the callable to Config.load(backbone=...)")
        backbone = REGISTERED_BACKBONES[name]
    if getattr(backbone, "__self__", None) is config:  # a function set as class attribute
        backbone = backbone.__func__
    if callable(backbone):
        return list(backbone(input_image, stage5=True, train_bn=config.TRAIN_BN))
    return resnet_graph(input_image, config.BACKBONE, stage5=True, train_bn=config.TRAIN_BN)


def fpn_graph(c2, c3, c4, c5, pyramid_size, relu=False):
    """Feature Pyramid Network on C2..C5; returns ``[P2, P3, P4, P5, P6]``.

    P5 = 1x1 conv(C5); Pi = 1x1 conv(Ci) + 2x upsample(Pi+1); then a 3x3 conv on
    P2..P5; P6 = stride-2 subsampling of P5. With ``relu=True`` every FPN conv is
    followed by a ReLU (the official Siamese Mask R-CNN release does this).
    """
    act = "relu" if relu else None
    p5 = layers.Conv2D(pyramid_size, 1, name="fpn_c5p5", activation=act)(c5)
    p4 = layers.Add(name="fpn_p4add")([
        layers.UpSampling2D(2, name="fpn_p5upsampled")(p5),
        layers.Conv2D(pyramid_size, 1, name="fpn_c4p4", activation=act)(c4)])
    p3 = layers.Add(name="fpn_p3add")([
        layers.UpSampling2D(2, name="fpn_p4upsampled")(p4),
        layers.Conv2D(pyramid_size, 1, name="fpn_c3p3", activation=act)(c3)])
    p2 = layers.Add(name="fpn_p2add")([
        layers.UpSampling2D(2, name="fpn_p3upsampled")(p3),
        layers.Conv2D(pyramid_size, 1, name="fpn_c2p2", activation=act)(c2)])
    p2 = layers.Conv2D(pyramid_size, 3, padding="same", name="fpn_p2", activation=act)(p2)
    p3 = layers.Conv2D(pyramid_size, 3, padding="same", name="fpn_p3", activation=act)(p3)
    p4 = layers.Conv2D(pyramid_size, 3, padding="same", name="fpn_p4", activation=act)(p4)
    p5 = layers.Conv2D(pyramid_size, 3, padding="same", name="fpn_p5", activation=act)(p5)
    p6 = layers.MaxPooling2D(pool_size=1, strides=2, name="fpn_p6")(p5)
    return [p2, p3, p4, p5, p6]


def build_backbone_fpn(input_image, config):
    """Backbone + FPN on one input tensor; returns ``[P2, P3, P4, P5, P6]``."""
    _, c2, c3, c4, c5 = build_backbone(input_image, config)
    return fpn_graph(c2, c3, c4, c5, config.TOP_DOWN_PYRAMID_SIZE, relu=getattr(config, "FPN_RELU", False))
