"""aeclass: autoencoders + image classification, for when you have many images and few labels.

    >>> import aeclass
    >>> ds = aeclass.load_dataset("digits")
    >>> model = aeclass.create_model("hybrid", ds.image_shape, ds.num_classes)
    >>> result = aeclass.train(aeclass.TrainConfig(data="digits", labels=100, strategy="joint", epochs=20))
    >>> result.metrics["test_accuracy"]
"""
__version__ = "0.1.0"

from .config import PRESETS, TrainConfig, build_config  # noqa: E402
from .data import load_dataset  # noqa: E402
from .errors import AeclassError  # noqa: E402
from .models import create_model, list_models  # noqa: E402
from .train import RunResult, train  # noqa: E402

__all__ = ["TrainConfig", "build_config", "PRESETS", "load_dataset", "create_model", "list_models", "train",
           "RunResult", "AeclassError", "__version__"]
