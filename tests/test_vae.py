"""The variational models (vae_mlp, vae_conv) and the `vae` / `vae-joint` strategies."""
from __future__ import annotations

import csv

import pytest
import torch

import aeclass
from aeclass.errors import ConfigError
from aeclass.models import create_model
from aeclass.models.vae import kl_to_prior
from aeclass.strategies.vae import elbo_parts, test_elbo as vae_test_elbo
from conftest import assert_same_weights

QUIET = dict(log=lambda *a: None, progress=False)


def _cfg(tmp_path, name, **kw):
    base = dict(data="digits", strategy="vae", model="vae_mlp", epochs=3, augment="none", out=str(tmp_path / name),
                report=False, threads=1, model_kwargs={"code_dim": 8, "hidden": [64]})
    return aeclass.TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("name,shape", [("vae_mlp", (1, 28, 28)), ("vae_conv", (1, 28, 28)), ("vae_conv", (3, 32, 32))])
def test_forward_backward_shapes(name, shape):
    m = create_model(name, shape, 10, code_dim=6)
    assert "variational" in m.capabilities and {"head", "decoder"} <= m.capabilities
    x = torch.rand(5, *shape)
    out = m(x)
    assert out["mu"].shape == out["logvar"].shape == out["code"].shape == (5, 6)
    assert out["recon"].shape == out["recon_logits"].shape == (5, *shape) and out["logits"].shape == (5, 10)
    assert 0 <= float(out["recon"].detach().min()) and float(out["recon"].detach().max()) <= 1
    _, rec, kl = elbo_parts(m, x, "bernoulli")
    (rec + kl).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for n, p in m.named_parameters() if not n.startswith("head"))
    m.eval()  # the code is the mean; eval decodes it, so reconstructions are deterministic
    assert torch.equal(m.encode(x), m(x)["mu"]) and torch.equal(m(x)["recon"], m(x)["recon"])
    assert torch.allclose(m(x)["recon"], m.decode(m.encode(x)))


def test_kl_is_nonnegative_and_zero_only_at_the_prior():
    g = torch.Generator().manual_seed(0)
    mu, logvar = 3 * torch.randn(200, 16, generator=g), 4 * torch.randn(200, 16, generator=g)
    kl = kl_to_prior(mu, logvar)
    assert kl.shape == (200,) and bool((kl >= 0).all()) and float(kl.min()) > 0
    assert float(kl_to_prior(torch.zeros(3, 4), torch.zeros(3, 4)).abs().max()) == 0
    # one dimension, closed form: mu=1, var=e -> 0.5 * (1 + e - 1 - 1)
    assert float(kl_to_prior(torch.ones(1, 1), torch.ones(1, 1))) == pytest.approx(0.5 * (torch.e - 1))


def test_elbo_decreases_and_both_terms_are_reported(tmp_path):
    r = aeclass.train(_cfg(tmp_path, "run", epochs=4), **QUIET)
    rows = list(csv.DictReader(open(r.run_dir / "metrics.csv")))
    loss = [float(row["train_loss"]) for row in rows]
    assert loss[-1] < loss[0] and all(b <= a + 0.5 for a, b in zip(loss, loss[1:]))
    for row in rows:  # loss = recon + beta * KL, each column its own
        assert float(row["train_loss"]) == pytest.approx(float(row["train_recon"]) + float(row["train_kl"]), rel=1e-4)
        assert float(row["train_kl"]) > 0
    m = r.metrics
    assert m["test_neg_elbo"] == pytest.approx(m["test_recon_nats"] + m["test_kl"]) and m["test_kl"] > 0
    assert m["test_accuracy"] is None and m["test_recon_mse"] < 0.2  # its head is not trained


def test_beta_weights_the_kl_and_gaussian_likelihood(tmp_path):
    r = aeclass.train(_cfg(tmp_path, "b", epochs=2, beta=4.0, likelihood="gaussian"), **QUIET)
    row = list(csv.DictReader(open(r.run_dir / "metrics.csv")))[-1]
    assert float(row["train_loss"]) == pytest.approx(float(row["train_recon"]) + 4 * float(row["train_kl"]), rel=1e-4)


def test_exact_resume(tmp_path, interrupt_training):
    full = aeclass.train(_cfg(tmp_path, "full"), **QUIET)
    resumed = interrupt_training.resume_after_cut(_cfg(tmp_path, "cut"), after=1)
    assert_same_weights(full.model, resumed.model)  # the same eps draws after the cut
    assert resumed.metrics["test_neg_elbo"] == full.metrics["test_neg_elbo"]


def test_tiny_overfit():
    torch.manual_seed(0)
    from aeclass.data import load_dataset, to_float
    x = to_float(load_dataset("digits").train_x[:16])
    m = create_model("vae_mlp", (1, 8, 8), None, code_dim=8, hidden=(128,))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = None
    for _ in range(400):
        _, rec, kl = elbo_parts(m, x, "gaussian")
        loss = (rec + 0.05 * kl).mean()  # a small beta: memorising 16 images is worth a large KL
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    # 16 images memorised: their reconstructions from the mean code are close, the ELBO a fraction of its start
    with torch.no_grad():
        assert float(((m(x)["recon"] - x) ** 2).mean()) < 0.01
    assert float(loss.detach()) < 0.3 * first


def test_vae_joint_learns_classes_and_m1_probe(tmp_path):
    joint = aeclass.train(_cfg(tmp_path, "joint", strategy="vae-joint", labels=100, epochs=6), **QUIET)
    assert joint.metrics["test_accuracy"] > 0.5 and "test_neg_elbo" in joint.metrics
    # M1: a VAE's mean code as features, a linear probe on it (the probe's --init skips pre-training)
    vae = aeclass.train(_cfg(tmp_path, "m1", epochs=20, batch_size=32), **QUIET)
    probe = aeclass.train(_cfg(tmp_path, "probe", strategy="linear-probe", labels=100, epochs=6, batch_size=32),
                          init=str(vae.run_dir), **QUIET)
    assert probe.metrics["test_accuracy"] > 0.4  # chance: 0.1 (8x8 grey digits suit a Bernoulli VAE badly)
    assert_same_weights(vae.model.encoder, probe.model.encoder)  # frozen


def test_vae_refuses_a_plain_model_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="variational model"):
        aeclass.train(_cfg(tmp_path, "bad", model="mlp_ae", model_kwargs={}), **QUIET)


def test_test_elbo_leaves_the_global_rng_alone():
    from aeclass.data import load_dataset
    m = create_model("vae_mlp", (1, 8, 8), None, code_dim=4)
    state = torch.get_rng_state()
    a = vae_test_elbo(m, load_dataset("digits").test_x, "bernoulli")
    assert torch.equal(state, torch.get_rng_state())
    assert a == vae_test_elbo(m, load_dataset("digits").test_x, "bernoulli")
