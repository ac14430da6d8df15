"""`train(cfg)`: one run, from a config to its run directory, through the engine (aeclass.engine.fit).

Run directory layout (a public interface: scripts read these files):

    config.yaml          the resolved TrainConfig (the strategy's options under strategy_kwargs)
    run.json             seed, versions, device, precision, command, data summary, labelled/unlabelled counts,
                         phases
    metrics.csv          one row per epoch: phase, losses, accuracies, reconstruction MSE, lr, seconds
    metrics.json         final figures of the model to use: best.pt by validation with --val, else last.pt
    checkpoints/last.pt  written after every epoch (temp file + rename); --resume continues from it
    checkpoints/best.pt  the final-phase epoch with the best validation accuracy (--val), else the lowest
                         training loss; test data never select it

This module only orchestrates: it prepares the data, the model and the strategy, hands them to the engine,
and writes the files; the loop is the engine's, the checkpoint format aeclass.checkpoint's.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from . import distributed
from ._version import __version__
from .checkpoint import CheckpointSaver, load_checkpoint, load_init_weights, restore
from .config import TrainConfig, save_config, validate
from .cpu import available_cpus, tune_allocator
from .data import dataset_for
from .data.augment import augment_to_string
from .data.train_data import TrainData
from .device import memory_format_for, pick_device, precision_note, resolve_precision
from .engine import EMA, Run, compile_parts, fit
from .errors import AeclassError, ConfigError
from .io import DirectoryLock, atomic_write_json, atomic_write_text, remove_stale_temporaries
from .models import AEClassifier, create_model
from .strategies import create_strategy

RUN_FILES = ("config.yaml", "run.json", "metrics.csv", "metrics.json")  # written by train()
PCA_SAMPLE = 20000  # training images the --pca-init covariance is estimated from (enough for 784-3072 pixels)


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


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def _init_from_data(model: AEClassifier, cfg: TrainConfig, xf: torch.Tensor, device) -> float:
    """Layers set from the data (fastcnn's whitening stem always, --pca-init when asked), from a seeded sample
    of the training images; returns the seconds it took (counted as training time)."""
    if not (cfg.pca_init or model.needs_data_init):
        return 0.0
    t0 = time.perf_counter()
    sample = xf[torch.randperm(xf.shape[0], generator=torch.Generator().manual_seed(cfg.seed))[:PCA_SAMPLE]].to(device)
    model.data_init_(sample)
    if cfg.pca_init:
        try:
            model.pca_init_(sample)
        except ValueError as e:
            raise ConfigError(f"--pca-init: {e}; model '{cfg.model}' is not one") from None
    return time.perf_counter() - t0


def _prepare(cfg: TrainConfig, resume: bool, init: str | None, log, dataset) -> Run:
    """Data, model (input statistics, layers set from the data, --init weights, memory format, weight
    average, compilation) and strategy, in the order that fixes every random draw of a run."""
    device = pick_device(distributed.device_name(cfg.device))
    if (note := precision_note(device, cfg.precision)) is not None:
        log(note)
    gen = seed_everything(cfg.seed)
    ds = dataset if dataset is not None else dataset_for(cfg)
    if cfg.labels is not None and cfg.labels > ds.train_x.shape[0]:
        log(f"note: --labels {cfg.labels} exceeds the {ds.train_x.shape[0]} training images; using all labels")
    strategy = create_strategy(cfg)
    model = build_model(cfg, ds).to(device)
    strategy.check(model, pretrained=bool(init))
    data = TrainData.build(ds, cfg, device)
    run = Run(cfg, ds, data, model, strategy, [], device, gen, lambda: build_model(cfg, ds),
              {"head": False, "decoder": False}, log=log, resumed=resume,
              make_model=lambda name, kwargs: _student_model(name, kwargs, cfg, ds, device))
    strategy.setup(run)  # before the model's data-set layers: a --teacher is loaded here, as it always was
    # A resumed run loads the data-set layers' weights from its checkpoint.
    model, run.progress["elapsed"] = _set_up(model, cfg, ds, device, from_data=not resume, init=init)
    run.model = model
    run.phases = strategy.phases(model, pretrained=bool(init))
    run.ema = EMA(model, cfg.ema) if cfg.ema > 0 else None  # copied before compiling: the average runs eager
    if cfg.compile:
        compile_parts(model)
    # An untrained head's accuracy or an untrained decoder's error means nothing: report only what trained.
    run.trained = {"head": any("head" in p.trains for p in run.phases),
                   "decoder": any("decoder" in p.trains for p in run.phases) or (bool(init) and model.has_decoder)}
    return run


def _student_model(name: str, kwargs: dict, cfg: TrainConfig, ds, device) -> AEClassifier:
    """A model of another architecture for a self-training student (Run.replace_model), set up as a new one."""
    model = create_model(name, ds.image_shape, ds.num_classes, **kwargs).to(device)
    return _set_up(model, dataclasses.replace(cfg, pca_init=False), ds, device, from_data=True)[0]


def _set_up(model: AEClassifier, cfg: TrainConfig, ds, device, from_data: bool, init: str | None = None):
    """A new model made ready to train: input statistics, layers set from the data (when `from_data`), --init
    weights, memory format; returns it and the seconds the data-set layers took (training time)."""
    xf = ds.train_x.float().div_(255.0)  # in place: one float copy of the training set, not two
    if model.standardizes_input:
        model.set_input_stats(xf.mean(dim=(0, 2, 3)), xf.std(dim=(0, 2, 3)))
    seconds = _init_from_data(model, cfg, xf, device) if from_data else 0.0
    del xf
    if init:
        load_init_weights(model, init)
    return model.to(memory_format=memory_format_for(model, cfg.memory_format)), seconds


def train(cfg: TrainConfig, resume: bool = False, init: str | None = None, log=print, progress: bool = True,
          dataset=None) -> RunResult:
    """Train `cfg` into its run directory and return the final metrics. The config is validated first, so
    the Python API gets the same one-line errors (ConfigError) as the command line.

    >>> from aeclass import TrainConfig, train
    >>> result = train(TrainConfig(data="digits", labels=100, strategy="joint", epochs=10, out="runs/demo"))
    >>> result.metrics["test_accuracy"]
    """
    cfg = validate(cfg)
    ctx = distributed.setup(cfg.device)  # under torchrun: join the process group (aeclass.distributed)
    try:
        run_dir = Path(distributed.from_main(cfg.out or str(default_run_dir(cfg))))
        if resume and distributed.is_main() and not CheckpointSaver(run_dir).last.is_file():  # before the lock
            raise AeclassError(f"--resume: no checkpoint at {CheckpointSaver(run_dir).last} to continue from")
        if not distributed.is_main():  # the other ranks train beside rank 0 and write nothing
            return _train_locked(cfg, run_dir, resume, init, lambda *a, **k: None, False, dataset)
        # One process per run directory, for the whole run: two trainings writing the same checkpoints would
        # interleave epochs of different runs. The "already holds a run" check below is only race-free under it.
        with DirectoryLock(run_dir, "--resume" if resume else "--out") as lock:
            try:
                return _train_locked(cfg, run_dir, resume, init, log, progress, dataset)
            except BaseException:
                lock.discard()  # nothing half-written: a run that failed before writing a file leaves no directory
                raise
    finally:
        if ctx is not None:
            distributed.teardown()


def _train_locked(cfg: TrainConfig, run_dir: Path, resume: bool, init, log, progress: bool, dataset) -> RunResult:
    main, saver = distributed.is_main(), CheckpointSaver(run_dir)
    if main:
        _claim(run_dir, saver, resume)
    cfg.out = str(run_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif available_cpus() < torch.get_num_threads():  # torch counts the machine's cores, not the ones we may use
        torch.set_num_threads(available_cpus())
    allocator = tune_allocator() if pick_device(cfg.device).type == "cpu" else None  # faster, same results
    run = _prepare(cfg, resume, init, log, dataset)
    if distributed.context() is not None:
        run.dist, run.rank_gen = distributed.context(), distributed.rank_generator(cfg.seed)
    if main:
        run.saver, run.on_epoch = saver, _after_epoch
        run.board = _tensorboard(run_dir) if cfg.logger == "tensorboard" else None
    run.bars = progress and sys.stderr.isatty()
    # only rank 0 reads last.pt (the others may be on machines that do not see the run directory)
    opt_state = restore(run, distributed.from_main(saver.load_last(run.device) if main else None)) if resume else None
    if main:
        _write_run_files(run, run_dir, resume, allocator)
    try:
        fit(run, opt_state)
    finally:
        if run.board is not None:
            run.board.close()
    if not main:  # wait for rank 0's final evaluation and files, so that no rank leaves the group early
        distributed.barrier()
        return RunResult(run_dir, {}, run.final_model(), cfg)
    if run.selects_by_validation and saver.best.is_file():  # the model to use: the best on validation
        run.final_model().load_state_dict(load_checkpoint(saver.best)["model_state"])
    t_eval = time.perf_counter()
    metrics = final_metrics(run, run.test_metrics(final=True))
    metrics["eval_seconds"] = time.perf_counter() - t_eval  # the final test evaluation, test-time views included
    atomic_write_json(run_dir / "metrics.json", metrics)
    summary = [f"test_accuracy {metrics['test_accuracy']:.4f}" if metrics.get("test_accuracy") is not None else None,
               f"test_recon_mse {metrics['test_recon_mse']:.5f}" if metrics.get("test_recon_mse") is not None else None,
               f"train_seconds {metrics['train_seconds']:.1f}"]
    log("done: " + ", ".join(s for s in summary if s) + f"  ({run_dir})")
    distributed.barrier()
    return RunResult(run_dir, metrics, run.final_model(), cfg)


def _claim(run_dir: Path, saver: CheckpointSaver, resume: bool) -> None:
    if not resume and (run_dir / "metrics.csv").exists():
        raise AeclassError(f"--out {run_dir}: already holds a run; use --resume to continue it or choose another --out")
    # A process killed inside atomic_write leaves its temporary file; nobody else writes here while we hold the lock.
    remove_stale_temporaries(run_dir, RUN_FILES)
    remove_stale_temporaries(saver.dir, None)


def _write_run_files(run: Run, run_dir: Path, resume: bool, allocator) -> None:
    cfg = run.cfg
    if resume:
        run.log(f"resuming {run_dir} at phase {run.progress['phase_index']} epoch {run.progress['phase_epoch']}")
        # last.pt is written before metrics.csv: a kill between the two leaves the csv an epoch short
        _write_csv(run_dir / "metrics.csv", run.progress["history"], run.columns)
    save_config(cfg, run_dir / "config.yaml")
    info = _run_info(run, allocator)
    if resume:  # the run's own start and command stay; each resumption is added to the list
        info = _with_first_start(run_dir / "run.json", info)
    atomic_write_json(run_dir / "run.json", info)
    n_val = 0 if run.data.val_x is None else int(run.data.val_x.shape[0])
    procs = f", {run.dist.world} processes ({run.dist.backend})" if run.dist is not None else ""
    run.log(f"run {run_dir}: {cfg.strategy} on {run.ds.name} {tuple(run.ds.image_shape)}, {run.data.n_labelled} labelled / "
            f"{run.data.x.shape[0]} train images{f' ({n_val} held out to validate)' if n_val else ''}, model {cfg.model} "
            f"({sum(p.numel() for p in run.model.parameters()):,} parameters), {run.device}{procs}")


def _run_info(run: Run, allocator) -> dict:
    cfg, ds, data, model = run.cfg, run.ds, run.data, run.model
    return {
        "seed": cfg.seed, "versions": versions(), "device": str(run.device), "allocator": allocator,
        "precision": resolve_precision(run.device, cfg.precision),  # what --precision auto computed in here
        "threads": torch.get_num_threads(),
        "processes": run.dist.world if run.dist is not None else 1,
        "distributed_backend": run.dist.backend if run.dist is not None else None,
        "openmp_wait_policy": os.environ.get("AECLASS_WAIT_POLICY") or os.environ.get("OMP_WAIT_POLICY", "default"),
        "command": sys.argv, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": ds.summary(), "n_train": int(ds.train_x.shape[0]), "n_test": int(ds.test_x.shape[0]),
        "n_labelled": data.n_labelled, "n_unlabelled": int(data.x.shape[0]) - data.n_labelled,
        "n_val": 0 if data.val_x is None else int(data.val_x.shape[0]),
        "best_by": "val_accuracy" if run.selects_by_validation else "train_loss",
        "augment": cfg.augment if cfg.augment != "default" else f"default ({augment_to_string(data.augment)})",
        "model": model.spec, "parameters": sum(p.numel() for p in model.parameters()),
        "strategy": {"name": cfg.strategy, "class": f"{type(run.strategy).__module__}.{type(run.strategy).__qualname__}",
                     "options": dict(cfg.strategy_kwargs)},
        "trained": dict(run.trained),
        "phases": [{"name": p.name, "epochs": p.epochs, "images": p.images} for p in run.phases],
    }


def _with_first_start(path: Path, info: dict) -> dict:
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):  # missing or unreadable: this start is all there is to record
        return info
    if not isinstance(old, dict):
        return info
    resumed = [*old.get("resumed", []), {"started": info["started"], "command": info["command"],
                                         "device": info["device"], "precision": info["precision"]}]
    # run.json names the run's model (--model) as it started; a resumption after a teacher -> student hand-over
    # holds the student, which metrics.json and the checkpoint name. The precision is the first sitting's too;
    # `device` stays the latest sitting's, as it always was; each resumption lists both of its own.
    first = {k: old[k] for k in ("started", "command", "model", "parameters", "precision") if k in old}
    return {**info, **first, "resumed": resumed}


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--logger tensorboard needs the tensorboard extra: pip install 'aeclass[tensorboard]'") from None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _after_epoch(run: Run, row: dict) -> None:
    _write_csv(Path(run.cfg.out) / "metrics.csv", run.progress["history"], run.columns)
    if getattr(run, "board", None) is not None:  # the same figures, as TensorBoard scalars by global epoch
        for k, v in row.items():
            if isinstance(v, (int, float)) and k not in ("epoch", "phase_epoch"):
                run.board.add_scalar(k, v, row["epoch"])
        run.board.flush()
    run.log(_epoch_line(row, run.phases[run.progress["phase_index"]].epochs))


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k])) for k in columns})
    atomic_write_text(path, buf.getvalue())


def _epoch_line(row: dict, n: int) -> str:
    parts = [f"{row['phase']} {row['phase_epoch']}/{n}"]
    for key, fmt in (("train_loss", "loss {:.4f}"), ("train_accuracy", "train_acc {:.3f}"),
                     ("test_accuracy", "test_acc {:.4f}"), ("test_recon_mse", "test_mse {:.5f}"),
                     ("epoch_seconds", "{:.1f}s")):
        if row.get(key) is not None:
            parts.append(fmt.format(row[key]))
    return "  ".join(parts)


def final_metrics(run: Run, final: dict) -> dict:
    """metrics.json: the final model's test figures and what the run was."""
    cfg, ds, data, prog = run.cfg, run.ds, run.data, run.progress
    y = data.test_y.cpu()
    m = {
        "test_accuracy": final.get("accuracy"),
        "test_loss": final.get("loss"),
        "test_recon_mse": final.get("recon_mse"),
        "train_seconds": prog["elapsed"],
        "epochs": sum(p.epochs for p in run.phases),
        "best_epoch": prog.get("best_epoch"),
        # the model these figures describe: a self-training student of another architecture (--student-model)
        # is named here, its teacher's architecture (--model) under teacher_model
        "strategy": cfg.strategy, "model": run.model.spec["name"], "data": ds.name, "seed": cfg.seed,
        "labels": cfg.labels, "n_labelled": data.n_labelled, "n_unlabelled": int(data.x.shape[0]) - data.n_labelled,
        "n_train": int(data.x.shape[0]), "n_test": int(y.shape[0]),
        "classes": list(ds.classes),
        **run.strategy.final_metrics(),
    }
    if m["model"] != cfg.model:
        m["teacher_model"] = cfg.model
    if "predictions" in final:
        k = ds.num_classes
        cm = torch.bincount(y * k + final["predictions"], minlength=k * k).reshape(k, k)
        m["confusion_matrix"] = cm.tolist()
        m["per_class_accuracy"] = (cm.diag().float() / cm.sum(1).clamp_min(1).float()).tolist()
    # the model these figures describe; `aeclass evaluate RUN`, predict and the report use the same
    by_val = run.selects_by_validation and "best_epoch" in prog
    m["checkpoint"] = "checkpoints/best.pt" if by_val else "checkpoints/last.pt"
    m["selected_by"] = "val_accuracy" if by_val else "last epoch"
    m["trained"] = dict(run.trained)
    if run.data.val_x is not None:
        best = next((r for r in prog["history"] if r["epoch"] == prog.get("best_epoch")), {})
        m.update(val_accuracy=best.get("val_accuracy"), n_val=int(run.data.val_x.shape[0]),
                 stopped_early_at=prog.get("stopped_early"))
    return m
