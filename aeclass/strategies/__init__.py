"""Training strategies: registered classes, one file each, that the one engine runs.

    >>> from aeclass.strategies import list_strategies, create_strategy
    >>> list_strategies()
    ['autoencoder', 'supervised', 'pretrain-finetune', 'linear-probe', 'joint', 'semi', 'ladder', 'vae', 'vae-joint', 'mae']

A strategy owns its options (a dataclass), `check(model)`, its phases and steps, its running state and the
metric columns it adds; see aeclass/strategies/base.py for the seam and README "Add a model / a strategy".
"""
from .base import (Batch, NoOptions, Phase, Strategy, create_strategy, get_strategy, list_strategies,
                   register_strategy, unregister_strategy)
# The built-in strategies register themselves on import, in this order (the order of --help and the sweep).
from . import autoencoder, supervised, pretrain_finetune, linear_probe, joint, semi, ladder, vae, mae  # noqa: E402,F401
from .losses import classification, corrupt, reconstruction_loss  # noqa: E402
from .semi import (align_distribution, confident_labels, rampup, self_adaptive_threshold, strong_view,  # noqa: E402
                   unsmoothed_confidence)

__all__ = ["Batch", "NoOptions", "Phase", "Strategy", "create_strategy", "get_strategy", "list_strategies",
           "register_strategy", "unregister_strategy", "classification", "corrupt", "reconstruction_loss",
           "align_distribution", "confident_labels", "rampup", "self_adaptive_threshold", "strong_view",
           "unsmoothed_confidence"]
