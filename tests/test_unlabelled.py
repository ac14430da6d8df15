"""Unlabelled images as input (an unlabelled/ folder, --unlabelled PATH, --labels-csv) and --val."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aeclass import TrainConfig, train
from aeclass.cli import main
from aeclass.data import load_dataset
from aeclass.report.run import read_metrics_csv
from aeclass.data.train_data import TrainData
from aeclass.errors import DataError

QUIET = dict(log=lambda *a: None, progress=False)
CLASSES = ("bars", "dots", "plain")


def _image(kind: str, rng) -> Image.Image:
    """12x12 RGB: vertical bars, dots or a plain tone, with noise, so the classes are learnable."""
    a = rng.integers(0, 60, (12, 12, 3))
    if kind == "bars":
        a[:, ::3] += 180
    elif kind == "dots":
        a[::3, ::3] += 190
    else:
        a += 90
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _tree(root: Path, labelled=10, unlabelled=15, seed=0, unl_dir="unlabelled") -> Path:
    rng = np.random.default_rng(seed)
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for i in range(labelled):
            _image(c, rng).save(root / c / f"{c}{i}.png")
    if unlabelled:
        (root / unl_dir / "deep").mkdir(parents=True)
        for i in range(unlabelled):
            _image(CLASSES[i % 3], rng).save(root / unl_dir / ("deep" if i % 2 else "") / f"u{i}.png")
    return root


def test_an_unlabelled_folder_is_used_unlabelled_and_never_tested(tmp_path):
    ds = load_dataset(f"folder:{_tree(tmp_path / 'imgs')}", seed=0)
    assert ds.classes == list(CLASSES)  # 'unlabelled' is not a class
    assert int((ds.train_y == -1).sum()) == 15 and ds.info["unlabelled"] == 15
    assert int((ds.test_y < 0).sum()) == 0 and ds.test_x.shape[0] == 6  # 20 % of each class's 10 labelled
    r = train(TrainConfig(data=f"folder:{tmp_path / 'imgs'}", strategy="semi", epochs=2, batch_size=16, threads=1,
                          out=str(tmp_path / "run"), report=False), **QUIET)
    assert r.metrics["n_labelled"] == 24 and r.metrics["n_unlabelled"] == 15 and r.metrics["n_train"] == 39
    info = json.loads((r.run_dir / "run.json").read_text())
    assert info["n_unlabelled"] == 15 and info["data"]["unlabelled"] == 15


def test_unlabelled_path_and_labels_csv(tmp_path):
    _tree(tmp_path / "imgs", unlabelled=0)
    _tree(tmp_path / "more", labelled=0, unlabelled=9, seed=1, unl_dir="x")
    ds = load_dataset(f"folder:{tmp_path / 'imgs'}", unlabelled=str(tmp_path / "more"))
    assert int((ds.train_y == -1).sum()) == 9 and ds.train_x.shape[1:] == ds.test_x.shape[1:]
    # The same images, labelled by a CSV instead of class folders: rows name some files, the rest are unlabelled.
    flat = tmp_path / "flat"
    flat.mkdir()
    rows = ["file,label"]
    for c in CLASSES:
        for i, p in enumerate(sorted((tmp_path / "imgs" / c).glob("*.png"))):
            (flat / f"{c}-{p.name}").write_bytes(p.read_bytes())
            if i < 6:
                rows.append(f"{c}-{p.name},{c}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    r = train(TrainConfig(data=f"folder:{flat}", labels_csv=str(tmp_path / "labels.csv"), strategy="semi", epochs=1,
                          batch_size=8, threads=1, out=str(tmp_path / "csv-run"), report=False), **QUIET)
    assert r.metrics["classes"] == list(CLASSES)
    assert r.metrics["n_unlabelled"] == 12 and r.metrics["n_test"] == 3 * 1  # 4 unlabelled a class; 20 % of 6


@pytest.mark.parametrize("csv_text, message", [
    ("file,label\nnope.png,bars\n", "row 2: no image 'nope.png'"),
    ("a.png,\n", "row 1: 'a.png' has an empty label"),
    ("a.png,bars\nb.png,dots\na.png,plain\n", "row 3: 'a.png' is listed twice (first in row 1)"),
])
def test_labels_csv_errors_name_the_row(tmp_path, capsys, csv_text, message):
    d = tmp_path / "flat"
    d.mkdir()
    rng = np.random.default_rng(0)
    for n in ("a.png", "b.png", "c.png"):
        _image("bars", rng).save(d / n)
    (tmp_path / "l.csv").write_text(csv_text)
    assert main(["train", "--data", f"folder:{d}", "--labels-csv", str(tmp_path / "l.csv"), "--out",
                 str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not (tmp_path / "run").exists()


def test_bad_unlabelled_sources_are_one_line_errors(tmp_path):
    root = _tree(tmp_path / "imgs", unlabelled=0)
    with pytest.raises(DataError, match="overlaps the labelled images"):
        load_dataset(f"folder:{root}", unlabelled=str(root))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="--unlabelled .*empty: no images"):
        load_dataset(f"folder:{root}", unlabelled=str(tmp_path / "empty"))
    (root / "unlabelled").mkdir()
    (root / "unlabelled" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png"):
        load_dataset(f"folder:{root}")
    with pytest.raises(DataError, match="--labels-csv: labels a folder"):
        load_dataset("digits", labels_csv=str(tmp_path / "x.csv"))


def test_val_is_held_out_balanced_and_never_trained_on(tmp_path):
    ds = load_dataset("digits")
    cfg = TrainConfig(data="digits", labels=200, val=50, seed=3)
    data = TrainData.build(ds, cfg, torch.device("cpu"))
    assert data.val_x.shape[0] == 50 and data.n_labelled == 150
    assert data.x.shape[0] == ds.train_x.shape[0] - 50  # not even as unlabelled images
    assert torch.bincount(data.val_y, minlength=10).tolist() == [5] * 10
    flat = lambda x: {bytes(a.numpy().tobytes()) for a in x}  # noqa: E731
    assert not flat(data.val_x) & flat(data.x) and not flat(data.val_x) & flat(ds.test_x)
    frac = TrainData.build(ds, TrainConfig(data="digits", labels=200, val=0.1, seed=3), torch.device("cpu"))
    assert frac.val_x.shape[0] == 20


def test_val_selects_best_pt_and_evaluate_describes_it(tmp_path):
    from aeclass.inference import evaluate_checkpoint
    r = train(TrainConfig(data="digits", labels=100, val=40, strategy="supervised", model="cnn", epochs=4, threads=1,
                          out=str(tmp_path / "run"), report=False), **QUIET)
    m = r.metrics
    rows = [json.loads(json.dumps(x)) for x in __import__("csv").DictReader(open(r.run_dir / "metrics.csv"))]
    val = [float(x["val_accuracy"]) for x in rows]
    assert m["checkpoint"] == "checkpoints/best.pt" and m["selected_by"] == "val_accuracy"
    assert m["best_epoch"] == 1 + int(np.argmax(val)) and m["val_accuracy"] == pytest.approx(max(val), abs=1e-6)
    ev = evaluate_checkpoint(r.run_dir)
    assert ev["checkpoint"].endswith("best.pt") and ev["test_accuracy"] == pytest.approx(m["test_accuracy"], abs=1e-9)


def test_early_stop_needs_val_and_stops(tmp_path):
    from aeclass import build_config
    from aeclass.errors import ConfigError
    with pytest.raises(ConfigError, match="--early-stop needs a validation set"):
        build_config(overrides={"early_stop": 2})
    r = train(TrainConfig(data="digits", labels=50, val=20, strategy="supervised", model="cnn", epochs=40,
                          early_stop=1, lr=0.05, threads=1, test_every=0, out=str(tmp_path / "run"), report=False),
              **QUIET)
    stopped = r.metrics["stopped_early_at"]
    assert stopped is not None and stopped < 40
    # --test-every 0 scores only a run's last epoch; the early stop's is the last, so its curve ends on a point.
    tested = [row["epoch"] for row in read_metrics_csv(r.run_dir / "metrics.csv") if row["test_accuracy"] is not None]
    assert tested == [stopped]


def test_sweep_ranks_strategies_by_validation(tmp_path, capsys):
    assert main(["sweep", "--data", "digits", "--strategies", "supervised,joint", "--labels", "100", "--seeds", "1",
                 "--epochs", "1", "--val", "30", "--threads", "1", "--no-baseline", "--no-report", "--quiet",
                 "--out", str(tmp_path / "sw")]) == 0
    summary = (tmp_path / "sw" / "summary.md").read_text()
    assert "## Validation accuracy (%)" in summary and "Which strategy to use, by validation accuracy" in summary
    import csv
    rows = list(csv.DictReader(open(tmp_path / "sw" / "results.csv")))
    assert all(0 < float(r["val_accuracy"]) <= 1 for r in rows)
    best = max(rows, key=lambda r: float(r["val_accuracy"]))["strategy"]
    assert f"**{best}**" in summary
