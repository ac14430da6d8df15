"""`mae`: random patch masks, the loss on the hidden patches only, pre-training then fine-tuning."""
from __future__ import annotations

import csv

import pytest
import torch

import aeclass
from aeclass.errors import ConfigError
from aeclass.models import create_model
from aeclass.strategies import Batch
from aeclass.strategies.mae import masked_mse, patch_mask
from conftest import assert_same_weights

QUIET = dict(log=lambda *a: None, progress=False)


def _cfg(tmp_path, name, **kw):
    base = dict(data="digits", strategy="mae", model="conv_ae", labels=100, epochs=2, pretrain_epochs=2, mask_ratio=0.5,
                patch_size=2, augment="none", out=str(tmp_path / name), report=False, threads=1)
    return aeclass.TrainConfig(**{**base, **kw})


def test_patch_mask_hides_whole_patches_at_the_ratio():
    torch.manual_seed(0)
    m = patch_mask(50, (28, 28), 4, 0.75, None)
    assert m.shape == (50, 1, 28, 28) and m.dtype == torch.bool
    blocks = m.view(50, 1, 7, 4, 7, 4)
    assert torch.equal(blocks.all(5).all(3), blocks.any(5).any(3))  # every 4x4 patch hidden whole or not at all
    assert torch.equal(m.flatten(1).sum(1), torch.full((50,), round(0.75 * 49) * 16))
    odd = patch_mask(3, (7, 9), 4, 0.5, None)  # edges cut short
    assert odd.shape == (3, 1, 7, 9) and bool(odd.any()) and not bool(odd.all())


def test_the_loss_sees_only_the_hidden_patches():
    torch.manual_seed(0)
    x, recon = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8, requires_grad=True)
    hidden = patch_mask(4, (8, 8), 2, 0.5, None)
    loss = masked_mse(recon, x, hidden)
    loss.backward()
    shown = ~hidden.expand_as(x)
    assert bool((recon.grad[shown] == 0).all()) and bool((recon.grad[~shown] != 0).all())
    same = masked_mse(torch.where(shown, recon + 5, recon), x, hidden)  # visible pixels changed: no change
    assert float(same.detach()) == pytest.approx(float(loss.detach()))
    assert float(loss.detach()) == pytest.approx(float(((recon.detach() - x)[~shown] ** 2).mean()))


def test_the_step_hides_patches_from_the_encoder_and_scores_them():
    from aeclass.strategies.mae import Mae
    strategy = Mae(aeclass.build_config(overrides={"strategy": "mae", "mask_ratio": 0.5, "patch_size": 2}))
    model = create_model("conv_ae", (1, 8, 8), 10)
    seen = {}
    model.encoder.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    x = torch.rand(6, 1, 8, 8)
    torch.manual_seed(3)
    parts = strategy.reconstruct(model, Batch(x, torch.full((6,), -1)))
    torch.manual_seed(3)
    hidden = patch_mask(6, (8, 8), 2, 0.5, None)  # the same draw
    standardised = seen["x"]
    assert bool((standardised[hidden.expand_as(x)] == 0).all())  # the mean, standardised
    assert torch.equal(standardised[~hidden], ((x - model.in_mean) / model.in_std)[~hidden])
    with torch.no_grad():
        model.train()
        out = model(torch.where(hidden, model.in_mean, x), classify=False)
    assert float(parts["loss"]) == pytest.approx(float(masked_mse(out["recon"], x, hidden)), rel=1e-5)


def test_mae_pretrains_then_finetunes_and_resumes(tmp_path, interrupt_training):
    full = aeclass.train(_cfg(tmp_path, "full"), **QUIET)
    rows = list(csv.DictReader(open(full.run_dir / "metrics.csv")))
    assert [r["phase"] for r in rows] == ["mae", "mae", "finetune", "finetune"]
    assert float(rows[1]["train_recon"]) < float(rows[0]["train_recon"])
    assert full.metrics["test_accuracy"] > 0.3
    resumed = interrupt_training.resume_after_cut(_cfg(tmp_path, "cut"), after=1)  # inside the masked phase
    assert_same_weights(full.model, resumed.model)


def test_mae_refuses_a_dense_encoder(tmp_path):
    with pytest.raises(ConfigError, match="convolutional"):
        aeclass.train(_cfg(tmp_path, "dense", model="mlp_ae"), **QUIET)


def test_mae_without_finetuning_stops_after_the_masked_pretraining(tmp_path):
    pre = aeclass.train(_cfg(tmp_path, "pre", finetune=False), **QUIET)
    rows = list(csv.DictReader(open(pre.run_dir / "metrics.csv")))
    assert [r["phase"] for r in rows] == ["mae", "mae"]
    assert pre.metrics["trained"] == {"head": False, "decoder": True} and pre.metrics["test_accuracy"] is None
    # its encoder is what linear-probe --init takes
    probe = aeclass.train(_cfg(tmp_path, "probe", strategy="linear-probe"), init=str(pre.run_dir / "checkpoints" / "last.pt"),
                          **QUIET)
    assert probe.metrics["trained"]["head"] and probe.metrics["test_accuracy"] is not None
    with pytest.raises(ConfigError, match="nothing would train"):
        aeclass.train(_cfg(tmp_path, "both", finetune=False), init=str(pre.run_dir / "checkpoints" / "last.pt"), **QUIET)
