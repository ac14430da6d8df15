"""What the `aeclass datasets` command reports: which sources exist, where their files are, whether they are intact.

Everything here only reads local files (no download) and returns plain dicts, so the CLI can print them as a
table or JSON. Problems with a file are reported in the dict (``ok: False`` and ``error``) rather than raised,
so that one bad file does not hide the state of the others; only an unknown source name raises DataError.
"""
from __future__ import annotations

import io
import os
from collections import Counter, defaultdict

import numpy as np
from PIL import Image

from ..errors import DataError
from . import SOURCES, default_data_dirs
from . import cifar10, folder, mnist
from .download import md5_of, search_dirs

_HINT = "pass --data-dir DIR or set AECLASS_DATA=DIR (searched: {})"


def list_sources() -> list[dict]:
    """Every source with a description and the files it expects."""
    return [
        {"name": "digits", "description": "scikit-learn's 8x8 handwritten digits (1,797 images), embedded",
         "files": []},
        {"name": "mnist", "description": "MNIST 28x28 grey digits, 60,000 train / 10,000 test",
         "files": [f"{name}(.gz)" for name, _ in mnist.FILES.values()],
         "searched": "DIR, DIR/mnist, DIR/MNIST/raw", "urls": list(mnist.MIRRORS)},
        {"name": "cifar10", "description": "CIFAR-10 32x32 colour, 10 classes, 50,000 train / 10,000 test",
         "files": [f"{cifar10.ARCHIVE} or {cifar10.FOLDER}/"], "searched": "DIR, DIR/cifar10",
         "urls": list(cifar10.URLS)},
        {"name": "folder:PATH", "description": "your images: a directory or .zip of class sub-folders, "
                                               "optionally split into train/ and test/",
         "files": ["PATH/<class>/<image>", "PATH/train/<class>/<image> + PATH/test/<class>/<image>"],
         "extensions": sorted(folder.IMAGE_EXTS)},
    ]


def _check_name(name: str) -> None:
    if name not in ("digits", "mnist", "cifar10") and not name.startswith("folder:"):
        raise DataError(f"unknown dataset '{name}'; expected one of: {', '.join(SOURCES)}")


def locate(name: str, data_dir: str | os.PathLike | None = None) -> dict:
    """{"source", "searched", "found": {file: path}, "missing": [file], "hint"} — local files only."""
    _check_name(name)
    dirs = default_data_dirs(data_dir)
    out = {"source": name, "searched": [], "found": {}, "missing": []}
    if name == "digits":
        out["found"]["embedded"] = "sklearn.datasets.load_digits"
    elif name == "mnist":
        out["searched"] = search_dirs(dirs, mnist.SUBDIRS)
        for key, path in mnist.locate_files(dirs).items():
            if path:
                out["found"][key] = str(path)
            else:
                out["missing"].append(f"{mnist.FILES[key][0]}(.gz)")
    elif name == "cifar10":
        out["searched"] = search_dirs(dirs, cifar10.SUBDIRS)
        path = cifar10.locate(dirs)
        if path:
            out["found"]["cifar10"] = str(path)
        else:
            out["missing"].append(f"{cifar10.ARCHIVE} or {cifar10.FOLDER}/")
    else:
        path = os.path.abspath(os.path.expanduser(name[len("folder:"):]))
        out["searched"] = [path]
        if os.path.exists(path):
            out["found"]["folder"] = path
        else:
            out["missing"].append(path)
    if out["missing"] and not name.startswith("folder:"):
        out["hint"] = _HINT.format(", ".join(out["searched"]))
    return out


def verify(name: str, data_dir: str | os.PathLike | None = None) -> dict:
    """{"source", "ok", "files": {file: {"path", "expected_md5", "actual_md5", "ok"[, "error"]}}}.

    MNIST is checked on the decompressed IDX content, CIFAR-10 per batch file (inside the archive if that is
    what was found; the archive's own MD5 is reported under "archive" for information). For folder:PATH see
    `check_folder`.
    """
    _check_name(name)
    if name.startswith("folder:"):
        return check_folder(name[len("folder:"):])
    out = {"source": name, "files": {}}
    if name == "mnist":
        paths = mnist.locate_files(default_data_dirs(data_dir))
        for key, (fname, md5) in mnist.FILES.items():
            out["files"][fname] = _md5_row(paths[key], md5, lambda p: md5_of(mnist.read_idx_bytes(p)))
    elif name == "cifar10":
        _verify_cifar10(cifar10.locate(default_data_dirs(data_dir)), out)
    out["ok"] = all(row["ok"] for row in out["files"].values())
    return out


def _md5_row(path, expected: str, digest) -> dict:
    row = {"path": str(path) if path else None, "expected_md5": expected, "actual_md5": None, "ok": False}
    if path is None:
        row["error"] = "not found"
        return row
    try:
        row["actual_md5"] = digest(path)
        row["ok"] = row["actual_md5"] == expected
    except (DataError, OSError) as e:
        row["error"] = str(e)
    return row


def _verify_cifar10(source, out: dict) -> None:
    rows = out["files"]
    for member, md5 in cifar10.MEMBERS.items():
        rows[member] = {"path": None, "expected_md5": md5, "actual_md5": None, "ok": False, "error": "not found"}
    if source is None:
        return
    if source.is_file():
        out["archive"] = _md5_row(source, cifar10.ARCHIVE_MD5, md5_of)
    try:
        for member, where, data in cifar10.iter_members(source):
            actual = md5_of(data)
            rows[member] = {"path": where, "expected_md5": cifar10.MEMBERS[member], "actual_md5": actual,
                            "ok": actual == cifar10.MEMBERS[member]}
    except DataError as e:
        for row in rows.values():
            if row["actual_md5"] is None:
                row["error"] = str(e)


def check_folder(path: str | os.PathLike, max_errors: int = 20) -> dict:
    """Decode every image of a folder source: {"source", "ok", "path", "layout", "split", "classes",
    "counts": {split: {class: n}}, "images", "sizes", "modes", "errors" (first `max_errors`), "n_errors"}.

    Without train/ and test/ folders the counts are those of the 80/20 split made at load time with seed 0.
    """
    out = {"source": f"folder:{path}", "ok": False, "path": os.path.abspath(os.path.expanduser(str(path))),
           "errors": [], "n_errors": 0}
    try:
        src = folder._open(path)
        try:
            entries, info = folder.scan(src)
            sizes, modes = Counter(), Counter()
            for _, _, name in entries:
                try:
                    with Image.open(io.BytesIO(folder._read(src, name))) as im:
                        sizes[f"{im.height}x{im.width}"] += 1
                        modes[im.mode] += 1
                        im.load()
                except Exception as e:  # any decoder failure means "this image is unusable"
                    out["n_errors"] += 1
                    if len(out["errors"]) < max_errors:
                        out["errors"].append(f"{src.label(name)}: {type(e).__name__}: {e}")
        finally:
            src.close()
    except DataError as e:
        out["errors"].append(str(e))
        out["n_errors"] += 1
        return out
    classes = sorted({c for _, c, _ in entries})
    splits = [s for s, _, _ in entries]
    if info["layout"] == "class folders":
        _, te = folder.split_indices(np.array([classes.index(c) for _, c, _ in entries]), seed=0)
        splits = ["train"] * len(entries)
        for i in te:
            splits[i] = "test"
        info["split"] = "stratified 80/20 per class at load time (counts for seed 0)"
    else:
        info["split"] = "train/ and test/ folders as given"
    counts = defaultdict(lambda: dict.fromkeys(classes, 0))
    for split, (_, c, _) in zip(splits, entries):
        counts[split][c] += 1
    out.update(info, classes=classes, counts=dict(counts), images=len(entries),
               sizes=dict(sizes.most_common(5)), modes=dict(modes), ok=out["n_errors"] == 0)
    return out
