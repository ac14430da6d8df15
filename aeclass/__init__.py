"""aeclass: autoencoders + image classification, for when you have many images and few labels.

    >>> import aeclass
    >>> ds = aeclass.load_dataset("digits")
    >>> model = aeclass.create_model("hybrid", ds.image_shape, ds.num_classes)
    >>> result = aeclass.train(aeclass.TrainConfig(data="digits", labels=100, strategy="joint", epochs=20))
    >>> result.metrics["test_accuracy"]

New models register with `aeclass.register_model`, new strategies with `aeclass.register_strategy`.
"""
from ._version import __version__
from .config import PRESETS, TrainConfig, build_config
from .data import load_dataset
from .errors import AeclassError
from .models import create_model, list_models, register_model
from .strategies import Strategy, create_strategy, list_strategies, register_strategy
from .train import RunResult, train

__all__ = ["TrainConfig", "build_config", "PRESETS", "load_dataset", "create_model", "list_models", "register_model",
           "Strategy", "create_strategy", "list_strategies", "register_strategy", "train", "RunResult",
           "AeclassError", "__version__"]
