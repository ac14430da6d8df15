"""Typed training configuration: defaults <- preset <- YAML file <- command-line flags.

The resolved config is saved in every run directory as plain YAML, so a run can be repeated or resumed
from it alone.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from .errors import ConfigError


@dataclass
class TrainConfig:
    # data
    data: str = "digits"                 # digits | mnist | cifar10 | folder:PATH
    data_dir: str | None = None          # where mnist/cifar10 files are looked for first
    image_size: int | None = None        # resize every image to this square size (folders: at decode)
    channels: int | None = None          # 1 (greyscale) or 3 (RGB); default: the data's own
    labels: int | None = None            # keep this many training labels (balanced, by seed); None = all
    augment: str = "default"             # "default" (per dataset), "none", or e.g. "crop=4,flip,rot=10,grey=0.2"
    # model
    model: str = "hybrid"                # a registered model name (aeclass.models.list_models())
    model_kwargs: dict = field(default_factory=dict)  # extra factory options, e.g. {code_dim: 64}
    # strategy
    strategy: str = "joint"              # autoencoder | supervised | pretrain-finetune | linear-probe | joint | semi | ladder
    recon_loss: str = "mse"              # mse | bce
    recon_weight: float = 1.0            # lambda in CE + lambda * reconstruction (joint, semi, ladder; 0 = no decoder in semi, ladder)
    noise: float = 0.0                   # std of Gaussian input noise for the reconstruction (denoising AE)
    unlabelled_weight: float = 1.0       # semi: weight of the pseudo-label loss on unlabelled images (after ramp-up)
    confidence: float = 0.95             # semi: min. top-class probability of the weak view to use it as pseudo-label
    rampup_epochs: float = 5.0           # semi: epochs over which the unlabelled weight ramps up from ~0 (0 = none)
    dist_align: bool = False             # semi: distribution alignment of pseudo-labels towards balanced classes
    ema_teacher: bool = False            # semi: pseudo-labels from the EMA of the weights (needs --ema)
    strong_labelled: bool = False        # semi: also train the labelled images' strong views on their labels
    student_epochs: int = 0              # semi: then self-train a fresh model for N epochs on the confident
                                         # pseudo-labels of every training image (0 = off)
    student_rounds: int = 1              # semi: self-training rounds; each student teaches the next one
    student_smoothing: float = 0.1       # semi student: label smoothing of its CE (about 1% of pseudo-labels are wrong)
    student_augment: str | None = None   # semi student: its augmentation, as --augment (None = the run's)
    teacher: str | None = None           # semi student: another finished run (directory or .pt) is the first teacher
                                         # instead of this run's semi phase, which is then skipped
    label_smoothing: float = 0.0
    tta_flip: bool = False               # test-time augmentation: average the scores of each image and its mirror
    tta_shift: int = 0                   # test-time augmentation: also average over copies shifted +-N pixels (0 = off)
    pca_init: bool = False               # dense AE (mlp_ae, no hidden layers): start the code layer at PCA of the data
    pretrain_epochs: int | None = None   # autoencoder phase of pretrain-finetune / linear-probe (default: epochs)
    # optimisation
    epochs: int = 30
    batch_size: int = 64
    labelled_batch_size: int | None = None  # labelled images per step when few labels (default: min(batch, labels))
    optimizer: str = "adam"              # adam | adamw | sgd
    lr: float = 2e-3
    weight_decay: float = 0.0
    momentum: float = 0.9                # sgd only
    nesterov: bool = False               # sgd only: Nesterov momentum
    schedule: str = "cosine"             # constant | cosine | onecycle (warm-up then cosine)
    warmup_epochs: float = 0.0
    ema: float = 0.0                     # decay of an exponential moving average of the weights, evaluated and
                                         # saved instead of the raw weights (e.g. 0.999; 0 = off)
    # runtime
    seed: int = 0
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    precision: str = "fp32"              # fp32 | bf16 (autocast)
    compile: bool = False                # torch.compile the encoder, decoder and head (first steps compile)
    fused_optimizer: bool = False        # torch's fused optimiser kernels: faster steps, different rounding
    memory_format: str = "auto"          # auto (channels_last for conv models) | channels_last | contiguous
    threads: int | None = None           # CPU threads (default: all cores)
    out: str | None = None               # run directory (default: runs/<data>-<strategy>-<time>)
    report: bool = True                  # write report.html at the end of training (when available)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Presets reproduce the seed articles exactly, beside the tuned defaults, so users can compare them.
PRESETS: dict[str, dict] = {
    "demo": dict(data="digits", labels=100, strategy="joint", model="hybrid", noise=0.2, epochs=30, batch_size=64),
    # Article 1: dense 784-32-784 autoencoder on MNIST, ReLU code, sigmoid output, SGD lr 0.01, MSE, 50 epochs, batch 256.
    "seed-ae": dict(data="mnist", strategy="autoencoder", model="mlp_ae", model_kwargs={"code_dim": 32},
                    recon_loss="mse", optimizer="sgd", lr=0.01, momentum=0.0, schedule="constant",
                    epochs=50, batch_size=256, augment="none"),
    # Article 1's CIFAR-10 CNN, exactly as in Keras ('valid' convs, no BN), Adam (Keras default lr 1e-3), batch 64, 50 epochs.
    "seed-cnn": dict(data="cifar10", strategy="supervised", model="cnn", model_kwargs={"padding": "valid"},
                     optimizer="adam", lr=1e-3, schedule="constant", epochs=50, batch_size=64, augment="none"),
    # Article 2: the AE front-end + CNN back-end trained jointly (CE + reconstruction) on MNIST.
    "seed-hybrid": dict(data="mnist", strategy="joint", model="hybrid", model_kwargs={"bn": False},
                        recon_loss="mse", recon_weight=1.0, optimizer="adam", lr=1e-3, schedule="constant",
                        epochs=50, batch_size=64, augment="none"),
    # Tuned default for the dense AE: same 784-32-784 network, Adam + cosine schedule.
    "tuned-ae": dict(data="mnist", strategy="autoencoder", model="mlp_ae", model_kwargs={"code_dim": 32},
                     recon_loss="mse", optimizer="adam", lr=3e-3, schedule="onecycle", warmup_epochs=1,
                     epochs=50, batch_size=256, augment="none"),
    # Tuned defaults for the same jobs: BatchNorm, augmentation, cosine schedule, fewer epochs.
    "tuned-hybrid": dict(data="mnist", strategy="joint", model="hybrid", recon_loss="mse", recon_weight=1.0,
                         noise=0.2, optimizer="adam", lr=2e-3, schedule="onecycle", warmup_epochs=1,
                         epochs=15, batch_size=128),
    "tuned-cnn": dict(data="cifar10", strategy="supervised", model="cnn", model_kwargs={"bn": True},
                      optimizer="adam", lr=2e-3, schedule="onecycle", warmup_epochs=1, label_smoothing=0.1,
                      epochs=30, batch_size=128),
    # Fast recipes (issue #4; benchmarks/time_to_accuracy.py): bf16 autocast, small residual CNNs, one-cycle
    # schedules, label smoothing, EMA of the weights, test-time flip for photos.
    # fast-ae keeps the 784-32-784 shape with a PReLU code (a learned slope below zero per code unit, started
    # at 1 so the code starts linear), the code layer started at PCA. benchmarks/ae_variants.py: test MSE 0.0083
    # against 0.0090 for a linear code (ReLU code units that die at zero are lost capacity: 0.0105 with the
    # seed's ReLU code from a random start). 60 epochs leave a margin under the 20 s target on a slow moment.
    "fast-ae": dict(data="mnist", strategy="autoencoder", model="mlp_ae", model_kwargs={"code_dim": 32, "code_act": "prelu"},
                    recon_loss="mse", optimizer="adam", lr=5e-3, schedule="onecycle", warmup_epochs=1,
                    epochs=60, batch_size=256, augment="none", precision="bf16", pca_init=True),
    "fast-mnist": dict(data="mnist", strategy="supervised", model="resnet",
                       model_kwargs={"widths": [24, 48, 96], "decoder": False}, optimizer="adam", lr=4e-3,
                       schedule="onecycle", warmup_epochs=0.3, label_smoothing=0.1, epochs=1, batch_size=128,
                       ema=0.99, precision="bf16"),
    "fast-mnist-long": dict(data="mnist", strategy="supervised", model="resnet",
                            model_kwargs={"widths": [32, 64, 128], "decoder": False}, augment="crop=2,rot=10",
                            optimizer="adam", lr=4e-3, schedule="onecycle", warmup_epochs=0.5, label_smoothing=0.1,
                            epochs=10, batch_size=128, ema=0.999, precision="bf16"),
    "fast-cifar": dict(data="cifar10", strategy="supervised", model="resnet",
                       model_kwargs={"widths": [64, 128, 256], "code": "pool", "code_dim": 256, "decoder": False},
                       optimizer="sgd", lr=0.2, momentum=0.9, weight_decay=5e-4, schedule="onecycle", warmup_epochs=2,
                       label_smoothing=0.2, epochs=32, batch_size=256, ema=0.99, precision="bf16", tta_flip=True,
                       tta_shift=1),
    # airbench94's recipe (aeclass/models/fastcnn.py) in aeclass's terms: its lr of 11.5 per 1024 images with
    # Nesterov momentum 0.85, on a summed loss, is SGD lr 1.5 on the mean loss; its decoupled weight decay
    # 0.0153 is 0.002 per step, i.e. weight_decay 0.00133 at that lr; warm-up over its first 23 %; shifts of
    # up to 2 pixels. 15 epochs rather than its 10 (JPEG-q75 images, no lookahead): with --epochs 10
    # --warmup-epochs 2.3 it gave 90.22 % here, 15 epochs 90.64 % (README, Speed).
    "fastcnn-cifar": dict(data="cifar10", strategy="supervised", model="fastcnn", optimizer="sgd", lr=1.5,
                          momentum=0.85, nesterov=True, weight_decay=0.00133, schedule="onecycle", warmup_epochs=3.45,
                          label_smoothing=0.2, epochs=15, batch_size=1024, augment="crop=2,flip", precision="bf16",
                          tta_flip=True, tta_shift=1),
}

CHOICES = {
    "strategy": ("autoencoder", "supervised", "pretrain-finetune", "linear-probe", "joint", "semi", "ladder"),
    "recon_loss": ("mse", "bce"),
    "optimizer": ("adam", "adamw", "sgd"),
    "schedule": ("constant", "cosine", "onecycle"),
    "precision": ("fp32", "bf16"),
    "memory_format": ("auto", "channels_last", "contiguous"),
}


def parse_labels(value) -> int | None:
    """'all' / None -> None (every label); '100' -> 100."""
    if value is None or (isinstance(value, str) and value.lower() == "all"):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--labels: expected a positive integer or 'all', got '{value}'") from None
    if n <= 0:
        raise ConfigError(f"--labels: expected a positive integer or 'all', got {n}")
    return n


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config: file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {p}: expected a mapping of option: value, got {type(data).__name__}")
    return {k.replace("-", "_"): v for k, v in data.items()}


def build_config(preset: str | None = None, config_file: str | None = None, overrides: dict | None = None,
                 base: dict | None = None) -> TrainConfig:
    """Resolve defaults <- base (e.g. a saved run config) <- preset <- YAML file <- overrides (flags)."""
    values: dict = {}
    if base:
        values.update(base)
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"--preset: unknown preset '{preset}'; expected one of {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    if config_file:
        values.update(load_yaml(config_file))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return validate(values)


def validate(values: dict) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown config option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values = dict(values)
    if "labels" in values:
        values["labels"] = parse_labels(values["labels"])
    cfg = TrainConfig(**values)
    for name, allowed in CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f"--{name.replace('_', '-')}: expected one of {', '.join(allowed)}, got '{getattr(cfg, name)}'")
    for name in ("epochs", "batch_size"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or v <= 0:
            raise ConfigError(f"--{name.replace('_', '-')}: expected a positive integer, got {v!r}")
    if not (isinstance(cfg.lr, (int, float)) and cfg.lr > 0):
        raise ConfigError(f"--lr: expected a positive number, got {cfg.lr!r}")
    if cfg.recon_weight < 0 or cfg.noise < 0:
        raise ConfigError("--recon-weight and --noise must be >= 0")
    if not (cfg.unlabelled_weight >= 0 and cfg.rampup_epochs >= 0):
        raise ConfigError("--unlabelled-weight and --rampup-epochs must be >= 0")
    if not (isinstance(cfg.ema, (int, float)) and 0 <= cfg.ema < 1):
        raise ConfigError(f"--ema: expected a decay in [0, 1) such as 0.999 (0 = off), got {cfg.ema!r}")
    if cfg.ema_teacher and not cfg.ema:
        raise ConfigError("--ema-teacher needs a weight average to teach with: give --ema, e.g. 0.999")
    if not isinstance(cfg.student_epochs, int) or isinstance(cfg.student_epochs, bool) or cfg.student_epochs < 0:
        raise ConfigError(f"--student-epochs: expected a whole number of epochs (0 = off), got {cfg.student_epochs!r}")
    if not isinstance(cfg.student_rounds, int) or isinstance(cfg.student_rounds, bool) or cfg.student_rounds < 1:
        raise ConfigError(f"--student-rounds: expected a whole number >= 1, got {cfg.student_rounds!r}")
    if cfg.teacher is not None and cfg.strategy == "semi" and not cfg.student_epochs:
        raise ConfigError("--teacher: its labels train this run's students; give --student-epochs N")
    if not 0 <= cfg.student_smoothing < 1:
        raise ConfigError(f"--student-smoothing: expected a value in [0, 1), got {cfg.student_smoothing!r}")
    if not 0 <= cfg.confidence <= 1:
        raise ConfigError(f"--confidence: expected a probability in [0, 1], got {cfg.confidence!r}")
    if not isinstance(cfg.tta_shift, int) or isinstance(cfg.tta_shift, bool) or not 0 <= cfg.tta_shift <= 8:
        raise ConfigError(f"--tta-shift: expected a whole number of pixels from 0 (off) to 8, got {cfg.tta_shift!r}")
    if cfg.channels not in (None, 1, 3):
        raise ConfigError(f"--channels: expected 1 or 3, got {cfg.channels!r}")
    if cfg.image_size is not None and (not isinstance(cfg.image_size, int) or cfg.image_size < 4):
        raise ConfigError(f"--image-size: expected an integer >= 4, got {cfg.image_size!r}")
    for name in ("dist_align", "compile", "report", "tta_flip", "ema_teacher", "strong_labelled", "pca_init",
                 "fused_optimizer", "nesterov"):
        if not isinstance(getattr(cfg, name), bool):
            raise ConfigError(f"--{name.replace('_', '-')}: expected true or false, got {getattr(cfg, name)!r}")
    if not (isinstance(cfg.momentum, (int, float)) and 0 <= cfg.momentum < 1):
        raise ConfigError(f"--momentum: expected a number in [0, 1), got {cfg.momentum!r}")
    if cfg.nesterov and cfg.optimizer == "sgd" and cfg.momentum == 0:
        raise ConfigError("--nesterov needs a --momentum above 0")
    if not isinstance(cfg.model_kwargs, dict):
        raise ConfigError(f"model_kwargs: expected a mapping, got {cfg.model_kwargs!r}")
    return cfg


def save_config(cfg: TrainConfig, path: Path) -> None:
    from .io import atomic_write_text
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
