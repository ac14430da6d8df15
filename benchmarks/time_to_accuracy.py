"""Time to accuracy: the fast presets against issue #4's targets, and bf16 against fp32 on the same recipe.

Each entry is one `aeclass.train` run of a preset (the same engine as `aeclass train --preset NAME`); the
time is the run's train_seconds (optimiser steps, data indexing and augmentation; not the per-epoch test
evaluation or checkpoint writes). Entries with a limit of a minute or less run 3 times (the median time
counts; their result is the same every time). Finished entries are kept and skipped on a rerun (`--fresh`
starts over). Writes benchmarks/results/time_to_accuracy.json and .md (`--name STEM`: STEM.json and .md, for
another machine).

Targets (2 CPU cores): MNIST >= 99.2 % in <= 20 s and >= 99.6 % in <= 3 min; CIFAR-10 (the JPEG-q75 zip)
>= 90 % in <= 20 min, and >= 93 % in <= 60 min (issue #17: the fastcnn-cifar-long entries, the preset on
two seeds and two variants of it); dense AE 784-32-784 test MSE <= 0.0090 in <= 20 s. The "-fp32" entries
rerun a recipe in fp32 to show bf16's accuracy parity.

    python benchmarks/time_to_accuracy.py                      # everything (45 min here, + 50 min a long entry)
    python benchmarks/time_to_accuracy.py --only fast-mnist,fast-mnist-fp32   # (re)run these
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from _common import RESULTS, load_results, machine, run_preset, save_results, with_data_paths

# name -> (preset, overrides, metric, target, limit in seconds); metric "accuracy" must reach >= target,
# "mse" must reach <= target.
ENTRIES = {
    "fast-ae": ("fast-ae", {}, "mse", 0.0090, 20),
    "fast-ae-fp32": ("fast-ae", {"precision": "fp32"}, "mse", 0.0090, 20),
    "fast-mnist": ("fast-mnist", {}, "accuracy", 0.992, 20),
    "fast-mnist-fp32": ("fast-mnist", {"precision": "fp32"}, "accuracy", 0.992, 20),
    # the presets as they were before `--precision auto`: where bf16 is emulated (an AVX2 CPU) this is what they cost
    "fast-ae-bf16": ("fast-ae", {"precision": "bf16"}, "mse", 0.0090, 20),
    "fast-mnist-bf16": ("fast-mnist", {"precision": "bf16"}, "accuracy", 0.992, 20),
    "fast-mnist-long": ("fast-mnist-long", {}, "accuracy", 0.996, 180),
    "fast-cifar": ("fast-cifar", {"data": "folder:{cifar}"}, "accuracy", 0.90, 1200),
    "fastcnn-cifar": ("fastcnn-cifar", {"data": "folder:{cifar}"}, "accuracy", 0.90, 1200),
    "fastcnn-cifar-long": ("fastcnn-cifar-long", {"data": "folder:{cifar}"}, "accuracy", 0.93, 3600),
    "fastcnn-cifar-long-no-cutout": ("fastcnn-cifar-long", {"data": "folder:{cifar}", "augment": "crop=2,flip"},
                                     "accuracy", 0.93, 3600),
    "fastcnn-cifar-long-ema": ("fastcnn-cifar-long", {"data": "folder:{cifar}", "ema": 0.98}, "accuracy", 0.93, 3600),
    "fastcnn-cifar-long-seed1": ("fastcnn-cifar-long", {"data": "folder:{cifar}", "seed": 1}, "accuracy", 0.93, 3600),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated entry names")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--repeats", type=int, help="runs per entry, median time kept (default: 3 for entries whose "
                                                "limit is at most a minute, else 1)")
    ap.add_argument("--name", default="time_to_accuracy", help="results file stem (another machine's figures go in "
                                                               "a file of their own, e.g. time_to_accuracy-avx2)")
    args = ap.parse_args()
    out_json = RESULTS / f"{args.name}.json"
    results = {} if args.fresh else load_results(out_json)
    results.setdefault("entries", {})
    results["machine"] = machine()
    names = [n for n in args.only.split(",") if n] if args.only else list(ENTRIES)
    for name in names:
        if name in results["entries"] and not args.only:  # entries named in --only are always (re)run
            print(f"{name}: done before, skipped")
            continue
        preset, over, metric, target, limit = ENTRIES[name]
        # This VM's speed drifts by up to +-30 % over minutes, so the short entries run several times and the
        # median time counts; the result itself is the same every time (same seed on CPU).
        repeats = args.repeats or (3 if limit <= 60 else 1)
        times, values = [], []
        for _ in range(repeats):
            run_dir = RESULTS / "runs" / "time_to_accuracy" / name
            cfg, m, _ = run_preset(preset, over, run_dir, log=print)
            times.append(round(m["train_seconds"], 1))
            values.append(m["test_accuracy"] if metric == "accuracy" else m["test_recon_mse"])
        value, seconds = values[0], float(np.median(times))
        if len(set(values)) > 1:
            print(f"note: {name}'s repeats gave different results {values}; reporting the first", flush=True)
        met = (value >= target if metric == "accuracy" else value <= target) and seconds <= limit
        results["entries"][name] = {
            "preset": preset, "overrides": with_data_paths(over), "model": cfg.model, "epochs": cfg.epochs,
            "precision": json.loads((run_dir / "run.json").read_text())["precision"],  # what `auto` computed in
            "batch_size": cfg.batch_size, "metric": metric, "value": value, "target": target, "limit_s": limit,
            "train_seconds": seconds, "runs_train_seconds": times, "eval_seconds": round(m["eval_seconds"], 1),
            "met": bool(met),
        }
        save_results(out_json, results)
        write_markdown(results, args.name)
        print(name, results["entries"][name], flush=True)
    write_markdown(results, args.name)


def write_markdown(results: dict, stem: str = "time_to_accuracy") -> None:
    from aeclass.io import atomic_write_text
    lines = ["| entry | model | epochs | precision | result | target | train s (median, range) | limit s | met |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, e in results["entries"].items():
        fmt = (lambda v: f"{100 * v:.2f}% acc") if e["metric"] == "accuracy" else (lambda v: f"MSE {v:.5f}")
        sign = ">=" if e["metric"] == "accuracy" else "<="
        runs = e.get("runs_train_seconds", [])
        spread = f" ({min(runs)}-{max(runs)})" if len(runs) > 1 else ""
        lines.append(f"| {name} | {e['model']} | {e['epochs']} | {e['precision']} | {fmt(e['value'])} | {sign} {fmt(e['target'])} "
                     f"| {e['train_seconds']}{spread} | {e['limit_s']} | {'yes' if e['met'] else '**no**'} |")
    m = results["machine"]
    cpu = ", ".join(x for x in (m.get("cpu_model"), m.get("cpu_capability") and f"{m['cpu_capability']} kernels") if x)
    lines.append(f"\n{m['processor']}{f' ({cpu})' if cpu else ''}, {m['cpu_threads']} threads, torch {m['torch']}"
                 + (f", {m['cuda']}" if m["cuda"] else ""))
    atomic_write_text(RESULTS / f"{stem}.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
