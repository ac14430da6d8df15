"""`semi`: FixMatch pseudo-labels + a denoising autoencoder on one shared encoder, then optionally
self-training students (Noisy Student) on the teacher's confident pseudo-labels.

    semi     CE(labelled, weak view) + lambda * denoising reconstruction(all, strong view)
             + ramped w_u * pseudo-label CE(unlabelled: confident weak view -> strong view)
    student  (--student-epochs N, --student-rounds R) fresh weights trained on the confident pseudo-labels of
             every image with the joint loss; each student teaches the next. --teacher RUN makes another run's
             model the first teacher and skips the semi phase.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..data.augment import AugmentConfig, augment_batch, zero_squares
from ..data.randaugment import cut_out, rand_augment
from ..distributed import mean_over_ranks
from ..errors import ConfigError
from ..options import option
from .base import Phase, Strategy, register_strategy
from .losses import classification, corrupt, reconstruction_loss
from .students import SelfTraining, StudentOptions, confident_labels, load_teacher, unsmoothed_confidence  # noqa: F401


@dataclass
class SemiOptions(StudentOptions):  # the students' options (aeclass/strategies/students.py) come first
    unlabelled_weight: float = option(1.0, "weight of the pseudo-label loss on unlabelled images (after ramp-up)", low=0)
    rampup_epochs: float = option(5.0, "epochs over which the unlabelled weight ramps up from ~0 (0 = none)", low=0)
    dist_align: bool = option(False, "align the pseudo-labels' class distribution to balanced classes")
    ema_teacher: bool = option(False, "pseudo-labels from the EMA of the weights, a mean teacher (needs --ema)")
    strong_labelled: bool = option(False, "also train the labelled images' strong views on their labels")
    strong_augment: str = option("cutout", "the strong view: 'cutout' (a shift, a rotation up to 15 degrees, "
                                 "greyscale, a cut-out) or 'randaugment' (two RandAugment operations, a cut-out)",
                                 choices=("cutout", "randaugment"))
    threshold: str = option("fixed", "which pseudo-labels count: 'fixed' (top-class probability >= --confidence) or "
                            "'self-adaptive' (FreeMatch's per-class thresholds, which follow the model's own "
                            "confidence on unlabelled images; --confidence is then unused)",
                            choices=("fixed", "self-adaptive"))
    threshold_momentum: float = option(0.99, "with --threshold self-adaptive: the running means' momentum (they "
                                             "follow about the last 1/(1 - momentum) steps; 1 would freeze them at 1/K)",
                                      low=0, high=1, high_open=True)
    weak_no_grad: bool = option(False, "the unlabelled images' weak views in a pass of their own, without gradient: "
                                       "less work per step (their BatchNorm statistics are then their own)")


def strong_view(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """FixMatch-style strong augmentation on top of a (weakly augmented) float batch: a shift of up to
    max(1, side/16) pixels, a rotation of up to 15 degrees, greyscale with p=0.2 (RGB), then one cut-out
    square of about 3/8 of the side per image (zeroed, at a random position; it may overhang). Noise is
    added by the caller."""
    n, c, h, w = x.shape
    side = min(h, w)
    x = augment_batch(x, AugmentConfig(crop_padding=max(1, side // 16), rotation=15.0,
                                       greyscale=0.2 if c == 3 else 0.0), gen)
    k = max(1, round(side * 3 / 8))
    oy = torch.randint(-(k // 2), h - k // 2, (n, 1, 1, 1), generator=gen)
    ox = torch.randint(-(k // 2), w - k // 2, (n, 1, 1, 1), generator=gen)
    return zero_squares(x, oy, ox, k)


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
    mean = mean_over_ranks(probs.mean(0))  # under torchrun, the whole global batch's mean on every rank
    running = state.get("p_model")
    running = mean if running is None else momentum * running + (1 - momentum) * mean
    state["p_model"] = running
    aligned = probs / running.clamp_min(1e-6)
    return aligned / aligned.sum(1, keepdim=True)


def self_adaptive_threshold(conf: torch.Tensor, probs: torch.Tensor, pseudo: torch.Tensor, state: dict,
                            momentum: float) -> torch.Tensor:
    """FreeMatch's self-adaptive thresholds (Wang et al., 2023): a global threshold, the running mean of the
    top-class confidence on unlabelled images, scaled per class by the running mean of that class's
    probability over its largest class's. Both start at 1/K.

    A fixed 0.95 admits almost no pseudo-label while the model is unsure and then, once it is sure of
    everything, every one it has become sure of, right or wrong; a threshold that follows the model's mean
    confidence stays selective relative to what the model currently knows, and classes the model predicts
    rarely (where a wrong cluster has taken their images) get a lower bar. Returns each row's threshold (that
    of its top class); `state["sat_global"]` and `state["sat_local"]` hold the running means (about the last
    1/(1-momentum) batches)."""
    k = probs.shape[1]
    mean_conf, mean_probs = mean_over_ranks(conf.mean()), mean_over_ranks(probs.mean(0))
    glob = state.get("sat_global", torch.tensor(1.0 / k))
    local = state.get("sat_local", torch.full((k,), 1.0 / k))
    state["sat_global"] = glob = momentum * glob.to(conf) + (1 - momentum) * mean_conf
    state["sat_local"] = local = momentum * local.to(probs) + (1 - momentum) * mean_probs
    return (local / local.max() * glob)[pseudo]


@register_strategy
class Semi(SelfTraining, Strategy):
    name = "semi"
    summary = ("CE(labelled, weak) + lambda * denoising recon(all, strong) + FixMatch pseudo-label CE(unlabelled); "
               "optional self-training students")
    Options = SemiOptions
    metric_columns = ("pseudo", "confident")

    @classmethod
    def check_options(cls, o, cfg):
        if o.ema_teacher and not cfg.ema:
            raise ConfigError("--ema-teacher needs a weight average to teach with: give --ema, e.g. 0.999")
        cls.check_student_options(o, cfg)

    def requires(self, pretrained=False):
        return {"head", "decoder"} if self.cfg.recon_weight > 0 else {"head"}

    def phases(self, model, pretrained=False):
        o = self.opts
        trains = ("encoder", "decoder", "head") if self.cfg.recon_weight > 0 else ("encoder", "head")
        # With --teacher another run's model is the first teacher and this run only trains students.
        phases = [] if o.teacher else [Phase("semi", self.cfg.epochs, self.step, "all", mix_labelled=True, trains=trains)]
        return phases + self.student_phases(trains)

    ema_model = None  # the mean teacher (--ema-teacher): the run's weight average, set before each phase

    def setup(self, run) -> None:
        self.setup_students(run)

    def before_phase(self, run, index, phase, start_epoch):
        self.ema_model = run.ema.model if (self.opts.ema_teacher and run.ema is not None) else None
        if not self.is_student(phase):
            return run.data
        return self.before_student_phase(run, index, phase, start_epoch)

    def step(self, model, batch):
        """One forward pass over [weak views; strong views]. Labelled rows: cross-entropy on the weak view.
        Unlabelled rows: where the weak view's top class probability (no gradient) is >= --confidence, that
        class is the target of the strong view's cross-entropy (averaged over all unlabelled rows, so few
        confident rows weigh little), weighted by --unlabelled-weight times a ramp-up; with --dist-align the
        weak predictions are aligned to balanced classes first, with --ema-teacher they come from the EMA of
        the weights, with --threshold self-adaptive the bar is FreeMatch's per-class one. Every row: the
        decoder reconstructs the strong view from the code of its noisy (--noise) version, weighted by
        --recon-weight (0 switches the decoder off); with --strong-augment randaugment the target is the view
        before its cut-out, so the decoder also fills the hole in. With --weak-no-grad the unlabelled weak
        views go through a pass of their own, without gradient (their logits are only targets), and the
        gradient pass holds the labelled weak views only."""
        cfg, o = self.cfg, self.opts
        gen = batch.gen if batch.gen is not None else torch.default_generator
        if o.strong_augment == "randaugment":  # the decoder fills the cut-out in: a masked reconstruction
            target = rand_augment(batch.x, gen, cutout=False)
            strong = cut_out(target, gen)
        else:  # the decoder reconstructs the cut-out view itself, hole included: a denoising one
            strong = target = strong_view(batch.x, gen)
        labelled = batch.y >= 0
        weak = batch.x[labelled] if o.weak_no_grad else batch.x
        code = model.encode(torch.cat([weak, corrupt(strong, cfg.noise, cfg.noise_kind)]))
        logits = model.classify(code).float()
        weak_logits, strong_logits = logits[:weak.shape[0]], logits[weak.shape[0]:]
        y_weak = batch.y[labelled] if o.weak_no_grad else batch.y
        parts = classification(weak_logits, y_weak, cfg.label_smoothing)
        if o.strong_labelled:  # the labelled images' strong views are in the batch already: use their labels too
            parts["ce"] = (parts["ce"] + classification(strong_logits, batch.y, cfg.label_smoothing)["ce"]) / 2
        if o.weak_no_grad and self.ema_model is None and bool((~labelled).any()):
            with torch.no_grad():
                unl_logits = model(batch.x[~labelled], decode=False)["logits"].float()
        else:
            unl_logits = None if o.weak_no_grad else weak_logits[~labelled]
        pl, confident, bar = self._pseudo_label_loss(batch, unl_logits, strong_logits, logits)
        loss = parts["ce"] + o.unlabelled_weight * rampup(batch.epoch, o.rampup_epochs) * pl
        out = {"pseudo": pl, "confident": confident.detach()}
        if o.threshold == "self-adaptive":  # train_threshold: the mean bar the unlabelled rows had to reach
            out["threshold"] = bar
        if cfg.recon_weight > 0:
            recon = reconstruction_loss(model.decode(code[weak.shape[0]:]), target, cfg.recon_loss)
            loss = loss + cfg.recon_weight * recon
            out["recon"] = recon
        return {"loss": loss, **out, **parts}

    def _pseudo_label_loss(self, batch, unl_logits, strong_logits, logits):
        """`unl_logits`: the unlabelled rows' weak-view logits (None: the EMA teacher labels them). Returns the
        pseudo-label loss, the share of confident rows and the mean bar those rows had to reach (in a batch without
        unlabelled rows, the bar of the most predicted class, so an epoch's mean bar is not pulled towards 0)."""
        unl = batch.y < 0
        if not bool(unl.any()):
            zero = logits.sum() * 0
            top = self.state.get("sat_global", torch.tensor(1.0 / logits.shape[1]))
            top = top if self.opts.threshold == "self-adaptive" else self.opts.confidence
            return zero, zero, torch.as_tensor(top, dtype=zero.dtype, device=zero.device)
        with torch.no_grad():
            if self.ema_model is not None:  # mean teacher: the EMA model labels the weak views
                probs = self.ema_model(batch.x[unl], decode=False)["logits"].float().softmax(1)
            else:
                probs = unl_logits.softmax(1)
            if self.opts.dist_align:
                probs = align_distribution(probs, self.state)
            conf, pseudo = probs.max(1)
            # The labelled CE's --label-smoothing caps the model's confidence below the threshold otherwise.
            conf = unsmoothed_confidence(conf, self.cfg.label_smoothing, probs.shape[1])
            if self.opts.threshold == "self-adaptive":
                bar = self_adaptive_threshold(conf, probs, pseudo, self.state, self.opts.threshold_momentum)
            else:
                bar = torch.full_like(conf, self.opts.confidence)
            mask = (conf >= bar).float()
        pl = (F.cross_entropy(strong_logits[unl], pseudo, reduction="none") * mask).mean()
        return pl, mask.mean(), bar.mean()

    def final_metrics(self) -> dict:
        return self.student_metrics()
