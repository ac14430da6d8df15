"""Checkpoints: their format, the one saver of last.pt / best.pt, and safe loading.

A checkpoint is a plain dict of tensors and Python values (no pickled objects), written to a temporary file
and renamed into place (timm's CheckpointSaver habit), and loaded with weights_only=True, so no file runs code:

    format             "aeclass-checkpoint-2" (version 1, before strategies owned their state, still loads)
    model_spec         how to rebuild the model (aeclass.models.create_model)
    model_state        the model to use: the weight average with --ema, else the trained weights
    train_model_state  with --ema only: the raw weights the optimiser moves (to resume)
    trained            {"head": bool, "decoder": bool}: which parts the run trained (evaluate reports only those)
    final_label_smoothing  the label smoothing the final classifier learned with (for a later --teacher)
    strategy_state     the strategy's running state (Strategy.state_dict)
    optimizer_state, generator_state, torch_rng_state, progress   (last.pt only: to resume exactly)
    rank_states        under torchrun: every rank's random states, [{torch_rng_state, rank_generator_state}]
    config, classes, image_shape, data_name

A run directory stands for the model its metrics.json describes: best.pt when a validation set (--val)
chose it, else the final model, last.pt. Without a validation set best.pt (the final-phase epoch with the
lowest training loss) is there to be named explicitly.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

from .errors import AeclassError, ConfigError
from .io import atomic_write

FORMAT = "aeclass-checkpoint-2"
FORMATS = ("aeclass-checkpoint-1", FORMAT)
RESUME_ONLY = ("optimizer_state", "train_model_state", "generator_state", "torch_rng_state", "rank_states")
# progress keys of format 1 that are semi's state since format 2
_LEGACY_STRATEGY_KEYS = ("teacher_test_accuracy", "student_pseudo_labels", "rounds")


def cpu_state(model) -> dict:
    # contiguous: channels_last weights would otherwise be saved with NHWC strides (safetensors refuses them)
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _to(obj, device):
    """Tensors inside plain containers moved to `device` (a strategy's state)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to(v, device) for v in obj]
    return obj


class CheckpointSaver:
    """Writes checkpoints/last.pt after every epoch and checkpoints/best.pt when it improves (best.pt is
    for use, not for resuming: it leaves out the optimiser and RNG states)."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / "checkpoints"
        self.last = self.dir / "last.pt"
        self.best = self.dir / "best.pt"

    def save_epoch(self, run, opt, improved: bool) -> None:
        """After an epoch: last.pt (and best.pt when `improved`) of the run (aeclass.engine.Run)."""
        self.save(make_checkpoint(run, opt), improved)

    def save(self, ckpt: dict, improved: bool) -> None:
        ckpt = {**ckpt, "format": FORMAT}
        # best.pt before last.pt: a kill between the two leaves last.pt at the previous epoch, whose resume
        # trains this epoch again (deterministically) and rewrites best.pt, so last.pt's best_epoch and best.pt
        # always agree. The other order could leave last.pt saying epoch N is best while best.pt holds N-1.
        if improved:
            use = {k: v for k, v in ckpt.items() if k not in ("optimizer_state", "train_model_state")}
            atomic_write(self.best, lambda f: torch.save(use, f))
        atomic_write(self.last, lambda f: torch.save(ckpt, f))

    def load_last(self, device) -> dict:
        ck = load_checkpoint(self.last)
        if "progress" not in ck:
            raise AeclassError(f"{self.last}: has no training progress to resume from")
        ck["strategy_state"] = _to(dict(ck.get("strategy_state", {})), device)
        for k in _LEGACY_STRATEGY_KEYS:  # format 1 kept semi's round records with the progress
            if k in ck["progress"]:
                ck["strategy_state"].setdefault(k, ck["progress"].pop(k))
        return ck


def make_checkpoint(run, opt) -> dict:
    """The checkpoint dict of a run (aeclass.engine.Run) as it stands after an epoch."""
    ema, model, prog = run.ema, run.model, run.progress
    extra = {"train_model_state": cpu_state(model), "ema_updates": ema.updates} if ema is not None else {}
    state = run.strategy.state_dict()
    if state:
        extra["strategy_state"] = _to(state, "cpu")
    if getattr(run, "rank_states", None):
        extra["rank_states"] = run.rank_states
    return {
        "format": FORMAT,
        "model_spec": model.spec,
        "trained": dict(run.trained),
        "final_label_smoothing": float(run.strategy.final_label_smoothing()),
        "model_state": cpu_state(run.final_model()),
        **extra,
        "optimizer_state": opt.state_dict(),
        "generator_state": run.gen.get_state(),
        "torch_rng_state": torch.get_rng_state(),
        "progress": {k: prog[k] for k in ("phase_index", "phase_epoch", "step", "history", "best_loss", "elapsed",
                                          "best_epoch", "best_val_accuracy", "stopped_early") if k in prog},
        "config": run.cfg.to_dict(),
        "classes": list(run.ds.classes),
        "image_shape": list(run.ds.image_shape),
        "data_name": run.ds.name,
    }


def restore(run, ck: dict) -> dict | None:
    """Put a run back where last.pt left it (weights, weight average, strategy state, progress, random
    generators); returns the optimiser state of the phase being resumed. A checkpoint whose content does not
    fit the run (edited, or of another model) is an AeclassError naming it."""
    try:
        return _restore(run, ck)
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.startswith("Error(s) in loading")]
        raise AeclassError(f"--resume: {ck.get('path', 'last.pt')} does not fit this run "
                           f"({type(e).__name__}: {(lines or [''])[0][:200]})") from None


def _restore(run, ck: dict) -> dict | None:
    spec, own = ck.get("model_spec") or {}, run.model.spec
    if (spec.get("name"), spec.get("kwargs")) != (own["name"], own["kwargs"]) and spec.get("name") in run.strategy.switches_to():
        run.replace_model(spec["name"], spec["kwargs"])  # written after a hand-over to a student of another model
    run.model.load_state_dict(ck.get("train_model_state", ck["model_state"]))
    if run.ema is not None:
        run.ema.model.load_state_dict(ck["model_state"])
        run.ema.updates = ck.get("ema_updates", 0)
    run.strategy.load_state_dict(ck.get("strategy_state", {}))
    run.progress.update(ck["progress"])
    run.gen.set_state(ck["generator_state"])
    torch.set_rng_state(ck["torch_rng_state"])
    dist, ranks = getattr(run, "dist", None), ck.get("rank_states")
    if dist is not None and ranks and len(ranks) == dist.world:  # the same number of processes: exactly
        torch.set_rng_state(ranks[dist.rank]["torch_rng_state"])
        run.rank_gen.set_state(ranks[dist.rank]["rank_generator_state"])
    return ck.get("optimizer_state")


def resolve(path: str | Path) -> Path:
    """The checkpoint file a path names: a .pt file itself, or a run directory's model, the one its
    metrics.json describes ("checkpoint": best.pt when chosen on a validation set), else last.pt."""
    p = Path(path)
    if p.is_dir():
        named = _metrics_checkpoint(p)
        if named is not None:
            return named
        for name in ("checkpoints/last.pt", "last.pt", "checkpoints/best.pt", "best.pt"):
            if (p / name).is_file():
                return p / name
        raise AeclassError(f"{p}: no checkpoint (checkpoints/last.pt) in this run directory")
    if not p.is_file():
        raise AeclassError(f"checkpoint not found: {p}")
    return p


def _metrics_checkpoint(run_dir: Path) -> Path | None:
    try:
        name = json.loads((run_dir / "metrics.json").read_text()).get("checkpoint")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(name, str) or Path(name).is_absolute() or ".." in Path(name).parts:
        return None
    return run_dir / name if (run_dir / name).is_file() else None


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint with weights_only=True: no arbitrary code runs, whatever the file holds."""
    p = resolve(path)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # torch's own message goes on to advise weights_only=False: not ours to give
        raise AeclassError(f"{p}: not a readable aeclass checkpoint (it holds pickled Python objects, which aeclass "
                           "refuses to load: loading them could run code)") from None
    except Exception as e:  # truncated file, not a torch file
        msg = (str(e).splitlines() or [""])[0][:200]
        raise AeclassError(f"{p}: not a readable aeclass checkpoint ({type(e).__name__}{': ' + msg if msg else ''})") from None
    if not isinstance(ckpt, dict) or "model_state" not in ckpt or "model_spec" not in ckpt:
        raise AeclassError(f"{p}: not an aeclass checkpoint (missing model_state/model_spec)")
    if ckpt.get("format", FORMATS[0]) not in FORMATS:
        raise AeclassError(f"{p}: checkpoint format '{ckpt.get('format')}' is newer than this aeclass reads "
                           f"({', '.join(FORMATS)}); upgrade aeclass")
    ckpt["path"] = str(p)
    return ckpt


def model_from_checkpoint(ck: dict):
    """The model a loaded checkpoint describes (its model_spec) with its weights; a spec that does not build
    or weights that do not fit it are an AeclassError naming the file."""
    from .models import create_model
    where, spec = ck.get("path", "checkpoint"), ck.get("model_spec")
    if not (isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("input_shape"), list)
            and isinstance(spec.get("kwargs", {}), dict)):
        raise AeclassError(f"{where}: its model_spec is not a model description (expected name, input_shape, "
                           "num_classes, kwargs)")
    try:
        model = create_model(spec["name"], spec["input_shape"], spec.get("num_classes"), **spec.get("kwargs", {}))
    except (ConfigError, TypeError, ValueError) as e:
        raise AeclassError(f"{where}: cannot rebuild its model ({e})") from None
    try:
        model.load_state_dict(ck["model_state"])
    except (RuntimeError, TypeError, AttributeError) as e:  # shapes or keys that are not this model's
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.startswith("Error(s) in loading")]
        raise AeclassError(f"{where}: its weights do not fit its model '{spec['name']}' "
                           f"({(lines or [type(e).__name__])[0][:200]})") from None
    return model


def final_label_smoothing(ck: dict) -> float:
    """The label smoothing a checkpoint's final classifier learned with; older checkpoints did not record it,
    so their strategy is asked, from their saved config."""
    if "final_label_smoothing" in ck:
        return float(ck["final_label_smoothing"])
    saved = ck.get("config", {})
    try:
        from .config import build_config
        from .strategies import create_strategy
        return float(create_strategy(build_config(base=saved)).final_label_smoothing())
    except AeclassError:
        return float(saved.get("label_smoothing", 0.0))


def load_init_weights(model, path: str) -> None:
    """Start from another run's weights (a pre-trained autoencoder, or transfer learning).

    Like a linear probe in MAE, we check exactly which keys did not load: only the head may be new.
    """
    ckpt = load_checkpoint(path)
    state = {k: v for k, v in ckpt["model_state"].items() if not k.startswith("head.")}
    own = model.state_dict()
    bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise ConfigError(f"--init {path}: weights do not fit this model ({bad[0]}: {tuple(state[bad[0]].shape)} vs "
                          f"{tuple(own[bad[0]].shape)}); use the same --model and image size")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise ConfigError(f"--init {path}: checkpoint does not match model '{model.spec.get('name', '?')}' "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
