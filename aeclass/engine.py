"""The one training engine every strategy goes through (the habit of MAE's engine_*.py).

`fit(run)` runs a strategy's phases epoch by epoch: per phase it asks the strategy for the data to train on
(`before_phase`), builds the optimiser over the parts the phase trains, and per epoch calls
`train_one_epoch`, evaluates on the test set, saves the checkpoints (aeclass.checkpoint.CheckpointSaver)
and hands the epoch's row to the run (aeclass.train writes metrics.csv). The learning rate is set every
iteration, a non-finite loss stops the run (the last good checkpoint stays), and every random draw comes
from generators whose states the checkpoints carry, so a resumed run continues exactly where it stopped.
The engine never asks which strategy it runs.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .config import TrainConfig
from .data.train_data import TrainData, steps_per_epoch
from . import distributed
from .device import autocast, memory_format_for
from .errors import AeclassError, ConfigError
from .evaluation import evaluate, trained_only
from .models import AEClassifier
from .strategies import Phase, Strategy

# metrics.csv columns: these first, in this order, for every run (a public interface); then the columns a
# strategy declares (Strategy.metric_columns) that are not among them, then any other loss part a step returned.
COLUMNS = ["phase", "epoch", "phase_epoch", "lr", "train_loss", "train_ce", "train_recon", "train_accuracy",
           "test_accuracy", "test_loss", "test_recon_mse", "epoch_seconds", "elapsed_seconds",
           "train_pseudo", "train_confident", "train_denoise"]
VAL_COLUMNS = ["val_accuracy", "val_loss"]  # after those, in runs with a validation set (--val)
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


class TrainingDiverged(AeclassError):
    """The loss became NaN or infinite."""


class EMA:
    """Exponential moving average of a model's weights and float buffers (Polyak averaging).

    The averaged model is what gets evaluated and saved: late in training it is a cheap ensemble of the
    last ~1/(1-decay) steps, which is steadier than the raw weights, above all when pseudo-labels make the
    training signal noisy. The decay ramps up as (1+n)/(10+n) so the average is not dominated by the
    random initialisation in short runs.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._pairs = None  # (float targets, float sources, other targets, other sources), built once

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if self._pairs is None:
            # state_dict() tensors share storage with the live parameters and buffers, which are only ever
            # updated in place (optimiser steps, load_state_dict), so the lists stay valid for the whole run.
            own, src = self.model.state_dict(), model.state_dict()
            fl = [k for k, v in own.items() if v.is_floating_point()]
            other = [k for k in own if k not in set(fl)]
            self._pairs = ([own[k] for k in fl], [src[k] for k in fl], [own[k] for k in other], [src[k] for k in other])
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        own_f, src_f, own_o, src_o = self._pairs
        torch._foreach_lerp_(own_f, src_f, 1 - d)
        for a, b in zip(own_o, src_o):
            a.copy_(b)


def lr_at(step: int, total: int, warmup: int, base: float, schedule: str) -> float:
    """The learning rate at `step` of `total`: constant, or a linear warm-up over `warmup` steps then a cosine
    decay to 0 ('cosine'; 'onecycle' is an alias of it, kept for the presets and configs that name it)."""
    if schedule == "constant":
        return base
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    # fused=True is opt-in (--fused-optimizer): torch's fused CPU Adam steps the 784-32-784 AE in 37 us
    # instead of 100 us (6-10 % of a training step), but it rounds differently, so every figure in the
    # docs would move by seed-level noise (up to a point on digits) and stop being reproducible from the
    # committed commands, which run the default (foreach) kernels.
    if cfg.optimizer not in OPTIMIZERS:  # validate() checks it too; a config built by hand must not get Adam silently
        raise ConfigError(f"--optimizer: expected one of {', '.join(OPTIMIZERS)}, got '{cfg.optimizer}'")
    kind = OPTIMIZERS[cfg.optimizer]
    kw = dict(lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        kw.update(momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.fused_optimizer:
        kw["fused"] = True
    try:
        return kind(param_groups(params, cfg.weight_decay), **kw)
    except (RuntimeError, TypeError) as e:  # fused kernels need a recent torch for CPU parameters
        if not cfg.fused_optimizer:
            raise
        raise ConfigError(f"--fused-optimizer: torch {torch.__version__} has no fused {cfg.optimizer} here "
                          f"({str(e).splitlines()[0]}); leave it off") from None


def param_groups(params, weight_decay: float) -> list[dict]:
    """Optimiser groups by the `lr_scale` a model may set on a parameter (timm's convention; e.g. fastcnn's
    BatchNorm biases learn 64x faster). A scaled group gets weight_decay / lr_scale, so that the decay per
    step (lr x weight decay) is the same for every weight. The engine sets each group's lr to the
    schedule's lr x its lr_scale."""
    groups: dict[float, list] = {}
    for p in params:
        groups.setdefault(float(getattr(p, "lr_scale", 1.0)), []).append(p)
    return [{"params": ps, "lr_scale": s, "weight_decay": weight_decay / s} for s, ps in sorted(groups.items())]


def phase_parameters(model: AEClassifier, phase: Phase) -> list[nn.Parameter]:
    params = []
    for name in phase.trains:
        module = getattr(model, name, None)
        if module is not None:
            params += [p for p in module.parameters() if p.requires_grad]
    return params


def set_train_mode(model: AEClassifier, phase: Phase) -> None:
    model.train()
    for name in phase.frozen:
        module = getattr(model, name)
        module.eval()  # frozen BatchNorm keeps its running statistics
        module.requires_grad_(False)


@dataclass
class Run:
    """What one training run holds while the engine trains it; strategies' hooks receive it."""

    cfg: TrainConfig
    ds: object                    # the ImageDataset
    data: TrainData
    model: AEClassifier
    strategy: Strategy
    phases: list[Phase]
    device: torch.device
    gen: torch.Generator          # the CPU generator of batches and augmentations
    build_model: Callable[[], AEClassifier]  # a fresh model of this run's spec (self-training restarts)
    trained: dict                 # {"head": bool, "decoder": bool}: the parts some phase trains
    ema: EMA | None = None
    # make_model(name, kwargs): a new model for this run's data, on its device and set up from its images as the
    # run's first model was (a self-training student of another architecture; see replace_model)
    make_model: Callable[[str, dict], AEClassifier] | None = None
    log: Callable = print
    resumed: bool = False
    bars: bool = False            # tqdm progress bars (on a terminal)
    saver: object = None          # aeclass.checkpoint.CheckpointSaver
    on_epoch: Callable | None = None  # on_epoch(run, row): after the epoch's checkpoints (train.py: metrics.csv)
    board: object = None          # an optional TensorBoard writer (--logger tensorboard), fed by on_epoch
    dist: object = None           # aeclass.distributed.Context under torchrun, else None
    rank_gen: torch.Generator | None = None  # with dist: this rank's generator for the draws steps make
    rank_states: list | None = None  # with dist: every rank's random states, gathered for last.pt
    fixed: set | None = None      # names of the model's parameters frozen by design (fixed_parameters)
    progress: dict = field(default_factory=lambda: {"phase_index": 0, "phase_epoch": 0, "step": 0, "history": [],
                                                     "best_loss": float("inf"), "elapsed": 0.0})

    @property
    def columns(self) -> list[str]:
        cols = COLUMNS + (VAL_COLUMNS if self.data.val_x is not None else [])
        cols += [f"train_{k}" for k in self.strategy.metric_columns if f"train_{k}" not in cols]
        seen = {k for row in self.progress["history"] for k in row}
        return cols + sorted(seen - set(cols))

    def final_model(self) -> AEClassifier:
        """What is evaluated, saved as model_state and returned: the weight average with --ema."""
        return self.ema.model if self.ema is not None else self.model

    def test_metrics(self, final: bool = False, of: AEClassifier | None = None) -> dict:
        """Test metrics of the final model (or `of`), only of the parts the run trains. The shifted test-time
        views multiply evaluation cost (4 more passes): per-epoch monitoring skips them, the final metrics
        (and `aeclass evaluate` / `predict`) include them."""
        cfg = self.cfg
        m = evaluate(of if of is not None else self.final_model(), self.data.test_x, self.data.test_y, cfg.precision,
                     memory_format=cfg.memory_format, tta_flip=cfg.tta_flip, tta_shift=cfg.tta_shift if final else 0)
        return trained_only(m, self.trained["head"], self.trained["decoder"])

    def val_metrics(self) -> dict:
        """Accuracy and loss on the held-out labelled images (--val), as the test set is monitored."""
        if self.data.val_x is None:
            return {}
        cfg = self.cfg
        m = evaluate(self.final_model(), self.data.val_x, self.data.val_y, cfg.precision,
                     memory_format=cfg.memory_format, tta_flip=cfg.tta_flip)
        return {"val_accuracy": m.get("accuracy"), "val_loss": m.get("loss")}

    @property
    def selects_by_validation(self) -> bool:
        return self.data.val_x is not None and self.trained["head"]

    def add_training_time(self, seconds: float) -> None:
        self.progress["elapsed"] += seconds

    def restart_weights(self) -> None:
        """Fresh weights for the model (see restart_weights); the weight average restarts with it."""
        restart_weights(self.model, self.build_model, self.cfg.seed)
        if self.ema is not None:
            self.ema.model.load_state_dict(self.model.state_dict())
            self.ema.updates = 0

    def replace_model(self, name: str, kwargs: dict) -> None:
        """Train another architecture from here on, from fresh weights drawn as restart_weights draws them
        (seed + 1), with a weight average of its own; later checkpoints describe it (model_spec), so a
        resumed run and `aeclass evaluate` rebuild it. The next phase's optimiser is built over it."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed + 1)
            self.model = self.make_model(name, kwargs)
        spec = self.model.spec
        self.build_model = lambda: _from_spec(spec)
        self.fixed = fixed_parameters(self.model)
        self.ema = EMA(self.model, self.cfg.ema) if self.cfg.ema > 0 else None  # before compiling: it runs eager
        if self.cfg.compile:
            compile_parts(self.model)


def compile_parts(model: AEClassifier) -> None:
    """torch.compile the model's parts in place (Module.compile), so state_dict keys stay the eager model's."""
    for part in (model.encoder, model.decoder, model.head):
        if part is not None:
            part.compile()


def _from_spec(spec: dict) -> AEClassifier:
    from .models import create_model
    return create_model(spec["name"], spec["input_shape"], spec["num_classes"], **spec["kwargs"])


def fixed_parameters(model: AEClassifier) -> set[str]:
    """The names of the parameters a model is built frozen with (fastcnn's whitening stem): no phase trains them."""
    return {name for name, p in model.named_parameters() if not p.requires_grad}


def restart_weights(model: AEClassifier, build: Callable[[], AEClassifier], seed: int) -> None:
    """Draw fresh weights for `model` in place, as a new model of the same spec starts (`build()`, seeded by
    seed + 1), keeping its input statistics and the weights set from the data rather than learned (those
    its factory builds frozen, e.g. fastcnn's whitening stem). In place, so the optimiser, compiled modules
    and memory format stay as they are."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        new = build()
    keep = {"in_mean", "in_std"} | {name for name, p in new.named_parameters() if not p.requires_grad}
    fresh = {k: v for k, v in new.state_dict().items() if k not in keep}
    missing, unexpected = model.load_state_dict(fresh, strict=False)
    if set(missing) != keep or unexpected:  # a model whose state is not what its own factory builds
        name = getattr(model, "spec", {}).get("name", type(model).__name__)
        raise AeclassError(f"cannot restart '{name}' from fresh weights (missing {missing[:3]}, unexpected {unexpected[:3]})")


def train_one_epoch(run: Run, phase: Phase, data: TrainData, opt, step0: int, total: int, warmup: int,
                    bar=None) -> tuple[dict, int]:
    """One epoch of one phase: the epoch's mean loss parts (train_<part>), train_accuracy, the last lr, and
    the phase's new step count."""
    cfg, model, dist = run.cfg, run.model, run.dist
    set_train_mode(model, phase)
    step_fn = phase.step if dist is None else distributed.wrap(model, phase.step, run.device)
    fmt = memory_format_for(model, cfg.memory_format)
    sums: dict[str, torch.Tensor] = {}
    count, correct, labelled, step = 0, 0, 0, step0
    spe = steps_per_epoch(data, cfg.batch_size)
    for batch in data.batches(phase, cfg, run.gen):
        if dist is not None:  # every rank drew the same global batch: train on this rank's rows of it
            batch = distributed.shard(batch, dist, run.rank_gen)
        batch.epoch = step / spe  # the phase's epochs done so far (fractional), for ramp-ups
        batch.x = batch.x.contiguous(memory_format=fmt)
        lr = lr_at(step, total, warmup, cfg.lr, cfg.schedule)
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        with autocast(run.device, cfg.precision):
            losses = step_fn(model, batch)
        loss = losses["loss"]
        if dist is None and not torch.isfinite(loss):
            raise TrainingDiverged(f"training diverged: loss is {float(loss)} in phase '{phase.name}' at step {step}; "
                                   f"try a lower --lr (now {cfg.lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if dist is not None and not distributed.all_finite(loss, model.parameters()):  # before the weights move
            raise TrainingDiverged(f"training diverged: the loss or its gradients hold NaN/inf in phase '{phase.name}' "
                                   f"at step {step} (loss {float(loss)} on rank {dist.rank}); try a lower --lr (now {cfg.lr})")
        opt.step()
        if run.ema is not None:
            run.ema.update(model)
        step += 1
        count += 1
        # Sums stay on the device (float64, so the epoch means match summing Python floats): reading each
        # loss back with float() would make the host wait for the GPU after every step.
        for k, v in losses.items():
            if k not in ("correct", "labelled"):
                sums[k] = sums.get(k, 0.0) + v.detach().double()
        correct = correct + losses.get("correct", 0)
        labelled = labelled + losses.get("labelled", 0)
        if bar is not None:
            bar.update(1)
            if count % 20 == 1:  # the bar's loss readout is the one per-step sync left; refresh it sparingly
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", refresh=False)
    if dist is not None:  # the logged figures are the whole batch's; rank 0's BatchNorm statistics for everyone
        sums, (correct, labelled) = distributed.average_sums(sums, [int(correct), int(labelled)])
        distributed.broadcast_buffers(model, run.ema.model if run.ema is not None else None)
    means = {f"train_{k}": float(v) / max(1, count) for k, v in sums.items()}
    if int(labelled):
        means["train_accuracy"] = int(correct) / int(labelled)
    means["lr"] = lr_at(step - 1, total, warmup, cfg.lr, cfg.schedule)
    return means, step


def _bar(run: Run, total: int, desc: str):
    if not run.bars:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def fit(run: Run, opt_state: dict | None = None) -> None:
    """Train every phase from where `run.progress` stands (0 for a new run, the checkpoint's for a resumed
    one); `opt_state` is the optimiser state of the phase being resumed."""
    prog = run.progress
    if prog.get("stopped_early"):  # a finished run, resumed: nothing left to train
        return
    if run.fixed is None:
        run.fixed = fixed_parameters(run.model)
    epoch_global = sum(p.epochs for p in run.phases[:prog["phase_index"]]) + prog["phase_epoch"]
    for pi in range(prog["phase_index"], len(run.phases)):
        phase = run.phases[pi]
        start_epoch = prog["phase_epoch"] if pi == prog["phase_index"] else 0
        data = run.strategy.before_phase(run, pi, phase, start_epoch)  # it may replace the model (a student)
        for name, p in run.model.named_parameters():  # a phase may have frozen some; those frozen by design stay so
            p.requires_grad_(name not in run.fixed)
        opt = make_optimizer(phase_parameters(run.model, phase), run.cfg)
        if opt_state is not None and pi == prog["phase_index"]:
            opt.load_state_dict(opt_state)
        opt_state = None
        epoch_global = _fit_phase(run, pi, data, opt, start_epoch, epoch_global)
        if pi + 1 < len(run.phases):
            prog.update(phase_index=pi + 1, phase_epoch=0)


def _check_finite(run: Run, phase: Phase, epoch: int, step: int) -> None:
    """A finite loss does not prove a sane model: with a huge learning rate BatchNorm's running statistics or
    some weights can overflow while the loss of the current batch still reads finite. Checked before each
    epoch's checkpoints are written, so last.pt and best.pt keep the last epoch whose state was finite."""
    for which, model in (("", run.model), ("weight average ", run.ema.model if run.ema is not None else None)):
        if model is None:
            continue
        for name, t in model.state_dict().items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                kept = f"; {run.saver.last} keeps the last good epoch" if run.saver is not None and run.saver.last.is_file() else ""
                raise TrainingDiverged(f"training diverged: {which}{name} holds NaN/inf after epoch {epoch} "
                                       f"(phase '{phase.name}', step {step}){kept}; try a lower --lr (now {run.cfg.lr})")


def _fit_phase(run: Run, pi: int, data: TrainData, opt, start_epoch: int, epoch_global: int) -> int:
    phase, prog, cfg = run.phases[pi], run.progress, run.cfg
    spe = steps_per_epoch(data, cfg.batch_size)
    total, warmup = phase.epochs * spe, int(cfg.warmup_epochs * spe)
    # Before any phase has trained the head (an autoencoder pre-training phase) its scores are chance.
    head_trained = any("head" in p.trains for p in run.phases[:pi + 1])
    is_last_phase = pi == len(run.phases) - 1
    phase_step = start_epoch * spe
    for ep in range(start_epoch, phase.epochs):
        t0 = time.perf_counter()
        bar = _bar(run, spe, f"{phase.name} {ep + 1}/{phase.epochs}")
        means, phase_step = train_one_epoch(run, phase, data, opt, phase_step, total, warmup, bar)
        if bar is not None:
            bar.close()
        train_time = time.perf_counter() - t0
        last = is_last_phase and ep == phase.epochs - 1
        prog["elapsed"] += train_time
        epoch_global += 1
        row = {"phase": phase.name, "epoch": epoch_global, "phase_epoch": ep + 1, **means,
               "test_accuracy": None, "test_loss": None, "test_recon_mse": None, "epoch_seconds": train_time,
               "elapsed_seconds": prog["elapsed"], **(run.val_metrics() if head_trained else {})}
        prog["history"].append(row)
        prog.update(phase_index=pi, phase_epoch=ep + 1, step=prog["step"] + spe)
        improved = is_last_phase and _improved(run, row)
        stop = is_last_phase and _stop_early(run, epoch_global)
        if _scores_test(cfg, epoch_global, last or stop):  # an early stop's epoch is the run's last: scored too
            test = run.test_metrics()
            row.update(test_recon_mse=test.get("recon_mse"),
                       **({"test_accuracy": test.get("accuracy"), "test_loss": test.get("loss")} if head_trained else {}))
        _check_finite(run, phase, epoch_global, prog["step"])
        if run.dist is not None:  # every rank's random states go into last.pt, which rank 0 writes
            run.rank_states = distributed.gather_objects({"torch_rng_state": torch.get_rng_state(),
                                                          "rank_generator_state": run.rank_gen.get_state()})
        if run.saver is not None:
            run.saver.save_epoch(run, opt, improved)
        if run.on_epoch is not None:
            run.on_epoch(run, row)
        if stop:
            run.log(f"{phase.name}: no better validation accuracy for {run.cfg.early_stop} epochs; stopping early "
                    f"(best: epoch {prog['best_epoch']})")
            prog["stopped_early"] = epoch_global
            break
    return epoch_global


def _scores_test(cfg, epoch: int, last: bool) -> bool:
    """Whether this epoch's row gets test metrics (--test-every N: every Nth global epoch and the run's last).
    They only draw the learning curves, and each is a pass over the test set (two with --tta-flip), which on a
    CPU can cost as much as a few-label epoch's training."""
    return last or (cfg.test_every > 0 and epoch % cfg.test_every == 0)


def _improved(run: Run, row: dict) -> bool:
    """Whether this final-phase epoch is the best so far: by validation accuracy when there is a validation set
    (ties go to the earlier epoch), else by training loss (the test set never selects a checkpoint)."""
    prog = run.progress
    if run.selects_by_validation:
        better = row["val_accuracy"] > prog.get("best_val_accuracy", -1.0)
        if better:
            prog.update(best_val_accuracy=row["val_accuracy"], best_epoch=row["epoch"])
        return better
    better = row.get("train_loss", float("inf")) < prog["best_loss"]
    if better:
        prog.update(best_loss=row["train_loss"], best_epoch=row["epoch"])
    return better


def _stop_early(run: Run, epoch: int) -> bool:
    patience = run.cfg.early_stop
    return bool(patience) and run.selects_by_validation and epoch - run.progress.get("best_epoch", epoch) >= patience
