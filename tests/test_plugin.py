"""The plug-in seam: a model and a strategy defined here, in this file alone, go through every command.

Nothing in the package names them: they are registered below, and training, checkpoints, resume, evaluate,
predict, the report and the sweep must all work with them, with the strategy's own loss in metrics.csv and
its running state carried across an interruption.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import aeclass
from aeclass.models import AEClassifier
from aeclass.options import option
from aeclass.strategies import Phase, Strategy, corrupt, reconstruction_loss
from aeclass.strategies.losses import classification
from conftest import assert_same_weights


def tiny_dense(input_shape, num_classes=None, code_dim: int = 12):
    """A dense autoencoder with a classification head: flatten-code-image."""
    d = int(torch.tensor(input_shape).prod())
    enc = nn.Sequential(nn.Flatten(), nn.Linear(d, code_dim), nn.Tanh())
    dec = nn.Sequential(nn.Linear(code_dim, d), nn.Sigmoid(), nn.Unflatten(1, tuple(input_shape)))
    return AEClassifier(enc, code_dim, input_shape, decoder=dec, num_classes=num_classes)


@dataclass
class SparseOptions:
    sparsity: float = option(0.01, "weight of the L1 penalty on the code", low=0)


class SparseJoint(Strategy):
    """CE(labelled) + reconstruction(all) + sparsity * |code|_1, keeping a running mean of |code| as its state."""

    name = "sparse-joint"
    summary = "joint loss + an L1 penalty on the code (a test plug-in)"
    Options = SparseOptions
    metric_columns = ("sparsity",)

    def requires(self, pretrained=False):
        return {"head", "decoder"}

    def phases(self, model, pretrained=False):
        return [Phase("sparse", self.cfg.epochs, self.step, "all", mix_labelled=True)]

    def step(self, model, batch):
        out = model(corrupt(batch.x, self.cfg.noise))
        parts = classification(out["logits"], batch.y, self.cfg.label_smoothing)
        recon = reconstruction_loss(out["recon"], batch.x, self.cfg.recon_loss)
        l1 = out["code"].abs().mean()
        running = self.state.get("code_l1")
        self.state["code_l1"] = l1.detach() if running is None else 0.9 * running + 0.1 * l1.detach()
        return {"loss": parts["ce"] + recon + self.opts.sparsity * l1, "recon": recon, "sparsity": l1, **parts}

    def final_metrics(self):
        return {"code_l1": float(self.state["code_l1"])}


@pytest.fixture
def plugged():
    from aeclass.models import registry
    from aeclass.strategies import unregister_strategy
    aeclass.register_model(tiny_dense)
    aeclass.register_strategy(SparseJoint)
    yield
    unregister_strategy("sparse-joint")
    registry._MODELS.pop("tiny_dense", None)


def _cfg(tmp_path, name="run", **kw):
    base = dict(data="digits", labels=50, strategy="sparse-joint", model="tiny_dense", epochs=3, noise=0.1,
                sparsity=0.05, out=str(tmp_path / name), report=False, threads=1)
    return aeclass.TrainConfig(**{**base, **kw})


def test_a_plugged_strategy_trains_resumes_and_is_reported(plugged, tmp_path, interrupt_training):
    from aeclass.report import write_report
    quiet = dict(log=lambda *a: None, progress=False)
    full = aeclass.train(_cfg(tmp_path, "full"), **quiet)
    rows = list(csv.DictReader(open(full.run_dir / "metrics.csv")))
    assert [r["phase"] for r in rows] == ["sparse"] * 3
    assert all(float(r["train_sparsity"]) > 0 for r in rows)  # its own loss column
    assert float(rows[-1]["train_loss"]) > float(rows[-1]["train_recon"])
    m = json.loads((full.run_dir / "metrics.json").read_text())
    assert m["strategy"] == "sparse-joint" and 0.1 < m["test_accuracy"] <= 1 and m["code_l1"] > 0
    assert yaml_load(full.run_dir / "config.yaml")["sparsity"] == 0.05  # its option, saved with the run
    # interrupted after epoch 1 and resumed: the same weights and the same running state as the full run
    resumed = interrupt_training.resume_after_cut(_cfg(tmp_path, "cut"), after=1)
    assert_same_weights(full.model, resumed.model)
    assert resumed.metrics["code_l1"] == m["code_l1"] and resumed.metrics["test_accuracy"] == m["test_accuracy"]
    page = write_report(full.run_dir).read_text()
    assert "train_sparsity" in page and "sparse-joint" in page


def test_a_plugged_strategy_through_the_command_line(plugged, tmp_path, capsys):
    from aeclass.cli import main
    out = tmp_path / "cli"
    assert main(["train", "--data", "digits", "--labels", "50", "--strategy", "sparse-joint", "--model", "tiny_dense",
                 "--epochs", "2", "--sparsity", "0.2", "--strategy-opt", "sparsity=0.3", "--threads", "1",
                 "--quiet", "--out", str(out)]) == 0
    assert yaml_load(out / "config.yaml")["sparsity"] == 0.3  # --strategy-opt is the same option as the flag
    assert (out / "report.html").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["test_accuracy"] == json.loads((out / "metrics.json").read_text())["test_accuracy"]
    assert ev["checkpoint"].endswith("checkpoints/last.pt")  # the model metrics.json describes
    from pathlib import Path
    digits = Path(__file__).parent / "golden" / "old-run-images"  # eight 8x8 digit PNGs
    assert main(["predict", str(out), str(digits)]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 8
    assert main(["train", "--strategy", "sparse-joint", "--sparsity", "-1", "--out", str(tmp_path / "bad")]) == 2
    assert "--sparsity" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "sparse-joint" in capsys.readouterr().out  # --help lists it, with its option


def test_a_plugged_strategy_in_a_sweep(plugged, tmp_path):
    from aeclass.sweep import run_sweep
    r = run_sweep(tmp_path / "sweep", data="digits", strategies="sparse-joint,supervised", labels="50", seeds=1,
                  epochs=1, baseline=False, report=False, log=lambda *a: None,
                  overrides={"threads": 1, "model": "tiny_dense"})
    assert [row["strategy"] for row in r.rows] == ["sparse-joint", "supervised"]
    assert all(0 < row["test_accuracy"] <= 1 for row in r.rows)
    again = run_sweep(tmp_path / "sweep", data="digits", strategies="sparse-joint,supervised", labels="50", seeds=1,
                      epochs=1, baseline=False, report=False, log=lambda *a: None,
                      overrides={"threads": 1, "model": "tiny_dense"})
    assert again.trained == 0 and again.reused == 2  # a rerun reads the plugged cells back


def yaml_load(path):
    import yaml
    return yaml.safe_load(path.read_text())

