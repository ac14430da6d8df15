"""CIFAR-10 with few labels: the photo recipe, the same recipe without its reconstruction term, and supervised-only
training on the same labels, over label draws.

Protocol: the shared JPEG-q75 CIFAR-10 zip; --labels N training images labelled, balanced per class and drawn by
the seed, all 50,000 usable unlabelled; the 10,000 test images only for the final figure. Variants:
- recipe:     `aeclass train --preset cifar-<N> --seed S` (aeclass/presets.py)
- fixed-bar:  the recipe with `--threshold fixed` (a fixed 0.95 confidence bar: cifar-4000's own, and cifar-250's
              before it took self-adaptive thresholds)
- no-recon:   the fixed-bar recipe with `--no-recon` (its reconstruction term off)
- supervised: `aeclass train --preset fastcnn-cifar --labels N --seed S` (the labelled images only)
- self-adaptive: the recipe with `--threshold self-adaptive` (FreeMatch's thresholds in place of a fixed 0.95)
- self-adaptive-no-recon: that with `--no-recon`
A variant that runs what another does (self-adaptive at 250 labels, fixed-bar at 4000) is filed under the first.
When a preset changes, recorded cells are filed under the variant whose settings they ran (`refile`).

Each cell is an ordinary run directory, benchmarks/results/runs/cifar-few-labels/<N>-<variant>-s<S>/, resumed
from its checkpoint when interrupted. A finished cell is recorded in benchmarks/results/cifar-few-labels.json with
the settings it ran with; a later call keeps it even when its run directory is gone (another session), and
measures it again only if its settings changed. Writes cifar-few-labels.json and .md: test error per draw,
mean +- std, wall-clock seconds of each draw, and the bf16 matmul speed of the machine at each cell (hosts
differ: the same 2-core kind has been measured at 412 and 2,402 GFLOP/s).

    python benchmarks/cifar_few_labels.py --labels 4000 --seeds 0,1,2 --variants recipe,supervised
    python benchmarks/cifar_few_labels.py --labels 250 --seeds 0 --variants no-recon
    python benchmarks/cifar_few_labels.py --labels 4000 --seeds 2 --variants recipe --retime

Draws outside the issue's 0-2 (e.g. --seeds 3) get a table of their own: the recipes were developed on 0-2,
so those draws say whether a result holds on labels nobody tuned for.
--retime runs measured cells again from scratch, on this host, to time them where hosts are faster or slower:
the rerun is kept beside the first measurement (which stays the cell's figure) and listed in its own table.
"""
from __future__ import annotations

import argparse
import copy
import functools
import time

import numpy as np
import torch
from _common import RESULTS, load_results, machine, save_results, trained

from aeclass import build_config

OUT = RESULTS / "cifar-few-labels"
RUNS = RESULTS / "runs" / "cifar-few-labels"
VARIANTS = {"recipe": lambda n: ("cifar-{}".format(n), {}),
            # the ablations keep the fixed 0.95 bar they were measured with (cifar-250 adopted self-adaptive ones later)
            "no-recon": lambda n: ("cifar-{}".format(n), {"recon_weight": 0.0, "threshold": "fixed"}),
            "supervised": lambda n: ("fastcnn-cifar", {"labels": n}),
            # the recipe with FreeMatch's self-adaptive thresholds in place of a fixed 0.95
            "self-adaptive": lambda n: ("cifar-{}".format(n), {"threshold": "self-adaptive"}),
            "fixed-bar": lambda n: ("cifar-{}".format(n), {"threshold": "fixed"}),  # the recipe with a fixed 0.95
            "self-adaptive-no-recon": lambda n: ("cifar-{}".format(n),
                                                 {"recon_weight": 0.0, "threshold": "self-adaptive"})}
# The cells are bf16 measurements: the presets' `--precision auto` is bf16 on the hosts that measured them (AVX512-BF16
# CPUs), and naming it keeps a cell the same measurement on any host (a slow one where bf16 is only emulated).
BF16 = {"precision": "bf16"}
ISSUE_DRAWS = (0, 1, 2)  # the draws issue #17's targets are stated over, and the recipes were developed on
TARGETS = {4000: "mean test error <= 15 % (stretch 12 %)", 250: "mean test error <= 40 % (stretch 20 %)"}


def bf16_matmul_gflops() -> float:
    """The machine's speed now: the best of up to 5 bf16 2048^3 matmuls (about a second), fewer where they are slow
    (a CPU that emulates bf16 takes about a minute for one)."""
    a = torch.randn(2048, 2048).bfloat16()
    t0 = time.perf_counter()
    a @ a
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
        if t - t0 > 2.0:
            break
    return 2 * 2048 ** 3 / best / 1e9


def settings(preset: str, overrides: dict) -> dict:
    """What a cell runs: the preset's resolved config (as the run's config.yaml), paths left out."""
    cfg = build_config(preset=preset, overrides={"data": "folder:cifar10-jpeg.zip", **overrides, **BF16}).to_dict()
    return {k: v for k, v in cfg.items() if k not in ("out", "data_dir", "report", "threads", "logger")}


@functools.lru_cache(maxsize=None)
def strategy_defaults(strategy: str) -> dict:
    """The config a strategy runs with no options given (cached: refiling checks every cell against every variant;
    callers only read it)."""
    return build_config(overrides={"strategy": strategy}).to_dict()


def same_settings(stored: dict | None, want: dict) -> bool:
    """Whether a cell measured with `stored` ran what `want` asks. An option added to aeclass since (absent from
    `stored`) counts as the same when `want` has it at its default, as new options keep the old behaviour (a
    strategy's options at that strategy's defaults)."""
    if stored is None or not set(stored) <= set(want):
        return False
    defaults = strategy_defaults(want.get("strategy", "supervised"))
    return all(want[k] == stored[k] for k in stored) and all(
        k in defaults and want[k] == defaults[k] for k in set(want) - set(stored))


def fingerprint(settings: dict) -> str:
    import hashlib
    import json
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]


def measure(preset: str, over: dict, seed: int, run_dir) -> tuple[dict, dict]:
    """Train (or resume, or read back) one cell: its metrics, and its test error, time and the host's speed."""
    speed = bf16_matmul_gflops()
    t0 = time.perf_counter()
    m = trained(preset, {"data": "folder:{cifar}", **over, **BF16, "seed": seed}, run_dir, log=print)
    return m, {"test_error": 1 - m["test_accuracy"], "train_seconds": round(m["train_seconds"], 1),
               "wall_seconds": round(time.perf_counter() - t0, 1), "bf16_matmul_gflops": round(speed)}


def cell_settings(labels: int, variant: str, seed: int) -> dict:
    return copy.deepcopy(_cell_settings(labels, variant, seed))  # a copy: results store and may change it


@functools.lru_cache(maxsize=None)
def _cell_settings(labels: int, variant: str, seed: int) -> dict:
    preset, over = VARIANTS[variant](labels)
    return settings(preset, {**over, "seed": seed})


def canonical(labels: int, variant: str) -> str:
    """The first variant that runs what `variant` runs at `labels` (at 250 labels `self-adaptive` is the recipe
    itself, at 4,000 `fixed-bar` is): a cell is filed, and shown, under that one only."""
    want = _cell_settings(labels, variant, 0)  # compared only, never changed: the cached dict itself will do
    return next(v for v in VARIANTS if _cell_settings(labels, v, 0) == want)


def refile(results: dict) -> int:
    """File each recorded cell under the first variant whose settings it ran, as a preset's change moves them (the
    fixed-bar cells of cifar-250's recipe before it took self-adaptive thresholds become `fixed-bar` ones). A cell
    that no variant runs any more stays under its key and is left out of the tables."""
    moved = {}
    for key, c in results["cells"].items():
        match = [v for v in VARIANTS if same_settings(c["settings"], cell_settings(c["labels"], v, c["seed"]))]
        if match and match[0] != c["variant"]:
            moved[key] = match[0]
    cells = {k: c for k, c in results["cells"].items() if k not in moved}
    for key, variant in list(moved.items()):
        c = results["cells"][key]
        new = f"{c['labels']}-{variant}-s{c['seed']}"
        if new in cells:  # its place is taken: it keeps its key, and has not moved
            cells[key] = c
            del moved[key]
            continue
        cells[new] = {**c, "variant": variant, "overrides": VARIANTS[variant](c["labels"])[1], "filed_as": key}
        print(f"{key} ran what {variant} runs now: filed as {new}")
    results["cells"] = cells
    return len(moved)


def run_cells(labels: int, variants: list[str], seeds: list[int], results: dict) -> None:
    for variant in dict.fromkeys(canonical(labels, v) for v in variants):
        preset, over = VARIANTS[variant](labels)
        for seed in seeds:
            key, want = f"{labels}-{variant}-s{seed}", cell_settings(labels, variant, seed)
            run_dir = RUNS / f"{key}-{fingerprint(want)}"  # a run directory per settings: changed ones start afresh
            unfinished = run_dir.exists() and not (run_dir / "metrics.json").is_file()
            if same_settings(results["cells"].get(key, {}).get("settings"), want) and not unfinished:
                continue  # measured earlier with these settings (reading a finished run back would time nothing)
            m, timed = measure(preset, over, seed, run_dir)
            results["cells"][key] = {"labels": labels, "variant": variant, "seed": seed, "preset": preset,
                                     "overrides": over, **timed,
                                     "teacher_test_accuracy": m.get("teacher_test_accuracy"), "settings": want}
            save_results(OUT.with_suffix(".json"), results)
            write_markdown(results)


def retime_cells(labels: int, variants: list[str], seeds: list[int], results: dict) -> None:
    """Run measured cells again from a fresh run directory and keep each rerun beside the first measurement."""
    import shutil
    for variant in dict.fromkeys(canonical(labels, v) for v in variants):
        preset, over = VARIANTS[variant](labels)
        for seed in seeds:
            key, want = f"{labels}-{variant}-s{seed}", cell_settings(labels, variant, seed)
            cell = results["cells"].get(key)
            if cell is None or not same_settings(cell["settings"], want):
                raise SystemExit(f"--retime: cell {key} is not measured with these settings yet; run it without --retime")
            run_dir = RUNS / f"{key}-{fingerprint(want)}-retime"
            shutil.rmtree(run_dir, ignore_errors=True)  # a rerun times the whole draw, so an interrupted one starts over
            timed = measure(preset, over, seed, run_dir)[1]
            cell.setdefault("retimes", []).append({**timed, "bf16_matmul_gflops_after": round(bf16_matmul_gflops())})
            save_results(OUT.with_suffix(".json"), results)
            write_markdown(results)
            shutil.rmtree(run_dir)  # recorded; a later --retime starts afresh


def retime_lines(results: dict) -> list[str]:
    rows = [(k, c, r) for k, c in sorted(results["cells"].items()) for r in c.get("retimes", [])]
    if not rows:
        return []
    lines = ["\nThe same cells run again from scratch (`--retime`), on the host whose speed is given: the first "
             "measurement stays the figure above.\n",
             "| cell | test error first / rerun (%) | wall-clock s first / rerun | bf16 matmul GFLOP/s first / "
             "rerun (before, after) |", "|---|---|---|---|"]
    for key, c, r in rows:
        lines.append(f"| {key} | {100 * c['test_error']:.2f} / {100 * r['test_error']:.2f} | {round(c['wall_seconds'])} / "
                     f"{round(r['wall_seconds'])} | {c['bf16_matmul_gflops']} / {r['bf16_matmul_gflops']}, "
                     f"{r['bf16_matmul_gflops_after']} |")
    return lines


def table_lines(results: dict, draws) -> list[str]:
    """One row per (labels, variant): its cells on the draws that `draws(seed)` accepts."""
    lines = ["| labels | variant | draws | test error per draw (%) | mean ± std (%) | wall-clock s per draw | "
             "bf16 matmul GFLOP/s |", "|---|---|---|---|---|---|---|"]
    for labels in sorted({c["labels"] for c in results["cells"].values()}, reverse=True):
        for variant in VARIANTS:
            cells = sorted((c for c in results["cells"].values()
                            if c["labels"] == labels and c["variant"] == variant and draws(c["seed"])
                            and same_settings(c["settings"], cell_settings(labels, variant, c["seed"]))),
                           key=lambda c: c["seed"])
            if not cells:
                continue
            err = np.array([100 * c["test_error"] for c in cells])
            std = f"{err.std(ddof=1):.2f}" if len(err) > 1 else "-"
            lines.append(f"| {labels} | {variant} | {','.join(str(c['seed']) for c in cells)} | "
                         f"{', '.join(f'{e:.2f}' for e in err)} | {err.mean():.2f} ± {std} | "
                         f"{', '.join(str(round(c['wall_seconds'])) for c in cells)} | "
                         f"{', '.join(str(c['bf16_matmul_gflops']) for c in cells)} |")
    return lines


def write_markdown(results: dict) -> None:
    from aeclass.io import atomic_write_text
    lines = table_lines(results, lambda seed: seed in ISSUE_DRAWS)
    lines.append("\nrecipe: `aeclass train --preset cifar-N --seed S` (cifar-250 with self-adaptive thresholds, "
                 "cifar-4000 with a fixed 0.95 bar); fixed-bar: the recipe with `--threshold fixed` (cifar-250's "
                 "recipe before it took self-adaptive thresholds); no-recon: the fixed-bar recipe with `--no-recon`; "
                 "supervised: `aeclass train --preset fastcnn-cifar --labels N --seed S`; self-adaptive: the recipe "
                 "with `--threshold self-adaptive`; self-adaptive-no-recon: that with `--no-recon`. A variant that "
                 "runs what another does is shown once, under the first (at 250 labels self-adaptive is the recipe, "
                 "at 4000 fixed-bar is). Wall-clock per draw: the whole run (all phases, data loading, the final "
                 "evaluation), on the host whose speed the last column gives. Targets "
                 "(issue #17, each draw <= 60 minutes on 2 cores): "
                 + "; ".join(f"{n} labels: {t}" for n, t in TARGETS.items()) + ".")
    if any(c["seed"] not in ISSUE_DRAWS for c in results["cells"].values()):
        lines += ["\nOn label draws the recipes were never built or looked at on (seeds outside the issue's 0-2), "
                  "measured once the recipes were fixed (cifar-250 took self-adaptive thresholds because its fixed "
                  "bar failed on draw 3: for that recipe only draws 4 and up are fresh):\n",
                  *table_lines(results, lambda seed: seed not in ISSUE_DRAWS)]
    lines += retime_lines(results)
    m = results["machine"]
    lines.append(f"\n{m['processor']}, {m['cpu_threads']} threads, torch {m['torch']}")
    atomic_write_text(OUT.with_suffix(".md"), "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", type=int, choices=sorted(TARGETS), default=4000)
    ap.add_argument("--variants", default="recipe,no-recon,supervised")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--retime", action="store_true", help="run measured cells again on this host, to time them")
    args = ap.parse_args()
    variants = args.variants.split(",")
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise SystemExit(f"--variants: unknown '{bad[0]}'; expected some of {', '.join(VARIANTS)}")
    results = load_results(OUT.with_suffix(".json"))
    results.setdefault("cells", {})
    if refile(results):
        save_results(OUT.with_suffix(".json"), results)
    results["machine"] = machine()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    (retime_cells if args.retime else run_cells)(args.labels, variants, seeds, results)
    write_markdown(results)


if __name__ == "__main__":
    main()
