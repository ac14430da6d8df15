"""`train(cfg)`: one run from config to run directory, through the shared engine.

Run directory layout (a public interface: scripts read these files):

    config.yaml          the resolved TrainConfig
    run.json             seed, versions, device, command, data summary, labelled/unlabelled counts
    metrics.csv          one row per epoch: phase, losses, accuracies, reconstruction MSE, lr, seconds
    metrics.json         final figures: test_accuracy, test_recon_mse, train_seconds, ... (see README)
    checkpoints/last.pt  written after every epoch (temp file + rename); --resume continues from it
    checkpoints/best.pt  the final-phase epoch with the lowest training loss (test data never select it)
"""
from __future__ import annotations

import csv
import dataclasses
import io
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .config import TrainConfig, save_config
from .cpu import tune_allocator
from .data import load_dataset
from .data.augment import augment_to_string
from .engine import (EMA, TrainData, confident_labels, evaluate, make_optimizer, phase_parameters, pick_device,
                     steps_per_epoch, memory_format_for, train_phase_epoch, trained_only)
from .errors import AeclassError, ConfigError
from .io import atomic_write_json, atomic_write_text, load_checkpoint, save_checkpoint
from .models import AEClassifier, create_model
from .strategies import build_phases

PCA_SAMPLE = 20000  # training images the --pca-init covariance is estimated from (enough for 784-3072 pixels)
METRIC_FIELDS = ["phase", "epoch", "phase_epoch", "lr", "train_loss", "train_ce", "train_recon", "train_accuracy",
                 "test_accuracy", "test_loss", "test_recon_mse", "epoch_seconds", "elapsed_seconds",
                 # semi only, appended so the earlier columns keep their positions: the pseudo-label loss and
                 # the fraction of unlabelled images confident enough to get a pseudo-label
                 "train_pseudo", "train_confident",
                 # ladder only: the weighted sum of its per-layer denoising costs (train_recon: the input layer's)
                 "train_denoise"]


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    model: AEClassifier
    config: TrainConfig


def versions() -> dict:
    import sklearn
    return {"aeclass": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "scikit-learn": sklearn.__version__, "platform": platform.platform()}


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    data = cfg.data.split(":", 1)[0]
    return Path("runs") / f"{data}-{cfg.strategy}-{cfg.labels or 'all'}-s{cfg.seed}-{stamp}"


def build_model(cfg: TrainConfig, ds) -> AEClassifier:
    return create_model(cfg.model, ds.image_shape, ds.num_classes, **cfg.model_kwargs)


def restart_weights(model: AEClassifier, cfg: TrainConfig, ds) -> None:
    """Draw fresh weights for `model` in place, as a new model of the same spec starts (seeded by
    cfg.seed), keeping its input statistics and the weights that are set from the data rather than learned
    (those its factory builds frozen, e.g. fastcnn's whitening stem). In place so the optimiser, compiled
    modules and memory format stay as they are."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        new = build_model(cfg, ds)
    fresh = new.state_dict()
    keep = {"in_mean", "in_std"} | {name for name, p in new.named_parameters() if not p.requires_grad}
    missing, unexpected = model.load_state_dict({k: v for k, v in fresh.items() if k not in keep}, strict=False)
    if set(missing) != keep or unexpected:  # a model whose state is not what its own factory builds
        raise AeclassError(f"cannot restart '{cfg.model}' from fresh weights (missing {missing[:3]}, unexpected {unexpected[:3]})")


def load_init_weights(model: AEClassifier, path: str) -> None:
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
        raise ConfigError(f"--init {path}: checkpoint does not match model '{cfg_name(model)}' "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def load_teacher(path: str, ds, device: torch.device) -> tuple[AEClassifier, float]:
    """Another run's final model as the first self-training teacher (--teacher), checked against this
    dataset, and the label smoothing it was trained with (confident_labels maps its confidences back through
    it). A run directory gives its last checkpoint: the model its metrics.json describes."""
    from .inference import load_model
    p = Path(path)
    if p.is_dir() and (p / "checkpoints" / "last.pt").is_file():
        p = p / "checkpoints" / "last.pt"
    try:
        model, ck = load_model(p, str(device))
    except AeclassError as e:
        raise ConfigError(f"--teacher {path}: {e}") from None
    tc = ck.get("config", {})
    if not model.has_head or tc.get("strategy") == "autoencoder":
        raise ConfigError(f"--teacher {path}: that model has no trained classification head to label images with")
    if list(ck["image_shape"]) != list(ds.image_shape) or list(ck["classes"]) != list(ds.classes):
        raise ConfigError(f"--teacher {path}: trained on {tuple(ck['image_shape'])} images of classes {ck['classes'][:4]}..., "
                          f"not this dataset's {tuple(ds.image_shape)} / {list(ds.classes)[:4]}...")
    student = tc.get("strategy") == "semi" and tc.get("student_epochs")  # its final model is a student
    smoothing = tc.get("student_smoothing", 0.1) if student else tc.get("label_smoothing", 0.0)
    return model, float(smoothing)


def cfg_name(model) -> str:
    return getattr(model, "spec", {}).get("name", type(model).__name__)


class _Progress:
    """tqdm on a terminal, nothing otherwise (plain per-epoch lines are printed either way)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()

    def bar(self, total: int, desc: str):
        if not self.enabled:
            return None
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def train(cfg: TrainConfig, resume: bool = False, init: str | None = None, log=print, progress: bool = True,
          dataset=None) -> RunResult:
    """Train `cfg` into its run directory and return the final metrics.

    >>> from aeclass import TrainConfig, train
    >>> result = train(TrainConfig(data="digits", labels=100, strategy="joint", epochs=10, out="runs/demo"))
    >>> result.metrics["test_accuracy"]
    """
    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg)
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    if resume and not ckpt_path.is_file():
        raise AeclassError(f"--resume: no checkpoint at {ckpt_path} to continue from")
    if not resume and (run_dir / "metrics.csv").exists():
        raise AeclassError(f"--out {run_dir}: already holds a run; use --resume to continue it or choose another --out")
    cfg.out = str(run_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    allocator = tune_allocator() if device.type == "cpu" else None  # faster, same results (see aeclass.cpu)
    gen = seed_everything(cfg.seed)

    ds = dataset if dataset is not None else load_dataset(cfg.data, cfg.data_dir, image_size=cfg.image_size,
                                                                  channels=cfg.channels, seed=cfg.seed)
    if cfg.labels is not None and cfg.labels > ds.train_x.shape[0]:
        log(f"note: --labels {cfg.labels} exceeds the {ds.train_x.shape[0]} training images; using all labels")
    model = build_model(cfg, ds).to(device)
    data = TrainData.build(ds, cfg, device)
    if cfg.student_epochs:
        data.relabelled(data.y, cfg.student_augment)  # a bad --student-augment fails now, not after the teacher
    # A resumed run has the teacher's labels in its checkpoint already.
    uses_teacher = bool(cfg.teacher) and cfg.strategy == "semi"  # like every semi option, ignored elsewhere
    teacher = load_teacher(cfg.teacher, ds, device) if uses_teacher and not resume else None
    xf = ds.train_x.float() / 255.0
    model.set_input_stats(xf.mean(dim=(0, 2, 3)), xf.std(dim=(0, 2, 3)))
    init_seconds = 0.0
    # Layers set from the data: fastcnn's whitening stem (always), --pca-init. Counted as training time; a
    # resumed run loads its weights from the checkpoint instead.
    if not resume and (cfg.pca_init or model.needs_data_init):
        t0 = time.perf_counter()
        sample = xf[torch.randperm(xf.shape[0], generator=torch.Generator().manual_seed(cfg.seed))[:PCA_SAMPLE]].to(device)
        model.data_init_(sample)
        if cfg.pca_init:
            try:
                model.pca_init_(sample)
            except ValueError as e:
                raise ConfigError(f"--pca-init: {e}; model '{cfg.model}' is not one") from None
        del sample
        init_seconds = time.perf_counter() - t0
    del xf
    if init:
        load_init_weights(model, init)
    model = model.to(memory_format=memory_format_for(model, cfg.memory_format))
    phases = build_phases(cfg, model, pretrained=bool(init))
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None  # copied before compiling: the average runs eager
    if cfg.compile:
        # In place (Module.compile), so state_dict keys stay those of the eager model.
        for part in (model.encoder, model.decoder, model.head):
            if part is not None:
                part.compile()
    strategy_state: dict = {}

    def final_model() -> AEClassifier:  # what is evaluated, saved as model_state and returned
        return ema.model if ema is not None else model
    # An untrained head's accuracy or an untrained decoder's error means nothing: report only what trained
    # (autoencoder runs have no accuracy; supervised and semi --no-recon runs no reconstruction error).
    classifies = any("head" in p.trains for p in phases)
    reconstructs = any("decoder" in p.trains for p in phases) or (bool(init) and model.has_decoder)

    def test_metrics(final: bool = False, of: AEClassifier | None = None) -> dict:
        # The shifted test-time views multiply evaluation cost (4 more passes); per-epoch monitoring skips
        # them and only the final metrics (and `aeclass evaluate` / `predict`) include them.
        m = evaluate(of if of is not None else final_model(), data.test_x, data.test_y, cfg.precision,
                     memory_format=cfg.memory_format, tta_flip=cfg.tta_flip, tta_shift=cfg.tta_shift if final else 0)
        return trained_only(m, classifies, reconstructs)

    state = {"phase_index": 0, "phase_epoch": 0, "step": 0, "history": [], "best_loss": float("inf"),
             "elapsed": init_seconds}
    opt_state = None
    if resume:
        ck = load_checkpoint(ckpt_path)
        model.load_state_dict(ck.get("train_model_state", ck["model_state"]))
        if ema is not None:
            ema.model.load_state_dict(ck["model_state"])
            ema.updates = ck.get("ema_updates", 0)
        strategy_state.update({k: v.to(device) for k, v in ck.get("strategy_state", {}).items()})
        state.update(ck["progress"])
        opt_state = ck.get("optimizer_state")
        gen.set_state(ck["generator_state"])
        torch.set_rng_state(ck["torch_rng_state"])
        log(f"resuming {run_dir} at phase {state['phase_index']} epoch {state['phase_epoch']}")

    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    info = {
        "seed": cfg.seed, "versions": versions(), "device": str(device), "allocator": allocator, "command": sys.argv,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": ds.summary(), "n_train": int(ds.train_x.shape[0]), "n_test": int(ds.test_x.shape[0]),
        "n_labelled": data.n_labelled, "n_unlabelled": int(ds.train_x.shape[0]) - data.n_labelled,
        "augment": cfg.augment if cfg.augment != "default" else f"default ({augment_to_string(data.augment)})",
        "model": model.spec, "parameters": sum(p.numel() for p in model.parameters()),
        "phases": [{"name": p.name, "epochs": p.epochs, "images": p.images} for p in phases],
    }
    atomic_write_json(run_dir / "run.json", info)
    log(f"run {run_dir}: {cfg.strategy} on {ds.name} {tuple(ds.image_shape)}, {data.n_labelled} labelled / "
        f"{ds.train_x.shape[0]} train images, model {cfg.model} ({info['parameters']:,} parameters), {device}")

    trainable = [p for p in model.parameters() if p.requires_grad]
    bars = _Progress(progress)
    epoch_global = sum(p.epochs for p in phases[:state["phase_index"]]) + state["phase_epoch"]
    for pi in range(state["phase_index"], len(phases)):
        phase = phases[pi]
        for p in trainable:  # a phase may have frozen some; weights frozen by design (fastcnn's stem) stay so
            p.requires_grad_(True)
        start_epoch = state["phase_epoch"] if pi == state["phase_index"] else 0
        phase_data = data
        if phase.relabel:
            if start_epoch == 0:  # the teacher is the model trained so far (its weight average, with --ema)
                t0 = time.perf_counter()
                if pi == 0 and uses_teacher:  # another run's model (--teacher, loaded at the start), its own smoothing
                    teacher_model, smoothing = teacher
                else:  # the model trained so far: the semi phase learned with --label-smoothing, students not
                    teacher_model = final_model()
                    smoothing = cfg.student_smoothing if phases[pi - 1].relabel else cfg.label_smoothing
                strategy_state["student_labels"] = confident_labels(teacher_model, data, cfg, smoothing)
                state["elapsed"] += time.perf_counter() - t0  # part of making the model: training time
                teacher_accuracy = test_metrics(final=True, of=teacher_model).get("accuracy")
                teacher = teacher_model = None  # not needed again: free its memory
                state.setdefault("teacher_test_accuracy", teacher_accuracy)  # the semi teacher's, in metrics.json
                state.setdefault("rounds", []).append({  # every round's teacher, for metrics.json
                    "teacher_test_accuracy": teacher_accuracy,
                    "pseudo_labels": int((strategy_state["student_labels"] >= 0).sum()) - data.n_labelled})
                log(f"{phase.name}: the teacher's test accuracy is {teacher_accuracy:.4f}")
                restart_weights(model, cfg, ds)
                if ema is not None:
                    ema.model.load_state_dict(model.state_dict())
                    ema.updates = 0
            phase_data = data.relabelled(strategy_state["student_labels"], cfg.student_augment)
            state["student_pseudo_labels"] = phase_data.n_labelled - data.n_labelled
            log(f"{phase.name}: the teacher labels "
                f"{state['student_pseudo_labels']} of {data.x.shape[0] - data.n_labelled} unlabelled images at confidence "
                f">= {cfg.confidence}; training fresh weights on them")
        # The student's cross-entropy is on pseudo-labels, about 1 % of them wrong on MNIST-100: smoothed.
        phase_cfg = dataclasses.replace(cfg, label_smoothing=cfg.student_smoothing) if phase.relabel else cfg
        opt = make_optimizer(phase_parameters(model, phase), cfg)
        if opt_state is not None and pi == state["phase_index"]:
            opt.load_state_dict(opt_state)
        opt_state = None
        spe = steps_per_epoch(phase, phase_data, cfg)
        total = phase.epochs * spe
        warmup = int(cfg.warmup_epochs * spe)
        # Before any phase has trained the head (an autoencoder pre-training phase) its scores are chance.
        head_trained = any("head" in p.trains for p in phases[:pi + 1])
        phase_step = start_epoch * spe
        for ep in range(start_epoch, phase.epochs):
            t0 = time.perf_counter()
            bar = bars.bar(spe, f"{phase.name} {ep + 1}/{phase.epochs}")
            means, phase_step = train_phase_epoch(model, phase, phase_data, phase_cfg, opt, gen, phase_step, total, warmup,
                                                  device, bar, ema, strategy_state)
            if bar is not None:
                bar.close()
            train_time = time.perf_counter() - t0
            test = test_metrics()
            state["elapsed"] += train_time
            epoch_global += 1
            row = {"phase": phase.name, "epoch": epoch_global, "phase_epoch": ep + 1, **means,
                   "test_accuracy": test.get("accuracy") if head_trained else None,
                   "test_loss": test.get("loss") if head_trained else None,
                   "test_recon_mse": test.get("recon_mse"), "epoch_seconds": train_time,
                   "elapsed_seconds": state["elapsed"]}
            state["history"].append({k: row.get(k) for k in METRIC_FIELDS})
            state.update(phase_index=pi, phase_epoch=ep + 1, step=state["step"] + spe)
            is_last_phase = pi == len(phases) - 1
            improved = is_last_phase and means.get("train_loss", float("inf")) < state["best_loss"]
            if improved:
                state["best_loss"] = means["train_loss"]
                state["best_epoch"] = epoch_global
            ckpt = _checkpoint(model, opt, gen, state, cfg, ds, {"head": classifies, "decoder": reconstructs},
                               ema, strategy_state)
            save_checkpoint(ckpt, run_dir / "checkpoints" / "last.pt")
            if improved:
                save_checkpoint({k: v for k, v in ckpt.items() if k not in ("optimizer_state", "train_model_state")},
                                run_dir / "checkpoints" / "best.pt")
            _write_csv(run_dir / "metrics.csv", state["history"])
            log(_epoch_line(row, phase.epochs))
        if pi + 1 < len(phases):
            state.update(phase_index=pi + 1, phase_epoch=0)

    t_eval = time.perf_counter()
    final = test_metrics(final=True)
    metrics = _final_metrics(cfg, ds, data, final, state, phases)
    metrics["eval_seconds"] = time.perf_counter() - t_eval  # the final test evaluation, test-time views included
    atomic_write_json(run_dir / "metrics.json", metrics)
    summary = [f"test_accuracy {metrics['test_accuracy']:.4f}" if metrics.get("test_accuracy") is not None else None,
               f"test_recon_mse {metrics['test_recon_mse']:.5f}" if metrics.get("test_recon_mse") is not None else None,
               f"train_seconds {metrics['train_seconds']:.1f}"]
    log("done: " + ", ".join(s for s in summary if s) + f"  ({run_dir})")
    if cfg.report:
        _maybe_report(run_dir, log)
    return RunResult(run_dir, metrics, final_model(), cfg)


def _cpu_state(model) -> dict:
    # contiguous: channels_last weights would otherwise be saved with NHWC strides (safetensors refuses them)
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _checkpoint(model, opt, gen, state, cfg: TrainConfig, ds, trained: dict, ema=None, strategy_state=None) -> dict:
    # model_state is the model to use (the EMA average when --ema is on); train_model_state the raw
    # weights the optimiser is moving, needed only to resume. `trained` says which of head and decoder
    # the run trains, so that `aeclass evaluate` reports what metrics.json reports and nothing untrained.
    extra = {"train_model_state": _cpu_state(model), "ema_updates": ema.updates} if ema is not None else {}
    if strategy_state:
        extra["strategy_state"] = {k: v.detach().cpu() for k, v in strategy_state.items()}
    return {
        "format": "aeclass-checkpoint-1",
        "model_spec": model.spec,
        "trained": trained,
        "model_state": _cpu_state(ema.model if ema is not None else model),
        **extra,
        "optimizer_state": opt.state_dict(),
        "generator_state": gen.get_state(),
        "torch_rng_state": torch.get_rng_state(),
        "progress": {k: state[k] for k in ("phase_index", "phase_epoch", "step", "history", "best_loss", "elapsed")
                     } | {k: state[k] for k in ("best_epoch", "teacher_test_accuracy", "student_pseudo_labels", "rounds")
                                       if k in state},
        "config": cfg.to_dict(),
        "classes": list(ds.classes),
        "image_shape": list(ds.image_shape),
        "data_name": ds.name,
    }


def _write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k])) for k in METRIC_FIELDS})
    atomic_write_text(path, buf.getvalue())


def _epoch_line(row: dict, n: int) -> str:
    parts = [f"{row['phase']} {row['phase_epoch']}/{n}"]
    for key, fmt in (("train_loss", "loss {:.4f}"), ("train_accuracy", "train_acc {:.3f}"),
                     ("test_accuracy", "test_acc {:.4f}"), ("test_recon_mse", "test_mse {:.5f}"),
                     ("epoch_seconds", "{:.1f}s")):
        if row.get(key) is not None:
            parts.append(fmt.format(row[key]))
    return "  ".join(parts)


def _final_metrics(cfg, ds, data, final, state, phases) -> dict:
    y = data.test_y.cpu()
    m = {
        "test_accuracy": final.get("accuracy"),
        "test_loss": final.get("loss"),
        "test_recon_mse": final.get("recon_mse"),
        "train_seconds": state["elapsed"],
        "epochs": sum(p.epochs for p in phases),
        "best_epoch": state.get("best_epoch"),
        "strategy": cfg.strategy, "model": cfg.model, "data": ds.name, "seed": cfg.seed,
        "labels": cfg.labels, "n_labelled": data.n_labelled, "n_unlabelled": int(data.x.shape[0]) - data.n_labelled,
        "n_train": int(data.x.shape[0]), "n_test": int(y.shape[0]),
        "classes": list(ds.classes),
    }
    if "teacher_test_accuracy" in state:  # self-training (--student-epochs): what the student started from
        m["teacher_test_accuracy"] = state["teacher_test_accuracy"]
        m["student_pseudo_labels"] = state["student_pseudo_labels"]
        m["self_training_rounds"] = state.get("rounds", [])  # one entry per student: its teacher and labels
    if "predictions" in final:
        k = ds.num_classes
        cm = torch.bincount(y * k + final["predictions"], minlength=k * k).reshape(k, k)
        m["confusion_matrix"] = cm.tolist()
        m["per_class_accuracy"] = (cm.diag().float() / cm.sum(1).clamp_min(1).float()).tolist()
    return m


def _maybe_report(run_dir: Path, log) -> None:
    try:
        from .report import write_report
    except ImportError:
        return
    try:
        path = write_report(run_dir)
        log(f"report: {path}")
    except AeclassError as e:
        log(f"report skipped: {e}")
