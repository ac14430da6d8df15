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

The baseline ("labelspreading-pca") is scikit-learn's LabelSpreading with a k-nearest-neighbour graph on the
first 50 principal components of the training images (PCA fitted on the training images only), given exactly
the labelled subset the networks get for the same seed; it predicts the test images from their projections.
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .config import RUNTIME_KEYS, TrainConfig, build_config, parse_labels
from .data import dataset_for, labelled_subset
from .errors import AeclassError, ConfigError
from .io import DirectoryLock, atomic_write_json, atomic_write_text, remove_stale_temporaries
from .strategies import get_strategy
from .train import train

DEFAULT_STRATEGIES = ("supervised", "pretrain-finetune", "linear-probe", "joint", "semi")
DEFAULT_LABELS = ("100", "1000", "all")
BASELINE = "labelspreading-pca"
SWEEP_FILES = ("sweep.json", "results.csv", "summary.md", "accuracy_vs_labels.png", "report.html")  # its own files
BASELINE_PARAMS = {"method": "LabelSpreading", "kernel": "knn", "n_neighbors": 7, "alpha": 0.2, "max_iter": 100,
                   "pca_components": 50}
# Sweep defaults, below any preset / config file / flag: short runs, and input noise for the denoising
# reconstruction of joint and semi (the TrainConfig default is no noise).
SWEEP_DEFAULTS = {"epochs": 10, "noise": 0.2}
FIELDS = ["strategy", "labels", "seed", "test_accuracy", "test_recon_mse", "train_seconds", "n_labelled", "n_train",
          "run_dir", "config", "val_accuracy"]


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


def _cell_config(cell: Cell, preset, config_file, overrides: dict, run_dir: Path) -> TrainConfig:
    flags = dict(overrides)
    flags.update(strategy=cell.strategy, labels=cell.label_text, seed=cell.seed, out=str(run_dir), report=False)
    own = get_strategy(cell.strategy).model
    if own is not None:  # a strategy with a model of its own (ladder): that model, its default sizes, whatever --model says
        flags.update(model=own, model_kwargs={})
    return build_config(preset=preset, config_file=config_file, overrides=flags, base=SWEEP_DEFAULTS)


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
        vals = [float(r[key]) for r in rows if r["strategy"] == strategy and r["labels"] == lab
                and r.get(key) not in (None, "")]
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
    if with_recon:
        out += ["", "## Test reconstruction MSE", "",
                "(The decoder of `supervised` is untrained: its MSE is that of a random decoder.)", "",
                table("test_recon_mse", 1, ".5f", with_recon)]
    total = sum(float(r["train_seconds"]) for r in rows if r.get("train_seconds") not in (None, ""))
    out += ["", f"Total training time of all cells: {total:.0f} s" +
            (f"; wall time of the last `aeclass sweep` call: {wall_seconds:.0f} s." if wall_seconds is not None else ".")]
    return "\n".join(out) + "\n"


def _validation_section(rows, nets, label_cols, table) -> list[str]:
    """With --val: validation accuracy per cell, and the strategy it ranks first at each label count, the
    honest choice when the data have no labelled test set (the test set never chooses)."""
    if not any(r.get("val_accuracy") not in (None, "") for r in rows):
        return []
    best = []
    for lab in label_cols:
        means = {s: np.mean([float(r["val_accuracy"]) for r in rows if r["strategy"] == s and r["labels"] == lab
                             and r.get("val_accuracy") not in (None, "")] or [np.nan]) for s in nets}
        means = {s: v for s, v in means.items() if not np.isnan(v)}
        if means:
            top = max(means, key=means.get)
            best.append(f"- {lab} labels: **{top}** ({100 * means[top]:.2f} % on validation)")
    return ["", "## Validation accuracy (%)", "", "Measured on labelled images held out of training (`--val`).", "",
            table("val_accuracy", 100, ".2f", nets), "", "Which strategy to use, by validation accuracy:", "", *best]


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
class _Sweep:
    """One call of run_sweep: the grid, where it goes, and the rows so far."""

    dir: Path
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
        cfg = _cell_config(cell, self.preset, self.config_file, self.overrides, run_dir)
        rel = f"runs/{cell.name}"
        if (run_dir / "metrics.json").is_file():
            saved = yaml_load(run_dir / "config.yaml")
            diff = _config_mismatch(saved, cfg)
            if diff:
                raise AeclassError(f"{run_dir} was trained with another configuration ({diff}); use a new "
                                   f"--out, or delete that run directory to retrain it")
            metrics = _read_json(run_dir / "metrics.json")
            self.rows.append(_row(cell, metrics, rel, saved))
            self.reused += 1
            self.log(f"[{self.done}/{self.total}] {cell.name}: done earlier, test_accuracy {_fmt(metrics.get('test_accuracy'))}")
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


def run_sweep(out: str | Path, data: str | None = None, strategies=DEFAULT_STRATEGIES, labels=DEFAULT_LABELS,
              seeds=3, epochs: int | None = None, preset: str | None = None, config_file: str | None = None,
              data_dir: str | None = None, baseline: bool = True, overrides: dict | None = None, report: bool = True,
              log=print) -> SweepResult:
    """Train every strategy x labels x seed cell into `out`/runs/ and write results.csv, summary.md and
    accuracy_vs_labels.png (see the module docstring). `seeds` is a count (seeds 0..n-1) or a list;
    `labels` items are counts or 'all'; `overrides` are further TrainConfig options (threads, device, ...)."""
    t_start = time.perf_counter()
    sweep_dir = Path(out)
    strategies, label_items, seed_list = _grid(strategies, labels, seeds)
    ov = {k: v for k, v in (overrides or {}).items() if v is not None}
    ov.update({k: v for k, v in (("data", data), ("data_dir", data_dir), ("epochs", epochs)) if v is not None})
    # Resolve one cell's config up front: bad strategies, presets or options fail before any training.
    for s in strategies:
        _cell_config(Cell(s, label_items[0], seed_list[0]), preset, config_file, ov, sweep_dir / "runs" / "check")
    probe = _cell_config(Cell(strategies[0], None, seed_list[0]), preset, config_file, ov, sweep_dir)
    folder = probe.data.startswith("folder:")  # a folder without a train/test split is split by the seed
    # One process per sweep directory (each cell's run directory is locked by train() as well): two sweeps
    # rewriting results.csv and summary.md in turn would each drop the other's rows.
    with DirectoryLock(sweep_dir, "--out"):
        remove_stale_temporaries(sweep_dir, SWEEP_FILES)
        atomic_write_json(sweep_dir / "sweep.json", {
            "data": probe.data, "strategies": strategies, "labels": [x or "all" for x in label_items], "seeds": seed_list,
            "preset": preset, "config_file": config_file, "overrides": ov, "baseline": baseline,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        sw = _Sweep(sweep_dir, preset, config_file, ov, log, [])
        sw.total = len(strategies) * len(label_items) * len(seed_list) + (len(seed_list) * len(label_items) if baseline else 0)
        n_train, ds, ds_seed = None, None, None
        for seed in seed_list:
            if ds is None or (folder and ds_seed != seed):
                ds = dataset_for(probe, seed=seed)
                ds_seed, n_train = seed, int(ds.train_x.shape[0])
            for lab in label_items:
                if lab is not None and lab >= n_train:
                    log(f"sweep: --labels {lab} >= the {n_train} training images, the same as 'all': skipped")
                    sw.done += len(strategies) + bool(baseline)
                    continue
                if lab is not None and lab < ds.num_classes:
                    raise ConfigError(f"--labels {lab} is fewer than the {ds.num_classes} classes")
                for s in strategies:
                    sw.cell(Cell(s, lab, seed), ds)
                    _write_results(sweep_dir / "results.csv", sw.rows)
                if baseline:
                    sw.baseline(ds, lab, seed)
                    _write_results(sweep_dir / "results.csv", sw.rows)
        if not sw.rows:
            raise AeclassError("sweep: no cell to run (every label count was >= the training-set size?)")
        wall = time.perf_counter() - t_start
        _finish(sweep_dir, sw.rows, probe.data, n_train, wall, report, log)
        log(f"sweep: {sw.trained} cells run, {sw.reused} reused, {wall:.0f} s -> {sweep_dir}/results.csv, summary.md, "
            "accuracy_vs_labels.png")
        return SweepResult(sweep_dir, sw.rows, sw.trained, sw.reused, wall)


def _finish(sweep_dir: Path, rows: list, data: str, n_train, wall: float, report: bool, log) -> None:
    atomic_write_text(sweep_dir / "summary.md", summary_markdown(rows, data, n_train, wall))
    _plot(rows, sweep_dir / "accuracy_vs_labels.png", n_train)
    if report:
        try:
            from .report import write_report
            log(f"report: {write_report(sweep_dir)}")
        except (ImportError, AeclassError) as e:
            log(f"report skipped: {e}")


def _fmt(v) -> str:
    return "—" if v is None else f"{float(v):.4f}"


def yaml_load(path: Path) -> dict:
    import yaml
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise AeclassError(f"{path}: cannot read ({e}); delete that run directory to train the cell again") from None
