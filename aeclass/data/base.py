"""The in-memory dataset every source produces.

Images are kept as uint8 tensors (N, C, H, W) — 4x smaller than float32 and cheap to move to the training
device once; they are converted to float in [0, 1] batch by batch (see `to_float`). Labels are int64.
A semi-supervised view marks unlabelled training samples with -1, as scikit-learn does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConfigError

UNLABELLED = -1


@dataclass
class ImageDataset:
    """Train/test images as uint8 (N, C, H, W) tensors plus int64 labels and class names."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    info: dict = field(default_factory=dict)  # provenance: source path, split rule, resize, ...

    def __post_init__(self):
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.dtype != torch.uint8 or x.ndim != 4:
                raise ValueError(f"{self.name}: {split}_x must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(f"{self.name}: {split}_y must be int64 ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError(f"{self.name}: train and test image shapes differ")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def summary(self) -> dict:
        return {
            "name": self.name,
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "classes": list(self.classes),
            "train_size": int(self.train_x.shape[0]),
            "test_size": int(self.test_x.shape[0]),
            **self.info,
        }


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; done per batch on the training device."""
    return x.float().div_(255.0)


def labelled_subset(y: torch.Tensor, n_labels: int | None, seed: int, num_classes: int | None = None) -> torch.Tensor:
    """Indices of `n_labels` training samples, balanced per class, chosen by `seed`.

    Balanced means each class gets n_labels // C samples and the remainder goes, one each, to classes
    chosen at random (by the same seed). A class with too few samples gives all it has and the shortfall is
    spread over the others. `None` (or a count >= len(y)) keeps every label. Only training labels are ever
    passed here, so the test set cannot leak into the labelled subset.
    """
    n = int(y.shape[0])
    if bool((y < 0).any()):  # unlabelled samples (-1) are never drawn: the subset is of the labelled ones
        lab = torch.nonzero(y >= 0).flatten()
        return lab[labelled_subset(y[lab], n_labels, seed, num_classes)]
    if n_labels is None or n_labels >= n:
        return torch.arange(n)
    if n_labels <= 0:
        raise ConfigError(f"--labels must be a positive number of labels or 'all', got {n_labels}")
    rng = np.random.default_rng(seed)
    y_np = y.cpu().numpy()
    classes = np.unique(y_np) if num_classes is None else np.arange(num_classes)
    classes = classes[[np.any(y_np == c) for c in classes]]
    if n_labels < len(classes):
        raise ConfigError(f"--labels {n_labels} is fewer than the {len(classes)} classes: need at least one label per class")
    pools = {c: rng.permutation(np.flatnonzero(y_np == c)) for c in classes}
    quota = {c: n_labels // len(classes) for c in classes}
    for c in rng.permutation(classes)[: n_labels % len(classes)]:
        quota[c] += 1
    # Move shortfalls of small classes to classes that still have samples.
    short = sum(max(0, quota[c] - len(pools[c])) for c in classes)
    quota = {c: min(quota[c], len(pools[c])) for c in classes}
    while short > 0:
        spare = [c for c in rng.permutation(classes) if quota[c] < len(pools[c])]
        for c in spare[:short]:
            quota[c] += 1
            short -= 1
    picked = np.concatenate([pools[c][: quota[c]] for c in classes])
    return torch.from_numpy(np.sort(picked)).long()


def validation_subset(y: torch.Tensor, labelled: torch.Tensor, val, seed: int, num_classes: int) -> torch.Tensor:
    """The indices (a subset of `labelled`) held out for validation: `val` images, or that fraction of the
    labelled ones, balanced per class, drawn by a stream of its own (the seed's labelled draw is unchanged).
    Every class keeps at least one training label."""
    n_lab = int(labelled.numel())
    n_val = int(round(val * n_lab)) if val < 1 else int(val)
    if not 1 <= n_val <= n_lab - num_classes:
        raise ConfigError(f"--val {val}: {n_val} validation images would leave fewer than one training label per "
                          f"class ({n_lab} labelled images, {num_classes} classes)")
    picked = labelled[labelled_subset(y[labelled], n_val, seed + 1_000_003, num_classes)]
    left = torch.bincount(y[labelled], minlength=num_classes) - torch.bincount(y[picked], minlength=num_classes)
    if int(left.min()) < 1:
        raise ConfigError(f"--val {val}: class '{int(left.argmin())}' would have no training label left; "
                          "hold out fewer images")
    return picked


def semi_labels(y: torch.Tensor, labelled_idx: torch.Tensor) -> torch.Tensor:
    """A copy of `y` where every sample not in `labelled_idx` is UNLABELLED (-1)."""
    out = torch.full_like(y, UNLABELLED)
    out[labelled_idx] = y[labelled_idx]
    return out
