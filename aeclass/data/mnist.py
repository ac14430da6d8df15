"""MNIST from its canonical IDX files (gzip-compressed or raw), found locally or downloaded.

Integrity is checked against the MD5 of the *decompressed* files, because those are byte-identical wherever
MNIST comes from, whereas .gz wrappers are often recompressed (see ../shared/datasets/README.md). Whether a
file is gzip is decided by its magic bytes, not its name. IDX headers are parsed strictly so that a truncated
or foreign file is reported by name instead of producing garbage images.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..errors import DataError
from .base import ImageDataset
from .download import fetch_or_fail, find_file, md5_of, read_at_most

# key -> (canonical file name, MD5 of the decompressed file)
FILES = {
    "train-images": ("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels": ("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624"),
    "test-images": ("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea"),
    "test-labels": ("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637"),
}
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
SUBDIRS = ("", "mnist", "MNIST/raw")  # MNIST/raw: where torchvision keeps its copy
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
IDX_HEADER_MAX = 4 + 4 * 3  # the images header; a labels header is 8 bytes
# The largest canonical MNIST-format file is train-images, 47,040,016 bytes; 4x that covers larger IDX sets
# of the same format while bounding what a hostile file can make us allocate.
MAX_IDX_BYTES = 200_000_000
CLASSES = [str(i) for i in range(10)]


def locate_files(dirs: Iterable[os.PathLike | str]) -> dict[str, Path | None]:
    """For each key of FILES, the first `name` or `name.gz` found in d, d/mnist, d/MNIST/raw (or None)."""
    dirs = list(dirs)
    return {key: find_file(dirs, (name, name + ".gz"), SUBDIRS) for key, (name, _) in FILES.items()}


def read_idx_bytes(path: os.PathLike | str) -> bytes:
    """The decompressed content of an IDX file, gzip or raw; DataError if it cannot be read.

    Bounded: a file (or what a .gz inflates to) is read only as far as its IDX header says it extends, plus
    one byte to notice more, and a header declaring more than MAX_IDX_BYTES is refused before reading on; a
    .gz is inflated in chunks, so a small file inflating to gigabytes costs at most its declared size
    (<= MAX_IDX_BYTES) in memory before it is refused. A file without an IDX header is read no further."""
    try:
        with open(path, "rb") as raw:
            is_gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            f = gzip.GzipFile(fileobj=raw, mode="rb") if is_gz else raw
            head = f.read(IDX_HEADER_MAX)
            declared = _declared_size(head)
            if declared is None:  # not an IDX header: parse_idx says so, from these bytes alone
                return head
            limit = declared
            if limit > MAX_IDX_BYTES:
                raise DataError(f"mnist: {path} declares {limit:,} bytes in its IDX header, above the "
                                f"{MAX_IDX_BYTES:,}-byte limit of an IDX file aeclass reads")
            data = head + read_at_most(f, max(0, limit - len(head)) + 1)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"mnist: {path} is not a valid gzip file ({e}); truncated or corrupt download?") from e
    except OSError as e:
        raise DataError(f"mnist: cannot read {path}: {e.strerror or e}") from e
    if len(data) > limit:
        raise DataError(f"mnist: {path} holds more than the {limit:,} bytes its IDX header declares; "
                        "corrupt or foreign file")
    return data


def _declared_size(head: bytes) -> int | None:
    """The total size an IDX header declares (header + items), or None when `head` is not an IDX header."""
    if len(head) < 4 or head[:2] != b"\x00\x00" or head[2] != 0x08:  # unsigned bytes: the only type MNIST uses
        return None
    ndim = head[3]
    if ndim < 1 or len(head) < 4 + 4 * ndim:
        return None
    dims = struct.unpack(f">{ndim}I", head[4:4 + 4 * ndim])
    return 4 + 4 * ndim + int(np.prod(dims, dtype=object))


def parse_idx(data: bytes, path: os.PathLike | str, images: bool) -> np.ndarray:
    """Images (N, 1, H, W) or labels (N,) as uint8 from IDX bytes, checking magic number and size."""
    magic, ndim = (IMAGES_MAGIC, 3) if images else (LABELS_MAGIC, 1)
    kind = "images" if images else "labels"
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"mnist: {path} is truncated ({len(data)} bytes, an IDX {kind} header needs {header})")
    found = struct.unpack(">i", data[:4])[0]
    if found != magic:
        raise DataError(f"mnist: {path} is not an IDX {kind} file (magic number {found}, expected {magic})")
    dims = struct.unpack(f">{ndim}i", data[4:header])
    if min(dims) < 0:
        raise DataError(f"mnist: {path} has a corrupt IDX header (dimensions {list(dims)})")
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise DataError(f"mnist: {path} has {len(data)} bytes but its header {list(dims)} implies {expected}; "
                        "truncated or corrupt file")
    arr = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()
    return arr[:, None] if images else arr


def load_mnist(dirs: Iterable[os.PathLike | str], download: bool = True, verify: bool = True) -> ImageDataset:
    """The canonical 60,000/10,000 split as uint8 (N, 1, 28, 28), classes '0'..'9'.

    Missing files are downloaded into <cache>/mnist when `download` is true. `verify` checks the MD5 of
    every decompressed file (tests turn it off to use tiny synthetic files).
    """
    from . import cache_dir

    dirs = [Path(d) for d in dirs]
    paths = locate_files(dirs)
    arrays, sources = {}, {}
    for key, (name, md5) in FILES.items():
        path = paths[key]
        if path is None:
            path = fetch_or_fail(f"mnist: {name}(.gz)", [m + name + ".gz" for m in MIRRORS],
                                 cache_dir() / "mnist" / f"{name}.gz", dirs, SUBDIRS, download,
                                 md5=md5 if verify else None, digest=lambda p: md5_of(read_idx_bytes(p)))
        data = read_idx_bytes(path)
        if verify and (actual := md5_of(data)) != md5:
            raise DataError(f"mnist: {path} decompresses to md5 {actual}, expected {md5}: not the canonical "
                            f"{name}; replace it (or delete it to download it again)")
        arrays[key] = parse_idx(data, path, images=key.endswith("images"))
        sources[key] = str(path)
    for split in ("train", "test"):
        x, y = arrays[f"{split}-images"], arrays[f"{split}-labels"]
        if len(x) != len(y):
            raise DataError(f"mnist: {sources[split + '-images']} has {len(x)} images but "
                            f"{sources[split + '-labels']} has {len(y)} labels")
        if len(y) and int(y.max()) > 9:
            raise DataError(f"mnist: {sources[split + '-labels']} has label {int(y.max())}, expected 0..9")
    if arrays["train-images"].shape[1:] != arrays["test-images"].shape[1:]:
        raise DataError(f"mnist: train images {arrays['train-images'].shape[2:]} and test images "
                        f"{arrays['test-images'].shape[2:]} differ in size")
    return ImageDataset(
        name="mnist",
        train_x=torch.from_numpy(arrays["train-images"]),
        train_y=torch.from_numpy(arrays["train-labels"].astype(np.int64)),
        test_x=torch.from_numpy(arrays["test-images"]),
        test_y=torch.from_numpy(arrays["test-labels"].astype(np.int64)),
        classes=list(CLASSES),
        info={"source": sources, "split": "canonical train/t10k files",
              "verified": "md5 of decompressed files" if verify else "not verified"},
    )
