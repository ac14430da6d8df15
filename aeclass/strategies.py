"""Training strategies: each is a list of phases run by the one engine (aeclass.engine).

A phase names its step function, which images an epoch runs over, and which parts of the model train.
A step takes (model, batch, cfg) and returns its losses as a dict of tensors, `loss` being the one
minimised. Labels of -1 mark unlabelled images (scikit-learn's convention): classification losses use
only labelled rows, reconstruction losses use every row.

    strategy            phases
    autoencoder         autoencoder (all images, reconstruction)
    supervised          supervised (labelled images, cross-entropy)
    pretrain-finetune   pretrain (autoencoder) -> finetune (encoder + head on labels)
    linear-probe        pretrain (autoencoder) -> probe (frozen encoder, linear head on labels)
    joint               joint: CE(labelled) + lambda * reconstruction(all images), one optimiser
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn import functional as F

from .config import TrainConfig
from .errors import ConfigError
from .models import AEClassifier


@dataclass
class Phase:
    name: str
    epochs: int
    step: Callable[[AEClassifier, "Batch", TrainConfig], dict]
    images: str                 # "labelled": epochs over the labelled set; "all": over every training image
    mix_labelled: bool = False  # with images="all": add a labelled batch to every step (few-label joint training)
    trains: tuple[str, ...] = ("encoder", "decoder", "head")  # sub-modules given to the optimiser
    frozen: tuple[str, ...] = ()  # sub-modules held in eval mode with no gradient (linear probe)


@dataclass
class Batch:
    x: torch.Tensor  # float (N, C, H, W) in [0, 1], augmented
    y: torch.Tensor  # int64 (N,), -1 = unlabelled


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    recon = recon.float()
    if kind == "bce":
        # BCE on [0, 1] targets is the seeds' alternative to MSE; clamp keeps log() finite.
        return F.binary_cross_entropy(recon.clamp(1e-6, 1 - 1e-6), target)
    return F.mse_loss(recon, target)


def corrupt(x: torch.Tensor, noise: float) -> torch.Tensor:
    """Denoising autoencoder input: add Gaussian noise, keep pixels in [0, 1]. Uses the global torch RNG,
    whose state checkpoints save, so resumed runs draw the same noise."""
    if noise <= 0:
        return x
    return (x + noise * torch.randn_like(x)).clamp_(0, 1)


def _classification(logits: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> dict:
    mask = y >= 0
    if not bool(mask.any()):
        zero = logits.sum() * 0
        return {"ce": zero}
    lg, yl = logits[mask].float(), y[mask]
    ce = F.cross_entropy(lg, yl, label_smoothing=cfg.label_smoothing)
    # Counts (not a ratio) so the engine can average accuracy over an epoch exactly.
    return {"ce": ce, "correct": (lg.argmax(1) == yl).sum().detach(), "labelled": mask.sum().detach()}


def autoencoder_step(model: AEClassifier, batch: Batch, cfg: TrainConfig) -> dict:
    out = model(corrupt(batch.x, cfg.noise), classify=False)
    recon = reconstruction_loss(out["recon"], batch.x, cfg.recon_loss)
    return {"loss": recon, "recon": recon}


def supervised_step(model: AEClassifier, batch: Batch, cfg: TrainConfig) -> dict:
    out = model(batch.x, decode=False)
    parts = _classification(out["logits"], batch.y, cfg)
    return {"loss": parts["ce"], **parts}


def joint_step(model: AEClassifier, batch: Batch, cfg: TrainConfig) -> dict:
    out = model(corrupt(batch.x, cfg.noise))
    parts = _classification(out["logits"], batch.y, cfg)
    recon = reconstruction_loss(out["recon"], batch.x, cfg.recon_loss)
    return {"loss": parts["ce"] + cfg.recon_weight * recon, "recon": recon, **parts}


def _pretrain(cfg: TrainConfig) -> Phase:
    return Phase("pretrain", cfg.pretrain_epochs or cfg.epochs, autoencoder_step, "all", trains=("encoder", "decoder"))


def build_phases(cfg: TrainConfig, model: AEClassifier, pretrained: bool = False) -> list[Phase]:
    """The phases of `cfg.strategy` for `model`; `pretrained` skips the autoencoder phase (weights came
    from --init)."""
    s = cfg.strategy
    needs_decoder = s in ("autoencoder", "pretrain-finetune", "linear-probe", "joint")
    needs_head = s != "autoencoder"
    if needs_decoder and not model.has_decoder and not (pretrained and s in ("pretrain-finetune", "linear-probe")):
        raise ConfigError(f"--strategy {s} needs a model with a decoder; '{model.spec['name']}' has none (try --model hybrid)")
    if needs_head and not model.has_head:
        raise ConfigError(f"--strategy {s} needs a classification head; the dataset has no classes")
    if s == "autoencoder":
        return [Phase("autoencoder", cfg.epochs, autoencoder_step, "all", trains=("encoder", "decoder"))]
    if s == "supervised":
        return [Phase("supervised", cfg.epochs, supervised_step, "labelled", trains=("encoder", "head"))]
    if s == "pretrain-finetune":
        return ([] if pretrained else [_pretrain(cfg)]) + [
            Phase("finetune", cfg.epochs, supervised_step, "labelled", trains=("encoder", "head"))]
    if s == "linear-probe":
        return ([] if pretrained else [_pretrain(cfg)]) + [
            Phase("probe", cfg.epochs, supervised_step, "labelled", trains=("head",), frozen=("encoder",))]
    if s == "joint":
        return [Phase("joint", cfg.epochs, joint_step, "all", mix_labelled=True)]
    raise ConfigError(f"--strategy: unknown strategy '{s}'")
