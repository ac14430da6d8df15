"""Models: a registry of factories that all build an `AEClassifier` (encoder, optional decoder/head).

    >>> from aeclass.models import create_model, list_models
    >>> m = create_model("hybrid", input_shape=(1, 28, 28), num_classes=10)
    >>> out = m(torch.rand(4, 1, 28, 28)); out["logits"].shape, out["recon"].shape
"""
from . import vae, zoo  # noqa: F401  (register the models)
from .core import AEClassifier
from .registry import create_model, list_models, register_model

__all__ = ["AEClassifier", "create_model", "list_models", "register_model"]
