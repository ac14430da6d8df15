"""A fast small CNN for CIFAR-10-sized images, built on the design of Keller Jordan's airbench94 (2024:
94 % on CIFAR-10 in 10 epochs, 0.36 PFLOPs for the whole run, 3.8 s on an A100; github.com/KellerJordan/
cifar10-airbench). The design choices are that work's; the code is written here for aeclass's engine.

    input -> 2x2 patch-whitening conv (24 filters) -> GELU
          -> [conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU] x 3 (widths 64, 256, 256)
          -> global max-pool = the code (256) -> linear classifier (no bias), logits / 9

Why each part (as that work found; the ablations are in its paper):
- Whitening stem: its filters are the eigenvectors of the training images' 2x2-patch covariance, scaled to
  unit variance, and their negatives (so a ReLU-like GELU keeps both signs). Set from the data before
  training (`data_init_`) and then frozen: the first layer starts where training would otherwise take
  several epochs to get. Its bias still trains.
- Identity ("dirac") start for every 3x3 conv on its first input channels: the deep stack starts close to a
  shallow one, which trains faster, without residual connections' extra memory traffic.
- BatchNorm without a learned scale (the next conv can scale), eps 1e-12, running-stat momentum 0.4; its
  biases learn 64x faster than the other weights (`lr_scale`, see aeclass/engine.py) with the same weight
  decay per step.
- Logits divided by 9: a fixed temperature that suits the label-smoothed cross-entropy of the recipe.
"""
from __future__ import annotations

import torch
from torch import nn

# Biases of BatchNorm layers train with this multiple of the learning rate (and 1/this of the weight decay,
# so that their decay per step is the others'): airbench94's "bias_scaler".
BN_BIAS_LR_SCALE = 64.0


class NormNoScale(nn.BatchNorm2d):
    """BatchNorm2d whose scale stays 1 (frozen) and whose bias trains at BN_BIAS_LR_SCALE x the lr."""

    def __init__(self, width: int, momentum: float = 0.4):
        super().__init__(width, eps=1e-12, momentum=momentum)
        self.weight.requires_grad_(False)
        self.bias.lr_scale = BN_BIAS_LR_SCALE  # read by the engine's make_optimizer


def identity_conv(cin: int, cout: int) -> nn.Conv2d:
    """3x3 'same' conv, no bias (BatchNorm follows), started as the identity on its first min(cin, cout)
    input channels: output channel i copies input channel i for i < cin, the rest keep torch's default init."""
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:min(cin, cout)])
    return conv


class ConvGroup(nn.Sequential):
    def __init__(self, cin: int, cout: int, bn_momentum: float, ceil_mode: bool = False):
        super().__init__(identity_conv(cin, cout), nn.MaxPool2d(2, ceil_mode=ceil_mode), NormNoScale(cout, bn_momentum),
                         nn.GELU(), identity_conv(cout, cout), NormNoScale(cout, bn_momentum), nn.GELU())


class WhitenedConvEncoder(nn.Module):
    """The whitening stem, three ConvGroups and a global max-pool; the code is the last group's width."""

    def __init__(self, input_shape, widths: tuple[int, ...] = (64, 256, 256), patch: int = 2, bn_momentum: float = 0.4):
        super().__init__()
        c, h, w = input_shape
        if min(h, w) < patch:
            raise ValueError(f"input {tuple(input_shape)} is smaller than the {patch}x{patch} stem")
        self.patch = patch
        self.whiten = nn.Conv2d(c, 2 * c * patch * patch, patch)
        self.whiten.weight.requires_grad_(False)  # set by data_init_, never trained
        groups, cin = [], self.whiten.out_channels
        self.stage_sizes = [(h, w)]  # for a decoder (layers.ConvDecoder): the input, then each group's output but the last
        h, w = h - patch + 1, w - patch + 1
        for width in widths:
            # Pools round down (CIFAR: 31 -> 15 -> 7 -> 3, as airbench94); a map already down to one pixel
            # (8x8 digits in the last group) keeps it instead of vanishing.
            ceil = min(h, w) < 2
            groups.append(ConvGroup(cin, width, bn_momentum, ceil))
            h, w = (-(-h // 2), -(-w // 2)) if ceil else (h // 2, w // 2)
            cin = width
            self.stage_sizes.append((h, w))
        self.stage_sizes.pop()
        self.feature_shape = (cin, h, w)  # the last group's map, which the max-pool reduces to the code
        self.groups = nn.Sequential(*groups)
        self.code_dim = cin

    def forward(self, x):
        x = self.groups(nn.functional.gelu(self.whiten(x)))
        return torch.amax(x, dim=(2, 3))  # global max-pool (airbench94: MaxPool2d(3) over its 3x3 map)

    @torch.no_grad()
    def data_init_(self, x: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the stem from `x`, a float sample of training images as the encoder sees them (standardised):
        the eigenvectors of the patch covariance, each divided by sqrt(its eigenvalue + eps), and their
        negatives, largest variance first."""
        c, p = x.shape[1], self.patch
        cov, count = torch.zeros(c * p * p, c * p * p, dtype=torch.float64, device=x.device), 0
        for chunk in x.split(1000):  # in chunks: 20,000 CIFAR images have 230 M patch values
            patches = chunk.unfold(2, p, 1).unfold(3, p, 1)         # N, C, H', W', p, p
            patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * p * p).double()
            cov += patches.T @ patches
            count += patches.shape[0]
        evals, evecs = torch.linalg.eigh(cov / count)               # ascending
        evals, evecs = evals.flip(0), evecs.flip(1)
        filters = (evecs.T / (evals + eps).sqrt().unsqueeze(1)).reshape(c * p * p, c, p, p)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight.dtype))
        self.whiten.bias.zero_()


class Scaled(nn.Module):
    """Multiply by a fixed factor (a temperature on the logits)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"
