"""Evaluation: test metrics and class scores of a model over uint8 images, with test-time augmentation.

Shared by the engine's per-epoch monitoring, the final metrics, `aeclass evaluate` / `predict`, the report
and self-training's relabelling, so all of them score images the same way.
"""
from __future__ import annotations

import torch
from torch import nn

from .data import to_float
from .device import autocast, memory_format_for


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x translated by (dy, dx) pixels with zero fill, as the training-time random crop does."""
    p = max(abs(dy), abs(dx))
    h, w = x.shape[-2:]
    return nn.functional.pad(x, (p, p, p, p))[..., p - dy:p - dy + h, p - dx:p - dx + w]


def tta_views(x: torch.Tensor, flip: bool, shift: int = 0) -> list[torch.Tensor]:
    """The test-time views of x besides x itself: its mirror (flip), then copies of x and of the mirror moved
    by +-shift pixels diagonally (shift > 0)."""
    views = [x.flip(3)] if flip else []
    if shift:
        for v in [x] + views[:1]:
            views += [shifted(v, shift, shift), shifted(v, -shift, -shift)]
    return views


def tta_logits(model: nn.Module, x: torch.Tensor, logits: torch.Tensor, flip: bool, shift: int = 0) -> torch.Tensor:
    """Test-time augmentation: the mean class scores over views of x. `logits` are the scores of x itself;
    `flip` adds its left-right mirror, `shift` > 0 adds copies of x (and of the mirror) moved by +-shift
    pixels diagonally, as fast CIFAR-10 trainers such as airbench do. On the fast-cifar resnet the shifts
    added about half a point over the flip alone (docs/speed.md)."""
    views = tta_views(x, flip, shift)
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1 else torch.contiguous_format
    total = logits.float()
    for v in views:
        total = total + model(v.contiguous(memory_format=fmt), decode=False)["logits"].float()
    return total / (1 + len(views))


@torch.no_grad()
def scored_batches(model: nn.Module, x: torch.Tensor, precision: str, memory_format: str, tta_flip: bool,
                   tta_shift: int, batch_size: int, decode: bool = True):
    """Yield (start index, float batch, model outputs) over uint8 images `x` in eval mode, with the class
    scores averaged over the test-time views (see `tta_logits`); shared by evaluation and relabelling."""
    model.eval()
    param = next(model.parameters(), None)
    dev = param.device if param is not None else x.device  # the model's device; a weightless one runs by the data
    fmt = memory_format_for(model, memory_format)
    for i in range(0, x.shape[0], batch_size):
        xb = to_float(x[i:i + batch_size].to(dev)).contiguous(memory_format=fmt)
        with autocast(dev, precision):
            out = model(xb, decode=decode)
            if (tta_flip or tta_shift) and "logits" in out:
                out["logits"] = tta_logits(model, xb, out["logits"], tta_flip, tta_shift)
        yield i, xb, out


def trained_only(metrics: dict, head: bool, decoder: bool) -> dict:
    """`evaluate`'s metrics without those of a part the run never trained: an untrained head's accuracy or
    an untrained decoder's error means nothing (shared by the run's own metrics and `aeclass evaluate`)."""
    drop = ({"accuracy", "loss", "predictions"} if not head else set()) | ({"recon_mse"} if not decoder else set())
    return {k: v for k, v in metrics.items() if k not in drop}


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, precision: str = "fp32",
             batch_size: int = 1024, memory_format: str = "auto", tta_flip: bool = False, tta_shift: int = 0) -> dict:
    """Test metrics: accuracy and CE (with a head), reconstruction MSE (with a decoder), predictions.
    `tta_flip` averages the class scores of each image and its left-right mirror (as fast CIFAR-10
    trainers do), for data where a mirror image keeps its class; `tta_shift` also averages over copies
    shifted by +-tta_shift pixels (see `tta_logits`)."""
    preds, sq_err, ce_sum, n = [], 0.0, 0.0, x.shape[0]
    dev = next(model.parameters()).device
    for i, xb, out in scored_batches(model, x, precision, memory_format, tta_flip, tta_shift, batch_size):
        if "logits" in out:
            logits = out["logits"].float()
            preds.append(logits.argmax(1))
            if y is not None:
                ce_sum += float(nn.functional.cross_entropy(logits, y[i:i + batch_size].to(dev), reduction="sum"))
        if "recon" in out:
            sq_err += float(((out["recon"].float() - xb) ** 2).mean(dim=(1, 2, 3)).sum())
    metrics: dict = {}
    if preds:
        pred = torch.cat(preds).cpu()
        metrics["predictions"] = pred
        if y is not None:
            metrics["accuracy"] = float((pred == y.cpu()).float().mean())
            metrics["loss"] = ce_sum / n
    if model.has_decoder:
        metrics["recon_mse"] = sq_err / n
    return metrics
