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
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from ..data.augment import AugmentConfig, augment_batch
from ..distributed import mean_over_ranks
from ..errors import AeclassError, ConfigError
from ..options import option
from .base import Phase, Strategy, register_strategy
from .losses import classification, corrupt, joint_step, reconstruction_loss, supervised_step


@dataclass
class SemiOptions:
    unlabelled_weight: float = option(1.0, "weight of the pseudo-label loss on unlabelled images (after ramp-up)", low=0)
    confidence: float = option(0.95, "top-class probability needed for a pseudo-label", low=0, high=1)
    rampup_epochs: float = option(5.0, "epochs over which the unlabelled weight ramps up from ~0 (0 = none)", low=0)
    dist_align: bool = option(False, "align the pseudo-labels' class distribution to balanced classes")
    ema_teacher: bool = option(False, "pseudo-labels from the EMA of the weights, a mean teacher (needs --ema)")
    strong_labelled: bool = option(False, "also train the labelled images' strong views on their labels")
    student_epochs: int = option(0, "then train fresh weights for N epochs on the confident pseudo-labels of all "
                                    "images (0 = off)", low=0)
    student_rounds: int = option(1, "self-training rounds, each student teaching the next", low=1)
    student_smoothing: float = option(0.1, "label smoothing of the students' cross-entropy", low=0, high=1,
                                      high_open=True)
    student_augment: str | None = option(None, "the students' augmentation, as --augment (default: the run's)")
    teacher: str | None = option(None, "a finished run (directory or .pt) labels the images for the first student "
                                       "instead of this run's semi phase, which is skipped")


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
    mean = mean_over_ranks(probs.mean(0))  # under torchrun, the whole global batch's mean on every rank
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


@torch.no_grad()
def confident_labels(model, data, cfg, smoothing: float = 0.0, batch_size: int = 1024,
                     confidence: float | None = None) -> torch.Tensor:
    """Self-training targets for every training image: the model's class where its top probability (with
    the run's test-time views, cfg.tta_flip / cfg.tta_shift) reaches `confidence` (default: the config's
    semi option), -1 (unlabelled)
    elsewhere, and the real label wherever there is one. `smoothing` is the label smoothing the model was
    trained with: its top probability is mapped back through it first (unsmoothed_confidence); without that a
    second self-training round on MNIST passed 595 of 59,900 images and the student fell to 6.5 % error."""
    from ..evaluation import scored_batches
    confidence = cfg.confidence if confidence is None else confidence
    labels = []
    for _, _, out in scored_batches(model, data.x, cfg.precision, cfg.memory_format, cfg.tta_flip, cfg.tta_shift,
                                    batch_size, decode=False):
        conf, pred = out["logits"].float().softmax(1).max(1)
        conf = unsmoothed_confidence(conf, smoothing, out["logits"].shape[1])
        labels.append(torch.where(conf >= confidence, pred, torch.full_like(pred, -1)))
    labels = torch.cat(labels)
    labels[data.labelled] = data.y[data.labelled]
    return labels


def load_teacher(path: str, ds, device: torch.device):
    """Another run's final model as the first self-training teacher (--teacher), checked against this
    dataset, and the label smoothing its classifier learned with. A run directory gives its last.pt."""
    from ..checkpoint import final_label_smoothing
    from ..inference import load_model
    try:
        model, ck = load_model(Path(path), str(device))
    except AeclassError as e:
        raise ConfigError(f"--teacher {path}: {e}") from None
    if not (model.has_head and ck.get("trained", {}).get("head", True)):
        raise ConfigError(f"--teacher {path}: that model has no trained classification head to label images with")
    if list(ck["image_shape"]) != list(ds.image_shape) or list(ck["classes"]) != list(ds.classes):
        raise ConfigError(f"--teacher {path}: trained on {tuple(ck['image_shape'])} images of classes {ck['classes'][:4]}..., "
                          f"not this dataset's {tuple(ds.image_shape)} / {list(ds.classes)[:4]}...")
    return model, final_label_smoothing(ck)


@register_strategy
class Semi(Strategy):
    name = "semi"
    summary = ("CE(labelled, weak) + lambda * denoising recon(all, strong) + FixMatch pseudo-label CE(unlabelled); "
               "optional self-training students")
    Options = SemiOptions
    metric_columns = ("pseudo", "confident")

    @classmethod
    def check_options(cls, o, cfg):
        if o.ema_teacher and not cfg.ema:
            raise ConfigError("--ema-teacher needs a weight average to teach with: give --ema, e.g. 0.999")
        if o.teacher is not None and not o.student_epochs:
            raise ConfigError("--teacher: its labels train this run's students; give --student-epochs N")

    def requires(self, pretrained=False):
        return {"head", "decoder"} if self.cfg.recon_weight > 0 else {"head"}

    def phases(self, model, pretrained=False):
        o = self.opts
        trains = ("encoder", "decoder", "head") if self.cfg.recon_weight > 0 else ("encoder", "head")
        # With --teacher another run's model is the first teacher and this run only trains students.
        phases = [] if o.teacher else [Phase("semi", self.cfg.epochs, self.step, "all", mix_labelled=True, trains=trains)]
        # Noisy Student / self-training (Xie et al., 2020): a fresh model learns the teacher's confident
        # pseudo-labels of all images from the start, with the article's joint loss (CE + denoising
        # reconstruction), so early pseudo-label mistakes that the teacher kept reinforcing are not built
        # into the student's features. Images below the confidence stay unlabelled (recon only).
        phases += [Phase("student" if r == 0 else f"student{r + 1}", o.student_epochs, self.student_step, "all",
                         trains=trains) for r in range(o.student_rounds if o.student_epochs else 0)]
        return phases

    @staticmethod
    def is_student(phase: Phase) -> bool:
        return phase.name.startswith("student")

    ema_model = None  # the mean teacher (--ema-teacher): the run's weight average, set before each phase

    def setup(self, run) -> None:
        o = self.opts
        if o.student_epochs:
            run.data.relabelled(run.data.y, o.student_augment)  # a bad --student-augment fails now, not after the teacher
        # A resumed run has the teacher's labels in its checkpoint already (a student's relabelling comes
        # before its first epoch, and checkpoints are written after epochs).
        self.teacher = load_teacher(o.teacher, run.ds, run.device) if o.teacher and not run.resumed else None

    def before_phase(self, run, index, phase, start_epoch):
        self.ema_model = run.ema.model if (self.opts.ema_teacher and run.ema is not None) else None
        if not self.is_student(phase):
            return run.data
        o, data = self.opts, run.data
        if start_epoch == 0:
            self._relabel(run, index)
        phase_data = data.relabelled(self.state["student_labels"], o.student_augment)
        self.state["student_pseudo_labels"] = phase_data.n_labelled - data.n_labelled
        run.log(f"{phase.name}: the teacher labels {self.state['student_pseudo_labels']} of "
                f"{data.x.shape[0] - data.n_labelled} unlabelled images at confidence >= {o.confidence}; "
                "training fresh weights on them")
        return phase_data

    def _relabel(self, run, index: int) -> None:
        """The teacher (another run's model for the first student with --teacher, else the model trained so
        far: its weight average with --ema) labels every image; then the model restarts from fresh weights."""
        t0 = time.perf_counter()
        if index == 0 and self.teacher is not None:
            teacher, smoothing = self.teacher
        else:  # the semi phase learned with --label-smoothing, students with --student-smoothing
            teacher = run.final_model()
            smoothing = self.opts.student_smoothing if index > 0 and self.is_student(run.phases[index - 1]) \
                else self.cfg.label_smoothing
        self.state["student_labels"] = confident_labels(teacher, run.data, self.cfg, smoothing,
                                                        confidence=self.opts.confidence)
        run.add_training_time(time.perf_counter() - t0)  # part of making the model: training time
        accuracy = run.test_metrics(final=True, of=teacher).get("accuracy")
        self.teacher = teacher = None  # not needed again: free its memory
        self.state.setdefault("teacher_test_accuracy", accuracy)  # the first teacher's, in metrics.json
        self.state.setdefault("rounds", []).append({  # every round's teacher, for metrics.json
            "teacher_test_accuracy": accuracy,
            "pseudo_labels": int((self.state["student_labels"] >= 0).sum()) - run.data.n_labelled})
        run.log(f"{run.phases[index].name}: the teacher's test accuracy is {accuracy:.4f}")
        run.restart_weights()

    def student_step(self, model, batch):
        # The student's cross-entropy is on pseudo-labels, about 1 % of them wrong on MNIST-100: smoothed.
        step = joint_step if self.cfg.recon_weight > 0 else supervised_step
        return step(model, batch, self.cfg, smoothing=self.opts.student_smoothing)

    def step(self, model, batch):
        """One forward pass over [weak views; strong views]. Labelled rows: cross-entropy on the weak view.
        Unlabelled rows: where the weak view's top class probability (no gradient) is >= --confidence, that
        class is the target of the strong view's cross-entropy (averaged over all unlabelled rows, so few
        confident rows weigh little), weighted by --unlabelled-weight times a ramp-up; with --dist-align the
        weak predictions are aligned to balanced classes first, with --ema-teacher they come from the EMA of
        the weights. Every row: the decoder reconstructs the clean geometric strong view from the code of its
        cut-out + noisy (--noise) version, weighted by --recon-weight (0 switches the decoder off)."""
        cfg, o = self.cfg, self.opts
        gen = batch.gen if batch.gen is not None else torch.default_generator
        n = batch.x.shape[0]
        geo = strong_view(batch.x, gen)
        code = model.encode(torch.cat([batch.x, corrupt(geo, cfg.noise, cfg.noise_kind)]))
        logits = model.classify(code).float()
        weak_logits, strong_logits = logits[:n], logits[n:]
        parts = classification(weak_logits, batch.y, cfg.label_smoothing)
        if o.strong_labelled:  # the labelled images' strong views are in the batch already: use their labels too
            parts["ce"] = (parts["ce"] + classification(strong_logits, batch.y, cfg.label_smoothing)["ce"]) / 2
        pl, confident = self._pseudo_label_loss(batch, weak_logits, strong_logits, logits)
        loss = parts["ce"] + o.unlabelled_weight * rampup(batch.epoch, o.rampup_epochs) * pl
        out = {"pseudo": pl, "confident": confident.detach()}
        if cfg.recon_weight > 0:
            recon = reconstruction_loss(model.decode(code[n:]), geo, cfg.recon_loss)
            loss = loss + cfg.recon_weight * recon
            out["recon"] = recon
        return {"loss": loss, **out, **parts}

    def _pseudo_label_loss(self, batch, weak_logits, strong_logits, logits):
        unl = batch.y < 0
        if not bool(unl.any()):
            zero = logits.sum() * 0
            return zero, zero
        with torch.no_grad():
            if self.ema_model is not None:  # mean teacher: the EMA model labels the weak views
                probs = self.ema_model(batch.x[unl], decode=False)["logits"].float().softmax(1)
            else:
                probs = weak_logits[unl].softmax(1)
            if self.opts.dist_align:
                probs = align_distribution(probs, self.state)
            conf, pseudo = probs.max(1)
            # The labelled CE's --label-smoothing caps the model's confidence below the threshold otherwise.
            conf = unsmoothed_confidence(conf, self.cfg.label_smoothing, probs.shape[1])
            mask = (conf >= self.opts.confidence).float()
        pl = (F.cross_entropy(strong_logits[unl], pseudo, reduction="none") * mask).mean()
        return pl, mask.mean()

    def final_metrics(self) -> dict:
        if "teacher_test_accuracy" not in self.state:
            return {}
        # self-training: what the student started from, and one entry per student (its teacher and labels)
        return {"teacher_test_accuracy": self.state["teacher_test_accuracy"],
                "student_pseudo_labels": self.state["student_pseudo_labels"],
                "self_training_rounds": self.state.get("rounds", [])}

    def final_label_smoothing(self) -> float:
        return self.opts.student_smoothing if self.opts.student_epochs else self.cfg.label_smoothing
