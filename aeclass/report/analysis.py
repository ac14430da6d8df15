"""What the report computes with the trained model: codes, predictions, reconstructions, 2-D maps of the
code space, input-gradient saliency and Grad-CAM. Plain tensors in, plain tensors out; no plotting here."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..data import to_float
from ..models import AEClassifier


@dataclass
class TestPass:
    """One forward pass of the model over the whole test set (codes always, logits with a head)."""
    codes: torch.Tensor                 # (N, D) float32, on the CPU
    probs: torch.Tensor | None          # (N, K) softmax probabilities, or None without a head
    preds: torch.Tensor | None          # (N,) int64


@torch.no_grad()
def test_pass(model: AEClassifier, x: torch.Tensor, classify: bool, batch_size: int = 1024) -> TestPass:
    dev = next(model.parameters()).device
    codes, probs = [], []
    for i in range(0, x.shape[0], batch_size):
        xb = to_float(x[i:i + batch_size].to(dev))
        code = model.encode(xb)
        codes.append(code.float().flatten(1).cpu())
        if classify:
            probs.append(torch.softmax(model.classify(code).float(), dim=1).cpu())
    p = torch.cat(probs) if probs else None
    return TestPass(torch.cat(codes), p, p.argmax(1) if p is not None else None)


def pick(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """k indices out of n, fixed by `seed` (a dataset sorted by class still gives a mixed sample)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:min(k, n)]


def one_per_class(y: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Up to k test indices covering as many classes as possible, in class order, then topped up at random."""
    order = pick(y.shape[0], y.shape[0], seed)
    chosen, seen = [], set()
    for i in order.tolist():
        c = int(y[i])
        if c not in seen:
            seen.add(c)
            chosen.append(i)
    chosen.sort(key=lambda i: int(y[i]))
    chosen = chosen[:k]
    taken = set(chosen)
    rest = [i for i in order.tolist()[:2 * k] if i not in taken]
    return torch.tensor(chosen + rest[:k - len(chosen)], dtype=torch.long)


@torch.no_grad()
def reconstruct(model: AEClassifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(originals in [0, 1], reconstructions, per-image MSE) for uint8 images x, all on the CPU."""
    dev = next(model.parameters()).device
    xf = to_float(x.to(dev))
    r = model(xf, classify=False)["recon"].float()  # forward, not decode(encode()): a Ladder decodes with its laterals
    mse = ((r - xf) ** 2).mean(dim=(1, 2, 3))
    return xf.cpu(), r.cpu(), mse.cpu()


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]: 10 log10(1 / MSE)."""
    return float("inf") if mse <= 0 else 10.0 * float(np.log10(1.0 / mse))


def latent_2d(codes: torch.Tensor, method: str = "pca", seed: int = 0) -> tuple[np.ndarray, str]:
    """Project codes (N, D) to 2-D; returns the points and a one-line description of the projection."""
    z = codes.double().numpy()
    n, d = z.shape
    if d == 1:
        return np.stack([z[:, 0], np.zeros(n)], 1), "the code has one dimension: shown on the x axis"
    if method == "tsne":
        return _tsne(z, seed)
    zc = torch.from_numpy(z - z.mean(0))
    _, sv, vh = torch.linalg.svd(zc, full_matrices=False)
    comps = vh[:2]
    comps = comps * torch.sign(comps[torch.arange(2), comps.abs().argmax(1)])[:, None]  # fixed signs
    xy = (zc @ comps.T).numpy()
    var = sv.pow(2)
    ev = (var[:2] / var.sum().clamp_min(1e-30) * 100).tolist()
    return xy, f"PCA of the {d}-D codes; the two components explain {ev[0]:.1f}% and {ev[1]:.1f}% of their variance"


def _tsne(z: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    import os
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits
    n, d = z.shape
    perplexity = float(max(2.0, min(30.0, (n - 1) / 3)))
    tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed)
    # OpenMP threads that outnumber free cores spin and slow t-SNE down many times over: stay modest.
    with threadpool_limits(limits=max(1, min(4, (os.cpu_count() or 2) // 2))):
        xy = tsne.fit_transform(z)
    return xy, f"t-SNE (perplexity {perplexity:g}) of the {d}-D codes"


def saliency(model: AEClassifier, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|d logit_target / d x|, max over channels: (N, H, W), each map scaled to [0, 1]."""
    dev = next(model.parameters()).device
    xf = to_float(x.to(dev)).requires_grad_(True)
    with torch.enable_grad():
        logits = model.classify(model.encode(xf))
        score = logits.gather(1, target.to(dev)[:, None]).sum()
        (grad,) = torch.autograd.grad(score, xf)
    s = grad.abs().amax(dim=1).detach().float().cpu()
    return s / s.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]


def _feature_maps(model: AEClassifier) -> list[nn.Module]:
    """The encoder's modules that may output (N, C, H, W) activations, in order (ReLUs after convs)."""
    return [m for m in model.encoder.modules() if isinstance(m, (nn.ReLU, nn.Conv2d, nn.BatchNorm2d))]


def grad_cam_layer(model: AEClassifier, image_shape, min_size: int = 4) -> nn.Module | None:
    """The deepest rectified conv activation that is still at least `min_size` pixels on a side (a finer map
    than the last layer's on small images such as 8x8 digits); None for an encoder without conv layers."""
    candidates = _feature_maps(model)
    if not any(isinstance(m, nn.Conv2d) for m in candidates):
        return None
    shapes: dict[nn.Module, tuple] = {}
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.__setitem__(m, tuple(o.shape)))
             for m in candidates if isinstance(m, nn.ReLU)]
    dev = next(model.parameters()).device
    try:
        with torch.no_grad():
            model.encode(torch.zeros(1, *image_shape, device=dev))
    finally:
        for h in hooks:
            h.remove()
    four_d = [(m, s) for m, s in shapes.items() if len(s) == 4]
    if not four_d:
        return None
    big = [m for m, s in four_d if min(s[2], s[3]) >= min_size]
    return big[-1] if big else four_d[0][0]


def grad_cam(model: AEClassifier, x: torch.Tensor, target: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) at `layer`: ReLU(sum_k mean(dy/dA_k) A_k), upsampled to the image
    size and scaled to [0, 1] per image: (N, H, W)."""
    dev = next(model.parameters()).device
    xf = to_float(x.to(dev))
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        with torch.enable_grad():
            xf.requires_grad_(True)  # keeps a graph even when the encoder's first layers are frozen
            logits = model.classify(model.encode(xf))
            score = logits.gather(1, target.to(dev)[:, None]).sum()
            (grad,) = torch.autograd.grad(score, store["a"])
    finally:
        handle.remove()
    a = store["a"].detach()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * a).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)[:, 0].float().cpu()
    return cam / cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
