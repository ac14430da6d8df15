"""`mae`: masked-autoencoder pre-training (He et al. 2022) for convolutional encoders, then fine-tuning as
`pretrain-finetune` does (its phases, its --pretrain-epochs, its --init).

Each pre-training image is cut into --patch-size squares and a random --mask-ratio of them is hidden: their
pixels are set to the training images' per-channel mean, which the encoder's standardisation turns into 0, so
a hidden patch carries no signal (a convolutional network cannot drop tokens as MAE's ViT does; SparK and
ConvMAE mask the same way). The decoder rebuilds the whole image and the loss is the MSE over the hidden
patches' pixels only: the visible ones are free to copy, so scoring them would reward copying. Masks come
from the global torch RNG, whose state checkpoints carry (an interrupted run resumes with the same masks).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..options import option
from .base import register_strategy
from .pretrain_finetune import PretrainFinetune, PretrainOptions


@dataclass
class MaeOptions(PretrainOptions):
    mask_ratio: float = option(0.5, "fraction of the image's patches hidden from the encoder", low=0, high=1,
                               low_open=True, high_open=True)
    patch_size: int = option(4, "side of the square patches that are hidden or shown, in pixels", low=1)
    finetune: bool = option(True, "after the masked pre-training, fine-tune encoder + head on the labels (--no-finetune: "
                                  "pre-training only, e.g. for linear-probe --init)")


def patch_mask(n: int, shape: tuple[int, int], patch: int, ratio: float, device=None) -> torch.Tensor:
    """(n, 1, H, W) bool, True on hidden pixels: round(ratio x patches) whole patches per image, chosen at
    random (patches at the right and bottom edges may be cut short by the image size)."""
    h, w = shape
    gh, gw = -(-h // patch), -(-w // patch)
    k = max(1, min(gh * gw - 1, round(ratio * gh * gw)))  # at least one hidden and one visible patch
    ranks = torch.rand(n, gh * gw, device=device).argsort(1).argsort(1)  # a random order of the patches
    hidden = (ranks < k).view(n, 1, gh, gw)
    return hidden.repeat_interleave(patch, 2).repeat_interleave(patch, 3)[:, :, :h, :w]


def masked_mse(recon: torch.Tensor, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the hidden pixels (every channel) only."""
    m = hidden.expand_as(x).to(recon.dtype)
    return ((recon.float() - x.float()).pow(2) * m).sum() / m.sum().clamp_min(1)


@register_strategy
class Mae(PretrainFinetune):
    name = "mae"
    summary = "pretrain (masked patches, loss on the hidden ones; conv encoders) -> finetune (encoder + head)"
    Options = MaeOptions

    def check(self, model, pretrained=False):
        super().check(model, pretrained)
        if not pretrained and not any(isinstance(m, nn.Conv2d) for m in model.encoder.modules()):
            name = model.spec["name"] if hasattr(model, "spec") else type(model).__name__
            raise ConfigError(f"--strategy mae masks image patches for a convolutional encoder; '{name}' has none "
                              "(try --model hybrid, conv_ae or resnet)")

    def requires(self, pretrained=False):
        return super().requires(pretrained) if self.opts.finetune else {"decoder"}

    def pretrain_phases(self, pretrained):
        return [dataclasses.replace(p, name="mae") for p in super().pretrain_phases(pretrained)]

    def phases(self, model, pretrained=False):
        if self.opts.finetune:
            return super().phases(model, pretrained)
        if pretrained:
            raise ConfigError("--strategy mae --no-finetune with --init: nothing would train (the masked "
                              "pre-training is what --init replaces)")
        return self.pretrain_phases(pretrained)

    def reconstruct(self, model, batch):
        x = batch.x
        hidden = patch_mask(x.shape[0], x.shape[-2:], self.opts.patch_size, self.opts.mask_ratio, x.device)
        shown = torch.where(hidden, model.in_mean.to(x.dtype), x)  # the mean: 0 after standardisation
        out = model(shown, classify=False)
        recon = masked_mse(out["recon"], x, hidden)
        return {"loss": recon, "recon": recon}
