"""Datasets: every source yields an `ImageDataset` of uint8 (N, C, H, W) tensors.

    >>> from aeclass.data import load_dataset
    >>> ds = load_dataset("digits")
    >>> ds.train_x.shape, ds.num_classes
    (torch.Size([1437, 1, 8, 8]), 10)

Sources: ``digits`` (embedded), ``mnist``, ``cifar10`` (canonical files, downloaded into the cache when
online) and ``folder:PATH`` (a directory or .zip of class sub-folders).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .base import UNLABELLED, ImageDataset, labelled_subset, semi_labels, to_float

DATA_ENV = "AECLASS_DATA"
SOURCES = ("digits", "mnist", "cifar10", "folder:PATH")


def default_data_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where file-based sources look, in order: --data-dir, $AECLASS_DATA, then the cache directory."""
    dirs = []
    if data_dir:
        dirs.append(Path(data_dir).expanduser())
    if os.environ.get(DATA_ENV):
        dirs.extend(Path(p).expanduser() for p in os.environ[DATA_ENV].split(os.pathsep) if p)
    dirs.append(cache_dir())
    return dirs


def cache_dir() -> Path:
    """~/.cache/aeclass (or $XDG_CACHE_HOME/aeclass): where downloads go."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "aeclass"


def load_dataset(spec: str, data_dir: str | os.PathLike | None = None, download: bool = True,
                 image_size: int | None = None, channels: int | None = None, seed: int = 0) -> ImageDataset:
    """Load a dataset by name: 'digits', 'mnist', 'cifar10' or 'folder:PATH'.

    `data_dir` is searched first for file-based sources; `download` allows fetching canonical files into the
    cache when they are not found. `image_size`/`channels` set the common shape of a folder dataset (default:
    the most common size and mode among its images). `seed` only matters for a folder without train/test
    sub-folders, which is split stratified 80/20 by that seed.
    """
    if spec == "digits":
        from .digits import load_digits
        return load_digits()
    if spec == "mnist":
        from .mnist import load_mnist
        return load_mnist(default_data_dirs(data_dir), download=download)
    if spec == "cifar10":
        from .cifar10 import load_cifar10
        return load_cifar10(default_data_dirs(data_dir), download=download)
    if spec.startswith("folder:"):
        from .folder import load_folder
        path = spec[len("folder:"):]
        if not path:
            raise DataError("--data folder: needs a path, e.g. --data folder:/path/to/images or folder:images.zip")
        return load_folder(path, image_size=image_size, channels=channels, seed=seed)
    raise DataError(f"--data: unknown dataset '{spec}'; expected one of: {', '.join(SOURCES)}")


__all__ = ["ImageDataset", "UNLABELLED", "load_dataset", "labelled_subset", "semi_labels", "to_float",
           "default_data_dirs", "cache_dir", "DATA_ENV", "SOURCES"]
