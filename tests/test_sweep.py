"""`aeclass sweep`: the grid of runs, resume, results.csv / summary.md / plot, label subsets, the baseline."""
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aeclass import TrainConfig
from aeclass.cli import main
from aeclass.data import load_dataset
from aeclass.data.train_data import TrainData
from aeclass.errors import AeclassError
from aeclass.sweep import BASELINE, FIELDS, labelled_indices, run_sweep

sweep_mod = sys.modules["aeclass.sweep"]
REAL_TRAIN = sweep_mod.train
QUIET = dict(log=lambda *a: None, report=False)


pytestmark = pytest.mark.usefixtures("keep_threads")


def small(out, **kw):
    args = dict(data="digits", strategies="supervised,joint", labels="100,all", seeds=2, epochs=1,
                overrides={"threads": 1}, **QUIET)
    args.update(kw)
    return run_sweep(out, **args)


def read_rows(d: Path) -> list[dict]:
    with open(d / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


class CountingTrain:
    """Wraps aeclass.train.train: counts calls, records resume flags, can raise after the n-th call."""

    def __init__(self, fail_after: int | None = None):
        self.real, self.calls, self.fail_after = REAL_TRAIN, [], fail_after

    def __call__(self, cfg, resume=False, **kw):
        result = self.real(cfg, resume=resume, **kw)
        self.calls.append((Path(cfg.out).name, resume))
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt
        return result


def test_sweep_writes_results_summary_and_plot(tmp_path):
    d = tmp_path / "sweep"
    res = small(d)
    rows = read_rows(d)
    assert list(rows[0]) == FIELDS
    assert len(rows) == 2 * 2 * 2 + 2 * 2 and res.trained == 12 and res.reused == 0
    cells = {(r["strategy"], r["labels"], r["seed"]) for r in rows}
    assert cells == {(s, lab, str(seed)) for s in ("supervised", "joint", BASELINE) for lab in ("100", "all")
                     for seed in (0, 1)}
    for r in rows:
        assert 0.1 < float(r["test_accuracy"]) <= 1.0
        assert int(r["n_labelled"]) == (100 if r["labels"] == "100" else 1437) and r["n_train"] == "1437"
        run = d / r["run_dir"]
        assert (run / "metrics.json").is_file()
        config = json.loads(r["config"])
        if r["strategy"] == BASELINE:
            assert r["test_recon_mse"] == "" and config["kernel"] == "knn" and config["pca_components"] == 50
            assert float(r["test_accuracy"]) > 0.8  # LabelSpreading on digits is strong
        else:
            assert config["strategy"] == r["strategy"] and config["seed"] == int(r["seed"]) and config["epochs"] == 1
            assert config["noise"] == 0.2  # the sweep's default under any preset/config/flag
            assert float(r["train_seconds"]) > 0
            # Only strategies that train the decoder report its error.
            assert (r["test_recon_mse"] == "") == (r["strategy"] == "supervised")
            m = json.loads((run / "metrics.json").read_text())
            assert m["test_accuracy"] == pytest.approx(float(r["test_accuracy"]), rel=1e-5)
    md = (d / "summary.md").read_text()
    assert "| strategy | 100 labels | all (1437) |" in md
    for s in ("supervised", "joint", BASELINE):
        assert f"| {s} |" in md
    acc = [float(r["test_accuracy"]) * 100 for r in rows if r["strategy"] == "joint" and r["labels"] == "100"]
    assert f"{np.mean(acc):.2f} ± {np.std(acc):.2f} (n=2)" in md
    assert (d / "accuracy_vs_labels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sweep = json.loads((d / "sweep.json").read_text())
    assert sweep["strategies"] == ["supervised", "joint"] and sweep["seeds"] == [0, 1]


def test_sweep_resumes_after_interruption(tmp_path, monkeypatch):
    d = tmp_path / "sweep"
    spy = CountingTrain(fail_after=1)
    monkeypatch.setattr(sweep_mod, "train", spy)
    with pytest.raises(KeyboardInterrupt):
        small(d, baseline=False)
    assert spy.calls == [("supervised-100-s0", False)]
    first = d / "runs" / "supervised-100-s0" / "metrics.json"
    stamp = first.stat().st_mtime_ns
    spy2 = CountingTrain()
    monkeypatch.setattr(sweep_mod, "train", spy2)
    res = small(d, baseline=False)
    assert len(spy2.calls) == 7 and ("supervised-100-s0", False) not in spy2.calls  # 8 cells, 1 done before
    assert res.trained == 7 and res.reused == 1 and first.stat().st_mtime_ns == stamp
    rows = read_rows(d)
    assert len(rows) == 8
    # A third call trains nothing and rebuilds the same rows from the run directories.
    spy3 = CountingTrain()
    monkeypatch.setattr(sweep_mod, "train", spy3)
    again = small(d, baseline=False)
    assert spy3.calls == [] and again.reused == 8
    assert read_rows(d) == rows


def test_sweep_continues_a_half_finished_cell(tmp_path, monkeypatch, interrupt_training):
    """A cell interrupted after its first epoch (checkpoint, no metrics.json) resumes with resume=True and
    ends with the same result as an uninterrupted sweep."""
    args = dict(strategies="joint", labels="100", seeds=1, epochs=2, baseline=False)
    ref = small(tmp_path / "ref", **args)
    interrupt_training.arm(1)
    with pytest.raises(KeyboardInterrupt):
        small(tmp_path / "cut", **args)
    interrupt_training.disarm()
    cell = tmp_path / "cut" / "runs" / "joint-100-s0"
    assert (cell / "checkpoints" / "last.pt").is_file() and not (cell / "metrics.json").exists()
    spy = CountingTrain()
    monkeypatch.setattr(sweep_mod, "train", spy)
    res = small(tmp_path / "cut", **args)
    assert spy.calls == [("joint-100-s0", True)]
    assert res.rows[0]["test_accuracy"] == ref.rows[0]["test_accuracy"]


def test_finished_cells_with_another_config_are_not_reused(tmp_path):
    d = tmp_path / "sweep"
    small(d, strategies="supervised", labels="100", seeds=1, baseline=False)
    with pytest.raises(AeclassError, match="another configuration.*epochs"):
        small(d, strategies="supervised", labels="100", seeds=1, baseline=False, epochs=2)


def test_label_subsets_are_balanced_seeded_and_from_training_data_only(monkeypatch, tmp_path):
    ds = load_dataset("digits")
    n_train = ds.train_x.shape[0]
    draws = {}
    for seed in (0, 1, 2):
        idx = labelled_indices(ds.train_y, 100, seed, ds.num_classes)
        assert idx.unique().numel() == 100 and int(idx.min()) >= 0 and int(idx.max()) < n_train
        assert torch.bincount(ds.train_y[idx], minlength=10).tolist() == [10] * 10  # balanced
        assert torch.equal(idx, labelled_indices(ds.train_y, 100, seed, ds.num_classes))  # seeded
        # the same draw the training engine makes for a run with this seed
        engine = TrainData.build(ds, TrainConfig(labels=100, seed=seed), torch.device("cpu")).labelled
        assert torch.equal(idx, engine)
        draws[seed] = set(idx.tolist())
    assert draws[0] != draws[1] and draws[1] != draws[2] and draws[0] != draws[2]
    uneven = labelled_indices(ds.train_y, 1000, 0, 10)
    counts = torch.bincount(ds.train_y[uneven], minlength=10)
    assert int(counts.sum()) == 1000 and int(counts.max() - counts.min()) <= 1
    # The baseline draws its labels from the training labels only (never the test set's).
    seen = []

    def spy(y, labels, seed, k):
        seen.append((y, labels, seed))
        return labelled_indices(y, labels, seed, k)
    monkeypatch.setattr(sweep_mod, "labelled_indices", spy)
    monkeypatch.setattr(sweep_mod, "dataset_for", lambda *a, **k: ds)
    res = small(tmp_path / "s", strategies="supervised", labels="100", seeds=2)
    assert [(lab, seed) for _, lab, seed in seen] == [(100, 0), (100, 1)]
    assert all(y is ds.train_y for y, _, _ in seen)
    base = [r for r in res.rows if r["strategy"] == BASELINE]
    assert [r["n_labelled"] for r in base] == [100, 100] and all(r["test_accuracy"] > 0.8 for r in base)


def _folder(root: Path) -> Path:
    from PIL import Image
    rng = np.random.default_rng(0)
    for c, name in enumerate(("bars", "dots", "ring")):
        (root / name).mkdir(parents=True)
        for i in range(15):
            a = rng.integers(0, 60, (8, 8)).astype(np.uint8)
            if c == 0:
                a[:, ::3] = 250
            elif c == 1:
                a[::3, ::3] = 250
            else:
                a[1:7, 1] = a[1:7, 6] = a[1, 1:7] = a[6, 1:7] = 250
            Image.fromarray(a, "L").save(root / name / f"{i}.png")
    return root


def test_cli_sweep_on_a_folder_dataset(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AECLASS_NO_CACHE", "1")
    data = _folder(tmp_path / "imgs")
    out = tmp_path / "sweep"
    argv = ["sweep", "--data", f"folder:{data}", "--strategies", "supervised,semi", "--labels", "6,1000,all",
            "--seeds", "2", "--epochs", "1", "--threads", "1", "--no-report", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "# aeclass sweep: folder:" in printed and "| labelspreading-pca |" in printed
    rows = read_rows(out)
    assert {r["labels"] for r in rows} == {"6", "all"}  # 1000 >= the 36 training images: skipped
    assert len(rows) == 2 * 2 * 3 and all(r["n_train"] == "36" for r in rows)
    assert (out / "accuracy_vs_labels.png").is_file()
    assert main(argv[:-1] + [str(out)]) == 0  # rerun: everything reused
    assert len(read_rows(out)) == 12
    assert main(argv[:-1] + [str(out), "--no-baseline"]) == 0 and len(read_rows(out)) == 8


@pytest.mark.parametrize("extra, message", [
    (["--strategies", "supervised,magic"], "--strategy: expected one of"),
    (["--labels", "5"], "fewer than the 10 classes"),
    (["--labels", "100,100"], "repeated"),
    (["--seeds", "0"], "--seeds"),
    (["--seeds", "two"], "--seeds"),
])
def test_cli_sweep_errors(tmp_path, capsys, extra, message):
    argv = ["sweep", "--data", "digits", "--epochs", "1", "--threads", "1", "--out", str(tmp_path / "s"), "--quiet"]
    assert main(argv + extra) == 2
    assert message in capsys.readouterr().err


def test_sweep_trains_the_ladder_strategy_on_its_own_model(tmp_path):
    d = tmp_path / "sweep"
    small(d, strategies="supervised,ladder", labels="100", seeds=1, baseline=False)
    rows = {r["strategy"]: r for r in read_rows(d)}
    assert json.loads(rows["ladder"]["config"])["model"] == "ladder"
    assert json.loads(rows["supervised"]["config"])["model"] != "ladder"
    assert float(rows["ladder"]["test_accuracy"]) > 0.2  # 10 classes: chance is 0.1
