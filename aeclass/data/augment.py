"""Batched preprocessing and training-time augmentation, as plain tensor ops on the batch's own device.

Augmentation runs on whole float batches (N, C, H, W) in [0, 1] — the output of `to_float` — right where the
batch already lives (usually the GPU), so there is no per-sample Python loop and no DataLoader worker pool.

Determinism: every random parameter is drawn from the caller's `torch.Generator`, which must live on the
CPU, and only then moved to the batch's device. The same seed therefore picks the same crops, flips,
angles and greyscale choices on CPU and CUDA (pixel values then agree up to float rounding).

Order: crop -> flip -> rotation -> greyscale -> cut-out. Crop and flip only move pixels (exact), so they come
before the one interpolating op; the cut-out comes last so that its square stays a square of zeros. Any op that
is switched off is skipped entirely, and a config with every op off returns the input tensor object itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError

# ITU-R BT.601 luma weights (what PIL's "L" mode uses), so greyscale here matches greyscale on load.
LUMA_601 = (0.299, 0.587, 0.114)

_FORMAT = ("expected 'none', 'default' or a comma-separated list of crop=PIXELS, flip, rot=DEGREES, "
           "grey=PROB, cutout=PIXELS (e.g. crop=4,flip,rot=10,grey=0.2)")


@dataclass
class AugmentConfig:
    """Which augmentations to apply during training; the defaults switch everything off.

    crop_padding: random crop of the original size from the image zero-padded by this many pixels on each
        side, i.e. a random shift of up to +-crop_padding pixels. Zero (not reflect) padding: it is the usual
        CIFAR recipe, works for any padding (reflect needs padding < image size), and black is the true
        background of digit images, where reflecting would duplicate strokes.
    hflip: flip each image left-right with probability 0.5.
    rotation: rotate each image by an angle uniform in [-rotation, rotation] degrees (bilinear, zero fill).
    greyscale: probability of replacing an image by its luma, still with C channels (no-op for C == 1).
    cutout: side in pixels of one square set to 0 in every image, centred anywhere in it (so it may overhang
        the border and cover less), after the other ops (DeVries & Taylor 2017, "Cutout": a fixed square, 16
        pixels on CIFAR-10; airbench96 uses 12). It removes a part of the object, so the model must use the rest.
    """

    crop_padding: int = 0
    hflip: bool = False
    rotation: float = 0.0
    greyscale: float = 0.0
    cutout: int = 0

    def __post_init__(self):
        if int(self.crop_padding) != self.crop_padding or self.crop_padding < 0:
            raise ConfigError(f"--augment: crop padding must be a whole number >= 0, got {self.crop_padding}")
        if not 0.0 <= self.rotation <= 180.0:
            raise ConfigError(f"--augment: rotation must be between 0 and 180 degrees, got {self.rotation}")
        if not 0.0 <= self.greyscale <= 1.0:
            raise ConfigError(f"--augment: greyscale probability must be in [0, 1], got {self.greyscale}")
        if int(self.cutout) != self.cutout or self.cutout < 0:
            raise ConfigError(f"--augment: cut-out side must be a whole number >= 0, got {self.cutout}")
        self.crop_padding, self.hflip = int(self.crop_padding), bool(self.hflip)
        self.rotation, self.greyscale, self.cutout = float(self.rotation), float(self.greyscale), int(self.cutout)

    def is_identity(self) -> bool:
        return not (self.crop_padding or self.hflip or self.rotation or self.greyscale or self.cutout)


def augment_batch(x: torch.Tensor, cfg: AugmentConfig | None, generator: torch.Generator) -> torch.Tensor:
    """Randomly augment a float (N, C, H, W) batch; a new tensor, or `x` itself when `cfg` does nothing."""
    if cfg is None or cfg.is_identity() or x.shape[0] == 0:
        return x
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"augment_batch needs a float (N, C, H, W) batch, got {x.dtype} {tuple(x.shape)}")
    if generator.device.type != "cpu":
        raise ValueError("augment_batch needs a CPU torch.Generator so CPU and CUDA runs draw the same parameters")
    n, c, h, w = x.shape

    def uniform() -> torch.Tensor:  # (N,) in [0, 1), drawn on the CPU, used on x's device
        return torch.rand(n, generator=generator).to(x.device)

    if cfg.crop_padding:
        p = cfg.crop_padding
        oy = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
        ox = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
        x = _shifted_crop(F.pad(x, (p, p, p, p)), oy, ox, h, w)
    if cfg.hflip:
        x = torch.where((uniform() < 0.5).view(n, 1, 1, 1), x.flip(3), x)
    if cfg.rotation:
        x = _rotate(x, (uniform() * 2.0 - 1.0) * math.radians(cfg.rotation))
    if cfg.greyscale and c > 1:
        x = torch.where((uniform() < cfg.greyscale).view(n, 1, 1, 1), to_greyscale(x, keep_channels=False), x)
    if cfg.cutout:
        x = cut_squares(x, cfg.cutout, generator)
    return x


def cut_squares(x: torch.Tensor, k, generator: torch.Generator) -> torch.Tensor:
    """Zero a square of side k (one int, or an (N, 1, 1, 1) tensor) centred on a uniformly drawn pixel of each
    image; a square near the border overhangs it and covers less."""
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1, 1, 1), generator=generator)
    cx = torch.randint(0, w, (n, 1, 1, 1), generator=generator)
    return zero_squares(x, cy - k // 2, cx - k // 2, k)


def zero_squares(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, k) -> torch.Tensor:
    """Zero, in every channel, the square of side k whose top-left corner is (oy, ox), per image ((N, 1, 1, 1)
    tensors; k may be one int for all); the parts outside the image are ignored."""
    h, w = x.shape[2:]
    oy, ox = oy.to(x.device), ox.to(x.device)
    k = k.to(x.device) if torch.is_tensor(k) else k
    rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    return x.masked_fill((rows >= oy) & (rows < oy + k) & (cols >= ox) & (cols < ox + k), 0.0)


def _shifted_crop(padded: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Window (oy[i], ox[i]) of size h x w from each padded image, as one gather.

    The index is built per sample over H*W only and expanded (a stride-0 view) over channels, so it costs
    N*H*W int64s rather than one index per output element.
    """
    n, c, hp, wp = padded.shape
    rows = oy.view(n, 1, 1) + torch.arange(h, device=padded.device).view(1, h, 1)
    cols = ox.view(n, 1, 1) + torch.arange(w, device=padded.device).view(1, 1, w)
    flat = (rows * wp + cols).view(n, 1, h * w).expand(n, c, h * w)
    return padded.flatten(2).gather(2, flat).view(n, c, h, w)


def _rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate each image about its centre by `angle[i]` radians: one affine_grid + grid_sample for the batch.

    affine_grid works in coordinates normalised to [-1, 1] per axis, so for H != W the rotation is conjugated
    by the aspect ratio (theta = S^-1 R S with S = diag(W, H)) to stay a true rotation in pixels.
    """
    n, _, h, w = x.shape
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin * (h / w), torch.zeros_like(cos)], 1),
                         torch.stack([sin * (w / h), cos, torch.zeros_like(cos)], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def to_greyscale(x: torch.Tensor, keep_channels: bool = True) -> torch.Tensor:
    """Luma of an RGB (N, 3, H, W) batch with ITU-R 601 weights; 1 channel, or 3 equal ones if keep_channels.

    A 1-channel batch is already grey and is returned as is. uint8 input gives rounded uint8 output.
    """
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"to_greyscale needs a (N, 1 or 3, H, W) batch, got {tuple(x.shape)}")
    if x.shape[1] == 1:
        return x
    xf = x if x.is_floating_point() else x.float()
    weights = torch.tensor(LUMA_601, dtype=xf.dtype, device=x.device).view(1, 3, 1, 1)
    y = (xf * weights).sum(1, keepdim=True)
    if not x.is_floating_point():
        y = y.round_().clamp_(0, 255).to(x.dtype)
    return y.repeat(1, 3, 1, 1) if keep_channels else y


def resize_batch(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Deterministic bilinear resize of an (N, C, H, W) batch to `size` (an int means square).

    Antialiasing is switched on whenever an axis shrinks, so downscaling averages over the footprint instead
    of aliasing (as PIL does). uint8 input is resized in float and rounded back. Same size returns `x`.
    """
    th, tw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if th <= 0 or tw <= 0:
        raise ValueError(f"resize_batch: size must be positive, got {size}")
    if x.ndim != 4:
        raise ValueError(f"resize_batch needs an (N, C, H, W) batch, got {tuple(x.shape)}")
    if (th, tw) == tuple(x.shape[2:]):
        return x
    xf = x if x.is_floating_point() else x.float()
    down = th < x.shape[2] or tw < x.shape[3]
    y = F.interpolate(xf, size=(th, tw), mode="bilinear", align_corners=False, antialias=down)
    if not x.is_floating_point():
        y = y.round_().clamp_(0, 255).to(x.dtype)
    return y


def default_augment(dataset_name: str, image_shape) -> AugmentConfig:
    """Augmentation that is safe for a dataset without knowing its classes.

    - digits (8x8): nothing. One pixel is 1/8 of the image, so even a 1-pixel shift or a small rotation
      (which blurs via interpolation) changes the image a lot, and flips change a digit's identity.
    - mnist: crop_padding=2, nothing else. Digits sit centred in a 20x20 box with a 4-pixel black margin,
      so +-2 pixel shifts keep them whole; flips turn digits into other symbols and rotation is left out to
      keep 6/9-like confusions and interpolation blur out of the default (ask for rot=10 explicitly).
    - cifar10: crop_padding=4, hflip — the standard recipe; left-right flips preserve object classes.
    - any other source (folders), by shape: images under 16 pixels get nothing (as digits); otherwise
      crop_padding ~ size/8 (4 for 32 px, the CIFAR ratio); hflip only for RGB images of 24 pixels or more,
      which are taken to be photographs. Greyscale or small images may be characters or symbols, where a
      mirror image can be another class, so they are not flipped.
    """
    c, h, w = (int(s) for s in tuple(image_shape)[-3:])
    side = min(h, w)
    if dataset_name == "digits":
        return AugmentConfig()
    if dataset_name == "mnist":
        return AugmentConfig(crop_padding=2)
    if dataset_name == "cifar10":
        return AugmentConfig(crop_padding=max(1, round(side / 8)), hflip=True)
    if side < 16:
        return AugmentConfig()
    return AugmentConfig(crop_padding=max(1, round(side / 8)), hflip=(c == 3 and side >= 24))


def parse_augment(spec: str, flag: str = "--augment") -> AugmentConfig | None:
    """Parse --augment: 'none' (no augmentation), 'default' (None: use `default_augment`) or a list such as
    'crop=4,flip,rot=10,grey=0.2'. Unnamed ops are off. Raises ConfigError naming `flag` (the option the
    string came from, e.g. --student-augment) on bad input."""
    text = (spec or "").strip().lower()
    if text == "default":
        return None
    if text == "none":
        return AugmentConfig()
    values: dict = {}
    for token in text.split(","):
        key, eq, val = (part.strip() for part in token.partition("="))
        name = {"crop": "crop_padding", "flip": "hflip", "hflip": "hflip", "rot": "rotation",
                "grey": "greyscale", "gray": "greyscale", "cutout": "cutout"}.get(key)
        if name is None or name in values or (name == "hflip") == bool(eq):
            raise ConfigError(f"{flag}: bad item '{token.strip()}' in '{spec}'; {_FORMAT}")
        try:
            values[name] = True if name == "hflip" else (int(val) if name in ("crop_padding", "cutout") else float(val))
        except ValueError:
            raise ConfigError(f"{flag}: bad value in '{token.strip()}'; {_FORMAT}") from None
    try:
        return AugmentConfig(**values)
    except ConfigError as e:  # out-of-range values (inf and nan included): add the expected format
        raise ConfigError(f"{flag}: {str(e).removeprefix('--augment: ')}; {_FORMAT}") from None


def augment_to_string(cfg: AugmentConfig | None) -> str:
    """The --augment string for `cfg` (None -> 'default'), so that parse_augment(augment_to_string(c)) == c."""
    if cfg is None:
        return "default"
    if cfg.is_identity():
        return "none"

    def num(v: float) -> str:
        short = f"{v:g}"
        return short if float(short) == v else repr(v)

    parts = [f"crop={cfg.crop_padding}"] if cfg.crop_padding else []
    parts += ["flip"] if cfg.hflip else []
    parts += [f"rot={num(cfg.rotation)}"] if cfg.rotation else []
    parts += [f"grey={num(cfg.greyscale)}"] if cfg.greyscale else []
    parts += [f"cutout={cfg.cutout}"] if cfg.cutout else []
    return ",".join(parts)


__all__ = ["AugmentConfig", "augment_batch", "resize_batch", "to_greyscale", "default_augment",
           "parse_augment", "augment_to_string", "cut_squares", "zero_squares", "LUMA_601"]
