"""--noise-kind: the denoising autoencoder's corruptions (gaussian, mask, salt-pepper)."""
from __future__ import annotations

import pytest
import torch

import aeclass
from aeclass.errors import ConfigError
from aeclass.strategies import corrupt


def test_gaussian_is_the_default_and_unchanged():
    x = torch.rand(4, 3, 8, 8)
    torch.manual_seed(1)
    a = corrupt(x, 0.2)
    torch.manual_seed(1)
    b = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)  # what corrupt always did
    assert torch.equal(a, b)
    assert aeclass.TrainConfig().noise_kind == "gaussian"


@pytest.mark.parametrize("kind", ["mask", "salt-pepper"])
def test_pixel_noise_hits_the_given_fraction_of_whole_pixels(kind):
    torch.manual_seed(0)
    x = 0.25 + 0.5 * torch.rand(64, 3, 16, 16)  # no pixel is 0 or 1 before the noise
    y = corrupt(x, 0.3, kind)
    changed = (y != x)
    assert torch.equal(changed.all(1), changed.any(1))  # a pixel is corrupted in every channel or in none
    assert float(changed.any(1).float().mean()) == pytest.approx(0.3, abs=0.02)
    hit = y[changed]
    if kind == "mask":
        assert bool((hit == 0).all())
    else:
        assert bool(((hit == 0) | (hit == 1)).all()) and 0.4 < float((hit == 1).float().mean()) < 0.6
    assert torch.equal(y[~changed], x[~changed])


def test_noise_kind_trains_and_is_checked(tmp_path):
    quiet = dict(log=lambda *a: None, progress=False)
    r = aeclass.train(aeclass.TrainConfig(data="digits", strategy="autoencoder", model="mlp_ae", epochs=2, noise=0.3,
                                          noise_kind="mask", out=str(tmp_path / "m"), report=False, threads=1), **quiet)
    assert r.metrics["test_recon_mse"] < 0.2
    with pytest.raises(ConfigError, match="--noise-kind"):
        aeclass.build_config(overrides={"noise_kind": "speckle"})
    with pytest.raises(ConfigError, match="Gaussian"):
        aeclass.build_config(overrides={"strategy": "ladder", "model": "ladder", "noise_kind": "mask"})
