"""Seed presets vs tuned defaults on real data: accuracy, reconstruction MSE and seconds.

Runs each entry below through `aeclass.train` (the same engine as the CLI) and writes
benchmarks/results/presets.json and presets.md. Finished entries are kept and skipped on a rerun,
so an interrupted benchmark resumes (`--fresh` starts over). `--epochs N` caps every entry's epochs for a
quick look; the cap is recorded beside the figures.

Data: real MNIST (IDX files) and the CIFAR-10 JPEG-q75 zip, from $AECLASS_DATA or ../shared/datasets.
Device and time: see the machine block in the results; on 2 CPU cores the full set takes roughly 1.5 h.

    python benchmarks/presets.py                     # everything
    python benchmarks/presets.py --only seed-ae,tuned-ae
"""
from __future__ import annotations

import argparse

from _common import RESULTS, load_results, machine, run_preset, save_results, shared_datasets

from aeclass import build_config

ENTRIES = {  # name -> (preset, overrides)
    "seed-ae": ("seed-ae", {}),
    "tuned-ae": ("tuned-ae", {}),
    "seed-hybrid": ("seed-hybrid", {}),
    "tuned-hybrid": ("tuned-hybrid", {}),
    "seed-cnn": ("seed-cnn", {"data": "folder:{cifar}"}),
    "tuned-cnn": ("tuned-cnn", {"data": "folder:{cifar}"}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated entry names")
    ap.add_argument("--epochs", type=int, help="cap epochs (quick look)")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--name", default="presets", help="results file stem")
    args = ap.parse_args()
    out_json, out_md = RESULTS / f"{args.name}.json", RESULTS / f"{args.name}.md"
    results = {} if args.fresh else load_results(out_json)
    results.setdefault("entries", {})
    results["machine"] = machine()
    names = [n for n in args.only.split(",") if n] if args.only is not None else list(ENTRIES)
    results["baselines"] = mnist_baselines()
    for name in names:
        if name in results["entries"]:
            print(f"{name}: done before, skipped")
            continue
        preset, over = ENTRIES[name]
        if args.epochs:
            over = {**over, "epochs": min(args.epochs, build_config(preset=preset).epochs)}
        cfg, m, wall = run_preset(preset, over, RESULTS / "runs" / args.name / name)
        results["entries"][name] = {
            "preset": preset, "data": m["data"], "model": cfg.model, "strategy": cfg.strategy, "epochs": cfg.epochs,
            "batch_size": cfg.batch_size, "optimizer": cfg.optimizer, "lr": cfg.lr,
            "test_accuracy": m["test_accuracy"], "test_recon_mse": m["test_recon_mse"],
            "train_seconds": round(m["train_seconds"], 1), "wall_seconds": round(wall, 1),
            "epochs_capped": bool(args.epochs),
        }
        save_results(out_json, results)
        write_markdown(results, out_md)
        print(name, results["entries"][name], flush=True)
    write_markdown(results, out_md)


def mnist_baselines() -> dict:
    """Reference reconstruction errors on the MNIST test set: predicting a black image, or the mean
    training image. An autoencoder worse than the latter has learnt nothing useful."""
    from aeclass import load_dataset
    ds = load_dataset("mnist", shared_datasets())
    x, mean = ds.test_x.float() / 255, (ds.train_x.float() / 255).mean(0)
    return {"mnist_mse_black_image": float((x ** 2).mean()), "mnist_mse_mean_image": float(((x - mean) ** 2).mean())}


def write_markdown(results: dict, path) -> None:
    from aeclass.io import atomic_write_text
    lines = ["| entry | data | model | strategy | epochs | optimizer, lr | test accuracy | test recon MSE | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, e in results["entries"].items():
        acc = "" if e["strategy"] == "autoencoder" or e["test_accuracy"] is None else f"{100 * e['test_accuracy']:.2f}%"
        mse = "" if e["test_recon_mse"] is None else f"{e['test_recon_mse']:.4f}"
        data = "CIFAR-10 (JPEG q75 variant)" if "cifar10" in e["data"] else e["data"]
        lines.append(f"| {name} | {data} | {e['model']} | {e['strategy']} | {e['epochs']}{' (capped)' if e['epochs_capped'] else ''} "
                     f"| {e['optimizer']} {e['lr']:g} | {acc} | {mse} | {e['train_seconds']} |")
    b = results.get("baselines")
    if b:
        lines.append(f"\nMNIST test MSE of predicting a black image: {b['mnist_mse_black_image']:.4f}; "
                     f"of predicting the mean training image: {b['mnist_mse_mean_image']:.4f}.")
    m = results["machine"]
    lines.append(f"\n{m['processor']}, {m['cpu_threads']} threads, torch {m['torch']}" + (f", {m['cuda']}" if m["cuda"] else ""))
    atomic_write_text(path, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
