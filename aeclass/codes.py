"""Compression and dimensionality reduction with a trained encoder: `aeclass encode` and `aeclass decode`.

    aeclass encode RUN --data mnist --split test --out codes.npz --dtype int8   # or codes.csv; float32 | float16
    aeclass decode RUN codes.npz --out decoded/                                  # one PNG per code

A codes file holds, per image, its code (the encoder's output; a VAE's mean), its label (-1 when unknown) and,
for image files, its path; plus how the codes were stored. int8 quantises each code dimension affinely over
its observed range (256 levels from min to max) and stores the per-dimension min and step once per file (the
"header"); the bytes per image are then code_dim x 1. `encode` also decodes the stored codes (after
quantisation) and reports the reconstruction MSE and PSNR against the originals: the distortion at that rate.

.npz arrays: codes (N, code_dim) as stored, labels (N,), names (N,) str, and for int8 q_min, q_step
(code_dim,) float32; meta: a JSON string (dtype, bytes_per_image, header_bytes, recon_mse, psnr_db, run, data).
.csv: a first line '# aeclass-codes {meta JSON}', then name,label,c0..c{k-1} per image.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import torch

from .data import to_float
from .errors import AeclassError
from .inference import _image_paths, load_images, load_model
from .io import atomic_write, atomic_write_bytes, atomic_write_text

DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8}


def quantise(codes: np.ndarray, dtype: str) -> tuple[np.ndarray, dict]:
    """Codes as stored in `dtype`, and the arrays needed to read them back (int8: q_min, q_step)."""
    if dtype not in DTYPES:
        raise AeclassError(f"--dtype: expected one of {', '.join(DTYPES)}, got '{dtype}'")
    if dtype != "int8":
        return codes.astype(DTYPES[dtype]), {}
    lo, hi = codes.min(0), codes.max(0)
    step = np.where(hi > lo, (hi - lo) / 255.0, 1.0).astype(np.float32)
    q = np.clip(np.round((codes - lo) / step), 0, 255) - 128
    return q.astype(np.int8), {"q_min": lo.astype(np.float32), "q_step": step}


def dequantise(stored: np.ndarray, extra: dict) -> np.ndarray:
    if stored.dtype == np.int8:
        return (stored.astype(np.float32) + 128) * extra["q_step"] + extra["q_min"]
    return stored.astype(np.float32)


def _inputs(ck: dict, data: str | None, split: str, data_dir: str | None):
    """(uint8 images, labels, names) of a dataset split, or of image files/folders (labels from the parent
    folder's name when it is one of the run's classes)."""
    cfg, classes = ck["config"], ck["classes"]
    path = Path(data) if data else None
    if path is not None and (path.is_dir() or path.is_file()) and not str(data).startswith("folder:"):
        paths = _image_paths([str(path)])
        labels = [classes.index(p.parent.name) if p.parent.name in classes else -1 for p in paths]
        return load_images(paths, ck["image_shape"]), np.array(labels, dtype=np.int64), [str(p) for p in paths]
    from .data import load_dataset
    ds = load_dataset(data or cfg["data"], data_dir or cfg.get("data_dir"), download=False,
                      image_size=cfg.get("image_size"), channels=cfg.get("channels"), seed=cfg.get("seed", 0))
    if list(ds.image_shape) != list(ck["image_shape"]):
        raise AeclassError(f"--data {ds.name}: images are {tuple(ds.image_shape)} but the model expects "
                           f"{tuple(ck['image_shape'])}")
    parts = {"test": [(ds.test_x, ds.test_y)], "train": [(ds.train_x, ds.train_y)],
             "all": [(ds.train_x, ds.train_y), (ds.test_x, ds.test_y)]}[split]
    x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    return x, y.numpy(), [""] * x.shape[0]


@torch.no_grad()
def _batched(fn, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    return torch.cat([fn(x[i:i + batch_size]).float() for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def encode(run, out, data: str | None = None, split: str = "test", dtype: str = "float32",
           data_dir: str | None = None) -> dict:
    """Write the codes of `data` (default: the run's dataset, its `split`) to `out` (.npz or .csv); returns the
    summary (n, code_dim, dtype, bytes_per_image, header_bytes, recon_mse, psnr_db when the model decodes)."""
    out = Path(out)
    if out.suffix not in (".npz", ".csv"):
        raise AeclassError(f"--out {out}: expected a .npz or .csv file")
    if split not in ("test", "train", "all"):
        raise AeclassError(f"--split: expected test, train or all, got '{split}'")
    model, ck = load_model(run)
    x, labels, names = _inputs(ck, data, split, data_dir)
    codes = _batched(lambda b: model.encode(to_float(b)), x).numpy()
    stored, extra = quantise(codes, dtype)
    meta = {"format": "aeclass-codes-1", "run": str(run), "data": data or ck["config"]["data"], "split": split,
            "n": int(codes.shape[0]), "code_dim": int(codes.shape[1]), "dtype": dtype,
            "bytes_per_image": int(codes.shape[1] * stored.itemsize),
            "header_bytes": int(sum(v.nbytes for v in extra.values()))}
    if model.has_decoder and ck.get("trained", {}).get("decoder", True):
        z = torch.from_numpy(dequantise(stored, extra))
        sq = torch.cat([((model.decode(z[i:i + 512]).float() - to_float(x[i:i + 512])) ** 2).flatten(1).mean(1)
                        for i in range(0, z.shape[0], 512)])
        mse = float(sq.mean())
        meta.update(recon_mse=mse, psnr_db=10 * math.log10(1 / mse) if mse > 0 else float("inf"))
    if out.suffix == ".npz":
        buf = io.BytesIO()
        np.savez(buf, codes=stored, labels=labels, names=np.array(names, dtype=str), meta=json.dumps(meta), **extra)
        atomic_write_bytes(out, buf.getvalue())
    else:
        _write_csv(out, stored, labels, names, {**meta, **{k: v.tolist() for k, v in extra.items()}})
    return meta


def _write_csv(path: Path, stored, labels, names, meta: dict) -> None:
    buf = io.StringIO()
    buf.write("# aeclass-codes " + json.dumps(meta) + "\n")
    w = csv.writer(buf)
    w.writerow(["name", "label"] + [f"c{i}" for i in range(stored.shape[1])])
    for name, label, row in zip(names, labels, stored):
        w.writerow([name, int(label)] + [repr(float(v)) if stored.dtype != np.int8 else int(v) for v in row])
    atomic_write_text(path, buf.getvalue())


def read_codes(path) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """(float32 codes, labels, names, meta) of a file `encode` wrote."""
    path = Path(path)
    if not path.is_file():
        raise AeclassError(f"{path}: no such codes file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                extra = {k: f[k] for k in ("q_min", "q_step") if k in f}
                return dequantise(f["codes"], extra), f["labels"], [str(n) for n in f["names"]], meta
        lines = path.read_text().splitlines()
        meta = json.loads(lines[0].removeprefix("# aeclass-codes "))
        rows = list(csv.reader(lines[2:]))
        stored = np.array([[float(v) for v in r[2:]] for r in rows], dtype=np.float32)
        if meta["dtype"] == "int8":
            stored = stored.astype(np.int8)
        extra = {k: np.array(meta[k], dtype=np.float32) for k in ("q_min", "q_step") if k in meta}
        return dequantise(stored, extra), np.array([int(r[1]) for r in rows]), [r[0] for r in rows], meta
    except (KeyError, ValueError, IndexError, OSError) as e:
        raise AeclassError(f"{path}: not a codes file written by aeclass encode ({type(e).__name__})") from None


@torch.no_grad()
def decode(run, codes_path, out_dir) -> dict:
    """One PNG per code in `out_dir` (NNNNN.png, or NNNNN_<file stem>.png for image files); returns a summary."""
    from PIL import Image
    model, ck = load_model(run)
    if not model.has_decoder:
        raise AeclassError(f"{run}: this model has no decoder")
    codes, labels, names, meta = read_codes(codes_path)
    if codes.ndim != 2 or codes.shape[1] != model.code_dim:
        raise AeclassError(f"{codes_path}: codes of size {codes.shape[-1]}, but the model's code has {model.code_dim}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = _batched(model.decode, torch.from_numpy(codes))
    u8 = (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    for i, img in enumerate(u8):
        stem = Path(names[i]).stem if names[i] else ""
        arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        path = out_dir / (f"{i:05d}_{stem}.png" if stem else f"{i:05d}.png")
        atomic_write(path, lambda f: Image.fromarray(arr).save(f, format="PNG"))
    return {"n": len(u8), "out": str(out_dir), **{k: meta[k] for k in ("dtype", "bytes_per_image", "header_bytes",
                                                                         "recon_mse", "psnr_db") if k in meta}}
