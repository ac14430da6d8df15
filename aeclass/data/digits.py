"""scikit-learn's bundled 8x8 handwritten digits: the embedded default, needs no download."""
from __future__ import annotations

import numpy as np
import torch

from .base import ImageDataset

# The test split is fixed (seed 0, 20 %, stratified) whatever the run's seed, so that accuracies from
# different seeds and strategies are measured on the same images.
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load_digits() -> ImageDataset:
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = _sk_load_digits()
    # Pixel values are 0..16; scale to the full uint8 range so every source shares one convention.
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    tr, te = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels)
    return ImageDataset(
        name="digits",
        train_x=torch.from_numpy(images[tr]),
        train_y=torch.from_numpy(labels[tr]),
        test_x=torch.from_numpy(images[te]),
        test_y=torch.from_numpy(labels[te]),
        classes=[str(i) for i in range(10)],
        info={"source": "sklearn.datasets.load_digits",
              "split": f"stratified {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%}, seed {SPLIT_SEED}"},
    )
