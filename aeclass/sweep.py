"""`aeclass sweep`: every strategy x label count x seed, one training run each, plus a classical baseline.

    >>> from aeclass.sweep import run_sweep
    >>> result = run_sweep("sweeps/digits", data="digits", strategies=["supervised", "semi"], labels=["100", "all"])

Sweep directory layout:

    sweep.json                 the grid and options this sweep was started with
    runs/<strategy>-<labels>-s<seed>/   one ordinary run directory per cell (see aeclass.train)
    runs/labelspreading-pca-<labels>-s<seed>/metrics.json   the baseline's cells
    results.csv                one row per cell (rewritten atomically after every cell)
    summary.md                 mean ± std test accuracy per strategy x label count, the baseline included
    accuracy_vs_labels.png     accuracy against labels (log x; 'all' at the training-set size), error bars

A sweep resumes: a cell whose run directory holds metrics.json is not trained again (its row is rebuilt from
the files), and a cell with a checkpoint but no metrics.json continues from that checkpoint. A finished cell
trained with a different configuration than the one now asked for is an error, not silently reused.

On a cluster (`shard=(I, N)`, `aeclass sweep --shard I/N`) a process runs only the cells k of the ordered cell
list (sweep_cells: by seed, then label count, then the strategies and the baseline) with k % N == I, into the
same runs/ layout, and writes its own files instead of the merged ones:

    sweep-shard-I-of-N.json    this shard's settings (compared with the other shards'), its start and end
    results-shard-I-of-N.csv   its rows, as results.csv has them

collect_sweep (`aeclass sweep --collect DIR [DIR ...]`) then merges the finished cells, read from their run
directories, into the results.csv, summary.md, plot and report an unsharded sweep of the grid writes.

The baseline ("labelspreading-pca") is scikit-learn's LabelSpreading with a k-nearest-neighbour graph on the
first 50 principal components of the training images (PCA fitted on the training images only), given exactly
the labelled subset the networks get for the same seed; it predicts the test images from their projections.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .config import RUNTIME_KEYS, TrainConfig, build_config, parse_labels
from .data import channels_of, dataset_for, labelled_subset
from .errors import AeclassError, ConfigError
from .io import DirectoryLock, atomic_write_json, atomic_write_text, remove_stale_temporaries
from .strategies import get_strategy
from .sweep_plans import DEFAULT, SweepPlan, plan_for
from .train import train

# The grid and options a sweep of grey images gets when not told (aeclass/sweep_plans.py; photos get another plan).
DEFAULT_STRATEGIES = DEFAULT.strategies
DEFAULT_LABELS = DEFAULT.labels
BASELINE = "labelspreading-pca"
SWEEP_FILES = ("sweep.json", "results.csv", "summary.md", "accuracy_vs_labels.png", "report.html")  # its own files
BASELINE_PARAMS = {"method": "LabelSpreading", "kernel": "knn", "n_neighbors": 7, "alpha": 0.2, "max_iter": 100,
                   "pca_components": 50}
# The default plan's options, below any preset / config file / flag: short runs, and input noise for the denoising
# reconstruction of joint and semi (the TrainConfig default is no noise).
SWEEP_DEFAULTS = DEFAULT.options
FIELDS = ["strategy", "labels", "seed", "test_accuracy", "test_recon_mse", "train_seconds", "n_labelled", "n_train",
          "run_dir", "config", "val_accuracy"]
# What every shard of one sweep must agree on: the grid, and each strategy's resolved options (not the preset or
# config file's name, whose contents could differ between machines; not where or how a cell runs).
SETTINGS_KEYS = ("data", "strategies", "labels", "seeds", "skip", "baseline", "resolved")
SWEEP_JSON_KEYS = ("data", "plan", "strategies", "labels", "seeds", "skip", "preset", "config_file", "overrides",
                   "baseline", "resolved")


@dataclass
class Cell:
    strategy: str
    labels: int | None
    seed: int

    @property
    def label_text(self) -> str:
        return "all" if self.labels is None else str(self.labels)

    @property
    def name(self) -> str:
        return f"{self.strategy}-{self.label_text}-s{self.seed}"


@dataclass
class SweepResult:
    sweep_dir: Path
    rows: list[dict]
    trained: int       # cells trained (or resumed) by this call
    reused: int        # cells finished earlier, read back
    wall_seconds: float
    shard: tuple[int, int] | None = None  # (I, N) of a shard's run
    part: Path | None = None              # a shard's results-shard-I-of-N.csv


def sweep_cells(strategies, label_items, seed_list, baseline: bool, skip=()) -> list[Cell]:
    """Every cell of the grid, in the order a sweep visits them: by seed, then label count, then the strategies
    and the baseline, less the (strategy, label count) pairs in `skip` (a plan's). Shards split this list (cell k
    goes to shard k % N), so which shard owns a cell depends on the grid alone, never on which cells are
    finished; label counts the data skip keep their places."""
    left_out = {(str(s), str(lab)) for s, lab in skip}
    cells = [Cell(s, lab, seed) for seed in seed_list for lab in label_items
             for s in [*strategies, *([BASELINE] if baseline else [])]]
    return [c for c in cells if (c.strategy, c.label_text) not in left_out]


def parse_shard(value) -> tuple[int, int] | None:
    """--shard 'I/N' (or (I, N)) -> (I, N), with 0 <= I < N; None stays None."""
    if value is None:
        return None
    text = "/".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise ConfigError(f"--shard: expected I/N, this shard's number and the number of shards (e.g. 0/4, "
                          f"I from 0 to N-1), got '{text}'")
    i, n = int(m[1]), int(m[2])
    if n < 1:
        raise ConfigError(f"--shard {text}: expected at least 1 shard, got N = {n}")
    if i >= n:
        raise ConfigError(f"--shard {text}: expected I from 0 to {n - 1} (shards are numbered from 0), got {i}")
    return i, n


def _shard_tag(shard: tuple[int, int]) -> str:
    return f"shard-{shard[0]}-of-{shard[1]}"


def parse_list(text: str | list | tuple, what: str) -> list[str]:
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else map(str, text)) if s.strip()]
    if not items:
        raise ConfigError(f"--{what}: expected a comma-separated list, got '{text}'")
    if len(set(items)) != len(items):
        raise ConfigError(f"--{what}: repeated item in '{text}'")
    return items


def parse_seeds(value) -> list[int]:
    """--seeds 3 -> [0, 1, 2]; --seeds 0,5,7 -> those seeds."""
    text = str(value).strip()
    try:
        if "," in text:
            seeds = [int(s) for s in parse_list(text, "seeds")]
            if min(seeds) < 0:
                raise ValueError
            return seeds
        n = int(text)
    except ValueError:
        raise ConfigError(f"--seeds: expected a count (e.g. 3) or a list of seeds >= 0 (e.g. 0,1,2), got '{value}'") from None
    if n <= 0:
        raise ConfigError(f"--seeds: expected a positive count, got {n}")
    return list(range(n))


def labelled_indices(train_y, labels: int | None, seed: int, num_classes: int):
    """The labelled training subset of a cell: the same draw the training engine makes (TrainData.build)."""
    return labelled_subset(train_y, labels, seed, num_classes)


def _cell_config(cell: Cell, preset, config_file, overrides: dict, run_dir: Path, plan: SweepPlan) -> TrainConfig:
    flags = dict(overrides)
    flags.update(strategy=cell.strategy, labels=cell.label_text, seed=cell.seed, out=str(run_dir), report=False)
    own = get_strategy(cell.strategy).model
    if own is not None:  # a strategy with a model of its own (ladder): that model, its default sizes, whatever --model says
        flags.update(model=own, model_kwargs={})
    base = plan.base(cell.strategy, own_recipe=not (preset or config_file))
    return build_config(preset=preset, config_file=config_file, overrides=flags, base=base)


def _config_mismatch(saved: dict, cfg: TrainConfig) -> str | None:
    """The first option (other than where and how it runs) that differs between a cell's saved config and
    the one now asked for. The saved one is resolved as configs are now: options added since it ran have
    their defaults, and a flat strategy option of an older aeclass is read as the strategy's."""
    want = cfg.to_dict()
    try:
        saved = build_config(base={k: v for k, v in saved.items() if k not in RUNTIME_KEYS}).to_dict()
    except AeclassError as e:
        return f"its config.yaml no longer resolves ({e})"
    for k in sorted(set(saved) | set(want)):
        if k in RUNTIME_KEYS:
            continue
        if saved.get(k) != want.get(k):
            return f"{k}: {saved.get(k)!r} there, {want.get(k)!r} now"
    return None


def _compact(cfg: dict) -> str:
    return json.dumps({k: v for k, v in cfg.items() if k != "out"}, separators=(",", ":"), sort_keys=True)


def _row(cell: Cell, metrics: dict, run_dir: str, config: dict) -> dict:
    return {"strategy": cell.strategy, "labels": cell.label_text, "seed": cell.seed,
            "test_accuracy": metrics.get("test_accuracy"), "test_recon_mse": metrics.get("test_recon_mse"),
            "train_seconds": metrics.get("train_seconds"), "n_labelled": metrics.get("n_labelled"),
            "n_train": metrics.get("n_train"), "run_dir": run_dir, "config": _compact(config),
            "val_accuracy": metrics.get("val_accuracy")}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise AeclassError(f"{path}: cannot read ({e}); delete that run directory to train the cell again") from None


def _finished_row(cell: Cell, run_dir: Path, rel: str, cfg: TrainConfig, advice: str) -> dict | None:
    """The results.csv row of a cell whose run directory holds metrics.json (None when it has not finished);
    refused when its config.yaml differs from `cfg`: reusing it would report a cell that never ran."""
    if not (run_dir / "metrics.json").is_file():
        return None
    saved = yaml_load(run_dir / "config.yaml")
    diff = _config_mismatch(saved, cfg)
    if diff:
        raise AeclassError(f"{run_dir} was trained with another configuration ({diff}); {advice}")
    return _row(cell, _read_json(run_dir / "metrics.json"), rel, saved)


def run_labelspreading(ds, labels: int | None, seed: int) -> dict:
    """The classical baseline for one cell: LabelSpreading (knn graph) on PCA-50 of the training images."""
    from sklearn.decomposition import PCA
    from sklearn.semi_supervised import LabelSpreading

    t0 = time.perf_counter()
    n_train = int(ds.train_x.shape[0])
    xtr = ds.train_x.reshape(n_train, -1).numpy().astype(np.float32) / 255.0
    xte = ds.test_x.reshape(ds.test_x.shape[0], -1).numpy().astype(np.float32) / 255.0
    idx = labelled_indices(ds.train_y, labels, seed, ds.num_classes).numpy()
    y = np.full(n_train, -1, dtype=np.int64)
    y[idx] = ds.train_y.numpy()[idx]
    k = min(BASELINE_PARAMS["pca_components"], xtr.shape[1], n_train)
    pca = PCA(n_components=k, random_state=seed).fit(xtr)
    model = LabelSpreading(kernel="knn", n_neighbors=BASELINE_PARAMS["n_neighbors"], alpha=BASELINE_PARAMS["alpha"],
                           max_iter=BASELINE_PARAMS["max_iter"])
    with np.errstate(invalid="ignore", divide="ignore"):  # a graph component without labels has no class mass
        model.fit(pca.transform(xtr), y)
        pred = model.predict(pca.transform(xte))
    return {"test_accuracy": float((pred == ds.test_y.numpy()).mean()), "test_recon_mse": None,
            "train_seconds": time.perf_counter() - t0, "n_labelled": int(idx.size), "n_train": n_train,
            "strategy": BASELINE, "labels": labels, "seed": seed, "params": dict(BASELINE_PARAMS, pca_components=k)}


def _write_results(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k])) for k in FIELDS})
    atomic_write_text(path, buf.getvalue())


def _stats(vals: list[float]) -> tuple[float, float]:
    return float(np.mean(vals)), float(np.std(vals))


def summary_markdown(rows: list[dict], data: str, n_train: int | None, wall_seconds: float | None = None) -> str:
    """Mean ± std (over seeds, population std as in the figure) of the test accuracy per strategy x labels."""
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    strategies = [s for s in strategies if s != BASELINE] + ([BASELINE] if BASELINE in strategies else [])
    label_cols = sorted({r["labels"] for r in rows}, key=lambda t: math.inf if t == "all" else int(t))

    def cell(strategy, lab, key, scale, fmt):
        vals = _values(rows, strategy, lab, key)
        if not vals:
            return "—"
        m, s = _stats(vals)
        return f"{m * scale:{fmt}} ± {s * scale:{fmt}} (n={len(vals)})" if len(vals) > 1 else f"{m * scale:{fmt}} (n=1)"

    def table(key, scale, fmt, which):
        head = "| strategy | " + " | ".join(f"{lab} labels" if lab != "all" else f"all ({n_train or '?'})"
                                            for lab in label_cols) + " |"
        lines = [head, "|---" * (len(label_cols) + 1) + "|"]
        for s in which:
            lines.append(f"| {s} | " + " | ".join(cell(s, lab, key, scale, fmt) for lab in label_cols) + " |")
        return "\n".join(lines)

    nets = [s for s in strategies if s != BASELINE]
    with_recon = [s for s in nets if any(r["strategy"] == s and r.get("test_recon_mse") not in (None, "") for r in rows)]
    out = [f"# aeclass sweep: {data}", "",
           f"{len(rows)} cells. Test accuracy in %, mean ± std over seeds (population std, as the error bars of "
           f"accuracy_vs_labels.png); n = seeds. `{BASELINE}` is scikit-learn LabelSpreading (knn graph, k="
           f"{BASELINE_PARAMS['n_neighbors']}) on PCA-{BASELINE_PARAMS['pca_components']} pixels with the same "
           "labelled subsets.", "", "## Test accuracy (%)", "", table("test_accuracy", 100, ".2f", strategies), "",
           "## Training seconds per run", "", table("train_seconds", 1, ".1f", strategies)]
    out += _validation_section(rows, nets, label_cols, table)
    out += _recommendation_section(rows, nets, label_cols)
    if with_recon:
        out += ["", "## Test reconstruction MSE", "",
                "(The decoder of `supervised` is untrained: its MSE is that of a random decoder.)", "",
                table("test_recon_mse", 1, ".5f", with_recon)]
    total = sum(float(r["train_seconds"]) for r in rows if r.get("train_seconds") not in (None, ""))
    out += ["", f"Total training time of all cells: {total:.0f} s" +
            (f"; wall time of the last `aeclass sweep` call: {wall_seconds:.0f} s." if wall_seconds is not None else ".")]
    return "\n".join(out) + "\n"


def _validation_section(rows, nets, label_cols, table) -> list[str]:
    """With --val: validation accuracy per cell (the table the recommendation then ranks by)."""
    if not _has(rows, "val_accuracy"):
        return []
    return ["", "## Validation accuracy (%)", "", "Measured on labelled images held out of training (`--val`).", "",
            table("val_accuracy", 100, ".2f", nets)]


def _values(rows, strategy: str, lab: str, key: str) -> list[float]:
    """The `key` figures of one strategy x label count, over its seeds (cells without it left out)."""
    return [float(r[key]) for r in rows if r["strategy"] == strategy and r["labels"] == lab
            and r.get(key) not in (None, "")]


def _has(rows, key) -> bool:
    return any(r.get(key) not in (None, "") for r in rows)


def _recommendation_section(rows, nets, label_cols) -> list[str]:
    """Which strategy to use at each label count: the best mean validation accuracy when the cells held some
    out (--val; the honest choice: the test set never chooses), else the best mean test accuracy, said as such.
    A lead smaller than the seeds' spread, or measured on one seed, is said to be no clear lead."""
    key = "val_accuracy" if _has(rows, "val_accuracy") else "test_accuracy"
    lines = []
    for lab in label_cols:
        got = {s: v for s in nets if (v := _values(rows, s, lab, key))}
        if not got:
            continue
        ranked = sorted(got, key=lambda s: -np.mean(got[s]))
        top, text = ranked[0], f"{100 * np.mean(got[ranked[0]]):.2f} %"
        if len(ranked) > 1:
            second = ranked[1]
            lead = 100 * (np.mean(got[top]) - np.mean(got[second]))
            spread = 100 * max(np.std(got[top]), np.std(got[second]))
            seeds = min(len(got[top]), len(got[second]))
            clear = seeds > 1 and lead > 2 * spread
            text += (f", {lead:.2f} points above {second}" +
                     ("" if clear else f" ({'one seed' if seeds == 1 else 'within twice the seeds spread'}: "
                                       "no clear lead; more --seeds would tell)"))
        lines.append(f"- {lab} labels: **{top}** ({text})")
    what = ("by validation accuracy" if key == "val_accuracy" else
            "by test accuracy (no --val: the test set chose; for a choice it has not seen, hold out --val)")
    return ["", f"Which strategy to use, {what}:", "", *lines] if lines else []


def _plot(rows: list[dict], path: Path, n_train: int | None) -> None:
    from .report import plot_accuracy_vs_labels
    plot_accuracy_vs_labels(rows, path, n_train=n_train)


def _grid(strategies, labels, seeds) -> tuple[list[str], list[int | None], list[int]]:
    strategies = parse_list(strategies, "strategies")
    label_items = [parse_labels(x) for x in parse_list(labels, "labels")]
    if len(set(label_items)) != len(label_items):
        raise ConfigError(f"--labels: repeated count in '{labels}'")
    if isinstance(seeds, (list, tuple)):
        seed_list = [int(x) for x in seeds]
        if not seed_list or min(seed_list) < 0 or len(set(seed_list)) != len(seed_list):
            raise ConfigError(f"seeds: expected distinct seeds >= 0, got {seeds}")
    else:
        seed_list = parse_seeds(seeds)
    return strategies, label_items, seed_list


@dataclass
class _Grid:
    """A sweep's grid and options, resolved and checked before anything is written."""

    plan: SweepPlan
    strategies: list[str]
    labels: list[int | None]
    seeds: list[int]
    skip: list[list[str]]  # (strategy, label count) cells the plan leaves out
    overrides: dict
    probe: TrainConfig  # a cell's config: where the data come from
    resolved: dict      # each strategy's options as its cells get them, less labels, seed and RUNTIME_KEYS

    @property
    def folder(self) -> bool:  # a folder without a train/test split is split by the seed
        return self.probe.data.startswith("folder:")


def _choose_plan(sweep_dir: Path, preset, config_file, ov: dict) -> SweepPlan:
    """The plan for the sweep's kind of data (sweep_plans.plan_for), seen without loading the data. A sweep
    started before plans existed (its sweep.json names none) keeps the default plan it ran with."""
    started = sweep_dir / "sweep.json"
    if started.is_file():
        try:
            recorded = json.loads(started.read_text())
        except (OSError, ValueError) as e:
            raise AeclassError(f"{started}: cannot read ({e}); it records how this sweep was started: restore it, "
                               "or use a new --out") from None
        if "plan" not in recorded:
            return DEFAULT
    where = build_config(preset=preset, config_file=config_file,
                         overrides=dict(ov, strategy="supervised", out=str(sweep_dir), report=False))
    return plan_for(channels_of(where.data, where.channels))


def _resolve_grid(sweep_dir: Path, data, strategies, labels, seeds, epochs, preset, config_file, data_dir,
                  overrides) -> _Grid:
    ov = {k: v for k, v in (overrides or {}).items() if v is not None}
    ov.update({k: v for k, v in (("data", data), ("data_dir", data_dir), ("epochs", epochs)) if v is not None})
    plan = _choose_plan(sweep_dir, preset, config_file, ov)
    skip = [list(p) for p in plan.skip] if labels is None else []  # the plan's own label counts only
    strategies, label_items, seed_list = _grid(strategies or plan.strategies, labels or plan.labels,
                                               plan.seeds if seeds is None else seeds)
    # Resolve one cell's config per strategy up front: bad strategies, presets or options fail before any training.
    resolved = {}
    for s in strategies:
        cfg = _cell_config(Cell(s, label_items[0], seed_list[0]), preset, config_file, ov, sweep_dir / "runs" / "check",
                           plan)
        resolved[s] = {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_KEYS and k not in ("labels", "seed")}
    probe = _cell_config(Cell(strategies[0], None, seed_list[0]), preset, config_file, ov, sweep_dir, plan)
    # As JSON reads it back, so that a shard's settings compare equal to another shard's record of the same.
    return _Grid(plan, strategies, label_items, seed_list, skip, ov, probe,
                 json.loads(json.dumps(resolved, default=str)))


def _settings(grid: _Grid, preset, config_file, baseline: bool) -> dict:
    """sweep.json: the grid and options a sweep was started with (each shard's sweep-shard-I-of-N.json too)."""
    return {"data": grid.probe.data, "plan": grid.plan.name, "strategies": grid.strategies,
            "labels": [x or "all" for x in grid.labels], "seeds": grid.seeds, "skip": grid.skip, "preset": preset,
            "config_file": config_file, "overrides": grid.overrides, "baseline": baseline, "resolved": grid.resolved,
            "started": _now()}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class _Sweep:
    """One call of run_sweep: the grid, where it goes, and the rows so far."""

    dir: Path
    plan: SweepPlan
    preset: str | None
    config_file: str | None
    overrides: dict
    log: object
    rows: list
    trained: int = 0
    reused: int = 0
    done: int = 0
    total: int = 0

    def cell(self, cell: Cell, ds) -> None:
        """Train one cell (or resume it from its checkpoint), or read it back when it finished earlier."""
        self.done += 1
        run_dir = self.dir / "runs" / cell.name
        cfg = _cell_config(cell, self.preset, self.config_file, self.overrides, run_dir, self.plan)
        rel = f"runs/{cell.name}"
        row = _finished_row(cell, run_dir, rel, cfg, "use a new --out, or delete that run directory to retrain it")
        if row is not None:
            self.rows.append(row)
            self.reused += 1
            self.log(f"[{self.done}/{self.total}] {cell.name}: done earlier, test_accuracy {_fmt(row['test_accuracy'])}")
            return
        resume = (run_dir / "checkpoints" / "last.pt").is_file()
        if resume:
            diff = _config_mismatch(yaml_load(run_dir / "config.yaml"), cfg)
            if diff:
                raise AeclassError(f"{run_dir} was started with another configuration ({diff}); use a new "
                                   f"--out, or delete that run directory")
        t0 = time.perf_counter()
        result = train(cfg, resume=resume, log=lambda *a: None, progress=False, dataset=ds)
        self.trained += 1
        self.rows.append(_row(cell, result.metrics, rel, cfg.to_dict()))
        self.log(f"[{self.done}/{self.total}] {cell.name}: {'resumed, ' if resume else ''}test_accuracy "
                 f"{_fmt(result.metrics.get('test_accuracy'))} ({time.perf_counter() - t0:.1f} s)")

    def baseline(self, ds, labels: int | None, seed: int) -> None:
        cell = Cell(BASELINE, labels, seed)
        self.done += 1
        run_dir = self.dir / "runs" / cell.name
        if (run_dir / "metrics.json").is_file():
            metrics, note = _read_json(run_dir / "metrics.json"), "done earlier, "
            self.reused += 1
        else:
            metrics, note = run_labelspreading(ds, labels, seed), ""
            metrics["data"] = ds.name
            atomic_write_json(run_dir / "metrics.json", metrics)
            self.trained += 1
        self.rows.append(_row(cell, metrics, f"runs/{cell.name}", metrics.get("params", {})))
        self.log(f"[{self.done}/{self.total}] {cell.name}: {note}test_accuracy {_fmt(metrics.get('test_accuracy'))}")


def _run_cells(sw: _Sweep, cells: list[Cell], grid: _Grid, results: Path) -> tuple[int | None, list[str]]:
    """Run `cells` in order, rewriting `results` after each; returns the training-set size (of the last
    dataset loaded) and the cells skipped because their label count is not below it."""
    sw.total = len(cells)
    n_train = ds = ds_seed = None
    skipped, said = [], set()
    for cell in cells:
        if ds is None or (grid.folder and ds_seed != cell.seed):
            ds = dataset_for(grid.probe, seed=cell.seed)
            ds_seed, n_train = cell.seed, int(ds.train_x.shape[0])
        lab = cell.labels
        if lab is not None and lab >= n_train:
            if (lab, cell.seed) not in said:
                said.add((lab, cell.seed))
                sw.log(f"sweep: --labels {lab} >= the {n_train} training images, the same as 'all': skipped")
            sw.done += 1
            skipped.append(cell.name)
            continue
        if lab is not None and lab < ds.num_classes:
            raise ConfigError(f"--labels {lab} is fewer than the {ds.num_classes} classes")
        if cell.strategy == BASELINE:
            sw.baseline(ds, lab, cell.seed)
        else:
            sw.cell(cell, ds)
        _write_results(results, sw.rows)
    return n_train, skipped


def _sweep_locks(sweep_dir: Path, shard: tuple[int, int] | None) -> ExitStack:
    """A whole sweep holds its directory exclusively: two sweeps rewriting results.csv and summary.md in turn
    would each drop the other's rows. Shards share it (each writes only its own cells and part files, and
    train() locks every cell's run directory), which keeps a whole sweep and --collect out while any shard
    runs; a shard's own lock file keeps the same shard from running twice at once."""
    stack = ExitStack()
    try:
        if shard is None:
            stack.enter_context(DirectoryLock(sweep_dir, "--out"))
        else:
            i, n = shard
            stack.enter_context(DirectoryLock(sweep_dir, shared=True, busy=(
                f"--out {sweep_dir}: another aeclass process (a sweep without --shard, or --collect) is using this "
                "directory; shards share a sweep directory only with each other")))
            stack.enter_context(DirectoryLock(sweep_dir, name=f".lock-{_shard_tag(shard)}", busy=(
                f"--shard {i}/{n}: this shard is already running in {sweep_dir}; run each shard once at a time")))
    except BaseException:
        stack.close()
        raise
    return stack


def run_sweep(out: str | Path, data: str | None = None, strategies=None, labels=None, seeds=None,
              epochs: int | None = None, preset: str | None = None, config_file: str | None = None,
              data_dir: str | None = None, baseline: bool = True, overrides: dict | None = None, report: bool = True,
              shard=None, log=print) -> SweepResult:
    """Train every strategy x labels x seed cell into `out`/runs/ and write results.csv, summary.md and
    accuracy_vs_labels.png (see the module docstring). `seeds` is a count (seeds 0..n-1) or a list;
    `labels` items are counts or 'all'; `overrides` are further TrainConfig options (threads, device, ...).
    Strategies, labels and seeds left None, and the options below any preset, come from the plan for the
    data's kind (aeclass/sweep_plans.py: photos get their own).
    With `shard` ('I/N' or (I, N)) only that shard's cells run, and it writes its part files instead of the
    merged ones; collect_sweep merges the shards."""
    t_start = time.perf_counter()
    sweep_dir, shard = Path(out), parse_shard(shard)
    grid = _resolve_grid(sweep_dir, data, strategies, labels, seeds, epochs, preset, config_file, data_dir, overrides)
    cells = sweep_cells(grid.strategies, grid.labels, grid.seeds, baseline, grid.skip)
    if grid.skip:
        log(f"sweep: the {grid.plan.name} plan leaves out " + ", ".join(f"{s} at {lab} labels" for s, lab in grid.skip))
    with _sweep_locks(sweep_dir, shard):
        settings = _settings(grid, preset, config_file, baseline)
        sw = _Sweep(sweep_dir, grid.plan, preset, config_file, grid.overrides, log, [])
        if shard is not None:
            return _run_shard(sw, grid, cells, settings, shard, t_start)
        remove_stale_temporaries(sweep_dir, SWEEP_FILES)
        atomic_write_json(sweep_dir / "sweep.json", settings)
        n_train, _ = _run_cells(sw, cells, grid, sweep_dir / "results.csv")
        if not sw.rows:
            raise AeclassError("sweep: no cell to run (every label count was >= the training-set size?)")
        wall = time.perf_counter() - t_start
        _finish(sweep_dir, sw.rows, grid.probe.data, n_train, wall, report, log)
        log(f"sweep: {sw.trained} cells run, {sw.reused} reused, {wall:.0f} s -> {sweep_dir}/results.csv, summary.md, "
            "accuracy_vs_labels.png")
        return SweepResult(sweep_dir, sw.rows, sw.trained, sw.reused, wall)


def _run_shard(sw: _Sweep, grid: _Grid, cells: list[Cell], settings: dict, shard: tuple[int, int],
               t_start: float) -> SweepResult:
    """Run shard I of N (cell k of `cells` when k % N == I) and write its part files, never the merged ones:
    those would claim to be the whole sweep. Its record says when it started and whether it finished."""
    i, n = shard
    tag = _shard_tag(shard)
    record_path, part = sw.dir / f"sweep-{tag}.json", sw.dir / f"results-{tag}.csv"
    _check_shard_agrees(sw.dir, settings, shard)
    remove_stale_temporaries(sw.dir, (record_path.name, part.name))
    record = dict(settings, shard=[i, n], finished=None)
    atomic_write_json(record_path, record)
    mine = [c for k, c in enumerate(cells) if k % n == i]
    if not mine:
        sw.log(f"sweep --shard {i}/{n}: no cells (the grid has {len(cells)})")
    n_train, skipped = _run_cells(sw, mine, grid, part)
    _write_results(part, sw.rows)  # a shard left without cells leaves its (empty) part too
    wall = time.perf_counter() - t_start
    record.update(finished=_now(), cells=[c.name for c in mine], skipped=skipped, n_train=n_train,
                  wall_seconds=round(wall, 1))
    atomic_write_json(record_path, record)
    sw.log(f"sweep --shard {i}/{n}: {sw.trained} cells run, {sw.reused} reused, {len(skipped)} skipped, {wall:.0f} s "
           f"-> {part}")
    return SweepResult(sw.dir, sw.rows, sw.trained, sw.reused, wall, shard=shard, part=part)


def _read_shard_records(d: Path) -> list[tuple[Path, dict]]:
    """The shard records (sweep-shard-I-of-N.json) in a sweep directory, each checked to be one."""
    out = []
    for path in sorted(d.glob("sweep-shard-*-of-*.json")):
        try:
            rec = json.loads(path.read_text())
            i, n = rec["shard"]
            ok = set(SETTINGS_KEYS) <= set(rec) and 0 <= i < n and set(rec["resolved"]) == set(rec["strategies"])
        except (OSError, ValueError, TypeError, KeyError):
            ok = False
        if not ok:
            raise AeclassError(f"{path}: not a shard record of aeclass sweep --shard (unreadable or incomplete); "
                               "delete it and rerun that shard")
        out.append((path, rec))
    return out


def _settings_diff(a: dict, b: dict) -> tuple[str, object, object] | None:
    """The first sweep setting on which two settings records differ: (what, a's value, b's value)."""
    for k in SETTINGS_KEYS:
        x, y = a.get(k), b.get(k)
        if k == "resolved" and isinstance(x, dict) and isinstance(y, dict) and x.keys() == y.keys():
            for s in x:
                for opt in sorted(set(x[s]) | set(y[s])):
                    if x[s].get(opt) != y[s].get(opt):
                        return f"{s}'s {opt}", x[s].get(opt), y[s].get(opt)
        elif x != y:
            return k, x, y
    return None


def _check_shard_agrees(sweep_dir: Path, settings: dict, shard: tuple[int, int]) -> None:
    """Refuse to start a shard whose settings differ from a shard record already in its sweep directory: their
    cells could not be merged. (Two shards started at the same moment, or on separate disks, are compared by
    --collect, which also checks every cell's config.)"""
    i, n = shard
    mine = json.loads(json.dumps(settings, default=str))
    for path, rec in _read_shard_records(sweep_dir):
        if rec["shard"][1] != n:
            raise ConfigError(f"--shard {i}/{n}: {path} is a shard of a split into {rec['shard'][1]}; every shard of "
                              "a sweep needs the same N (delete the old split's sweep-shard-*.json to split it anew)")
        diff = _settings_diff(rec, mine)
        if diff:
            raise ConfigError(f"--shard {i}/{n}: {diff[0]} is {diff[2]!r} here but {diff[1]!r} in {path}; start every "
                              "shard with the same grid and options (delete that file if the sweep changed on purpose)")


def _finish(sweep_dir: Path, rows: list, data: str, n_train, wall: float | None, report: bool, log) -> None:
    atomic_write_text(sweep_dir / "summary.md", summary_markdown(rows, data, n_train, wall))
    _plot(rows, sweep_dir / "accuracy_vs_labels.png", n_train)
    if report:
        try:
            from .report import write_report
            log(f"report: {write_report(sweep_dir)}")
        except (ImportError, AeclassError) as e:
            log(f"report skipped: {e}")


def collect_sweep(dirs, out: str | Path | None = None, report: bool = True, log=print) -> SweepResult:
    """Merge the cells of `aeclass sweep --shard` runs into the results.csv, summary.md, accuracy_vs_labels.png
    and report.html an unsharded sweep of the same grid writes: the same rows in the same order, each read from
    its cell's run directory (metrics.json, config.yaml), not from the shards' part files. Trains nothing.

    `dirs` are sweep directories: the one the shards shared, or one per machine, copied back. The merge goes
    into `out` (default: the first of `dirs`); a finished cell found only in another directory is copied into
    its runs/. Refused with one line, before anything is written: shard records that disagree on the settings
    or on N, a cell trained with other options than the settings', and cells not finished anywhere (named,
    with the shards that owe them): a summary without them would pass for the whole sweep."""
    t0 = time.perf_counter()
    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise ConfigError("--collect: expected one or more sweep directories")
    target = Path(out) if out is not None else dirs[0]
    settings, records = _agreed_settings(dirs)
    cells = sweep_cells(settings["strategies"], [parse_labels(x) for x in settings["labels"]], settings["seeds"],
                        settings["baseline"], settings.get("skip") or ())
    search = [target, *[d for d in dirs if d.resolve() != target.resolve()]]  # the target's own cells stay put
    busy = f"--collect {target}: a shard or a sweep is still running in this directory; collect once it has finished"
    with DirectoryLock(target, "--collect", busy=busy) as lock:  # exclusive: no shard or sweep writes there meanwhile
        try:
            found, missing, sizes = _locate_cells(cells, search, settings)
            if missing:
                raise AeclassError(_missing_message(missing, len(found) + len(missing), cells, records))
            for tmp in (target / "runs").glob(".*.collect.tmp"):  # left by a collect killed mid-copy
                shutil.rmtree(tmp, ignore_errors=True)
            copied = [_copy_cell(src / "runs" / cell.name, target / "runs" / cell.name)
                      for cell, src, _ in found if src != target]
        except BaseException:
            lock.discard()  # a refused collect into a new --out leaves no directory behind
            raise
        rows = [row for _, _, row in found]
        remove_stale_temporaries(target, SWEEP_FILES)
        _write_results(target / "results.csv", rows)
        atomic_write_json(target / "sweep.json", _merged_settings(records, dirs))
        _finish(target, rows, settings["data"], sizes.get(found[-1][0].seed), None, report, log)
        wall = time.perf_counter() - t0
        log(f"sweep --collect: {len(rows)} cells of {settings['shard'][1]} shards"
            f"{f', {len(copied)} copied into {target}/runs' if copied else ''} -> {target}/results.csv, summary.md, "
            "accuracy_vs_labels.png")
        return SweepResult(target, rows, 0, len(rows), wall)


def _agreed_settings(dirs: list[Path]) -> tuple[dict, list[tuple[Path, dict]]]:
    """The settings every shard record in `dirs` shares, and the records; refused when any two differ."""
    records = []
    for d in dirs:
        if not d.is_dir():
            raise AeclassError(f"--collect {d}: no such directory")
        records += _read_shard_records(d)
    if not records:
        raise AeclassError(f"--collect: no shard record (sweep-shard-I-of-N.json) in {', '.join(map(str, dirs))}; "
                           "it merges the cells of 'aeclass sweep --shard I/N' runs")
    (p0, first), n = records[0], records[0][1]["shard"][1]
    for path, rec in records[1:]:
        if rec["shard"][1] != n:
            raise AeclassError(f"--collect: {path} is a shard of a split into {rec['shard'][1]}, {p0} of a split "
                               f"into {n}; every shard of a sweep needs the same N")
        diff = _settings_diff(first, rec)
        if diff:
            raise AeclassError(f"--collect: the shards ran with different settings: {diff[0]} is {diff[1]!r} in {p0} "
                               f"but {diff[2]!r} in {path}; rerun the odd shard with the others' options")
    return first, records


def _locate_cells(cells: list[Cell], search: list[Path], settings: dict):
    """Each finished cell with the first directory holding it and its row (its options checked against the
    settings), the cells finished nowhere, and the training-set size per seed."""
    found, absent, sizes = [], [], {}
    for cell in cells:
        src = next((d for d in search if (d / "runs" / cell.name / "metrics.json").is_file()), None)
        if src is None:
            absent.append(cell)
            continue
        row, size = _collected_row(cell, src / "runs" / cell.name, settings)
        found.append((cell, src, row))
        if size:
            sizes.setdefault(cell.seed, int(size))
    # As the sweep does: a label count not below the training-set size is 'all' again, skipped, not missing.
    known = next(iter(sizes.values()), math.inf)
    missing = [c for c in absent if c.labels is None or c.labels < sizes.get(c.seed, known)]
    return found, missing, sizes


def _collected_row(cell: Cell, run_dir: Path, settings: dict) -> tuple[dict, int | None]:
    """A finished cell's results.csv row and its training-set size; refused when it did not run with the
    sweep's settings (a shard started with other options, or a directory of another sweep)."""
    rel = f"runs/{cell.name}"
    if cell.strategy == BASELINE:
        metrics = _read_json(run_dir / "metrics.json")
        params = metrics.get("params") or {}
        fixed = {k: v for k, v in BASELINE_PARAMS.items() if k != "pca_components"}  # PCA: at most 50, data's size
        if ({k: params.get(k) for k in fixed} != fixed
                or (metrics.get("labels"), metrics.get("seed")) != (cell.labels, cell.seed)):
            raise AeclassError(f"--collect: {run_dir} is not this sweep's baseline cell (its metrics.json: labels "
                               f"{metrics.get('labels')}, seed {metrics.get('seed')}, {params}); delete it and rerun "
                               "its shard")
        return _row(cell, metrics, rel, params), metrics.get("n_train")
    cfg = build_config(base=dict(settings["resolved"][cell.strategy], labels=cell.labels, seed=cell.seed))
    row = _finished_row(cell, run_dir, rel, cfg, "--collect trains nothing: delete that run directory and rerun its "
                        "shard with the sweep's options")
    try:  # the dataset's training images (metrics.json's n_train counts what trained: less --val, plus --unlabelled)
        size = json.loads((run_dir / "run.json").read_text()).get("n_train")
    except (OSError, ValueError, AttributeError):
        size = None
    return row, size


def _missing_message(missing: list[Cell], due: int, cells: list[Cell], records) -> str:
    """One line: how many cells are not finished, grouped by the shard that owes them, with its state."""
    n = records[0][1]["shard"][1]
    index = {c.name: k for k, c in enumerate(cells)}
    owed: dict[int, list[str]] = {}
    for c in missing:
        owed.setdefault(index[c.name] % n, []).append(c.name)
    state: dict[int, str | None] = {}
    for _, rec in records:  # a shard run twice, or copied back from two machines: finished if either finished
        state[rec["shard"][0]] = state.get(rec["shard"][0]) or rec.get("finished")
    parts = []
    for i, names in sorted(owed.items()):
        how = ("finished, but its cells are not in these directories" if state.get(i)
               else "started, not finished" if i in state else f"not started (no sweep-shard-{i}-of-{n}.json)")
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        parts.append(f"shard {i}/{n} {how}: {', '.join(names[:3])}{more}")
    return (f"--collect: {len(missing)} of the sweep's {due} cells are not finished; {'; '.join(parts)}. Rerun those "
            "shards (they resume) or name every directory they wrote to, then collect again")


def _merged_settings(records, dirs: list[Path]) -> dict:
    """The merged sweep's sweep.json: the shards' common settings, the earliest start, and where from."""
    first = records[0][1]
    started = min((rec.get("started") or "" for _, rec in records), default="") or None
    return {**{k: first.get(k) for k in SWEEP_JSON_KEYS}, "started": started,
            "collected": {"at": _now(), "shards": first["shard"][1], "from": [str(d) for d in dirs]}}


def _copy_cell(src: Path, dst: Path) -> Path:
    """Copy a finished cell into the merged sweep under a temporary name, renamed into place once whole: a
    collect killed mid-copy leaves no cell that looks finished. An unfinished attempt there is replaced."""
    tmp = dst.parent / f".{dst.name}.collect.tmp"
    try:
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(".lock"))
        if dst.exists():
            with DirectoryLock(dst, "--collect"):  # not while a training process still writes there
                shutil.rmtree(dst)
        os.rename(tmp, dst)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise AeclassError(f"--collect: cannot copy {src} to {dst}: {e.strerror or e}") from None
    return dst


def _fmt(v) -> str:
    return "—" if v is None else f"{float(v):.4f}"


def yaml_load(path: Path) -> dict:
    import yaml
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise AeclassError(f"{path}: cannot read ({e}); delete that run directory to train the cell again") from None
