"""The registered models. Each factory takes the data's `input_shape` (C, H, W) and an optional
`num_classes`; with `num_classes` the model carries a classification head on its code."""
from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from .core import AEClassifier
from .fastcnn import Scaled, WhitenedConvEncoder
from .ladder import LadderNet
from .layers import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, ResEncoder
from .registry import register_model


@register_model
def mlp_ae(input_shape, num_classes=None, code_dim: int = 32, hidden: tuple[int, ...] = (), code_act: str = "relu"):
    """The seed article's dense autoencoder: flatten-[hidden]-code-[hidden]-image (784-32-784 on MNIST),
    ReLU code, sigmoid output."""
    hidden = tuple(hidden)
    return AEClassifier(MLPEncoder(input_shape, hidden, code_dim, code_act), code_dim, input_shape,
                        decoder=MLPDecoder(input_shape, hidden, code_dim), num_classes=num_classes)


@register_model
def conv_ae(input_shape, num_classes=None, code_dim: int = 32, widths: tuple[int, ...] = (32, 64),
            bn: bool = True, code_act: str = "none"):
    """A convolutional autoencoder with a dense bottleneck of `code_dim` (linear by default: a ReLU
    bottleneck wastes code units that die at zero)."""
    enc = ConvEncoder(input_shape, tuple(widths), code_dim, bn=bn, code_act=code_act)
    return AEClassifier(enc, code_dim, input_shape, decoder=ConvDecoder(enc, input_shape[0], tuple(widths), code_dim, bn),
                        num_classes=num_classes)


@register_model
def cnn(input_shape, num_classes=None, widths: tuple[int, ...] = (32, 64, 128), dense: int = 128,
        bn: bool = False, padding: str = "same"):
    """The seed article's CIFAR-10 CNN: conv32-pool-conv64-pool-conv128-pool-dense128-softmax.

    The dense128 layer is the code; the head is the softmax layer (softmax itself lives in the loss).
    `padding='valid'` is the article's exact Keras network; 'same' (default) also fits 8x8 digits."""
    enc = ConvEncoder(input_shape, tuple(widths), dense, bn=bn, padding=padding, code_act="relu")
    return AEClassifier(enc, dense, input_shape, num_classes=num_classes)


@register_model
def hybrid(input_shape, num_classes=None, widths: tuple[int, ...] = (32, 64, 128), code_dim: int = 128,
           bn: bool = True, padding: str = "same", dropout: float = 0.0):
    """Seed 002's design made real: the CNN's convolutional front-end is the encoder of an autoencoder.

    The code (the CNN's dense layer) feeds both the classification head and a convolutional decoder that
    reconstructs the image, so one forward pass serves the joint loss CE + lambda * reconstruction."""
    enc = ConvEncoder(input_shape, tuple(widths), code_dim, bn=bn, padding=padding, code_act="relu")
    head = None
    if num_classes:
        head = nn.Sequential(nn.Dropout(dropout), nn.Linear(code_dim, num_classes)) if dropout else None
    return AEClassifier(enc, code_dim, input_shape, decoder=ConvDecoder(enc, input_shape[0], tuple(widths), code_dim, bn),
                        num_classes=num_classes, head=head)


@register_model
def resnet(input_shape, num_classes=None, widths: tuple[int, ...] = (32, 64, 128), depth: int = 1, stem: int = 0,
           code_dim: int = 128, code: str = "flatten", decoder: bool = True):
    """A small residual CNN (see ResEncoder), with the same convolutional decoder as `hybrid` unless
    decoder=false. The fast recipes' model: on MNIST (32, 64, 128) costs 14 MMACs per image forward
    (hybrid: 8); for CIFAR-10 use wider stages, e.g. widths=[64, 128, 256] and code=pool."""
    enc = ResEncoder(input_shape, tuple(widths), code_dim, depth=depth, stem=stem, code=code)
    dec = ConvDecoder(enc, input_shape[0], tuple(widths), code_dim) if decoder else None
    return AEClassifier(enc, code_dim, input_shape, decoder=dec, num_classes=num_classes)


@register_model
def fastcnn(input_shape, num_classes=None, widths: tuple[int, ...] = (64, 256, 256), temperature: float = 9.0,
            bn_momentum: float = 0.4, decoder: bool = False, decoder_widths: tuple[int, ...] = (32, 64, 128)):
    """A fast CIFAR-10 classifier on the design of airbench94 (see aeclass/models/fastcnn.py): a frozen
    2x2 patch-whitening stem set from the data, three conv-pool-BN-GELU groups, a global max-pool code and a
    bias-free linear head whose logits are divided by `temperature`; about 1.97 M parameters. decoder=true
    adds a light convolutional decoder from the code (`hybrid`'s kind, stages of decoder_widths[:-1] reversed
    and half the first: 64, 32, 16 channels by default; about 0.76 M parameters, 16 M multiply-adds per
    32x32 image, a tenth of the encoder's), for the strategies' reconstruction terms."""
    try:
        enc = WhitenedConvEncoder(input_shape, tuple(int(w) for w in widths), bn_momentum=bn_momentum)
    except ValueError as e:
        raise ConfigError(f"--model fastcnn: {e}") from None
    head = nn.Sequential(nn.Linear(enc.code_dim, num_classes, bias=False), Scaled(1.0 / temperature)) if num_classes else None
    dec = ConvDecoder(enc, input_shape[0], tuple(int(w) for w in decoder_widths), enc.code_dim) if decoder else None
    return AEClassifier(enc, enc.code_dim, input_shape, decoder=dec, num_classes=num_classes, head=head)


@register_model
def ladder(input_shape, num_classes=None, hidden: tuple[int, ...] = (1000, 500, 250, 250, 250),
           costs: tuple[float, ...] | None = None):
    """The Ladder network of Rasmus et al. (2015), dense, with the paper's MNIST sizes (784-1000-500-250-
    250-250-10) and per-layer denoising costs (default 1000 for the input, 10 for the first hidden layer,
    0.1 above); trained by `--strategy ladder` (see aeclass/models/ladder.py)."""
    if not num_classes:
        raise ConfigError("--model ladder needs a dataset with classes (its top layer is the classifier)")
    hidden = tuple(int(h) for h in hidden)
    costs = tuple(costs) if costs is not None else (1000.0, 10.0) + (0.1,) * len(hidden)
    try:
        return LadderNet(input_shape, num_classes, hidden, costs)
    except ValueError as e:
        raise ConfigError(f"--model {e}") from None
