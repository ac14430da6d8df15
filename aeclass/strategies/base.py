"""The strategy seam: a strategy is a registered class that owns its options, checks, phases, step and state.

    @register_strategy
    class MyStrategy(Strategy):
        name = "my-strategy"
        summary = "one line for --help"

        @dataclass
        class Options:
            weight: float = option(1.0, "weight of my term", low=0)

        def phases(self, model, pretrained=False):
            return [Phase("mine", self.cfg.epochs, self.step, images="all", mix_labelled=True)]

        def step(self, model, batch):
            ...
            return {"loss": loss, "ce": ce, "mine": my_term}   # train_<key> columns in metrics.csv

The engine (aeclass.engine) calls `check`, `phases`, `setup`, `before_phase`, each phase's step and
`state_dict` / `load_state_dict`, and never asks which strategy it runs. The CLI's flags and help, the
config's checks, the sweep and the report learn about a strategy from this registry.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar

import torch

from ..errors import ConfigError
from ..options import check_fields, check_value, choice_error, unknown_key_error

if TYPE_CHECKING:
    from ..config import TrainConfig
    from ..models import AEClassifier

_STRATEGIES: dict[str, type["Strategy"]] = {}
PARTS = ("encoder", "decoder", "head")  # an AEClassifier's sub-modules that a phase trains or freezes


@dataclass
class Phase:
    name: str
    epochs: int
    step: Callable                # step(model, batch) -> {"loss": tensor, ...}
    images: str                   # "labelled": epochs over the labelled set; "all": over every training image
    mix_labelled: bool = False    # with images="all": add a labelled batch to every step (few-label training)
    trains: tuple[str, ...] = ("encoder", "decoder", "head")  # sub-modules given to the optimiser
    frozen: tuple[str, ...] = ()  # sub-modules held in eval mode with no gradient (linear probe)

    def __post_init__(self):
        bad = [p for p in (*self.trains, *self.frozen) if p not in PARTS]
        if bad:  # a misspelt part would otherwise train nothing, silently
            raise ValueError(f"phase '{self.name}': unknown model part '{bad[0]}'; the parts are {', '.join(PARTS)}")


@dataclass
class Batch:
    x: torch.Tensor  # float (N, C, H, W) in [0, 1], augmented
    y: torch.Tensor  # int64 (N,), -1 = unlabelled
    # For steps that draw their own augmentations: the engine's CPU generator, whose state the checkpoints
    # carry (None: the global torch RNG), and the phase epochs done so far (fractional; for ramp-ups).
    gen: torch.Generator | None = None
    epoch: float = 0.0


@dataclass
class NoOptions:
    """A strategy without options of its own."""


class Strategy:
    """Base class. Subclasses set `name`, `summary`, optionally `Options` (a dataclass of `option()` fields),
    `metric_columns` (the train_* columns their steps add to metrics.csv beyond loss, ce, recon and accuracy)
    and `model` (a model the strategy needs, e.g. the Ladder network), and implement `phases`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    metric_columns: ClassVar[tuple[str, ...]] = ()
    model: ClassVar[str | None] = None

    def __init__(self, cfg: "TrainConfig"):
        self.cfg = cfg
        self.opts = self.options_from(cfg)
        self.state: dict = {}  # running state the checkpoints carry (tensors and plain values)

    @classmethod
    def options_from(cls, cfg: "TrainConfig"):
        """The strategy's options from cfg.strategy_kwargs, checked (types, domains, then `check_options`)."""
        known = {f.name for f in dataclasses.fields(cls.Options)}
        given = {k: v for k, v in (cfg.strategy_kwargs or {}).items() if k in known}
        others = {f.name: f for s in _STRATEGIES.values() for f in dataclasses.fields(s.Options)}
        stray = set(cfg.strategy_kwargs or {}) - known - set(others)
        if stray:
            raise unknown_key_error(stray, known, f"--strategy {cls.name}")
        for k in set(cfg.strategy_kwargs or {}) - known:  # another strategy's option: ignored, but never nonsense
            check_value(others[k], cfg.strategy_kwargs[k])
        opts = cls.Options(**given)
        check_fields(opts)
        cls.check_options(opts, cfg)
        return opts

    @classmethod
    def check_options(cls, opts, cfg: "TrainConfig") -> None:
        """Checks that span several options (raise ConfigError); the fields' own domains are checked already."""

    # --- what the engine calls -------------------------------------------------------------------------
    def requires(self, pretrained: bool = False) -> set[str]:
        """Model capabilities this run needs (see AEClassifier.capabilities): 'head', 'decoder', ..."""
        return {"head"}

    def check(self, model: "AEClassifier", pretrained: bool = False) -> None:
        """A one-line ConfigError when `model` cannot serve this strategy."""
        has = model.capabilities
        name = model.spec["name"] if hasattr(model, "spec") else type(model).__name__
        for need in sorted(self.requires(pretrained) - has):
            why = model.capability_note(need)
            if why:
                raise ConfigError(f"--strategy {self.name}: model '{name}' {why}")
            if need == "head":
                raise ConfigError(f"--strategy {self.name} needs a classification head; the dataset has no classes")
            if self.model is not None:
                raise ConfigError(f"--strategy {self.name} needs --model {self.model}, not '{name}'")
            raise ConfigError(f"--strategy {self.name} needs a model with {_CAPABILITY_TEXT.get(need, need)}; "
                              f"'{name}' has none (try --model hybrid)")

    def phases(self, model: "AEClassifier", pretrained: bool = False) -> list[Phase]:
        raise NotImplementedError

    def setup(self, run) -> None:
        """Once, before training or resuming (run: aeclass.engine.Run): load what the strategy needs."""

    def switches_to(self) -> set[str]:
        """Models a run may change to between phases (run.replace_model), e.g. a self-training student of another
        architecture: a checkpoint of one of them resumes into it."""
        return set()

    def before_phase(self, run, index: int, phase: Phase, start_epoch: int):
        """Before phase `index` starts (start_epoch 0) or resumes: the TrainData it trains on."""
        return run.data

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state = dict(state)

    def final_metrics(self) -> dict:
        """Extra keys for metrics.json."""
        return {}

    def final_label_smoothing(self) -> float:
        """The label smoothing the final model's classifier learned with (a later self-training run that uses
        it as a teacher maps its confidences back through it)."""
        return self.cfg.label_smoothing


_CAPABILITY_TEXT = {"decoder": "a decoder (one that reconstructs the image from the code)",
                    "ladder": "the Ladder network's lateral decoder"}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: register a Strategy subclass under its `name` (a later one of the same name wins)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: a strategy needs a name")
    from ..config import FIELDS  # an option may not shadow a common one: flat spellings must stay unambiguous
    clash = {f.name for f in dataclasses.fields(cls.Options)} & set(FIELDS)
    if clash:
        raise ValueError(f"strategy '{cls.name}': option(s) {sorted(clash)} already exist as common TrainConfig options")
    if cls.name in _STRATEGIES and _STRATEGIES[cls.name] is not cls:
        warnings.warn(f"strategy '{cls.name}' registered twice; the later definition wins")
    _STRATEGIES[cls.name] = cls
    return cls


def unregister_strategy(name: str) -> None:
    _STRATEGIES.pop(name, None)


def list_strategies() -> list[str]:
    """Registered strategy names, in registration order (the built-in ones first)."""
    return list(_STRATEGIES)


def get_strategy(name: str) -> type[Strategy]:
    if name not in _STRATEGIES:
        raise choice_error(name, list(_STRATEGIES), "--strategy")
    return _STRATEGIES[name]


def create_strategy(cfg: "TrainConfig") -> Strategy:
    """The strategy `cfg.strategy`, constructed with its options from `cfg` (checked)."""
    return get_strategy(cfg.strategy)(cfg)
