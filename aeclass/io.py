"""Atomic file writes and safe checkpoint loading: a crash never leaves a half-written file behind."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from .errors import AeclassError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes owner-only files


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_checkpoint(obj: dict, path: Path) -> None:
    """torch.save a plain dict (tensors and Python primitives only) to a temp file, then rename."""
    _atomic(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint with weights_only=True: no arbitrary code runs, whatever the file holds."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "last.pt", "checkpoints/best.pt", "checkpoints/last.pt"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise AeclassError(f"{p}: no checkpoint (best.pt or last.pt) in this run directory")
    if not p.is_file():
        raise AeclassError(f"checkpoint not found: {p}")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, not a torch file, or unsafe content
        raise AeclassError(f"{p}: not a readable aeclass checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict) or "model_state" not in ckpt or "model_spec" not in ckpt:
        raise AeclassError(f"{p}: not an aeclass checkpoint (missing model_state/model_spec)")
    return ckpt
