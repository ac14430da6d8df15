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
    semi                semi: CE(labelled, weak view) + lambda * denoising reconstruction(all, strong view)
                        + ramped w_u * FixMatch pseudo-label CE(unlabelled: confident weak -> strong view)
    ladder              ladder: CE(labelled, corrupted pass) + lambda * per-layer denoising costs(unlabelled)
                        of the Ladder network (--model ladder)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.nn import functional as F

from .config import TrainConfig
from .data.augment import AugmentConfig, augment_batch
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
    # Self-training: before the phase's first epoch the engine pseudo-labels every training image with the
    # model trained so far (its confident classes only) and restarts from fresh weights (train.py).
    relabel: bool = False


@dataclass
class Batch:
    x: torch.Tensor  # float (N, C, H, W) in [0, 1], augmented
    y: torch.Tensor  # int64 (N,), -1 = unlabelled
    # For steps that draw their own augmentations (semi): the engine's CPU generator, whose state the
    # checkpoints carry (None: the global torch RNG), and the phase epoch reached (fractional; for ramp-ups).
    gen: torch.Generator | None = None
    epoch: float = 0.0
    # The strategy's running state (tensors), kept across steps and saved in checkpoints by the engine.
    state: dict = field(default_factory=dict)
    # The EMA model when a strategy asks for a teacher (semi with cfg.ema_teacher), else None.
    teacher: AEClassifier | None = None


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


def strong_view(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """FixMatch-style strong augmentation on top of a (weakly augmented) float batch: a shift of up to
    max(1, side/16) pixels, a rotation of up to 15 degrees, greyscale with p=0.2 (RGB), then one cutout
    square of about 3/8 of the side per image (zeroed, at a random position). Noise is added by the caller."""
    n, c, h, w = x.shape
    side = min(h, w)
    x = augment_batch(x, AugmentConfig(crop_padding=max(1, side // 16), rotation=15.0,
                                       greyscale=0.2 if c == 3 else 0.0), gen)
    k = max(1, round(side * 3 / 8))
    oy = torch.randint(-(k // 2), h - k // 2, (n, 1, 1, 1), generator=gen).to(x.device)
    ox = torch.randint(-(k // 2), w - k // 2, (n, 1, 1, 1), generator=gen).to(x.device)
    rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    hole = (rows >= oy) & (rows < oy + k) & (cols >= ox) & (cols < ox + k)
    return x.masked_fill(hole, 0.0)


def rampup(epoch: float, length: float) -> float:
    """Laine & Aila's sigmoid-shaped ramp exp(-5 (1 - t)^2), t = epoch / length clipped to [0, 1]."""
    if length <= 0:
        return 1.0
    t = min(1.0, max(0.0, epoch / length))
    return math.exp(-5.0 * (1.0 - t) ** 2)


def align_distribution(probs: torch.Tensor, state: dict, momentum: float = 0.99) -> torch.Tensor:
    """Distribution alignment (Berthelot et al., ReMixMatch, 2020): scale each prediction by
    prior / running mean of the model's predictions on unlabelled images, and renormalise.

    With 10 labels per class a self-training model can adopt a wrong cluster early (in one MNIST-100
    draw, 123 test sevens became twos); the running mean then over-weights that class and alignment
    pulls the pseudo-labels back towards the prior. The prior is uniform: the labelled subset is drawn
    balanced, so its class counts carry no information about the true class frequencies.
    `state["p_model"]` holds the running mean (about the last 1/(1-momentum) batches)."""
    mean = probs.mean(0)
    running = state.get("p_model")
    running = mean if running is None else momentum * running + (1 - momentum) * mean
    state["p_model"] = running
    aligned = probs / running.clamp_min(1e-6)
    return aligned / aligned.sum(1, keepdim=True)


def unsmoothed_confidence(p_max: torch.Tensor, smoothing: float, classes: int) -> torch.Tensor:
    """A top-class probability mapped back through label smoothing: a model trained with smoothing e on K
    classes is at best 1 - e + e/K sure (0.91 for 0.1 and 10 classes), which a confidence threshold such as
    0.95 would never pass; (p - e/K) / (1 - e) puts that ceiling back at 1."""
    return (p_max - smoothing / classes) / (1 - smoothing) if smoothing else p_max


def semi_step(model: AEClassifier, batch: Batch, cfg: TrainConfig) -> dict:
    """Semi-supervised step: FixMatch pseudo-labels + a denoising autoencoder on one shared encoder.

    One forward pass over [weak views; strong views]. Labelled rows: cross-entropy on the weak view.
    Unlabelled rows: where the weak view's top class probability (no gradient) is >= cfg.confidence, that
    class is the target of the strong view's cross-entropy (averaged over all unlabelled rows, so few
    confident rows weigh little), weighted by cfg.unlabelled_weight times a ramp-up over
    cfg.rampup_epochs; with cfg.dist_align the weak predictions are first aligned to balanced classes, with
    cfg.ema_teacher they come from the EMA of the weights (a mean teacher) instead of the model itself, and
    with cfg.strong_labelled the labelled rows' strong views are trained on their labels as well.
    Every row: the decoder reconstructs the clean geometric strong view from the code of its cut-out +
    noisy (cfg.noise) version, weighted by cfg.recon_weight (0 switches the decoder off).
    """
    gen = batch.gen if batch.gen is not None else torch.default_generator
    n = batch.x.shape[0]
    geo = strong_view(batch.x, gen)
    strong = corrupt(geo, cfg.noise)
    code = model.encode(torch.cat([batch.x, strong]))
    logits = model.classify(code).float()
    weak_logits, strong_logits = logits[:n], logits[n:]
    parts = _classification(weak_logits, batch.y, cfg)
    if cfg.strong_labelled:  # the labelled images' strong views are in the batch already: use their labels too
        strong_parts = _classification(strong_logits, batch.y, cfg)
        parts["ce"] = (parts["ce"] + strong_parts["ce"]) / 2
    unl = batch.y < 0
    if bool(unl.any()):
        with torch.no_grad():
            if batch.teacher is not None:  # mean teacher: the EMA model labels the weak views
                probs = batch.teacher(batch.x[unl], decode=False)["logits"].float().softmax(1)
            else:
                probs = weak_logits[unl].softmax(1)
            if cfg.dist_align:
                probs = align_distribution(probs, batch.state)
            conf, pseudo = probs.max(1)
            # The labelled CE's --label-smoothing caps the model's confidence below the threshold otherwise.
            conf = unsmoothed_confidence(conf, cfg.label_smoothing, probs.shape[1])
            mask = (conf >= cfg.confidence).float()
        pl = (F.cross_entropy(strong_logits[unl], pseudo, reduction="none") * mask).mean()
        confident = mask.mean()
    else:
        pl = confident = logits.sum() * 0
    loss = parts["ce"] + cfg.unlabelled_weight * rampup(batch.epoch, cfg.rampup_epochs) * pl
    out = {"pseudo": pl, "confident": confident.detach()}
    if cfg.recon_weight > 0:
        recon = reconstruction_loss(model.decode(code[n:]), geo, cfg.recon_loss)
        loss = loss + cfg.recon_weight * recon
        out["recon"] = recon
    return {"loss": loss, **out, **parts}


def ladder_step(model: AEClassifier, batch: Batch, cfg: TrainConfig) -> dict:
    """Ladder network step (Rasmus et al., 2015; the model is aeclass.models.ladder.LadderNet): cross-entropy
    of the corrupted pass on the labelled rows, which lead the batch, plus cfg.recon_weight times the
    model's weighted per-layer denoising costs on the other rows, with cfg.noise as the noise std of every
    layer. "recon" is the input layer's cost: the pixel MSE of the denoised image."""
    n_labelled = int((batch.y >= 0).sum())  # a host sync per step: splitting the rows into groups needs an int
    out = model.ladder_losses(batch.x, n_labelled, cfg.noise, denoise=cfg.recon_weight > 0)
    parts = _classification(out["logits"], batch.y, cfg)
    if not out["layer_costs"]:  # --no-recon: the corrupted encoder alone, a noisy supervised network
        return {"loss": parts["ce"], **parts}
    denoise = sum(w * c for w, c in zip(model.costs, out["layer_costs"]))
    loss = parts["ce"] + cfg.recon_weight * denoise
    return {"loss": loss, "denoise": denoise.detach(), "recon": out["layer_costs"][0].detach(), **parts}


def _pretrain(cfg: TrainConfig) -> Phase:
    return Phase("pretrain", cfg.pretrain_epochs or cfg.epochs, autoencoder_step, "all", trains=("encoder", "decoder"))


def build_phases(cfg: TrainConfig, model: AEClassifier, pretrained: bool = False) -> list[Phase]:
    """The phases of `cfg.strategy` for `model`; `pretrained` skips the autoencoder phase (weights came
    from --init)."""
    s = cfg.strategy
    needs_decoder = s in ("autoencoder", "pretrain-finetune", "linear-probe", "joint") or (
        s == "semi" and cfg.recon_weight > 0)
    needs_head = s != "autoencoder"
    if needs_decoder and not model.has_decoder and not (pretrained and s in ("pretrain-finetune", "linear-probe")):
        raise ConfigError(f"--strategy {s} needs a model with a decoder; '{model.spec['name']}' has none (try --model hybrid)")
    is_ladder = hasattr(model, "ladder_losses")
    if s == "ladder" and not is_ladder:
        raise ConfigError(f"--strategy ladder needs --model ladder, not '{model.spec['name']}'")
    if is_ladder and s == "semi" and cfg.recon_weight > 0:
        raise ConfigError("--model ladder: its decoder needs the lateral connections of --strategy ladder "
                          "(or use semi with --no-recon)")
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
    if s == "semi":
        trains = ("encoder", "decoder", "head") if cfg.recon_weight > 0 else ("encoder", "head")
        # With --teacher another run's model is the first teacher and this run only trains students.
        phases = [] if cfg.teacher else [Phase("semi", cfg.epochs, semi_step, "all", mix_labelled=True, trains=trains)]
        if cfg.student_epochs:
            # Noisy Student / self-training (Xie et al., 2020): a fresh model learns the teacher's confident
            # pseudo-labels of all images from the start, with the article's joint loss (CE + denoising
            # reconstruction), so early pseudo-label mistakes that the teacher kept reinforcing are not
            # built into the student's features. Images below the confidence stay unlabelled (recon only).
            # With several rounds each student relabels the images for the next one, as in Noisy Student.
            step = joint_step if cfg.recon_weight > 0 else supervised_step
            phases += [Phase("student" if r == 0 else f"student{r + 1}", cfg.student_epochs, step, "all", trains=trains,
                             relabel=True) for r in range(cfg.student_rounds)]
        return phases
    if s == "ladder":
        trains = ("encoder", "decoder", "head") if cfg.recon_weight > 0 else ("encoder", "head")
        return [Phase("ladder", cfg.epochs, ladder_step, "all", mix_labelled=True, trains=trains)]
    raise ConfigError(f"--strategy: unknown strategy '{s}'")
