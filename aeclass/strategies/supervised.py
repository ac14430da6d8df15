"""`supervised`: cross-entropy on the labelled images only, the baseline every other strategy must beat.
With few labels an epoch still has len(train set) // batch size steps (the labelled set is cycled), so
strategies are compared at equal numbers of optimiser steps."""
from __future__ import annotations

from .base import Phase, Strategy, register_strategy
from .losses import supervised_step


@register_strategy
class Supervised(Strategy):
    name = "supervised"
    summary = "CE(labelled) only: the baseline"

    def phases(self, model, pretrained=False):
        return [Phase("supervised", self.cfg.epochs, self.step, "labelled", trains=("encoder", "head"))]

    def step(self, model, batch):
        return supervised_step(model, batch, self.cfg)
