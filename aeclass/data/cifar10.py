"""CIFAR-10 from the canonical python-pickle release: `cifar-10-python.tar.gz` or its extracted directory.

The archive is read member by member with `tarfile`, never extracted to disk. The batches are pickles, and
unpickling runs code, so they go through `SafeUnpickler`, which only lets numpy rebuild arrays and rejects
every other global: a tampered batch raises DataError instead of executing anything. Integrity is checked
per member (the MD5s of the extracted files), so a repacked archive with canonical content is accepted too.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from ..errors import DataError
from .base import ImageDataset
from .download import fetch_or_fail, find_dir, find_file, md5_of

ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)
SUBDIRS = ("", "cifar10")
MEMBERS = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
# A canonical batch pickle is 31,035,704 bytes (10,000 images of 3,072 bytes, labels, names); twice that bounds
# what one member of a hostile archive can make us allocate.
MAX_MEMBER_BYTES = 64 << 20


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The only globals a pickled numpy array needs, under both numpy 1 and numpy 2 module names."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    allowed = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("_codecs", "encode")] = _latin1  # how Python 3 writes bytes in a protocol-2 pickle
    return allowed


def _latin1(text: str, encoding: str = "utf-8") -> bytes:
    """`_codecs.encode` limited to the latin-1 round trip that protocol-2 pickles of bytes use."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"unexpected _codecs.encode(..., {encoding!r})")
    return text.encode("latin1")


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that can rebuild numpy arrays, bytes and plain containers, and nothing else."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DataError(f"refuses to unpickle {module}.{name}: not a plain numpy array "
                            "(tampered or foreign file?)") from None


def safe_load(data: bytes, where: str):
    """Unpickle `data` with SafeUnpickler (bytes keys, as the Python 2 batches need); DataError on failure."""
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DataError as e:
        raise DataError(f"cifar10: {where} {e}") from None
    except Exception as e:  # any malformed pickle: EOFError, UnpicklingError, ValueError, ...
        raise DataError(f"cifar10: {where} is not a valid CIFAR-10 batch ({type(e).__name__}: {e})") from e


def locate(dirs: Iterable[os.PathLike | str]) -> Path | None:
    """The first archive or extracted directory found in d or d/cifar10, for each d in order."""
    for d in dirs:
        for sub in SUBDIRS:
            found = find_file([d], [ARCHIVE], [sub]) or find_dir([d], [FOLDER], [sub])
            if found:
                return found
    return None


def iter_members(source: Path) -> Iterator[tuple[str, str, bytes]]:
    """(member name, human-readable location, bytes) for each file of MEMBERS in an archive or directory."""
    if source.is_dir():
        for name in MEMBERS:
            path = source / name
            try:
                if path.stat().st_size > MAX_MEMBER_BYTES:
                    raise DataError(f"cifar10: {path} has {path.stat().st_size:,} bytes, above the "
                                    f"{MAX_MEMBER_BYTES:,} a CIFAR-10 batch can hold; not a CIFAR-10 file")
                yield name, str(path), path.read_bytes()
            except OSError as e:
                raise DataError(f"cifar10: cannot read {path}: {e.strerror or e} (expected {FOLDER}/{name})") from e
        return
    seen = set()
    try:
        with tarfile.open(source, "r:*") as tar:
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and name in MEMBERS and name not in seen:
                    seen.add(name)
                    if member.size > MAX_MEMBER_BYTES:  # tarfile reads exactly the declared size, in chunks
                        raise DataError(f"cifar10: {source}:{member.name} declares {member.size:,} bytes, above the "
                                        f"{MAX_MEMBER_BYTES:,} a CIFAR-10 batch can hold; corrupt or foreign archive")
                    yield name, f"{source}:{member.name}", tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"cifar10: {source} is not a readable tar.gz ({e}); truncated or corrupt download?") from e
    missing = [n for n in MEMBERS if n not in seen]
    if missing:
        raise DataError(f"cifar10: {source} lacks {', '.join(FOLDER + '/' + n for n in missing)}")


def _batch(obj, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (N, 3, 32, 32), int64 (N,)) from an unpickled batch dict, checking every field."""
    if not isinstance(obj, dict) or b"data" not in obj or b"labels" not in obj:
        raise DataError(f"cifar10: {where} is not a CIFAR-10 batch (expected a dict with b'data' and b'labels')")
    x, y = obj[b"data"], np.asarray(obj[b"labels"])
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise DataError(f"cifar10: {where} data is not uint8 (N, 3072)")
    if y.shape != (x.shape[0],) or y.dtype.kind not in "iu" or (len(y) and (y.min() < 0 or y.max() > 9)):
        raise DataError(f"cifar10: {where} labels are not {x.shape[0]} integers in 0..9")
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)


def load_cifar10(dirs: Iterable[os.PathLike | str], download: bool = True, verify: bool = True) -> ImageDataset:
    """The canonical 50,000/10,000 split as uint8 (N, 3, 32, 32) with the release's class names.

    A missing release is downloaded into <cache>/cifar10 when `download` is true. `verify` checks each
    member's MD5 (tests turn it off to use tiny synthetic archives).
    """
    from . import cache_dir

    dirs = [Path(d) for d in dirs]
    source = locate(dirs)
    if source is None:
        source = fetch_or_fail(f"cifar10: {ARCHIVE} (or {FOLDER}/)", URLS, cache_dir() / "cifar10" / ARCHIVE,
                               dirs, SUBDIRS, download, md5=ARCHIVE_MD5 if verify else None)
    batches, classes = {}, None
    for name, where, data in iter_members(source):
        if verify and (actual := md5_of(data)) != MEMBERS[name]:
            raise DataError(f"cifar10: {where} has md5 {actual}, expected {MEMBERS[name]}: not the canonical file")
        obj = safe_load(data, where)
        if name == "batches.meta":
            names = obj.get(b"label_names") if isinstance(obj, dict) else None
            if not isinstance(names, list) or len(names) != 10 or not all(isinstance(n, bytes) for n in names):
                raise DataError(f"cifar10: {where} has no list of 10 b'label_names'")
            classes = [n.decode("utf-8", "replace") for n in names]
        else:
            batches[name] = _batch(obj, where)
    train_x = np.concatenate([batches[n][0] for n in TRAIN])
    train_y = np.concatenate([batches[n][1] for n in TRAIN])
    test_x, test_y = batches["test_batch"]
    return ImageDataset(
        name="cifar10",
        train_x=torch.from_numpy(np.ascontiguousarray(train_x)),
        train_y=torch.from_numpy(train_y),
        test_x=torch.from_numpy(np.ascontiguousarray(test_x)),
        test_y=torch.from_numpy(test_y),
        classes=classes,
        info={"source": str(source), "split": "canonical data_batch_1..5 / test_batch",
              "verified": "md5 of each batch file" if verify else "not verified"},
    )
