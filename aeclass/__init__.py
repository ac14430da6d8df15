"""aeclass: autoencoders + image classification, for when you have many images and few labels.

    >>> import aeclass
    >>> ds = aeclass.load_dataset("digits")
    >>> model = aeclass.create_model("hybrid", ds.image_shape, ds.num_classes)
    >>> result = aeclass.train(aeclass.TrainConfig(data="digits", labels=100, strategy="joint", epochs=20))
    >>> result.metrics["test_accuracy"]

`aeclass.load(path)` turns a run directory, checkpoint or export into a predictor (predict, predict_proba,
encode). New models register with `aeclass.register_model`, new strategies with `aeclass.register_strategy`.
"""
from . import cpu as _cpu

_cpu.choose_wait_policy()  # the command line's OpenMP wait policy, which only takes effect before torch loads

from ._version import __version__  # noqa: E402
from .config import PRESETS, TrainConfig, build_config  # noqa: E402
from .data import load_dataset  # noqa: E402
from .errors import AeclassError  # noqa: E402
from .models import create_model, list_models, register_model  # noqa: E402
from .predictor import Predictor, load  # noqa: E402
from .strategies import Strategy, create_strategy, list_strategies, register_strategy  # noqa: E402
from .train import RunResult, train  # noqa: E402

__all__ = ["AutoencoderClassifier", "AutoencoderTransformer", "load", "Predictor", "TrainConfig", "build_config", "PRESETS", "load_dataset", "create_model", "list_models", "register_model",
           "Strategy", "create_strategy", "list_strategies", "register_strategy", "train", "RunResult",
           "AeclassError", "__version__"]


def __getattr__(name):
    # The scikit-learn estimators import sklearn's estimator machinery: only when asked for, so the command
    # line starts fast.
    if name in ("AutoencoderClassifier", "AutoencoderTransformer"):
        from . import estimators
        return getattr(estimators, name)
    raise AttributeError(f"module 'aeclass' has no attribute '{name}'")
