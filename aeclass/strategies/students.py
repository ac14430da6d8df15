"""Self-training students (Noisy Student, Xie et al. 2020), shared by the strategies that teach them (`semi`,
`ladder`): after the strategy's own phase, the model (its weight average with --ema) labels every training
image where it is confident; a fresh model learns those labels from the start, and may teach the next one.

A student may be another architecture than its teacher (--student-model): a dense Ladder network teaching a
convolutional student is the MNIST-100 recipe. The run then switches models at the hand-over; checkpoints
written after it describe the student, so a resumed run rebuilds it and `evaluate` / `predict` load it.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import AeclassError, ConfigError
from ..options import option
from .base import Phase
from .losses import joint_step, supervised_step


@dataclass
class StudentOptions:
    confidence: float = option(0.95, "top-class probability needed for a pseudo-label", low=0, high=1)
    student_epochs: int = option(0, "then train fresh weights for N epochs on the confident pseudo-labels of all "
                                    "images (0 = off)", low=0)
    student_rounds: int = option(1, "self-training rounds, each student teaching the next", low=1)
    student_smoothing: float = option(0.1, "label smoothing of the students' cross-entropy", low=0, high=1,
                                      high_open=True)
    student_augment: str | None = option(None, "the students' augmentation, as --augment (default: the run's)")
    student_model: str | None = option(None, "the students' model, a registered model (default: the run's --model)")
    student_noise: float | None = option(None, "the students' input noise, as --noise (default: the run's --noise)",
                                         low=0)
    teacher: str | None = option(None, "a finished run (directory or .pt) labels the images for the first student "
                                       "instead of this run's own phase, which is skipped")


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
    option), -1 (unlabelled) elsewhere, and the real label wherever there is one. `smoothing` is the label
    smoothing the model was trained with: its top probability is mapped back through it first
    (unsmoothed_confidence); without that a second self-training round on MNIST passed 595 of 59,900 images
    and the student fell to 6.5 % error."""
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


class SelfTraining:
    """Mixed into a Strategy whose Options include StudentOptions: student phases after its own, the
    relabelling at each hand-over, the students' step and their metrics.json entries."""

    @classmethod
    def check_student_options(cls, o, cfg) -> None:
        if o.teacher is not None and not o.student_epochs:
            raise ConfigError("--teacher: its labels train this run's students; give --student-epochs N")
        if o.student_model is not None:
            from ..models import list_models
            if o.student_model not in list_models():
                from ..options import choice_error
                raise choice_error(o.student_model, list_models(), "--student-model")

    def student_phases(self, trains) -> list[Phase]:
        # Noisy Student / self-training (Xie et al., 2020): a fresh model learns the teacher's confident
        # pseudo-labels of all images from the start, with the article's joint loss (CE + denoising
        # reconstruction), so early pseudo-label mistakes that the teacher kept reinforcing are not built
        # into the student's features. Images below the confidence stay unlabelled (recon only).
        o = self.opts
        return [Phase("student" if r == 0 else f"student{r + 1}", o.student_epochs, self.student_step, "all",
                      trains=trains) for r in range(o.student_rounds if o.student_epochs else 0)]

    def switches_to(self) -> set[str]:
        o = self.opts
        return {o.student_model} if o.student_model and o.student_epochs else set()

    @staticmethod
    def is_student(phase: Phase) -> bool:
        return phase.name.startswith("student")

    @property
    def student_cfg(self):
        """The run's config as the students see it (their --student-noise)."""
        o = self.opts
        return self.cfg if o.student_noise is None else dataclasses.replace(self.cfg, noise=o.student_noise)

    def setup_students(self, run) -> None:
        o = self.opts
        if o.student_epochs:
            run.data.relabelled(run.data.y, o.student_augment)  # a bad --student-augment fails now, not after the teacher
            if o.student_model is not None and o.student_model != self.cfg.model:
                self._check_student(run.make_model(o.student_model, {}))  # before the teacher trains
        # A resumed run has the teacher's labels in its checkpoint already (a student's relabelling comes
        # before its first epoch, and checkpoints are written after epochs).
        self.teacher = load_teacher(o.teacher, run.ds, run.device) if o.teacher and not run.resumed else None

    def _check_student(self, model) -> None:
        name = self.opts.student_model
        if not model.has_head:
            raise ConfigError(f"--student-model {name}: it needs a classification head; the dataset has no classes")
        if self.student_cfg.recon_weight > 0 and not model.has_decoder:
            raise ConfigError(f"--student-model {name} has no decoder for the students' reconstruction term "
                              "(--recon-weight); give --recon-weight 0 or a model with a decoder, e.g. hybrid")

    def before_student_phase(self, run, index: int, phase: Phase, start_epoch: int):
        o, data = self.opts, run.data
        if start_epoch == 0:
            self._relabel(run, index)
        phase_data = data.relabelled(self.state["student_labels"], o.student_augment)
        self.state["student_pseudo_labels"] = phase_data.n_labelled - data.n_labelled
        run.log(f"{phase.name}: the teacher labels {self.state['student_pseudo_labels']} of "
                f"{data.x.shape[0] - data.n_labelled} unlabelled images at confidence >= {o.confidence}; "
                f"training fresh weights ({run.model.spec['name']}) on them")
        return phase_data

    def _relabel(self, run, index: int) -> None:
        """The teacher (another run's model for the first student with --teacher, else the model trained so
        far: its weight average with --ema) labels every image; then the model restarts from fresh weights,
        of --student-model when it names another architecture."""
        t0 = time.perf_counter()
        if index == 0 and self.teacher is not None:
            teacher, smoothing = self.teacher
        else:  # the strategy's own phase learned with --label-smoothing, students with --student-smoothing
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
        student = self.opts.student_model
        if student is not None and student != run.model.spec["name"]:
            run.replace_model(student, {})
        else:
            run.restart_weights()

    def student_step(self, model, batch):
        # The student's cross-entropy is on pseudo-labels, about 1 % of them wrong on MNIST-100: smoothed.
        cfg = self.student_cfg
        step = joint_step if cfg.recon_weight > 0 and model.has_decoder else supervised_step
        return step(model, batch, cfg, smoothing=self.opts.student_smoothing)

    def student_metrics(self) -> dict:
        if "teacher_test_accuracy" not in self.state:
            return {}
        # self-training: what the student started from, and one entry per student (its teacher and labels)
        return {"teacher_test_accuracy": self.state["teacher_test_accuracy"],
                "student_pseudo_labels": self.state["student_pseudo_labels"],
                "self_training_rounds": self.state.get("rounds", [])}

    def final_label_smoothing(self) -> float:
        return self.opts.student_smoothing if self.opts.student_epochs else self.cfg.label_smoothing
