"""The Ladder network: model `ladder` (aeclass/models/ladder.py) and strategy `ladder`."""
import csv
import json

import pytest
import torch

from aeclass import TrainConfig, train
from aeclass.errors import ConfigError
from aeclass.models import create_model
from conftest import assert_same_weights

QUIET = dict(log=lambda *a: None, progress=False)


def small(**kw):
    torch.manual_seed(0)
    return create_model("ladder", (1, 8, 8), num_classes=4, hidden=(32, 16), **kw)


def tiny(tmp_path, **kw):
    base = dict(data="digits", labels=50, strategy="ladder", model="ladder", model_kwargs={"hidden": [64, 32]},
                epochs=2, batch_size=64, labelled_batch_size=50, noise=0.3, out=str(tmp_path / "run"), report=False)
    base.update(kw)
    return TrainConfig(**base)


def test_labelled_rows_are_normalised_apart_from_the_unlabelled_ones():
    m = small().train()
    x = torch.rand(12, 1, 8, 8)
    other = x.clone()
    other[4:] = torch.rand(8, 1, 8, 8)
    a = m.ladder_losses(x, 4, noise=0.0)["logits"][:4]
    b = m.ladder_losses(other, 4, noise=0.0)["logits"][:4]
    assert torch.allclose(a, b, atol=1e-6)  # the 4 labelled rows' statistics are their own
    c = m.ladder_losses(other, 12, noise=0.0)["logits"][:4]  # every row labelled: one group
    assert not torch.allclose(a, c, atol=1e-3)


def test_denoising_costs_reach_every_weight():
    m = small().train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(2):  # the combinators start at zero output (the paper's init): the top-down path opens after a step
        opt.zero_grad()
        out = m.ladder_losses(torch.rand(12, 1, 8, 8), 4, noise=0.3)
        sum(out["layer_costs"]).backward()
        opt.step()
    assert len(out["layer_costs"]) == 4 and all(float(c.detach()) > 0 for c in out["layer_costs"])  # input, 2 hidden, top
    missing = [n for n, p in m.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, missing


def test_without_denoising_there_is_no_decoder_pass():
    m = small().train()
    out = m.ladder_losses(torch.rand(12, 1, 8, 8), 4, noise=0.3, denoise=False)
    assert out["layer_costs"] == []
    out["logits"].pow(2).mean().backward()
    assert all(p.grad is None for p in m.decoder.parameters())


def test_eval_uses_running_statistics_from_the_clean_pass():
    m = small().train()
    for _ in range(5):
        m.ladder_losses(torch.rand(20, 1, 8, 8), 10, noise=0.3)
    assert int(m.head.tracked) == 5  # the clean pass tracks; the corrupted one does not
    m.eval()
    x = torch.rand(6, 1, 8, 8)
    whole = m(x)["logits"]
    one_by_one = torch.cat([m(x[i:i + 1])["logits"] for i in range(6)])
    assert torch.allclose(whole, one_by_one, atol=1e-5)  # no batch statistics at test time


def test_ladder_options_are_checked():
    with pytest.raises(ConfigError, match="one weight per layer"):
        small(costs=(1.0, 2.0))
    with pytest.raises(ConfigError, match="needs a dataset with classes"):
        create_model("ladder", (1, 8, 8))


def test_ladder_strategy_and_model_go_together(tmp_path):
    with pytest.raises(ConfigError, match="needs --model ladder"):
        train(tiny(tmp_path, model="hybrid", model_kwargs={}), **QUIET)
    with pytest.raises(ConfigError, match="lateral connections"):
        train(tiny(tmp_path, strategy="semi", out=str(tmp_path / "semi")), **QUIET)
    assert not (tmp_path / "run").exists() and not (tmp_path / "semi").exists()


def test_ladder_trains_end_to_end_and_resumes_exactly(tmp_path, interrupt_training):
    ref = train(tiny(tmp_path, epochs=3, out=str(tmp_path / "ref")), **QUIET)
    m = json.loads((ref.run_dir / "metrics.json").read_text())
    assert m["strategy"] == "ladder" and 0.5 < m["test_accuracy"] <= 1.0
    assert m["test_recon_mse"] is not None
    rows = list(csv.DictReader(open(ref.run_dir / "metrics.csv")))
    assert [r["phase"] for r in rows] == ["ladder"] * 3
    assert float(rows[-1]["train_denoise"]) > 0 and float(rows[-1]["train_loss"]) > float(rows[-1]["train_denoise"])
    resumed = interrupt_training.resume_after_cut(tiny(tmp_path, epochs=3, out=str(tmp_path / "cut")), 2)
    assert_same_weights(ref.model, resumed.model)


def test_ladder_without_denoising_trains_no_decoder(tmp_path):
    r = train(tiny(tmp_path, recon_weight=0.0), **QUIET)
    assert r.metrics["test_recon_mse"] is None  # an untrained decoder's error is not reported
    assert r.metrics["test_accuracy"] > 0.3


@pytest.mark.slow
def test_the_denoising_costs_beat_the_same_network_without_them_on_digits(tmp_path):
    """The statistic behind "the autoencoder is the method" (MNIST-100: 0.95 % vs 11.3 %), on digits with 5 labels
    per class: 3 label draws, the same draws with and without the denoising costs, mean gain >= MARGIN.
    Measured when written (1 thread, 10 epochs): with the costs 90.28 / 90.28 / 91.11 %, without 86.11 / 85.00 /
    89.44 %: a gain of 3.7 points."""
    margin = 0.02

    def accuracy(recon_weight: float, seed: int) -> float:
        cfg = tiny(tmp_path, model_kwargs={}, epochs=10, recon_weight=recon_weight, seed=seed, threads=1, augment="none",
                   out=str(tmp_path / f"{recon_weight}-{seed}"))
        return train(cfg, **QUIET).metrics["test_accuracy"]

    gains = [accuracy(1.0, s) - accuracy(0.0, s) for s in (0, 1, 2)]
    assert sum(gains) / 3 >= margin, gains


# --- self-training students of another architecture (the MNIST-100 recipe in one run) -------------------------
STUDENTS = dict(epochs=2, student_epochs=2, student_model="hybrid", student_noise=0.2, ema=0.99, threads=1,
                confidence=0.5)  # a 2-epoch Ladder on digits is rarely 95 % sure


def test_a_ladder_teaches_a_convolutional_student_in_one_run(tmp_path):
    from aeclass.inference import load_model
    r = train(tiny(tmp_path, **STUDENTS), **QUIET)
    m = json.loads((r.run_dir / "metrics.json").read_text())
    rows = list(csv.DictReader(open(r.run_dir / "metrics.csv")))
    assert [row["phase"] for row in rows] == ["ladder", "ladder", "student", "student"]
    assert m["student_pseudo_labels"] > 0 and 0.3 < m["teacher_test_accuracy"] <= 1
    assert len(m["self_training_rounds"]) == 1
    model, ck = load_model(r.run_dir, "cpu")  # the checkpoint describes the student, not the Ladder
    assert ck["model_spec"]["name"] == "hybrid" and type(model).__name__ != "LadderNet"
    assert r.model.spec["name"] == "hybrid" and m["test_recon_mse"] is not None
    assert (m["model"], m["teacher_model"]) == ("hybrid", "ladder")


@pytest.mark.parametrize("after", [2, 3])  # at the hand-over (the last Ladder epoch), inside the student phase
def test_ladder_students_resume_exactly_across_the_hand_over(tmp_path, interrupt_training, after):
    ref = train(tiny(tmp_path, out=str(tmp_path / "ref"), **STUDENTS), **QUIET)
    resumed = interrupt_training.resume_after_cut(tiny(tmp_path, out=str(tmp_path / "cut"), **STUDENTS), after)
    assert resumed.model.spec["name"] == "hybrid"
    assert_same_weights(ref.model, resumed.model)
    info = {name: json.loads((r.run_dir / "run.json").read_text()) for name, r in (("ref", ref), ("cut", resumed))}
    assert info["cut"]["model"]["name"] == info["ref"]["model"]["name"] == "ladder"  # the run's --model, as started
    assert info["cut"]["parameters"] == info["ref"]["parameters"] and len(info["cut"]["resumed"]) == 1
    for key in ("teacher_test_accuracy", "student_pseudo_labels", "test_accuracy", "test_recon_mse"):
        assert ref.metrics[key] == resumed.metrics[key], key


@pytest.mark.parametrize("bad, match", [
    ({"student_epochs": 2}, "the students are another model; give --student-model"),
    ({"student_epochs": 2, "student_model": "ladder"}, "the students are another model"),
    ({"student_epochs": 2, "student_model": "hybird"}, "--student-model: expected one of .*did you mean 'hybrid'"),
    ({"student_epochs": 2, "student_model": "fastcnn"}, "--student-model fastcnn has no decoder"),
    ({"student_epochs": 2, "student_model": "hybrid", "student_noise": -1}, "student-noise"),
])
def test_ladder_student_options_are_checked_before_anything_trains(tmp_path, bad, match):
    with pytest.raises(ConfigError, match=match):
        train(tiny(tmp_path, **bad), **QUIET)
    assert not (tmp_path / "run").exists()
