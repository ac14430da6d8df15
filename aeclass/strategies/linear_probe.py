"""`linear-probe`: an autoencoder phase, then only a linear head on the frozen encoder's codes (MAE's
measure of what the features alone are worth). The frozen encoder stays in eval mode, so its BatchNorm
statistics do not move either."""
from __future__ import annotations

from .base import Phase, register_strategy
from .pretrain_finetune import PretrainFinetune


@register_strategy
class LinearProbe(PretrainFinetune):
    name = "linear-probe"
    summary = "pretrain (autoencoder) -> probe (frozen encoder, linear head on labels)"

    def phases(self, model, pretrained=False):
        return self.pretrain_phases(pretrained) + [
            Phase("probe", self.cfg.epochs, self.classify, "labelled", trains=("head",), frozen=("encoder",))]
