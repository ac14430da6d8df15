"""`ladder`: the Ladder network (Rasmus et al., 2015; the model is aeclass.models.ladder.LadderNet):
cross-entropy of the corrupted pass on the labelled rows, which lead the batch, plus --recon-weight times
the model's weighted per-layer denoising costs on the other rows, with --noise as every layer's noise std.
train_recon is the input layer's cost (the pixel MSE of the denoised image), train_denoise the weighted sum."""
from __future__ import annotations

from ..errors import ConfigError
from .base import Phase, Strategy, register_strategy
from .losses import classification


@register_strategy
class Ladder(Strategy):
    name = "ladder"
    summary = "CE(labelled, corrupted pass) + lambda * per-layer denoising costs(unlabelled); --model ladder"
    metric_columns = ("denoise",)
    model = "ladder"

    @classmethod
    def check_options(cls, opts, cfg):
        if cfg.noise_kind != "gaussian":  # the ladder adds noise to every layer's pre-activations: Gaussian only
            raise ConfigError(f"--strategy ladder: --noise-kind {cfg.noise_kind} is not possible; the Ladder "
                              "network's per-layer noise is Gaussian (--noise-kind gaussian)")

    def requires(self, pretrained=False):
        return {"head", "ladder"}

    def phases(self, model, pretrained=False):
        trains = ("encoder", "decoder", "head") if self.cfg.recon_weight > 0 else ("encoder", "head")
        return [Phase("ladder", self.cfg.epochs, self.step, "all", mix_labelled=True, trains=trains)]

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
