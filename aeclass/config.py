"""Typed training configuration: defaults <- preset <- YAML file <- command-line flags.

`TrainConfig` holds the options every run has. A strategy's own options live in its options dataclass
(aeclass/strategies/) and travel in `strategy_kwargs`, as a model's factory options travel in `model_kwargs`.
Flat spellings of strategy options (`confidence: 0.9` in YAML, `--confidence 0.9`, `TrainConfig(confidence=0.9)`)
keep working: they are moved into `strategy_kwargs`. An option that belongs to another strategy than the one
chosen is ignored, so one preset or config file can serve a sweep over several strategies; an option that
belongs to no strategy is an error.

The resolved config is saved in every run directory as plain YAML, so a run can be repeated or resumed
from it alone.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from .errors import ConfigError
from .options import check_fields, check_value, choice_error, option, unknown_key_error
from .presets import PRESETS


def parse_labels(value) -> int | None:
    """'all' / None -> None (every label); '100' or 100 -> 100; anything else is an error."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
        return None
    n = None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str) and value.strip().isdigit():
        n = int(value)
    if n is None or n <= 0:
        raise ConfigError(f"--labels: expected a positive integer or 'all', got {value!r}")
    return n


def _count_or_fraction(value):
    """--val 500 (images) or 0.1 (a fraction of the labels); None stays None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"--val: expected a number of images or a fraction below 1, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"--val: expected a number of images or a fraction below 1, got {value!r}") from None
    if isinstance(value, float) and value >= 1:
        if value != int(value):
            raise ConfigError(f"--val: expected a whole number of images or a fraction below 1, got {value!r}")
        value = int(value)
    return value


def _device(value):
    if isinstance(value, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value.strip()):
        return value.strip()
    raise ConfigError(f"--device: expected auto, cpu, cuda or cuda:N, got {value!r}")


def _strategy_names():
    from .strategies import list_strategies
    return list_strategies()


@dataclass
class TrainConfig:
    # data
    data: str = option("digits", "digits | mnist | cifar10 | folder:PATH (a directory or .zip of class sub-folders)", "data")
    data_dir: str | None = option(None, "directory holding mnist/cifar10 files (also $AECLASS_DATA)", "data", runtime=True)
    image_size: int | None = option(None, "resize every image to this square size", "data", low=4, high=4096)
    channels: int | None = option(None, "1 (greyscale) or 3 (RGB); default: the data's own", "data", choices=(1, 3))
    labels: int | None = option(None, "labelled training images to keep (balanced per class, drawn by seed) or 'all'",
                                "data", convert=parse_labels)
    augment: str = option("default", "'default' (per dataset), 'none' or e.g. crop=4,flip,rot=10,grey=0.2,cutout=12", "data")
    unlabelled: str | None = option(None, "a directory or .zip of unlabelled images (any layout) to train on as well",
                                    "data")
    labels_csv: str | None = option(None, "a CSV of file,label rows labelling --data folder:IMAGES; its other "
                                    "images are unlabelled", "data")
    val: int | float | None = option(None, "hold out N labelled training images (or a fraction < 1), balanced and seeded, "
                               "to validate on: per-epoch val_accuracy, best.pt by it", "data", low=0, low_open=True,
                               convert=_count_or_fraction)
    # model
    model: str = option("hybrid", "a registered model (aeclass.models.list_models())", "model")
    model_kwargs: dict = option(help="the model factory's options, e.g. {code_dim: 64} (--model-opt)", group="model",
                                default_factory=dict)
    pca_init: bool = option(False, "dense autoencoder (mlp_ae without hidden layers): start at PCA of the images", "model")
    # strategy
    strategy: str = option("joint", "how to train (aeclass.strategies.list_strategies())", "strategy",
                           choices=_strategy_names)
    strategy_kwargs: dict = option(help="the strategy's own options (--strategy-opt, or their flat flags)",
                                   group="strategy", default_factory=dict)
    recon_loss: str = option("mse", "reconstruction loss: mse | bce", choices=("mse", "bce"))
    recon_weight: float = option(1.0, "lambda: weight of the reconstruction term (0 = no decoder in semi, ladder)", low=0)
    noise: float = option(0.0, "std of the Gaussian input noise of the reconstruction (a denoising autoencoder)", low=0)
    noise_kind: str = option("gaussian", "what --noise means: gaussian (its std) | mask (the fraction of pixels set to 0) "
                             "| salt-pepper (the fraction set to 0 or 1)", choices=("gaussian", "mask", "salt-pepper"))
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy", low=0, high=1, high_open=True)
    # evaluation
    tta_flip: bool = option(False, "test-time flip: average each image's scores with its mirror's (photos)", "evaluation")
    tta_shift: int = option(0, "test-time shifts: also average copies moved +-N pixels (0 = off)", "evaluation",
                            low=0, high=8)
    test_every: int = option(1, "score the test set after every Nth epoch, for the learning curves only (they never "
                             "choose a checkpoint); 0 = only after the last epoch. The final metrics are always "
                             "computed", "evaluation", runtime=True, low=0)
    # optimisation
    epochs: int = option(30, "epochs of the (final) training phase", "optimisation", low=1)
    batch_size: int = option(64, "images per step", "optimisation", low=1)
    labelled_batch_size: int | None = option(None, "labelled images added to each step when labels are few "
                                             "(joint, semi, ladder; default: min(batch size, labels))", "optimisation", low=1)
    optimizer: str = option("adam", "adam | adamw | sgd", "optimisation", choices=("adam", "adamw", "sgd"))
    lr: float = option(2e-3, "peak learning rate", "optimisation", low=0, low_open=True)
    weight_decay: float = option(0.0, "weight decay", "optimisation", low=0)
    momentum: float = option(0.9, "sgd: momentum", "optimisation", low=0, high=1, high_open=True)
    nesterov: bool = option(False, "sgd: Nesterov momentum", "optimisation")
    schedule: str = option("cosine", "constant | cosine (linear warm-up, then cosine decay) | onecycle (an alias "
                           "of cosine)", "optimisation", choices=("constant", "cosine", "onecycle"))
    warmup_epochs: float = option(0.0, "linear warm-up length in epochs (cosine, onecycle)", "optimisation", low=0)
    ema: float = option(0.0, "decay of a moving average of the weights, evaluated and saved instead of them "
                        "(e.g. 0.999; 0 = off)", "optimisation", low=0, high=1, high_open=True)
    early_stop: int | None = option(None, "with --val: stop the final phase after N epochs without a better "
                                    "validation accuracy", "optimisation", low=1)
    # speed
    precision: str = option("fp32", "fp32 | bf16 (autocast) | auto (bf16 where the device has it in hardware: "
                                     "AVX512-BF16 or AMX CPUs, recent CUDA GPUs; fp32 elsewhere)", "speed",
                            runtime=True, choices=("fp32", "bf16", "auto"))  # like --device: run.json says which
    compile: bool = option(False, "torch.compile the encoder, decoder and head (needs a C++ compiler on CPU)",
                           "speed", runtime=True)
    fused_optimizer: bool = option(False, "torch's fused optimiser kernels: faster steps, different rounding", "speed")
    memory_format: str = option("auto", "auto (channels_last for conv models) | channels_last | contiguous", "speed",
                                runtime=True, choices=("auto", "channels_last", "contiguous"))
    threads: int | None = option(None, "CPU threads (default: all cores)", "speed", runtime=True, low=1)
    device: str = option("auto", "auto | cpu | cuda | cuda:N", "speed", runtime=True, convert=_device)
    # run
    seed: int = option(0, "random seed (label subset, initialisation, batches, augmentation)", "run", low=0)
    out: str | None = option(None, "run directory (default: runs/<data>-<strategy>-<labels>-s<seed>-<time>)", "run",
                             runtime=True)
    logger: str = option("csv", "per-epoch logging beside metrics.csv (always written): csv (nothing more) | "
                         "tensorboard (RUN/tensorboard; the tensorboard extra)", "run", runtime=True,
                         choices=("csv", "tensorboard"))
    report: bool = option(True, "write report.html at the end of training (aeclass train, aeclass sweep)", "run",
                          runtime=True)

    def to_dict(self) -> dict:
        """Plain data, as config.yaml and checkpoints hold it: the common options, then the strategy's own
        options flat beside them (the spelling configs always had; strategy_kwargs is their in-memory home)."""
        d = dataclasses.asdict(self)
        return {**{k: v for k, v in d.items() if k != "strategy_kwargs"}, **d["strategy_kwargs"]}

    def __getattr__(self, name: str):
        # Only reached for names that are not fields: a strategy option read the old, flat way (cfg.confidence).
        kwargs = self.__dict__.get("strategy_kwargs") or {}
        if name in kwargs:
            return kwargs[name]
        raise AttributeError(f"'TrainConfig' object has no attribute '{name}'")


FIELDS = {f.name: f for f in fields(TrainConfig)}
RUNTIME_KEYS = frozenset(n for n, f in FIELDS.items() if f.metadata.get("runtime"))
_dataclass_init = TrainConfig.__init__


def _init(self, *args, **kwargs):
    """TrainConfig(..., confidence=0.9): flat strategy options are accepted and moved into strategy_kwargs."""
    flat = {k: kwargs.pop(k) for k in list(kwargs) if k not in FIELDS}
    bad = set(flat) - strategy_option_names()
    if bad:
        raise TypeError(f"TrainConfig got an unexpected keyword argument '{sorted(bad)[0]}'")
    _dataclass_init(self, *args, **kwargs)
    if flat:
        self.strategy_kwargs = {**self.strategy_kwargs, **flat}


TrainConfig.__init__ = _init


def strategy_option_names() -> set[str]:
    """Every option name of every registered strategy (the flat spellings config files and flags may use)."""
    from .strategies import get_strategy, list_strategies
    return {f.name for s in list_strategies() for f in fields(get_strategy(s).Options)}


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config: file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config {p}: not valid YAML ({(str(e).splitlines() or [type(e).__name__])[0]})") from None
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {p}: expected a mapping of option: value, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _merge(values: dict, layer: dict, what: str) -> None:
    """Apply one layer (a preset, a YAML file, the flags) over `values`: strategy options, flat or under
    strategy_kwargs, merge into values['strategy_kwargs']; later layers win."""
    flat_names = strategy_option_names()
    skw = dict(values.get("strategy_kwargs") or {})
    for k, v in layer.items():
        if k == "strategy_kwargs":
            if not isinstance(v, dict):
                raise ConfigError(f"{what}: strategy_kwargs: expected a mapping, got {v!r}")
            skw.update({str(a).replace("-", "_"): b for a, b in v.items()})
        elif k in FIELDS:
            values[k] = v
        elif k in flat_names:
            skw[k] = v
        else:
            raise unknown_key_error([k], set(FIELDS) | flat_names, what)
    values["strategy_kwargs"] = skw


def build_config(preset: str | None = None, config_file: str | None = None, overrides: dict | None = None,
                 base: dict | None = None) -> TrainConfig:
    """Resolve defaults <- base (e.g. a saved run config) <- preset <- YAML file <- overrides (flags; None = unset)."""
    values: dict = {}
    if base:
        _merge(values, base, "saved config")
    if preset:
        if preset not in PRESETS:
            raise choice_error(preset, list(PRESETS), "--preset")
        _merge(values, PRESETS[preset], f"--preset {preset}")
    if config_file:
        _merge(values, load_yaml(config_file), f"--config {config_file}")
    _merge(values, {k: v for k, v in (overrides or {}).items() if v is not None}, "option")
    return validate(values)


def validate(values: dict | TrainConfig) -> TrainConfig:
    """A checked TrainConfig: every field's type and domain, then the strategy's own options (its dataclass)
    and the checks that span several options. Raises ConfigError with one line naming the option."""
    if isinstance(values, TrainConfig):
        values = values.to_dict()
    merged: dict = {}
    _merge(merged, dict(values), "config")
    cfg = TrainConfig.__new__(TrainConfig)
    _dataclass_init(cfg, **merged)
    check_value(FIELDS["strategy"], cfg.strategy)
    check_fields(cfg)
    from .strategies import get_strategy
    cls = get_strategy(cfg.strategy)
    cfg.strategy_kwargs = dataclasses.asdict(cls.options_from(cfg))
    if cfg.nesterov and cfg.optimizer == "sgd" and cfg.momentum == 0:
        raise ConfigError("--nesterov needs a --momentum above 0")
    if cfg.early_stop and cfg.val is None:
        raise ConfigError("--early-stop needs a validation set to watch: give --val N (or a fraction)")
    return cfg


def save_config(cfg: TrainConfig, path: Path) -> None:
    from .io import atomic_write_text
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
