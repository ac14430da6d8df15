"""Generation from a trained run's decoder: `aeclass sample` and `aeclass interpolate`.

    aeclass sample RUN --n 64 --out grid.png              # prior samples, decoded
    aeclass sample RUN --n 64 --class 3 --out threes.png  # class-conditional latent statistics
    aeclass interpolate RUN a.png b.png --steps 8 --out strip.png

Where the codes come from:
- a variational model (vae_mlp, vae_conv) samples its prior N(0, I);
- any other model with a decoder has no prior, so its codes are drawn from a Gaussian fitted to the codes of
  its training images (their mean and covariance): a plain autoencoder's decoder only knows that region;
- `--class K` (a model whose head the run trained) draws from the Gaussian fitted to the codes of the training
  images the head assigns to class K. The head's predictions, not the labels, pick the images: a few-label
  run knows few labels, and its head is what it learned of the classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import to_float
from .errors import AeclassError
from .inference import load_images, load_model

MAX_FIT_IMAGES = 20000  # training images the code statistics are fitted on (enough for a 256-d covariance)


@dataclass
class Latent:
    """A Gaussian over codes: z = mean + eps @ chol.T."""
    mean: torch.Tensor
    chol: torch.Tensor
    source: str  # how it was obtained, for the user

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        eps = torch.randn(n, self.mean.numel(), generator=gen)
        return self.mean + eps @ self.chol.T


def _generative(run) -> tuple:
    model, ck = load_model(run)
    if not model.has_decoder or not ck.get("trained", {}).get("decoder", True):
        raise AeclassError(f"{run}: this model has no trained decoder, so it cannot generate images")
    return model, ck


def training_images(ck: dict) -> torch.Tensor:
    """The run's training images (uint8), from its saved config; at most MAX_FIT_IMAGES, a seeded choice."""
    from .data import load_dataset
    cfg = ck["config"]
    ds = load_dataset(cfg["data"], cfg.get("data_dir"), download=False, image_size=cfg.get("image_size"),
                      channels=cfg.get("channels"), seed=cfg.get("seed", 0))
    x = ds.train_x
    if x.shape[0] > MAX_FIT_IMAGES:
        x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:MAX_FIT_IMAGES]]
    return x


@torch.no_grad()
def codes_and_predictions(model, x: torch.Tensor, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Codes (the mean code of a VAE) and head predictions of uint8 images."""
    codes, preds = [], []
    for i in range(0, x.shape[0], batch_size):
        out = model(to_float(x[i:i + batch_size]), decode=False)
        codes.append(out["code"].float())
        if "logits" in out:
            preds.append(out["logits"].argmax(1))
    return torch.cat(codes), (torch.cat(preds) if preds else None)


def fitted(codes: torch.Tensor, source: str) -> Latent:
    """The Gaussian of `codes` (mean, covariance + a small ridge so the Cholesky factor exists)."""
    mean = codes.mean(0)
    c = codes.double() - mean.double()
    cov = c.T @ c / max(1, codes.shape[0] - 1)
    cov += torch.eye(cov.shape[0], dtype=cov.dtype) * (1e-6 + 1e-4 * float(cov.diagonal().mean()))
    return Latent(mean, torch.linalg.cholesky(cov).float(), source)


def latent_for(model, ck: dict, klass: str | None = None) -> Latent:
    """Where `aeclass sample` draws codes from (see the module docstring)."""
    variational = "variational" in model.capabilities
    if klass is None and variational:
        k = model.code_dim
        return Latent(torch.zeros(k), torch.eye(k), "the prior N(0, I)")
    if klass is None:
        codes, _ = codes_and_predictions(model, training_images(ck))
        return fitted(codes, f"a Gaussian fitted to the codes of {codes.shape[0]} training images")
    if not model.has_head or not ck.get("trained", {}).get("head", True):
        raise AeclassError(f"--class {klass}: this run trained no classification head (try a vae-joint run, or "
                           "--strategy linear-probe --init RUN)")
    k = class_index(klass, ck["classes"])
    codes, preds = codes_and_predictions(model, training_images(ck))
    mine = codes[preds == k]
    if mine.shape[0] < 2:
        raise AeclassError(f"--class {klass}: the head assigns {mine.shape[0]} training image(s) to this class; too few")
    return fitted(mine, f"a Gaussian fitted to the codes of the {mine.shape[0]} training images the head calls "
                        f"'{ck['classes'][k]}'")


def class_index(klass: str, classes: list[str]) -> int:
    if str(klass) in classes:
        return classes.index(str(klass))
    if str(klass).isdigit() and int(klass) < len(classes):
        return int(klass)
    raise AeclassError(f"--class: unknown class '{klass}'; the classes are {', '.join(classes)}")


@torch.no_grad()
def sample(run, n: int = 64, klass: str | None = None, seed: int = 0) -> tuple[torch.Tensor, str]:
    """`n` decoded samples (float (n, C, H, W) in [0, 1]) and where their codes came from."""
    model, ck = _generative(run)
    latent = latent_for(model, ck, klass)
    z = latent.sample(n, torch.Generator().manual_seed(seed))
    return model.decode(z).float(), latent.source


@torch.no_grad()
def interpolate(run, image_a, image_b, steps: int = 8) -> torch.Tensor:
    """The decoded codes on the straight line from image A's code to image B's, both ends included."""
    if steps < 2:
        raise AeclassError("--steps: at least 2 (the two ends)")
    model, ck = _generative(run)
    x = to_float(load_images([Path(image_a), Path(image_b)], ck["image_shape"]))
    za, zb = model.encode(x).float()
    t = torch.linspace(0, 1, steps).unsqueeze(1)
    return model.decode((1 - t) * za + t * zb).float()


def grid(images: torch.Tensor, cols: int, pad: int = 1, min_size: int = 32) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> an (H', W', C) or (H', W') uint8 mosaic with white gutters; small images
    are enlarged by a whole factor (nearest neighbour) so that 8x8 digits can be seen."""
    x = (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    f = max(1, -(-min_size // x.shape[2]))
    x = x.repeat(f, axis=2).repeat(f, axis=3)
    n, c, h, w = x.shape
    rows = -(-n // cols)
    out = np.full((c, rows * (h + pad) - pad, cols * (w + pad) - pad), 255, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        out[:, r * (h + pad): r * (h + pad) + h, k * (w + pad): k * (w + pad) + w] = x[i]
    return out[0] if c == 1 else out.transpose(1, 2, 0)


def save_png(array: np.ndarray, path) -> Path:
    from PIL import Image
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from .io import atomic_write
    atomic_write(path, lambda f: Image.fromarray(array).save(f, format="PNG"))
    return path
