"""Batched augmentation: shapes, determinism, exactness of the pixel-moving ops, parsing and defaults."""
import math

import pytest
import torch
import torch.nn.functional as F

from aeclass.data.augment import (LUMA_601, AugmentConfig, _rotate, augment_batch, augment_to_string, default_augment,
                                  parse_augment, resize_batch, to_greyscale)
from aeclass.errors import ConfigError

CONFIGS = [AugmentConfig(crop_padding=3), AugmentConfig(hflip=True), AugmentConfig(rotation=30.0),
           AugmentConfig(greyscale=0.5), AugmentConfig(cutout=6),
           AugmentConfig(crop_padding=4, hflip=True, rotation=10.0, greyscale=0.2, cutout=4)]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def batch(n=32, c=3, h=16, w=16, seed=123):
    return torch.rand(n, c, h, w, generator=gen(seed))


def blob(n, h, w, radius):
    """A centred disc (round in pixels), softened so that interpolation errors stay small."""
    yy = torch.arange(h).view(h, 1) - (h - 1) / 2
    xx = torch.arange(w).view(1, w) - (w - 1) / 2
    disc = torch.sigmoid(radius - (yy ** 2 + xx ** 2).sqrt())
    return disc.expand(n, 1, h, w).clone()


@pytest.mark.parametrize("cfg", CONFIGS, ids=augment_to_string)
def test_shape_dtype_device_kept(cfg):
    for dtype in (torch.float32, torch.float64):
        x = batch().to(dtype)
        y = augment_batch(x, cfg, gen())
        assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
        assert y is not x


@pytest.mark.parametrize("cfg", CONFIGS, ids=augment_to_string)
def test_deterministic_by_seed(cfg):
    x = batch()
    a, b, c = (augment_batch(x, cfg, gen(s)) for s in (7, 7, 8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_identity_returns_input_object():
    x = batch()
    assert augment_batch(x, AugmentConfig(), gen()) is x
    assert augment_batch(x, None, gen()) is x
    assert augment_batch(x, AugmentConfig(rotation=0.0), gen()) is x
    grey = batch(c=1)
    assert augment_batch(grey, AugmentConfig(greyscale=1.0), gen()) is grey  # already grey: nothing to do


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        augment_batch(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), AugmentConfig(hflip=True), gen())


def test_crop_is_a_window_of_the_zero_padded_original():
    p = 3
    x = batch(n=40, c=2, h=10, w=12)
    y = augment_batch(x, AugmentConfig(crop_padding=p), gen(1))
    padded = F.pad(x, (p, p, p, p))
    offsets = set()
    for i in range(x.shape[0]):
        hits = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                if torch.equal(y[i], padded[i, :, dy:dy + 10, dx:dx + 12])]
        assert len(hits) == 1, f"sample {i} is not a window of its padded image"
        offsets.add(hits[0])
    assert len(offsets) > 10  # offsets really vary per sample


def test_hflip_flips_exactly_the_chosen_samples():
    x = batch(n=64)
    y = augment_batch(x, AugmentConfig(hflip=True), gen(2))
    flipped = [torch.equal(y[i], x[i].flip(2)) for i in range(64)]
    kept = [torch.equal(y[i], x[i]) for i in range(64)]
    assert all(f != k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54


def test_rotation_by_90_degrees_matches_rot90():
    x = batch(n=2, c=3, h=9, w=9)
    y = _rotate(x, torch.full((2,), math.pi / 2))
    assert torch.allclose(y, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)


@pytest.mark.parametrize("h,w", [(32, 32), (24, 40)])
def test_rotation_keeps_a_centred_disc(h, w):
    x = blob(16, h, w, radius=6.0)
    y = augment_batch(x, AugmentConfig(rotation=180.0), gen(3))
    assert torch.allclose(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), rtol=0.02)
    assert (y - x).abs().max() < 0.15  # a round disc stays round, also for H != W (aspect-corrected)


def test_rotation_changes_asymmetric_images():
    x = batch(n=8)
    y = augment_batch(x, AugmentConfig(rotation=45.0), gen(4))
    assert (y - x).abs().mean(dim=(1, 2, 3)).min() > 0.01


def test_greyscale_gives_equal_channels():
    x = batch(n=64)
    y = augment_batch(x, AugmentConfig(greyscale=1.0), gen())
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    assert torch.allclose(y[:, :1], to_greyscale(x, keep_channels=False))
    half = augment_batch(x, AugmentConfig(greyscale=0.5), gen(5))
    grey = [torch.equal(half[i, 0], half[i, 1]) and torch.equal(half[i, 1], half[i, 2]) for i in range(64)]
    assert all(g or torch.equal(half[i], x[i]) for i, g in enumerate(grey))
    assert 10 < sum(grey) < 54


def test_cutout_zeroes_one_square_of_the_given_side_or_its_part_inside():
    k, h, w = 6, 16, 20
    x = batch(n=200, h=h, w=w) + 0.01  # no pixel is 0 before the cut-out
    y = augment_batch(x, AugmentConfig(cutout=k), gen(6))
    zero = y == 0
    assert torch.equal(zero[:, :1].expand_as(zero), zero)  # the same pixels in every channel
    whole = 0
    for i in range(len(y)):
        rows, cols = zero[i, 0].any(1).nonzero().flatten(), zero[i, 0].any(0).nonzero().flatten()
        assert 1 <= len(rows) <= k and 1 <= len(cols) <= k  # one box, never longer than k on a side
        box = zero[i, 0, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        assert box.all() and zero[i, 0].sum() == box.numel()  # a filled rectangle and nothing else
        assert torch.equal(y[i][~zero[i]], x[i][~zero[i]])  # the rest untouched
        inside = 0 < rows[0] and rows[-1] < h - 1 and 0 < cols[0] and cols[-1] < w - 1
        assert not inside or box.shape == (k, k)  # away from the border, the whole square
        whole += box.shape == (k, k)
    assert 60 < whole < 200  # centres fall anywhere: some squares overhang the border


def test_to_greyscale_weights_and_dtypes():
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0
    assert torch.allclose(to_greyscale(red), torch.full((1, 3, 2, 2), LUMA_601[0]))
    assert to_greyscale(red, keep_channels=False).shape == (1, 1, 2, 2)
    u8 = torch.full((1, 3, 2, 2), 200, dtype=torch.uint8)
    out = to_greyscale(u8)
    assert out.dtype == torch.uint8 and (out == 200).all()
    one = batch(c=1)
    assert to_greyscale(one) is one


def test_resize_batch():
    x = batch(n=4, h=16, w=16)
    assert resize_batch(x, 16) is x
    assert resize_batch(x, (8, 12)).shape == (4, 3, 8, 12)
    assert resize_batch(x, 40).shape == (4, 3, 40, 40)
    assert torch.equal(resize_batch(x, 8), resize_batch(x, 8))
    checker = ((torch.arange(16).view(16, 1) + torch.arange(16).view(1, 16)) % 2).float().expand(1, 1, 16, 16)
    small = resize_batch(checker, 4)  # antialiased: averages the pattern instead of picking every 4th pixel
    assert torch.allclose(small, torch.full_like(small, 0.5), atol=0.05)
    u8 = torch.full((2, 1, 10, 10), 77, dtype=torch.uint8)
    out = resize_batch(u8, 5)
    assert out.dtype == torch.uint8 and (out == 77).all()


def test_default_augment():
    assert default_augment("digits", (1, 8, 8)).is_identity()
    mnist = default_augment("mnist", (1, 28, 28))
    assert not mnist.hflip and mnist.crop_padding == 2 and mnist.rotation == 0
    assert default_augment("cifar10", (3, 32, 32)) == AugmentConfig(crop_padding=4, hflip=True)
    assert default_augment("flowers", (3, 64, 64)) == AugmentConfig(crop_padding=8, hflip=True)
    assert default_augment("letters", (1, 64, 64)) == AugmentConfig(crop_padding=8, hflip=False)
    assert not default_augment("icons", (3, 16, 16)).hflip
    assert default_augment("tiny", (3, 8, 8)).is_identity()


@pytest.mark.parametrize("spec", ["none", "crop=4", "flip", "rot=10", "grey=0.2",
                                  "crop=4,flip,rot=12.5,grey=0.25", "rot=0.123456789", "cutout=12",
                                  "crop=4,flip,cutout=16"])
def test_parse_round_trip(spec):
    cfg = parse_augment(spec)
    assert augment_to_string(cfg) == spec
    assert parse_augment(augment_to_string(cfg)) == cfg


def test_parse_forms():
    assert parse_augment("default") is None and augment_to_string(None) == "default"
    assert parse_augment(" Flip , crop=2 ") == AugmentConfig(crop_padding=2, hflip=True)
    assert parse_augment("gray=0.5") == AugmentConfig(greyscale=0.5)


@pytest.mark.parametrize("spec", ["", "crop", "crop=x", "crop=2.5", "crop=-1", "flip=1", "rot=200", "rot=nan",
                                  "grey=1.5", "grey=inf", "cutout=2.5", "cutout=-1", "cutout", "crop=2,crop=3",
                                  "crop=2,", "blur=3", "none,flip"])
def test_parse_rejects_bad_specs(spec):
    with pytest.raises(ConfigError) as err:
        parse_augment(spec)
    msg = str(err.value)
    assert "--augment" in msg and "crop=" in msg and "\n" not in msg


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    cfg = CONFIGS[-1]
    x = batch(n=64, h=32, w=32)
    cpu = augment_batch(x, cfg, gen(9))
    cuda = augment_batch(x.cuda(), cfg, gen(9))
    assert cuda.device.type == "cuda"
    assert torch.allclose(cuda.cpu(), cpu, atol=1e-4)
