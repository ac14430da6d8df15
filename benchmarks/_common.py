"""Shared helpers for the benchmark scripts: locating the real datasets, resumable result files."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def shared_datasets() -> Path:
    """$AECLASS_DATA if set, else ../shared/datasets beside the repository."""
    env = os.environ.get("AECLASS_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "datasets"


def cifar_zip() -> Path:
    return shared_datasets() / "cifar10-jpeg" / "cifar10-jpeg.zip"


def with_data_paths(overrides: dict) -> dict:
    """Fill the '{cifar}' placeholder of string options (e.g. data="folder:{cifar}") with the shared zip."""
    return {k: (v.format(cifar=cifar_zip()) if isinstance(v, str) else v) for k, v in overrides.items()}


def run_preset(preset: str, overrides: dict, run_dir: Path, log=None):
    """Train `preset` with `overrides` ({cifar} filled in) into a fresh `run_dir`, on the shared datasets,
    without a report; returns (config, metrics, wall seconds)."""
    import shutil
    import time

    from aeclass import build_config, train
    shutil.rmtree(run_dir, ignore_errors=True)
    over = {**with_data_paths(overrides), "out": str(run_dir), "data_dir": str(shared_datasets()), "report": False}
    cfg = build_config(preset=preset, overrides=over)
    t0 = time.perf_counter()
    metrics = train(cfg, log=log or (lambda *a: None), progress=False).metrics
    return cfg, metrics, time.perf_counter() - t0


def trained(preset: str | None, overrides: dict, run_dir: Path, init: str | None = None, log=None) -> dict:
    """The metrics of the run in `run_dir`: kept when it finished (its metrics.json), resumed from its last
    checkpoint when interrupted, else trained now (as run_preset, `init` as `aeclass train --init`)."""
    import shutil

    from aeclass import build_config, train
    run_dir = Path(run_dir)
    if (run_dir / "metrics.json").is_file():
        return json.loads((run_dir / "metrics.json").read_text())
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)
    over = {**with_data_paths(overrides), "out": str(run_dir), "data_dir": str(shared_datasets()), "report": False}
    cfg = build_config(preset=preset, overrides=over)
    return train(cfg, resume=resume, init=init, log=log or (lambda *a: None), progress=False).metrics


def load_average() -> float:
    """The 1-minute load average: how busy the shared cores were."""
    return os.getloadavg()[0]


def best_seconds(fn, reps: int) -> float:
    """The fastest of `reps` timed calls of fn(), after one untimed warm-up call (as timeit takes the minimum:
    slower calls measure the machine's other work, not the code)."""
    import time
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def cpu_model() -> str | None:
    """The CPU's model name (Linux's /proc/cpuinfo); None elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        return None


def machine() -> dict:
    """The machine a result was measured on; the CPU capability (AVX2, AVX512, ...) is what torch's kernels use."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def save_results(path: Path, results: dict) -> None:
    from aeclass.io import atomic_write_json
    atomic_write_json(path, results)
