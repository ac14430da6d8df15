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
                 image_size: int | None = None, channels: int | None = None, seed: int = 0,
                 unlabelled: str | os.PathLike | None = None, labels_csv: str | os.PathLike | None = None) -> ImageDataset:
    """Load a dataset by name: 'digits', 'mnist', 'cifar10' or 'folder:PATH'.

    `data_dir` is searched first for file-based sources; `download` allows fetching canonical files into the
    cache when they are not found. `image_size`/`channels` set the image shape: for a folder dataset the
    common shape every image is converted to (default: the most common size and mode among its images); for
    the built-in sources a resize / channel conversion applied once at load. `seed` only matters for a folder without train/test
    sub-folders, which is split stratified 80/20 by that seed. `unlabelled` (a directory or .zip of images)
    adds unlabelled training images; `labels_csv` gives a folder's labels as file,label rows (see
    aeclass/data/unlabelled.py).
    """
    if spec.startswith("folder:"):
        from .folder import load_folder
        path = spec[len("folder:"):]
        if not path:
            raise DataError("--data folder: needs a path, e.g. --data folder:/path/to/images or folder:images.zip")
        ds = load_folder(path, image_size=image_size, channels=channels, seed=seed, labels_csv=labels_csv)
    else:
        if labels_csv:
            raise DataError(f"--labels-csv: labels a folder of images (--data folder:PATH), not '{spec}'")
        ds = _load_builtin(spec, data_dir, download)
        ds = _reshape(ds, image_size, channels) if (image_size or channels) else ds
    if unlabelled:
        from .unlabelled import add_unlabelled
        ds = add_unlabelled(ds, unlabelled)
    return ds


BUILTIN_CHANNELS = {"digits": 1, "mnist": 1, "cifar10": 3}


def channels_of(spec: str, channels: int | None = None) -> int | None:
    """The channel count of the images `spec` names, without loading them (a folder: a sample of its headers);
    None for a name load_dataset would refuse (it says why when it is asked to load)."""
    if channels:
        return int(channels)
    if spec.startswith("folder:") and spec[len("folder:"):]:
        from .folder import peek_channels
        return peek_channels(spec[len("folder:"):])
    return BUILTIN_CHANNELS.get(spec)


def dataset_for(cfg, **kw) -> ImageDataset:
    """The dataset a run's config (a TrainConfig or a saved config dict) names; `kw` overrides arguments."""
    get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
    args = dict(spec=get("data"), data_dir=get("data_dir"), image_size=get("image_size"), channels=get("channels"),
                seed=int(get("seed") or 0), unlabelled=get("unlabelled"), labels_csv=get("labels_csv"))
    return load_dataset(**{**args, **kw})


def _load_builtin(spec: str, data_dir, download: bool) -> ImageDataset:
    if spec == "digits":
        from .digits import load_digits
        return load_digits()
    if spec == "mnist":
        from .mnist import load_mnist
        return load_mnist(default_data_dirs(data_dir), download=download)
    if spec == "cifar10":
        from .cifar10 import load_cifar10
        return load_cifar10(default_data_dirs(data_dir), download=download)
    if Path(spec).expanduser().exists():  # a directory or zip of the user's own images, named without folder:
        raise DataError(f"--data: unknown dataset '{spec}'; '{spec}' is a path on disk: did you mean "
                        f"--data folder:{spec}?")
    raise DataError(f"--data: unknown dataset '{spec}'; expected one of: {', '.join(SOURCES)}")


def _reshape(ds: ImageDataset, image_size: int | None, channels: int | None) -> ImageDataset:
    """Resize (bilinear, antialiased) and/or change the channel count of a built-in dataset once, at load,
    e.g. MNIST at 32x32x3 to reuse a CIFAR-10 encoder."""
    from .augment import resize_batch, to_greyscale

    def convert(x):
        if image_size:
            x = resize_batch(x, image_size)
        if channels == 1 and x.shape[1] == 3:
            x = to_greyscale(x, keep_channels=False)
        elif channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1).contiguous()
        elif channels not in (None, 1, 3):
            raise DataError(f"channels must be 1 or 3, got {channels}")
        return x
    out = ImageDataset(ds.name, convert(ds.train_x), ds.train_y, convert(ds.test_x), ds.test_y, ds.classes, dict(ds.info))
    out.info["resize"] = f"{tuple(ds.image_shape)} -> {tuple(out.image_shape)} (bilinear, antialiased)"
    return out


__all__ = ["ImageDataset", "UNLABELLED", "load_dataset", "dataset_for", "labelled_subset", "semi_labels", "to_float",
           "default_data_dirs", "cache_dir", "DATA_ENV", "SOURCES"]
