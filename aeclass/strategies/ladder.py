"""`ladder`: the Ladder network (Rasmus et al., 2015; the model is aeclass.models.ladder.LadderNet):
cross-entropy of the corrupted pass on the labelled rows, which lead the batch, plus --recon-weight times
the model's weighted per-layer denoising costs on the other rows, with --noise as every layer's noise std.
train_recon is the input layer's cost (the pixel MSE of the denoised image), train_denoise the weighted sum.

Then, optionally, self-training students of another architecture (--student-epochs N --student-model M,
aeclass/strategies/students.py): the Ladder labels every image it is sure of and a fresh M learns them with
the joint loss (CE + denoising reconstruction, input noise --student-noise). A dense Ladder teaching a
convolutional student is the MNIST-100 recipe (--preset mnist-100), in one run that resumes across the
hand-over."""
from __future__ import annotations

from ..errors import ConfigError
from .base import Phase, Strategy, register_strategy
from .losses import classification
from .students import SelfTraining, StudentOptions


@register_strategy
class Ladder(SelfTraining, Strategy):
    name = "ladder"
    summary = ("CE(labelled, corrupted pass) + lambda * per-layer denoising costs(unlabelled); --model ladder; "
               "optional self-training students of another model")
    Options = StudentOptions
    metric_columns = ("denoise",)
    model = "ladder"

    @classmethod
    def check_options(cls, opts, cfg):
        if cfg.noise_kind != "gaussian":  # the ladder adds noise to every layer's pre-activations: Gaussian only
            raise ConfigError(f"--strategy ladder: --noise-kind {cfg.noise_kind} is not possible; the Ladder "
                              "network's per-layer noise is Gaussian (--noise-kind gaussian)")
        cls.check_student_options(opts, cfg)
        # A Ladder student would need the labelled rows leading every batch, which a student's pseudo-labels do not.
        if opts.student_epochs and opts.student_model in (None, "ladder"):
            raise ConfigError("--strategy ladder --student-epochs: the students are another model; give "
                              "--student-model, e.g. hybrid")

    def requires(self, pretrained=False):
        return {"head", "ladder"}

    def phases(self, model, pretrained=False):
        trains = ("encoder", "decoder", "head") if self.cfg.recon_weight > 0 else ("encoder", "head")
        # With --teacher another run's model is the first teacher and this run only trains students.
        own = [] if self.opts.teacher else [Phase("ladder", self.cfg.epochs, self.step, "all", mix_labelled=True,
                                                  trains=trains)]
        return own + self.student_phases(trains)

    def setup(self, run) -> None:
        self.setup_students(run)

    def before_phase(self, run, index, phase, start_epoch):
        return self.before_student_phase(run, index, phase, start_epoch) if self.is_student(phase) else run.data

    def step(self, model, batch):
        cfg = self.cfg
        n_labelled = int((batch.y >= 0).sum())  # a host sync per step: splitting the rows into groups needs an int
        out = model.ladder_losses(batch.x, n_labelled, cfg.noise, denoise=cfg.recon_weight > 0)
        parts = classification(out["logits"], batch.y, cfg.label_smoothing)
        if not out["layer_costs"]:  # --no-recon: the corrupted encoder alone, a noisy supervised network
            return {"loss": parts["ce"], **parts}
        denoise = sum(w * c for w, c in zip(model.costs, out["layer_costs"]))
        loss = parts["ce"] + cfg.recon_weight * denoise
        return {"loss": loss, "denoise": denoise.detach(), "recon": out["layer_costs"][0].detach(), **parts}

    def final_metrics(self) -> dict:
        return self.student_metrics()
