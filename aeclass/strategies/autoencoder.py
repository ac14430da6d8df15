"""`autoencoder`: reconstruction only (with --noise, a denoising autoencoder), on every training image.
The head is not trained, so the run reports no accuracy; its codes serve `aeclass report`'s latent map, a
later `--init`, or another library."""
from __future__ import annotations

from .base import Phase, Strategy, register_strategy
from .losses import autoencoder_step


@register_strategy
class Autoencoder(Strategy):
    name = "autoencoder"
    summary = "reconstruction(all images) only; no classifier"

    def requires(self, pretrained=False):
        return {"decoder"}

    def phases(self, model, pretrained=False):
        return [Phase("autoencoder", self.cfg.epochs, self.step, "all", trains=("encoder", "decoder"))]

    def step(self, model, batch):
        return autoencoder_step(model, batch, self.cfg)
