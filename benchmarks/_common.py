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


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def save_results(path: Path, results: dict) -> None:
    from aeclass.io import atomic_write_json
    atomic_write_json(path, results)
