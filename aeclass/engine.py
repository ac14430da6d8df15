"""The one training engine every strategy goes through.

`train(cfg)` loads the data, builds the model, runs the strategy's phases epoch by epoch and writes the run
directory (see aeclass.run). The data stay uint8 tensors on the training device; each batch is indexed,
converted to float and augmented there with tensor ops, so no DataLoader or per-sample Python is on the hot
path. The learning rate is set every iteration, a non-finite loss stops the run (the last good checkpoint
stays), and every random draw comes from generators whose states the checkpoints carry, so a resumed run
continues exactly where it stopped.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import TrainConfig
from .data import ImageDataset, labelled_subset, semi_labels, to_float
from .data.augment import AugmentConfig, augment_batch, default_augment, parse_augment
from .errors import AeclassError, ConfigError
from .models import AEClassifier
from .strategies import Batch, Phase, unsmoothed_confidence


class TrainingDiverged(AeclassError):
    """The loss became NaN or infinite."""


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device: expected auto, cpu, cuda or cuda:N, got '{name}'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return dev


def autocast(device: torch.device, precision: str):
    """bf16 autocast where asked for, a no-op context otherwise."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def use_channels_last(model: nn.Module, memory_format: str) -> bool:
    """channels_last (NHWC) lets oneDNN/cuDNN run convolutions without layout conversions: measured 1.4x
    (fp32) and 1.6x (bf16) faster training of the `hybrid` model on this 2-core CPU. 'auto' uses it when
    the model has 2-D convolutions; dense models gain nothing from it."""
    if memory_format == "auto":
        return any(isinstance(m, nn.Conv2d) for m in model.modules())
    return memory_format == "channels_last"


def memory_format_for(model: nn.Module, memory_format: str) -> torch.memory_format:
    """The torch memory format that `memory_format` ('auto' | 'channels_last' | 'contiguous') means for `model`."""
    return torch.channels_last if use_channels_last(model, memory_format) else torch.contiguous_format


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x translated by (dy, dx) pixels with zero fill, as the training-time random crop does."""
    p = max(abs(dy), abs(dx))
    h, w = x.shape[-2:]
    return nn.functional.pad(x, (p, p, p, p))[..., p - dy:p - dy + h, p - dx:p - dx + w]


def tta_logits(model: nn.Module, x: torch.Tensor, logits: torch.Tensor, flip: bool, shift: int = 0) -> torch.Tensor:
    """Test-time augmentation: the mean class scores over views of x. `logits` are the scores of x itself;
    `flip` adds its left-right mirror, `shift` > 0 adds copies of x (and of the mirror) moved by +-shift
    pixels diagonally, as fast CIFAR-10 trainers such as airbench do. On the fast-cifar resnet the shifts
    added about half a point over the flip alone (README, "Time to accuracy")."""
    views = [x.flip(3)] if flip else []
    if shift:
        for v in [x] + views[:1]:
            views += [shifted(v, shift, shift), shifted(v, -shift, -shift)]
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1 else torch.contiguous_format
    total = logits.float()
    for v in views:
        total = total + model(v.contiguous(memory_format=fmt), decode=False)["logits"].float()
    return total / (1 + len(views))


class EMA:
    """Exponential moving average of a model's weights and float buffers (Polyak averaging).

    The averaged model is what gets evaluated and saved: late in training it is a cheap ensemble of the
    last ~1/(1-decay) steps, which is steadier than the raw weights, above all when pseudo-labels make the
    training signal noisy. The decay ramps up as (1+n)/(10+n) so the average is not dominated by the
    random initialisation in short runs.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._pairs = None  # (float targets, float sources, other targets, other sources), built once

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if self._pairs is None:
            # state_dict() tensors share storage with the live parameters and buffers, which are only ever
            # updated in place (optimiser steps, load_state_dict), so the lists stay valid for the whole run.
            own, src = self.model.state_dict(), model.state_dict()
            fl = [k for k, v in own.items() if v.is_floating_point()]
            other = [k for k in own if k not in set(fl)]
            self._pairs = ([own[k] for k in fl], [src[k] for k in fl], [own[k] for k in other], [src[k] for k in other])
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        own_f, src_f, own_o, src_o = self._pairs
        torch._foreach_lerp_(own_f, src_f, 1 - d)
        for a, b in zip(own_o, src_o):
            a.copy_(b)


@dataclass
class TrainData:
    """The training set on the device, the labelled/unlabelled split and the augmentation."""

    x: torch.Tensor          # uint8 (N, C, H, W) on the device
    y: torch.Tensor          # int64 (N,), -1 = unlabelled
    labelled: torch.Tensor   # indices of labelled samples (on the device)
    test_x: torch.Tensor
    test_y: torch.Tensor
    augment: AugmentConfig | None

    @classmethod
    def build(cls, ds: ImageDataset, cfg: TrainConfig, device: torch.device) -> "TrainData":
        idx = labelled_subset(ds.train_y, cfg.labels, cfg.seed, ds.num_classes)
        aug = parse_augment(cfg.augment)
        if aug is None:
            aug = default_augment(ds.name, ds.image_shape)
        return cls(ds.train_x.to(device), semi_labels(ds.train_y, idx).to(device), idx.to(device),
                   ds.test_x.to(device), ds.test_y.to(device), aug)

    def relabelled(self, y: torch.Tensor, augment: str | None = None) -> "TrainData":
        """The same images with other labels (-1 = unlabelled), e.g. a teacher's pseudo-labels, and
        optionally another augmentation (an --augment string; None keeps this one)."""
        aug = self.augment
        if augment is not None:
            aug = parse_augment(augment, "--student-augment") or self.augment  # 'default': the run's own
        return dataclasses.replace(self, y=y, labelled=torch.nonzero(y >= 0).flatten(), augment=aug)

    @property
    def n_labelled(self) -> int:
        return int(self.labelled.numel())

    def _cycled(self, count: int, gen: torch.Generator) -> torch.Tensor:
        """`count` labelled indices: fresh permutations of the labelled set, back to back."""
        reps = -(-count // self.n_labelled)
        perms = [torch.randperm(self.n_labelled, generator=gen) for _ in range(reps)]
        return self.labelled[torch.cat(perms)[:count].to(self.labelled.device)]

    def batches(self, phase: Phase, cfg: TrainConfig, gen: torch.Generator):
        """Yield one epoch of Batches; permutations come from `gen` (CPU) for reproducibility.

        Every phase's epoch is len(train set) // batch_size steps, also when it trains on a few labels only
        (the labelled set is then cycled), so strategies are compared at equal numbers of optimiser steps
        and a 100-label supervised run is not starved of updates.
        """
        bs = cfg.batch_size
        n_steps = steps_per_epoch(phase, self, cfg)
        if phase.images == "labelled":
            lbs = min(bs, self.n_labelled)
            order = self._cycled(n_steps * lbs, gen)
            for s in range(n_steps):
                idx = order[s * lbs:(s + 1) * lbs]
                yield Batch(augment_batch(to_float(self.x.index_select(0, idx)), self.augment, gen), self.y[idx], gen)
            return
        order = torch.randperm(self.x.shape[0], generator=gen).to(self.x.device)
        mix = phase.mix_labelled and self.n_labelled < self.x.shape[0]
        if mix:
            lbs = min(cfg.labelled_batch_size or bs, self.n_labelled)
            lab_order = self._cycled(n_steps * lbs, gen)
        for s in range(n_steps):
            idx = order[s * bs:(s + 1) * bs]  # the ragged last batch is dropped (BatchNorm dislikes tiny ones)
            y = self.y[idx]
            if mix:
                # Few labels: a labelled batch joins every step; the "all images" part counts as unlabelled
                # so each labelled image weighs the same in the classification loss.
                lidx = lab_order[s * lbs:(s + 1) * lbs]
                idx = torch.cat([lidx, idx])
                y = torch.cat([self.y[lidx], torch.full_like(y, -1)])
            # index_select rather than x[idx]: the same gather, measured 10x faster on CPU (4 vs 42 us a batch)
            yield Batch(augment_batch(to_float(self.x.index_select(0, idx)), self.augment, gen), y, gen)


def lr_at(step: int, total: int, warmup: int, base: float, schedule: str) -> float:
    if schedule == "constant":
        return base
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    # fused=True is opt-in (--fused-optimizer): torch's fused CPU Adam steps the 784-32-784 AE in 37 us
    # instead of 100 us (6-10 % of a training step), but it rounds differently, so every figure in the
    # README would move by seed-level noise (up to a point on digits) and stop being reproducible from the
    # committed commands, which run the default (foreach) kernels.
    kind = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}.get(cfg.optimizer, torch.optim.Adam)
    kw = dict(lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        kw.update(momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.fused_optimizer:
        kw["fused"] = True
    try:
        return kind(param_groups(params, cfg.weight_decay), **kw)
    except (RuntimeError, TypeError) as e:  # fused kernels need a recent torch for CPU parameters
        if not cfg.fused_optimizer:
            raise
        raise ConfigError(f"--fused-optimizer: torch {torch.__version__} has no fused {cfg.optimizer} here "
                          f"({str(e).splitlines()[0]}); leave it off") from None


def param_groups(params, weight_decay: float) -> list[dict]:
    """Optimiser groups by the `lr_scale` a model may set on a parameter (timm's convention; e.g. fastcnn's
    BatchNorm biases learn 64x faster). A scaled group gets weight_decay / lr_scale, so that the decay per
    step (lr x weight decay) is the same for every weight. The engine sets each group's lr to the
    schedule's lr x its lr_scale."""
    groups: dict[float, list] = {}
    for p in params:
        groups.setdefault(float(getattr(p, "lr_scale", 1.0)), []).append(p)
    return [{"params": ps, "lr_scale": s, "weight_decay": weight_decay / s} for s, ps in sorted(groups.items())]


def phase_parameters(model: AEClassifier, phase: Phase) -> list[nn.Parameter]:
    params = []
    for name in phase.trains:
        module = getattr(model, name, None)
        if module is not None:
            params += [p for p in module.parameters() if p.requires_grad]
    return params


def set_train_mode(model: AEClassifier, phase: Phase) -> None:
    model.train()
    for name in phase.frozen:
        module = getattr(model, name)
        module.eval()  # frozen BatchNorm keeps its running statistics
        module.requires_grad_(False)


@torch.no_grad()
def scored_batches(model: AEClassifier, x: torch.Tensor, precision: str, memory_format: str, tta_flip: bool,
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
def evaluate(model: AEClassifier, x: torch.Tensor, y: torch.Tensor | None, precision: str = "fp32",
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


@torch.no_grad()
def confident_labels(model: AEClassifier, data: TrainData, cfg: TrainConfig, smoothing: float = 0.0,
                     batch_size: int = 1024) -> torch.Tensor:
    """Self-training targets for every training image: the model's class where its top probability (with
    the run's test-time views, cfg.tta_flip / cfg.tta_shift) reaches cfg.confidence, -1 (unlabelled)
    elsewhere, and the real label wherever there is one.

    `smoothing` is the label smoothing the model was trained with. Such a model's top probability tops out
    near 1 - smoothing + smoothing / classes (0.91 for 0.1 and 10 classes), so a 0.95 threshold would
    pass almost nothing: it did, in a second self-training round on MNIST (595 of 59,900 images, and the
    student fell to 6.5 % error). The top probability is therefore first mapped back through the
    smoothing (strategies.unsmoothed_confidence) before the threshold."""
    labels = []
    for _, _, out in scored_batches(model, data.x, cfg.precision, cfg.memory_format, cfg.tta_flip, cfg.tta_shift,
                                    batch_size, decode=False):
        conf, pred = out["logits"].float().softmax(1).max(1)
        conf = unsmoothed_confidence(conf, smoothing, out["logits"].shape[1])
        labels.append(torch.where(conf >= cfg.confidence, pred, torch.full_like(pred, -1)))
    labels = torch.cat(labels)
    labels[data.labelled] = data.y[data.labelled]
    return labels


def train_phase_epoch(model, phase: Phase, data: TrainData, cfg: TrainConfig, opt, gen, step0: int,
                      total_steps: int, warmup: int, device, progress=None, ema: EMA | None = None,
                      strategy_state: dict | None = None) -> tuple[dict, int]:
    """One epoch of one phase; returns the epoch's mean losses and the new global step.

    `strategy_state` is the strategy's own running state (e.g. semi's class distribution), carried by
    checkpoints; `ema`, when given, is updated after every optimiser step."""
    set_train_mode(model, phase)
    fmt = memory_format_for(model, cfg.memory_format)
    sums: dict[str, float] = {}
    count, correct, labelled = 0, 0, 0
    step = step0
    spe = steps_per_epoch(phase, data, cfg)
    for batch in data.batches(phase, cfg, gen):
        batch.epoch = step / spe  # the phase's epochs done so far (fractional), for ramp-ups
        batch.state = strategy_state if strategy_state is not None else {}
        batch.teacher = ema.model if (ema is not None and cfg.ema_teacher) else None
        batch.x = batch.x.contiguous(memory_format=fmt)
        lr = lr_at(step, total_steps, warmup, cfg.lr, cfg.schedule)
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        with autocast(device, cfg.precision):
            losses = phase.step(model, batch, cfg)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"training diverged: loss is {float(loss)} in phase '{phase.name}' at step {step}; "
                                   f"try a lower --lr (now {cfg.lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update(model)
        step += 1
        count += 1
        # Sums stay on the device (float64, so the epoch means match summing Python floats): reading each
        # loss back with float() would make the host wait for the GPU after every step.
        for k, v in losses.items():
            if k not in ("correct", "labelled"):
                sums[k] = sums.get(k, 0.0) + v.detach().double()
        correct = correct + losses.get("correct", 0)
        labelled = labelled + losses.get("labelled", 0)
        if progress is not None:
            progress.update(1)
            if count % 20 == 1:  # the bar's loss readout is the one per-step sync left; refresh it sparingly
                progress.set_postfix(loss=f"{float(loss):.4f}", refresh=False)
    means = {f"train_{k}": float(v) / max(1, count) for k, v in sums.items()}
    correct, labelled = int(correct), int(labelled)
    if labelled:
        means["train_accuracy"] = correct / labelled
    means["lr"] = lr_at(step - 1, total_steps, warmup, cfg.lr, cfg.schedule)
    return means, step


def steps_per_epoch(phase: Phase, data: TrainData, cfg: TrainConfig) -> int:
    return max(1, data.x.shape[0] // cfg.batch_size)
