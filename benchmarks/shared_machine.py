"""Training throughput on a shared machine: quiet, and beside one competing busy process.

Three workloads, trained through `aeclass.train` on random uint8 images of the right shape (the data do not
change the arithmetic): the seed CIFAR-10 CNN (batch 64), the seed dense 784-32-784 autoencoder (batch 256)
and the Ladder network step (batch 100). Each runs in its own subprocess under an OpenMP wait policy:
    default  OMP_WAIT_POLICY unset (OpenMP threads spin for a while after each parallel region)
    PASSIVE  OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads sleep at once)
    auto     what the `aeclass` command does when the user has not chosen (aeclass.cpu.choose_wait_policy):
             PASSIVE if other processes use >= half a core while it starts, else the default
    spinN    (with --policies) GOMP_SPINCOUNT=N, libgomp's spin count before a thread sleeps
and beside either nothing or one competitor, `python -c "while True: pass"`, the commonest neighbour on a
shared box. Images/s is the best epoch after the first (epoch_seconds in the run's history); the default
thread count (aeclass.cpu.available_cpus) applies.

Targets (issue #19, section 2), for `auto`: beside one competitor >= 40 % of the quiet default's throughput
(a fair share is 50 %); quiet, <= 5 % below the default.

Writes benchmarks/results/shared_machine.json and .md. About 3 minutes on 2 CPU cores. Other work on the
machine shares the cores too: on a busy machine the "quiet" figures are not quiet, so say when that was so.

    python benchmarks/shared_machine.py
    python benchmarks/shared_machine.py --only seed-ae --epochs 4
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORKLOADS = {  # name: image shape, model, its options, strategy, batch size, training images
    "seed-cnn": dict(shape=(3, 32, 32), model="cnn", kwargs={"padding": "valid"}, strategy="supervised", batch=64,
                     n=1024),
    "seed-ae": dict(shape=(1, 28, 28), model="mlp_ae", kwargs={"code_dim": 32}, strategy="autoencoder", batch=256,
                    n=4096),
    "ladder": dict(shape=(1, 28, 28), model="ladder", kwargs={}, strategy="ladder", batch=100, n=1000),
}
POLICIES = ("default", "PASSIVE", "auto")  # --policies may add spinN: GOMP_SPINCOUNT=N (libgomp's spin before sleeping)
COMPETITORS = (0, 1)


def worker(name: str, epochs: int) -> dict:
    """One measurement, in this process: images/s of the best epoch after the first."""
    if os.environ.get("AECLASS_BENCH_AUTO") == "1":  # the command line's check, before torch loads
        import importlib.util
        spec = importlib.util.spec_from_file_location("aeclass_cpu", ROOT / "aeclass" / "cpu.py")
        cpu = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cpu)
        cpu.choose_wait_policy(force=True)
    import torch

    from aeclass import TrainConfig, train
    from aeclass.data.base import ImageDataset
    w = WORKLOADS[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (w["n"], *w["shape"]), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (w["n"],), generator=g)
    ds = ImageDataset(name="random", train_x=x, train_y=y, test_x=x[:256], test_y=y[:256],
                      classes=[str(i) for i in range(10)])
    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(data="digits", model=w["model"], model_kwargs=w["kwargs"], strategy=w["strategy"],
                          batch_size=w["batch"], epochs=epochs, augment="none", out=f"{d}/run", report=False)
        result = train(cfg, log=lambda *a: None, progress=False, dataset=ds)
        ck = torch.load(Path(d) / "run" / "checkpoints" / "last.pt", weights_only=True)
    best = min(r["epoch_seconds"] for r in ck["progress"]["history"][1:])
    return {"images_per_s": w["n"] / best, "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"), "test_loss": result.metrics.get("test_loss")}


def measure(name: str, policy: str, competitors: int, epochs: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "AECLASS_WAIT_POLICY")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if policy.startswith("spin"):
        env["GOMP_SPINCOUNT"] = policy[4:]
    elif policy == "auto":
        env["AECLASS_BENCH_AUTO"] = "1"
    elif policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(competitors)]
    time.sleep(0.5 if competitors else 0)  # the neighbour is running before training starts
    try:
        out = subprocess.run([sys.executable, __file__, "--worker", name, "--epochs", str(epochs)], env=env,
                             capture_output=True, text=True, check=True, timeout=900).stdout
    finally:
        for p in busy:
            p.kill()
            p.wait()
    return json.loads(out.strip().splitlines()[-1])


def table(rows: list[dict], policies=POLICIES) -> str:
    """One line per workload and policy; the last two columns are the targets' measures (against the quiet
    default policy)."""
    lines = ["| workload | policy | quiet images/s | beside 1 busy process | kept | quiet vs default | busy vs quiet default |",
             "|---|---|---:|---:|---:|---:|---:|"]
    by = {(r["workload"], r["policy"], r["competitors"]): r["images_per_s"] for r in rows}
    for name in dict.fromkeys(r["workload"] for r in rows):
        q0 = by.get((name, "default", 0))
        for pol in policies:
            q, b = by.get((name, pol, 0)), by.get((name, pol, 1))
            if q and b:
                vs = f"{100 * (q / q0 - 1):+.1f} %" if q0 else ""
                of = f"{100 * b / q0:.0f} %" if q0 else ""
                lines.append(f"| {name} | {pol} | {q:,.0f} | {b:,.0f} | {100 * b / q:.0f} % | {vs} | {of} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated workloads (default: all)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per measurement; the first is not timed")
    ap.add_argument("--policies", default=",".join(POLICIES),
                    help="comma-separated: default, PASSIVE, ACTIVE or spinN (GOMP_SPINCOUNT=N); default first")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.epochs)))
        return
    names = args.only.split(",") if args.only else list(WORKLOADS)
    policies = tuple(args.policies.split(","))
    rows, t0 = [], time.time()
    for name in names:
        for competitors in COMPETITORS:
            for policy in policies:
                r = measure(name, policy, competitors, args.epochs)
                rows.append({**r, "workload": name, "policy": policy, "competitors": competitors})
                print(f"{name:<9} {policy:<8} competitors={competitors}: {r['images_per_s']:,.0f} images/s "
                      f"({r['threads']} threads)", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "shared_machine.json").write_text(json.dumps({"rows": rows, "seconds": time.time() - t0,
                                                             "cpus": os.cpu_count(), "load": os.getloadavg()}, indent=2))
    md = table(rows, policies)
    (RESULTS / "shared_machine.md").write_text(f"# Throughput on a shared machine\n\n{md}\nLoad average before/after: "
                                               f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other work shares "
                                               "them: the quiet figures were not quiet if it is above 0).\n")
    print(md, end="")


if __name__ == "__main__":
    main()
