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



@pytest.fixture
def pc():
    """benchmarks/pretrain_compare.py, its two benchmark-only strategies registered for the test only."""
    pc = pytest.importorskip("pretrain_compare")
    from aeclass.strategies import register_strategy, unregister_strategy
    for s in (pc.MaePretrain, pc.RandomProbe):
        register_strategy(s)
    yield pc
    for s in (pc.MaePretrain, pc.RandomProbe):
        unregister_strategy(s.name)


def test_pretrain_compare_strategies_keep_only_their_phase(pc):
    """The benchmark's mae pre-training is mae's masked phase alone (no fine-tuning after it), and its random
    baseline's probe is linear-probe's probe phase alone (frozen encoder, no pre-training before it)."""
    from aeclass import build_config
    from aeclass.models import create_model
    from aeclass.strategies import create_strategy
    model = create_model("hybrid", (3, 8, 8), 10)
    mae = create_strategy(build_config(overrides={"strategy": "bench-mae-pretrain", "epochs": 3, "mask_ratio": 0.25}))
    assert [(p.name, p.epochs, p.trains) for p in mae.phases(model)] == [("mae", 3, ("encoder", "decoder"))]
    assert mae.requires() == {"decoder"} and mae.opts.mask_ratio == 0.25
    [probe] = create_strategy(build_config(overrides={"strategy": "bench-random-probe", "epochs": 2})).phases(model)
    assert (probe.name, probe.epochs, probe.trains, probe.frozen) == ("probe", 2, ("head",), ("encoder",))


def test_hidden_patch_mse_scores_only_the_hidden_pixels(pc, tmp_path, monkeypatch):
    """A model that returns its (masked) input is scored by the mean-filled patches' error alone."""
    import aeclass.inference

    class Echo(torch.nn.Module):
        in_mean = torch.full((1, 1, 1, 1), 0.5)

        def forward(self, x, classify=True):
            return {"recon": x}
    monkeypatch.setattr(aeclass.inference, "load_model", lambda path: (Echo(), {}))
    x = torch.zeros(2000, 1, 8, 8, dtype=torch.uint8)  # black: a hidden pixel (0.5) errs by 0.25 squared, a shown one by 0
    assert pc.hidden_patch_mse(tmp_path, x) == pytest.approx(0.25)
