"""scikit-learn estimators over the aeclass engine: an autoencoder classifier that learns from unlabelled rows.

    >>> from aeclass import AutoencoderClassifier
    >>> y_partial = y.copy(); y_partial[100:] = -1          # -1 = unlabelled, as sklearn.semi_supervised
    >>> clf = AutoencoderClassifier(strategy="joint", epochs=20).fit(X, y_partial)
    >>> clf.score(X_test, y_test)

The estimator contract holds: hyper-parameters are stored unchanged by `__init__`; `fit` returns self and
leaves its learned state in attributes ending in `_`; `get_params` / `set_params` make `clone`, `Pipeline`
and `GridSearchCV` work; `random_state` seeds everything, so a refit on CPU gives the same model.

Inputs: images as (N, C, H, W), (N, H, W) or (N, H, W, C) arrays (uint8 0-255, or floats in [0, 1]), or
rows of features (N, D), which are seen as 1 x 1 x D images. The engine keeps data as uint8, so features are
min-max scaled per column (on the fit data) and quantised to 256 levels; this costs nothing for images and
little for most features, but say so when precision matters. Each fit trains in a temporary run directory
(or `run_dir`), through the same engine and strategies as `aeclass train`.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .data.base import ImageDataset

UNLABELLED = -1


class _AEBase(BaseEstimator):
    def __init__(self, model="mlp_ae", strategy="joint", epochs=10, batch_size=64, lr=2e-3, noise=0.0,
                 recon_weight=1.0, model_kwargs=None, strategy_kwargs=None, augment="none", random_state=0,
                 threads=None, device="cpu", run_dir=None):
        self.model = model
        self.strategy = strategy
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.noise = noise
        self.recon_weight = recon_weight
        self.model_kwargs = model_kwargs
        self.strategy_kwargs = strategy_kwargs
        self.augment = augment
        self.random_state = random_state
        self.threads = threads
        self.device = device
        self.run_dir = run_dir

    # --- inputs as the engine's uint8 images ---------------------------------------------------------
    def _images(self, X, fit: bool) -> torch.Tensor:
        if not fit:
            X = validate_data(self, X, reset=False, allow_nd=True, dtype=None)
        X = np.asarray(X)
        if X.ndim == 2:  # rows of features: per-column min-max, as 1 x 1 x D images
            X = X.astype(np.float64)
            if fit:
                self.feature_min_, span = X.min(0), X.max(0) - X.min(0)
                self.feature_span_ = np.where(span > 0, span, 1.0)
            x01 = np.clip((X - self.feature_min_) / self.feature_span_, 0, 1)[:, None, None, :]
        else:
            if X.ndim == 3:
                X = X[:, None]
            if X.shape[1] not in (1, 3) and X.shape[-1] in (1, 3):
                X = X.transpose(0, 3, 1, 2)
            if X.dtype == np.uint8:
                return torch.from_numpy(np.ascontiguousarray(X))
            x01 = np.clip(X.astype(np.float64), 0, 1)
        return torch.from_numpy(np.rint(x01 * 255).astype(np.uint8))

    def _fit(self, X, y):
        from .config import TrainConfig
        from .train import train
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None "
                             "(mark unlabelled samples with -1)")
        X, y = validate_data(self, X, y, reset=True, allow_nd=True, dtype=None, ensure_min_samples=2)
        x = self._images(X, fit=True)
        y = np.asarray(y)
        labelled = y != UNLABELLED
        if not labelled.any():
            raise ValueError("y has no labelled sample (every label is -1)")
        check_classification_targets(y[labelled])
        self.classes_, codes = np.unique(y[labelled], return_inverse=True)
        yy = np.full(len(y), UNLABELLED, dtype=np.int64)
        yy[labelled] = codes
        ds = ImageDataset("arrays", x, torch.from_numpy(yy), x[labelled][:256], torch.from_numpy(codes[:256]),
                          [str(c) for c in self.classes_], {"source": "numpy arrays (sklearn estimator)"})
        with tempfile.TemporaryDirectory(prefix="aeclass-fit-") as tmp:
            out = Path(self.run_dir) if self.run_dir else Path(tmp) / "run"
            cfg = TrainConfig(data="arrays", model=self.model, strategy=self.strategy, epochs=int(self.epochs),
                              batch_size=int(min(self.batch_size, max(2, len(y)))), lr=float(self.lr),
                              noise=float(self.noise), recon_weight=float(self.recon_weight),
                              model_kwargs=dict(self.model_kwargs or {}), strategy_kwargs=dict(self.strategy_kwargs or {}),
                              augment=self.augment, seed=int(self.random_state or 0), threads=self.threads,
                              device=self.device, out=str(out), report=False)
            result = train(cfg, log=lambda *a: None, progress=False, dataset=ds)
        self.model_ = result.model.cpu().eval()
        self.metrics_ = result.metrics
        self.n_unlabelled_ = int((~labelled).sum())
        return self

    @torch.no_grad()
    def _outputs(self, X, key: str) -> np.ndarray:
        check_is_fitted(self, "model_")
        x = self._images(X, fit=False)
        parts = [self.model_(x[i:i + 512].float() / 255.0)[key].float() for i in range(0, x.shape[0], 512)]
        return torch.cat(parts).numpy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


class AutoencoderClassifier(ClassifierMixin, _AEBase):
    """An autoencoder-backed classifier; y = -1 marks unlabelled samples (see the module docstring)."""

    def fit(self, X, y):
        return self._fit(X, y)

    def predict_proba(self, X) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self._outputs(X, "logits")), dim=1).numpy()

    def predict(self, X) -> np.ndarray:
        scores = self._outputs(X, "logits")  # first: it raises NotFittedError before fit
        return self.classes_[scores.argmax(1)]

    def encode(self, X) -> np.ndarray:
        """The autoencoder's codes (AutoencoderTransformer gives them through transform, for a Pipeline)."""
        return self._outputs(X, "code")


class AutoencoderTransformer(TransformerMixin, _AEBase):
    """The codes of an autoencoder trained on X (y optional; -1 = unlabelled): a learned dimensionality
    reduction for a Pipeline. Without labels it trains the `autoencoder` strategy."""

    def __init__(self, model="mlp_ae", strategy="autoencoder", epochs=10, batch_size=64, lr=2e-3, noise=0.0,
                 recon_weight=1.0, model_kwargs=None, strategy_kwargs=None, augment="none", random_state=0,
                 threads=None, device="cpu", run_dir=None):
        super().__init__(model, strategy, epochs, batch_size, lr, noise, recon_weight, model_kwargs, strategy_kwargs,
                         augment, random_state, threads, device, run_dir)

    def fit(self, X, y=None):
        y = np.zeros(len(X), dtype=np.int64) if y is None else y
        y = np.asarray(y)
        if np.unique(y[y != UNLABELLED]).size < 2:  # a head needs two classes; codes need none
            y = np.where(np.arange(len(y)) % 2 == 0, 0, 1)
        return self._fit(X, y)

    def transform(self, X) -> np.ndarray:
        return self._outputs(X, "code")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # the network computes in float32, whatever X is
        return tags
