"""The loss pieces several strategies share: reconstruction, corruption, classification, and the three
basic steps (reconstruct, classify, both). A step returns {"loss": tensor, <part>: tensor, ...}; the engine
averages every part over the epoch into a train_<part> column of metrics.csv ("correct" and "labelled" are
counts it turns into train_accuracy)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

if TYPE_CHECKING:
    from ..config import TrainConfig
    from ..models import AEClassifier
    from .base import Batch


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    recon = recon.float()
    if kind == "bce":
        # BCE on [0, 1] targets is the seeds' alternative to MSE; clamp keeps log() finite.
        return F.binary_cross_entropy(recon.clamp(1e-6, 1 - 1e-6), target)
    return F.mse_loss(recon, target)


NOISE_KINDS = ("gaussian", "mask", "salt-pepper")


def corrupt(x: torch.Tensor, noise: float, kind: str = "gaussian") -> torch.Tensor:
    """Denoising autoencoder input, pixels kept in [0, 1]. `kind` (--noise-kind) says what `noise` is:
    'gaussian' the std of added Gaussian noise; 'mask' the fraction of pixels set to 0 (Vincent et al. 2008's
    masking noise); 'salt-pepper' the fraction set to 0 or 1 at random. Mask and salt-pepper draw one choice per
    pixel position, shared by its channels, so a colour pixel is lost whole. Uses the global torch RNG, whose
    state checkpoints save, so resumed runs draw the same noise."""
    if noise <= 0:
        return x
    if kind == "gaussian":
        return (x + noise * torch.randn_like(x)).clamp_(0, 1)
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind '{kind}'; expected one of {', '.join(NOISE_KINDS)}")
    hit = torch.rand((x.shape[0], 1, *x.shape[2:]), device=x.device) < min(noise, 1.0)
    if kind == "mask":
        return x.masked_fill(hit, 0.0)
    salt = (torch.rand(hit.shape, device=x.device) < 0.5).to(x.dtype)
    return torch.where(hit, salt, x)


def classification(logits: torch.Tensor, y: torch.Tensor, smoothing: float) -> dict:
    """Cross-entropy on the labelled rows (y >= 0), and the counts behind the epoch's training accuracy."""
    mask = y >= 0
    if not bool(mask.any()):
        zero = logits.sum() * 0
        return {"ce": zero}
    lg, yl = logits[mask].float(), y[mask]
    ce = F.cross_entropy(lg, yl, label_smoothing=smoothing)
    # Counts (not a ratio) so the engine can average accuracy over an epoch exactly.
    return {"ce": ce, "correct": (lg.argmax(1) == yl).sum().detach(), "labelled": mask.sum().detach()}


def autoencoder_step(model: "AEClassifier", batch: "Batch", cfg: "TrainConfig") -> dict:
    """Reconstruct the clean image from its noisy version (cfg.noise; 0 = a plain autoencoder)."""
    out = model(corrupt(batch.x, cfg.noise, cfg.noise_kind), classify=False)
    recon = reconstruction_loss(out["recon"], batch.x, cfg.recon_loss)
    return {"loss": recon, "recon": recon}


def supervised_step(model: "AEClassifier", batch: "Batch", cfg: "TrainConfig", smoothing: float | None = None) -> dict:
    """Cross-entropy of the labelled rows (label smoothing: `smoothing`, else cfg.label_smoothing)."""
    out = model(batch.x, decode=False)
    parts = classification(out["logits"], batch.y, cfg.label_smoothing if smoothing is None else smoothing)
    return {"loss": parts["ce"], **parts}


def joint_step(model: "AEClassifier", batch: "Batch", cfg: "TrainConfig", smoothing: float | None = None) -> dict:
    """The seeds' multi-task loss: CE(labelled rows) + cfg.recon_weight * reconstruction(every row)."""
    out = model(corrupt(batch.x, cfg.noise, cfg.noise_kind))
    parts = classification(out["logits"], batch.y, cfg.label_smoothing if smoothing is None else smoothing)
    recon = reconstruction_loss(out["recon"], batch.x, cfg.recon_loss)
    return {"loss": parts["ce"] + cfg.recon_weight * recon, "recon": recon, **parts}
