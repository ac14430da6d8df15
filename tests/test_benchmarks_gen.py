"""The measuring code of benchmarks/vae_vs_pythae.py, vae_samples.py and rate_distortion.py."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_neg_elbo_is_recon_plus_kl_in_nats():
    vvp = pytest.importorskip("vae_vs_pythae")
    x = torch.full((3, 1, 2, 2), 0.5)
    # mu = 1, logvar = 0 in one dimension: KL = 0.5; p = 0.5 everywhere: BCE = 4 ln 2 per image
    r = vvp.neg_elbo(lambda xb: (torch.ones(len(xb), 1), torch.zeros(len(xb), 1)),
                     lambda z: torch.full((len(z), 4), 0.5), x)
    assert r["test_kl"] == pytest.approx(0.5) and r["test_recon_nats"] == pytest.approx(4 * math.log(2))
    assert r["test_neg_elbo"] == pytest.approx(0.5 + 4 * math.log(2))


def test_judged_confidence_entropy_and_score():
    vs = pytest.importorskip("vae_samples")

    class Judge:
        def __init__(self, logits):
            self.logits = logits

        def __call__(self, x, decode=False):
            return {"logits": self.logits[:len(x)]}
    sure = torch.full((10, 10), -1e4)
    sure[torch.arange(10), torch.arange(10)] = 0  # each image certainly a different class
    r = vs.judged(Judge(sure), torch.zeros(10, 1, 2, 2))
    assert r["confidence"] == pytest.approx(1) and r["class_entropy"] == pytest.approx(math.log(10))
    assert r["score"] == pytest.approx(10)
    r = vs.judged(Judge(torch.zeros(10, 10)), torch.zeros(10, 1, 2, 2))  # no idea: score 1
    assert r["confidence"] == pytest.approx(0.1) and r["score"] == pytest.approx(1)


def test_jpeg_and_pca_rows():
    rd = pytest.importorskip("rate_distortion")
    rng = np.random.default_rng(0)
    imgs = (rng.random((20, 1, 8, 8)) * 255).astype(np.uint8)
    rows = rd.jpeg_rows(imgs)
    assert [r["code"] for r in rows] == [f"quality {q}" for q in rd.JPEG_QUALITIES]
    assert all(r["bytes_scan_only"] < r["bytes"] for r in rows) and rows[-1]["psnr"] > rows[0]["psnr"]
    flat = imgs.reshape(20, -1).astype(np.float32) / 255
    pca = rd.pca_rows(flat, flat, [2, 19])
    assert pca[1]["mse"] < pca[0]["mse"] and pca[0]["bytes"] == 8
