"""A registry of model factory functions, so models are created by name from the CLI and configs.

    @register_model
    def my_net(input_shape, num_classes=None, **kw) -> AEClassifier: ...

    model = create_model("my_net", input_shape=(1, 28, 28), num_classes=10)
"""
from __future__ import annotations

import fnmatch
import warnings
from typing import Callable

from ..errors import ConfigError

_MODELS: dict[str, Callable] = {}


def register_model(fn: Callable) -> Callable:
    """Decorator: register a factory under its function name."""
    if fn.__name__ in _MODELS:
        warnings.warn(f"model '{fn.__name__}' registered twice; the later definition wins")
    _MODELS[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def create_model(name: str, input_shape, num_classes: int | None = None, **kwargs):
    """Build a registered model. `input_shape` is (C, H, W); `num_classes` adds a classification head."""
    if name not in _MODELS:
        raise ConfigError(f"--model: unknown model '{name}'; registered models: {', '.join(list_models())}")
    try:
        with warnings.catch_warnings():  # a zero size is refused below, in one line, without torch's warning
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            model = _MODELS[name](input_shape=tuple(input_shape), num_classes=num_classes, **kwargs)
    except TypeError as e:  # an unknown keyword from a config file
        raise ConfigError(f"--model {name}: bad model option ({e})") from None
    except (ValueError, RuntimeError) as e:  # an option out of its domain, e.g. code_dim=-4 (a negative layer size)
        raise ConfigError(f"--model {name}: bad model option {_given(kwargs)} ({(str(e).splitlines() or [''])[0]})") from None
    empty = next((n for n, p in model.named_parameters() if p.numel() == 0), None)
    if empty is not None:  # e.g. code_dim=0: torch builds the layer, and nothing can learn through it
        raise ConfigError(f"--model {name}: bad model option {_given(kwargs)} (it makes {empty} empty); "
                          "sizes must be positive")
    # Remember how the model was built so a checkpoint can rebuild it without pickling code.
    model.spec = {"name": name, "input_shape": list(input_shape), "num_classes": num_classes, "kwargs": dict(kwargs)}
    return model


def _given(kwargs: dict) -> str:
    return "--model-opt " + ",".join(f"{k}={v}" for k, v in kwargs.items()) if kwargs else "(the defaults)"
