"""Unlabelled images beside the labelled ones, the way users have them.

Three ways in, each converted exactly like the labelled training images (mode, size, alpha):
- a folder named ``unlabelled/`` beside the class folders (aeclass/data/folder.py);
- ``--unlabelled PATH``: another directory or .zip of images in any layout (`add_unlabelled`);
- ``--labels-csv FILE`` over ``--data folder:IMAGES``: the common export of labelling tools, one row
  ``file,label`` per labelled image (paths relative to IMAGES); every other image in IMAGES is unlabelled
  (`scan_with_csv`).
Unlabelled images carry label -1 (`UNLABELLED`), as in scikit-learn's semi-supervised estimators, and are
always training images: never test or validation images.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .base import UNLABELLED, ImageDataset
from .folder import HIDDEN, IMAGE_EXTS, UNLABELLED_SPLIT, _open, decode_all

_HEADERS = {("file", "label"), ("filename", "label"), ("path", "label"), ("image", "label")}


def _images(src) -> list[str]:
    return [n for n in src.names if os.path.splitext(n)[1].lower() in IMAGE_EXTS
            and not any(HIDDEN.match(p) for p in n.split("/"))]


def _duplicates(src, names: list[str], where: str) -> None:
    """Zips may hold one name twice (the later entry shadows the earlier): refuse, naming it."""
    infos = getattr(src, "zf", None)
    if infos is None:
        return
    seen: set = set()
    for i in infos.infolist():
        n = i.filename.replace("\\", "/")
        if n in seen and n in names:
            raise DataError(f"{where}: the zip holds '{n}' twice; remove one of them")
        seen.add(n)


def read_labels_csv(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, int]]:
    """({relative file: label}, {relative file: its row}) from a CSV of rows file,label (a header row is
    optional). One clear line, with the row number, for an empty label, a missing column or a file listed twice."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"--labels-csv {p}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    rows = list(csv.reader(io.StringIO(text)))
    labels: dict[str, tuple[str, int]] = {}
    for i, row in enumerate(rows, start=1):
        if not row or all(not c.strip() for c in row):
            continue
        if i == 1 and tuple(c.strip().lower() for c in row[:2]) in _HEADERS:
            continue
        if len(row) < 2 or not row[0].strip():
            raise DataError(f"--labels-csv {p}, row {i}: expected file,label, got {','.join(row)!r}")
        name, label = row[0].strip().replace("\\", "/").removeprefix("./"), row[1].strip()
        if not label:
            raise DataError(f"--labels-csv {p}, row {i}: '{name}' has an empty label")
        if name in labels:
            raise DataError(f"--labels-csv {p}, row {i}: '{name}' is listed twice (first in row {labels[name][1]})")
        labels[name] = (label, i)
    if not labels:
        raise DataError(f"--labels-csv {p}: no rows of file,label")
    return {k: v[0] for k, v in labels.items()}, {k: v[1] for k, v in labels.items()}


def scan_with_csv(src, csv_path) -> tuple[list[tuple[str, str, str]], dict]:
    """scan()'s (split, class, name) entries for a folder whose labels come from a CSV: listed images get
    their label, all others are unlabelled."""
    table, rows = read_labels_csv(csv_path)
    images = _images(src)
    _duplicates(src, images, f"--data {src.label('').rstrip('/:')}")
    present = set(images)
    for name, row in rows.items():
        if name not in present:
            raise DataError(f"--labels-csv {csv_path}, row {row}: no image '{name}' under {src.label('').rstrip('/:')}")
    entries = sorted(("", table[n], n) if n in table else (UNLABELLED_SPLIT, "", n) for n in images)
    if len({c for s, c, _ in entries if s != UNLABELLED_SPLIT}) < 2:
        raise DataError(f"--labels-csv {csv_path}: needs at least two classes")
    return entries, {"layout": "class folders", "labels": f"from {Path(csv_path).name} ({len(table)} rows)", "root": "."}


def add_unlabelled(ds: ImageDataset, path: str | os.PathLike) -> ImageDataset:
    """`ds` with the images of `path` (a directory or .zip, any layout) added to its training set as
    unlabelled, converted to ds's image shape; refuses a source that overlaps the labelled one."""
    src = _open(path)
    try:
        names = _images(src)
        where = src.label("").rstrip("/:")
        if not names:
            raise DataError(f"--unlabelled {where}: no images ({' '.join(sorted(IMAGE_EXTS))}) in it")
        _duplicates(src, names, f"--unlabelled {where}")
        _refuse_overlap(ds, src, names, where)
        c, h, w = ds.image_shape
        x, _ = decode_all(src, names, (h, w), c)
    finally:
        src.close()
    info = dict(ds.info, unlabelled=int(ds.info.get("unlabelled", 0)) + len(names), unlabelled_source=str(where))
    y = torch.full((len(names),), UNLABELLED, dtype=torch.int64)
    return ImageDataset(ds.name, torch.cat([ds.train_x, torch.from_numpy(x)]), torch.cat([ds.train_y, y]),
                        ds.test_x, ds.test_y, ds.classes, info)


def _refuse_overlap(ds: ImageDataset, src, names: list[str], where: str) -> None:
    """An image both labelled and unlabelled would be trained on twice, once without its label: refuse it
    when the unlabelled source is inside (or is) the labelled folder."""
    root = ds.info.get("source")
    if not root or not hasattr(src, "root"):
        return
    labelled_root, unl_root = Path(root).resolve(), Path(src.root).resolve()
    if unl_root == labelled_root or labelled_root in unl_root.parents or unl_root in labelled_root.parents:
        raise DataError(f"--unlabelled {where}: overlaps the labelled images of {labelled_root}; a file cannot be "
                        "both labelled and unlabelled (put unlabelled images in a folder of their own)")


def counts(y: np.ndarray | torch.Tensor) -> dict:
    y = torch.as_tensor(y)
    return {"labelled": int((y >= 0).sum()), "unlabelled": int((y < 0).sum())}
