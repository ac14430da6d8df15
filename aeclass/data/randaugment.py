"""RandAugment-style strong augmentation on whole batches (Cubuk et al. 2020, as FixMatch uses it: Sohn et al.
2020, two operations per image at a random magnitude each, then a cut-out), written as tensor ops.

Every image draws OPS_PER_IMAGE operations from OPERATIONS (with replacement) and a magnitude in [0, 1] for each;
each operation is computed for the whole batch and kept where an image drew it (torch.where), because on a batch
of 32x32 images a dozen elementwise passes cost less than splitting the batch by operation. The geometric ones
(rotation, shear, translation) are composed into one affine map per image and applied in one grid_sample. The
ranges are FixMatch's (its Table 12): rotation up to 30 degrees, shear up to 0.3, translation up to 0.3 of the
side, posterize to 4-8 bits, solarize at any threshold, enhancement factors 1 +- 0.95 for brightness, colour,
contrast and sharpness. The cut-out square's side is uniform in [1, side / 2] (FixMatch: up to half the side).

Input and output: float (N, C, H, W) in [0, 1]. All random draws come from the caller's CPU generator, so a
resumed run draws the same views.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .augment import LUMA_601, cut_squares  # the square cut-out lives with the other batch ops

COLOUR = ("identity", "autocontrast", "equalize", "brightness", "colour", "contrast", "sharpness", "posterize",
          "solarize")
GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
OPERATIONS = COLOUR + GEOMETRIC
OPS_PER_IMAGE = 2


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    w = torch.tensor(LUMA_601, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance: degenerate + factor * (x - degenerate), clipped; factor 1 is the identity."""
    return (degenerate + factor * (x - degenerate)).clamp(0, 1)


def _colour_op(name: str, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Operation `name` on the whole batch, magnitude m (N, 1, 1, 1) in [0, 1]."""
    signed = 1 + 0.95 * (2 * m - 1)  # an enhancement factor in [0.05, 1.95]
    if name == "autocontrast":
        lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
        return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-6), x)
    if name == "equalize":  # the rank of each pixel in its channel: a histogram equalisation without bins
        flat = x.flatten(2)
        ranks = flat.argsort(-1).argsort(-1).to(x.dtype)
        return (ranks / max(1, flat.shape[-1] - 1)).view_as(x)
    if name == "brightness":
        return _blend(torch.zeros_like(x), x, signed)
    if name == "colour":
        return _blend(_grey(x).expand_as(x), x, signed)
    if name == "contrast":
        return _blend(_grey(x).mean((2, 3), keepdim=True).expand_as(x), x, signed)
    if name == "sharpness":
        k = torch.tensor([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]], device=x.device, dtype=x.dtype) / 13
        smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(x.shape[1], 1, 3, 3), groups=x.shape[1])
        return _blend(smooth, x, signed)
    if name == "posterize":  # keep 4 to 8 bits of each 8-bit value
        bits = (4 + torch.round(4 * m)).to(torch.int64)
        step = (2 ** (8 - bits)).to(x.dtype)
        return torch.floor(torch.round(x * 255) / step) * step / 255
    if name == "solarize":  # invert the values at or above a threshold in [0, 1]
        return torch.where(x >= m, 1 - x, x)
    raise ValueError(f"unknown colour operation '{name}'")


def _affine(chosen: dict, mags: dict, n: int, gen: torch.Generator) -> torch.Tensor:
    """One 2x3 affine matrix per image (grid_sample's normalised coordinates) composing the geometric operations
    each image drew, each with a random sign."""
    theta = torch.eye(3).repeat(n, 1, 1)
    for name in GEOMETRIC:
        sign = torch.randint(0, 2, (n,), generator=gen).float() * 2 - 1
        v = torch.where(chosen[name], sign * mags[name], torch.zeros(n))
        m = torch.eye(3).repeat(n, 1, 1)
        if name == "rotate":
            a = v * math.radians(30)
            m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
        elif name == "shear_x":
            m[:, 0, 1] = 0.3 * v
        elif name == "shear_y":
            m[:, 1, 0] = 0.3 * v
        elif name == "translate_x":
            m[:, 0, 2] = 2 * 0.3 * v  # normalised coordinates span 2 per side
        else:
            m[:, 1, 2] = 2 * 0.3 * v
        theta = theta @ m
    return theta[:, :2]


def rand_augment(x: torch.Tensor, gen: torch.Generator, cutout: bool = True) -> torch.Tensor:
    """Two RandAugment operations per image at random magnitudes, then (with `cutout`) one zeroed square."""
    n, c, h, w = x.shape
    picks = torch.randint(0, len(OPERATIONS), (n, OPS_PER_IMAGE), generator=gen)
    mags = torch.rand(n, OPS_PER_IMAGE, generator=gen)
    chosen = {name: (picks == i).any(1) for i, name in enumerate(OPERATIONS)}
    # an operation drawn twice uses its first magnitude
    magnitude = {name: torch.where(picks[:, 0] == i, mags[:, 0], mags[:, 1]) for i, name in enumerate(OPERATIONS)}
    for name in COLOUR[1:]:
        if bool(chosen[name].any()):
            keep = chosen[name].to(x.device).view(n, 1, 1, 1)
            x = torch.where(keep, _colour_op(name, x, magnitude[name].to(x.device, x.dtype).view(n, 1, 1, 1)), x)
    theta = _affine(chosen, magnitude, n, gen).to(x.device, x.dtype)
    if bool(torch.stack([chosen[g] for g in GEOMETRIC]).any()):
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # fill with mid-grey (FixMatch fills with 128), not black: a black border would be a new, easy cue
        x = F.grid_sample(x - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5
    return cut_out(x, gen) if cutout else x


def cut_out(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One zeroed square per image, its side uniform in [1, side / 2], centred anywhere (it may overhang)."""
    n, _, h, w = x.shape
    side = min(h, w)
    k = torch.randint(1, max(2, side // 2 + 1), (n, 1, 1, 1), generator=gen)
    return cut_squares(x, k, gen)
