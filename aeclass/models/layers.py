"""Building blocks shared by the registered models: dense and convolutional encoders/decoders."""
from __future__ import annotations

import math

from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError

_ACTS = {"relu": nn.ReLU, "none": nn.Identity, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "silu": nn.SiLU,
         "elu": nn.ELU}


def activation(name: str, width: int | None = None) -> nn.Module:
    """`name` as a module. "prelu" (a ReLU whose negative-side slope is learned, one per unit) needs the
    layer's `width` and starts at slope 1, i.e. linear: a code that begins as a linear (PCA-like) projection
    and bends only where training finds it pays. On the 784-32-784 MNIST autoencoder this reaches a lower
    test MSE than a linear code (benchmarks/ae_variants.py)."""
    if name == "prelu":
        if width is None:
            raise ValueError("the prelu activation needs the layer's width")
        return nn.PReLU(width, init=1.0)
    if name not in _ACTS:
        raise ConfigError(f"unknown activation '{name}'; expected one of {', '.join([*_ACTS, 'prelu'])}")
    return _ACTS[name]()


def conv_block(cin: int, cout: int, bn: bool, padding: int = 1) -> list[nn.Module]:
    # With BatchNorm the conv bias is redundant (BN's shift replaces it).
    layers = [nn.Conv2d(cin, cout, 3, padding=padding, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


class MLPEncoder(nn.Sequential):
    """Flatten -> [Linear -> ReLU]* -> Linear(code_dim) -> code activation."""

    def __init__(self, input_shape, hidden: tuple[int, ...], code_dim: int, code_act: str = "relu"):
        dims = [math.prod(input_shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        layers += [nn.Linear(dims[-1], code_dim), activation(code_act, code_dim)]
        super().__init__(*layers)


class MLPDecoder(nn.Sequential):
    """Mirror of MLPEncoder, ending in a sigmoid so outputs are pixel intensities in [0, 1]."""

    def __init__(self, input_shape, hidden: tuple[int, ...], code_dim: int):
        dims = [code_dim, *reversed(hidden)]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        layers += [nn.Linear(dims[-1], math.prod(input_shape)), nn.Sigmoid(), nn.Unflatten(1, tuple(input_shape))]
        super().__init__(*layers)


class ConvEncoder(nn.Module):
    """[conv3x3 -> (BN) -> ReLU -> maxpool2]* per width (run as conv -> (BN) -> maxpool2 -> ReLU, the same
    function), flatten, Linear(code_dim), code activation.

    'same' padding keeps any input size >= 1 pixel through the stack (8x8 digits included); 'valid'
    (no padding) is the Keras default used by the seed article's CNN and needs larger images.
    With 'same', pooling uses ceil mode so odd sizes (MNIST's 7x7) are not cropped.
    """

    def __init__(self, input_shape, widths: tuple[int, ...], code_dim: int, bn: bool = True,
                 padding: str = "same", code_act: str = "relu"):
        super().__init__()
        c, h, w = input_shape
        pad = {"same": 1, "valid": 0}.get(padding)
        if pad is None:
            raise ConfigError(f"padding must be 'same' or 'valid', got '{padding}'")
        layers: list[nn.Module] = []
        self.stage_sizes = []  # spatial size entering each stage, used by the decoder to undo the pools
        for width in widths:
            self.stage_sizes.append((h, w))
            block = conv_block(c, width, bn, pad)
            h, w = h - 2 * (1 - pad), w - 2 * (1 - pad)
            if h < 1 or w < 1:
                raise ConfigError(f"input {tuple(input_shape)} is too small for {len(widths)} '{padding}' conv stages")
            # ceil mode keeps odd sizes whole with 'same'; 'valid' floors, exactly as Keras does.
            ceil = pad == 1
            # The pool runs before the ReLU: max and ReLU commute (ReLU never reorders values), so the
            # outputs and gradients are exactly those of conv -> ReLU -> pool, but the ReLU and its backward
            # touch a quarter of the elements. The layers with weights keep their indices (checkpoint keys).
            layers += block[:-1] + [nn.MaxPool2d(2, ceil_mode=ceil), block[-1]]
            c, h, w = width, (-(-h // 2) if ceil else h // 2), (-(-w // 2) if ceil else w // 2)
            if h < 1 or w < 1:
                raise ConfigError(f"input {tuple(input_shape)} is too small for {len(widths)} '{padding}' conv stages")
        self.features = nn.Sequential(*layers)
        self.feature_shape = (c, h, w)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, code_dim), activation(code_act, code_dim))

    def forward(self, x):
        return self.fc(self.features(x))


class ConvDecoder(nn.Module):
    """Linear(code) -> feature map, then [upsample to the encoder's stage size -> conv -> (BN) -> ReLU]*,
    a final conv to the image channels and a sigmoid. Upsampling to recorded sizes (rather than fixed x2
    transposed convs) reproduces odd sizes such as 28 -> 14 -> 7 -> 4 exactly in reverse."""

    def __init__(self, encoder: ConvEncoder, out_channels: int, widths: tuple[int, ...], code_dim: int, bn: bool = True):
        super().__init__()
        self.feature_shape = encoder.feature_shape
        c, h, w = self.feature_shape
        self.fc = nn.Sequential(nn.Linear(code_dim, c * h * w), nn.ReLU(inplace=True))
        self.sizes = list(reversed(encoder.stage_sizes))
        outs = list(reversed(widths[:-1])) + [max(widths[0] // 2, 8)]
        self.stages = nn.ModuleList()
        for cout in outs:
            self.stages.append(nn.Sequential(*conv_block(c, cout, bn)))
            c = cout
        self.out = nn.Sequential(nn.Conv2d(c, out_channels, 3, padding=1), nn.Sigmoid())

    def forward(self, code):
        x = self.fc(code).view(code.shape[0], *self.feature_shape)
        for size, stage in zip(self.sizes, self.stages):
            x = stage(F.interpolate(x, size=size, mode="nearest"))
        return self.out(x)


class Residual(nn.Module):
    """x + body(x)."""

    def __init__(self, *body: nn.Module):
        super().__init__()
        self.body = nn.Sequential(*body)

    def forward(self, x):
        return x + self.body(x)


class ResEncoder(nn.Module):
    """A small residual CNN in the style of the fast CIFAR-10 trainers (Page's ResNet-9, Jordan's airbench).

    Optional stem conv3x3-BN-ReLU at full resolution; then per width a stage
        conv3x3 -> maxpool2 -> BN -> ReLU -> `depth` x residual(conv3x3-BN-ReLU)
    (convolving before pooling keeps full-resolution detail at the cost of one full-size conv; the
    residual convs run at the pooled size, where they are 4x cheaper); then the code: flatten -> Linear
    ('flatten', keeps where things are, which a decoder needs) or global max pool -> Linear ('pool',
    translation-invariant, fewer parameters). Exposes stage_sizes / feature_shape like ConvEncoder, so
    ConvDecoder can mirror it.
    """

    def __init__(self, input_shape, widths: tuple[int, ...], code_dim: int, depth: int = 1, stem: int = 0,
                 code: str = "flatten", code_act: str = "relu"):
        super().__init__()
        if code not in ("flatten", "pool"):
            raise ConfigError(f"code must be 'flatten' or 'pool', got '{code}'")
        c, h, w = input_shape
        layers: list[nn.Module] = []
        if stem:
            layers += conv_block(c, stem, bn=True)
            c = stem
        self.stage_sizes = []
        for width in widths:
            self.stage_sizes.append((h, w))
            layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.MaxPool2d(2, ceil_mode=True),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            h, w = -(-h // 2), -(-w // 2)
            layers += [Residual(*conv_block(width, width, bn=True)) for _ in range(depth)]
            c = width
        self.features = nn.Sequential(*layers)
        self.feature_shape = (c, h, w)
        if code == "flatten":
            self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, code_dim), activation(code_act, code_dim))
        else:
            self.fc = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(c, code_dim), activation(code_act, code_dim))

    def forward(self, x):
        return self.fc(self.features(x))
