"""Distributed training throughput: 1 and N processes through torchrun, against 1 process with the same threads.

Each measurement is a real `torchrun --standalone --nproc_per_node=N -m aeclass train` of two MNIST workloads
(the hybrid conv autoencoder-classifier, supervised, batch 256; the dense 784-32-784 autoencoder, batch 256),
one thread per process on the CPU (gloo), over the same global batch. Images/s is the training set's images
over the fastest epoch after the first (the run's own epoch_seconds, which leave out the per-epoch test pass);
the 1-process row with --threads N is the alternative a user has on the same cores. The rows take turns.

    python benchmarks/ddp_scaling.py                                  # CPU: 1 and 2 processes, 1 thread each
    python benchmarks/ddp_scaling.py --procs 1,2,4,8 --device cuda    # a GPU node: NCCL, one GPU per process

Writes benchmarks/results/ddp_scaling{-cuda}.{json,md}. About 5 minutes on 2 CPU cores. Say whether other work
shared the machine (the script records the load average).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, ROOT, save_results, shared_datasets

WORKLOADS = {
    "hybrid": ["--model", "hybrid", "--strategy", "supervised", "--batch-size", "256"],
    "dense-ae": ["--model", "mlp_ae", "--model-opt", "code_dim=32", "--strategy", "autoencoder", "--batch-size", "256"],
}


def run(workload: str, procs: int, threads: int, device: str, epochs: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as d:
        args = ["train", "--data", "mnist", "--data-dir", str(shared_datasets()), *WORKLOADS[workload], "--epochs",
                str(epochs), "--augment", "none", "--device", device, "--threads", str(threads), "--no-report",
                "--quiet", "--out", f"{d}/run"]
        launcher = [sys.executable, "-m", "aeclass"] if procs == 0 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m", "aeclass"]
        t0 = time.perf_counter()
        subprocess.run([*launcher, *args], env=env, check=True, capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - t0
        rows = list(csv.DictReader(open(f"{d}/run/metrics.csv")))
        n = json.load(open(f"{d}/run/run.json"))["n_train"]
    best = min(float(r["epoch_seconds"]) for r in rows[1:] or rows)
    return {"workload": workload, "processes": max(procs, 1), "threads_per_process": threads,
            "launcher": "torchrun" if procs else "aeclass", "images_per_s": n / best, "wall_seconds": wall,
            "train_loss": float(rows[-1]["train_loss"])}


def markdown(res: dict) -> str:
    lines = [f"# Distributed training throughput ({res['device']})", "",
             f"Command: `{res['command']}`. MNIST, {res['epochs']} epochs, images/s of the fastest epoch after the "
             f"first. Load average at the start: {res['load_at_start']:.1f} (above 0: other work shared the cores).", "",
             "| workload | launcher | processes | threads each | images/s | vs 1 process, 1 thread | last train loss |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for w in dict.fromkeys(r["workload"] for r in res["rows"]):
        mine = [r for r in res["rows"] if r["workload"] == w]
        base = next((r["images_per_s"] for r in mine if r["launcher"] == "torchrun" and r["processes"] == 1), None)
        for r in mine:
            rel = f"{r['images_per_s'] / base:.2f}x" if base else ""
            lines.append(f"| {w} | {r['launcher']} | {r['processes']} | {r['threads_per_process']} | "
                         f"{r['images_per_s']:,.0f} | {rel} | {r['train_loss']:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", default="1,2", help="comma-separated process counts")
    ap.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per process)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--only", help="comma-separated workloads (default: all)")
    args = ap.parse_args()
    procs = [int(p) for p in args.procs.split(",")]
    rows, load0 = [], os.getloadavg()[0]
    for w in (args.only.split(",") if args.only else list(WORKLOADS)):
        plan = [(p, 1) for p in procs] + ([(0, max(procs))] if args.device == "cpu" and max(procs) > 1 else [])
        for p, t in plan:
            r = run(w, p, t, args.device, args.epochs)
            rows.append(r)
            print(f"{w:<9} {r['launcher']:<8} x{r['processes']} ({t} thread(s) each): {r['images_per_s']:,.0f} images/s",
                  flush=True)
    res = {"device": args.device, "epochs": args.epochs, "rows": rows, "load_at_start": load0,
           "command": " ".join(["python", "benchmarks/ddp_scaling.py", *sys.argv[1:]])}
    name = "ddp_scaling" + ("" if args.device == "cpu" else f"-{args.device.split(':')[0]}")
    save_results(RESULTS / f"{name}.json", res)
    (RESULTS / f"{name}.md").write_text(markdown(res))
    print(markdown(res), end="")


if __name__ == "__main__":
    main()
