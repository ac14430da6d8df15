"""The report of a sweep directory: results.csv (one row per run: strategy, labels, seed, test_accuracy,
test_recon_mse, train_seconds, ...) and optionally summary.md, turned into an accuracy-vs-labels figure and
a mean ± std table."""
from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

import numpy as np

from .._version import __version__
from ..errors import AeclassError
from ..io import atomic_write_text
from .html import Page, data_table, esc, figure
from .plots import plot_accuracy_vs_labels, sweep_groups, sweep_n_train

RESULTS = "results.csv"


def is_sweep_dir(path: Path) -> bool:
    return (path / RESULTS).is_file()


def read_results(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [{k: v for k, v in r.items() if k is not None} for r in csv.DictReader(f)]
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise AeclassError(f"{path}: cannot read ({e})") from None
    if rows and not {"strategy", "labels", "test_accuracy"} <= set(rows[0]):
        raise AeclassError(f"{path}: expected columns strategy, labels, test_accuracy (got {', '.join(rows[0])})")
    return rows


def _n_train_from_runs(sweep_dir: Path) -> int | None:
    """The training-set size recorded by any run inside the sweep (for placing 'all' on the x axis)."""
    for p in sorted(sweep_dir.glob("*/metrics.json"))[:50]:
        try:
            n = json.loads(p.read_text()).get("n_train")
        except (OSError, ValueError, AttributeError):
            continue
        if n:
            return int(n)
    return None


def _label_key(lab: str) -> float:
    return float("inf") if lab == "all" else float(lab)


def _mean_std(vals: list[float], scale: float = 1.0, spec: str = ".2f") -> str:
    if not vals:
        return "—"
    m, s = np.mean(vals) * scale, np.std(vals) * scale
    return f"{m:{spec}} ± {s:{spec}}" if len(vals) > 1 else f"{m:{spec}}"


def write_sweep_report(sweep_dir: Path) -> Path:
    rows = read_results(sweep_dir / RESULTS)
    if not rows:
        raise AeclassError(f"{sweep_dir / RESULTS}: no results yet")
    n_train = sweep_n_train(rows) or _n_train_from_runs(sweep_dir)
    png = plot_accuracy_vs_labels(rows, sweep_dir / "report" / "accuracy_vs_labels.png", n_train=n_train)
    acc, mse, secs = sweep_groups(rows), sweep_groups(rows, "test_recon_mse"), sweep_groups(rows, "train_seconds")
    table_rows = []
    for strategy, by_labels in acc.items():
        for lab in sorted(by_labels, key=_label_key):
            seeds = sum(1 for r in rows if str(r.get("strategy")) == strategy and
                        (str(r.get("labels", "")).strip().lower() in ("all", "none", "") if lab == "all"
                         else str(r.get("labels", "")).strip() == lab))
            table_rows.append([strategy, lab, seeds, _mean_std(by_labels[lab], 100),
                               _mean_std(mse[strategy].get(lab, []), 1, ".5f"),
                               _mean_std(secs[strategy].get(lab, []), 1, ".1f")])
    where = f"at the training-set size ({n_train} images)" if n_train else "right of the largest count"
    cap = (f"{len(rows)} runs from results.csv. Each point is the mean test accuracy over seeds, error bars one "
           f"standard deviation; 'all' labels is drawn {where}.")
    body = figure(png, "test accuracy versus number of labels", cap)
    body += "<h3>Mean ± standard deviation over seeds</h3>" + data_table(
        ["strategy", "labels", "runs", "test accuracy (%)", "test recon MSE", "train seconds"], table_rows,
        numeric={2, 3, 4, 5})
    md = sweep_dir / "summary.md"
    if md.is_file():
        body += f"<details open><summary>summary.md</summary><pre>{esc(md.read_text(errors='replace'))}</pre></details>"
    strategies = ", ".join(acc)
    page = Page(f"aeclass sweep — {sweep_dir.resolve().name}", f"{len(rows)} runs · strategies {strategies}")
    page.add("sweep", "Accuracy vs labels", body)
    footer = (f"Written by aeclass {esc(__version__)} on {datetime.now():%Y-%m-%d %H:%M} from "
              f"<code>{esc(sweep_dir / RESULTS)}</code>.")
    out = sweep_dir / "report.html"
    atomic_write_text(out, page.render(footer))
    return out
