"""`joint`: the seeds' multi-task model, CE(labelled) + lambda * reconstruction(all images), one optimiser.
When labels are few a labelled batch joins every step of the pass over all images."""
from __future__ import annotations

from .base import Phase, Strategy, register_strategy
from .losses import joint_step


@register_strategy
class Joint(Strategy):
    name = "joint"
    summary = "CE(labelled) + lambda * reconstruction(all images), one optimiser"

    def requires(self, pretrained=False):
        return {"head", "decoder"}

    def phases(self, model, pretrained=False):
        return [Phase("joint", self.cfg.epochs, self.step, "all", mix_labelled=True)]

    def step(self, model, batch):
        return joint_step(model, batch, self.cfg)
