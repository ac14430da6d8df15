"""`pretrain-finetune`: an autoencoder phase on every image, then encoder + head fine-tuned on the labels
(the seeds' "pre-trained then fine-tuned"). With --init another run's weights replace the first phase."""
from __future__ import annotations

from dataclasses import dataclass

from ..options import option
from .base import Phase, Strategy, register_strategy
from .losses import autoencoder_step, supervised_step


@dataclass
class PretrainOptions:
    pretrain_epochs: int | None = option(None, "epochs of the autoencoder phase (default: --epochs)", low=1)


@register_strategy
class PretrainFinetune(Strategy):
    name = "pretrain-finetune"
    summary = "pretrain (autoencoder) -> finetune (encoder + head on labels)"
    Options = PretrainOptions

    def requires(self, pretrained=False):
        return {"head"} if pretrained else {"head", "decoder"}

    def pretrain_phases(self, pretrained: bool) -> list[Phase]:
        if pretrained:  # the weights came from --init
            return []
        epochs = self.opts.pretrain_epochs or self.cfg.epochs
        return [Phase("pretrain", epochs, self.reconstruct, "all", trains=("encoder", "decoder"))]

    def phases(self, model, pretrained=False):
        return self.pretrain_phases(pretrained) + [
            Phase("finetune", self.cfg.epochs, self.classify, "labelled", trains=("encoder", "head"))]

    def reconstruct(self, model, batch):
        return autoencoder_step(model, batch, self.cfg)

    def classify(self, model, batch):
        return supervised_step(model, batch, self.cfg)
