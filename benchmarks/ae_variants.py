"""The fast-ae recipe and its variants: what moves the 784-32-784 autoencoder's test MSE (issue #4 target:
<= 0.0090 in <= 20 s of training).

Each variant is `aeclass train --preset fast-ae` with the overrides below (seed 0 unless they say), on real MNIST. Writes
benchmarks/results/ae_variants.json and .md (test MSE, train seconds). About 4.5 minutes on 2 CPU cores.

    python benchmarks/ae_variants.py
"""
from __future__ import annotations

from _common import RESULTS, machine, run_preset, save_results

# Session 5 changed the preset from a linear code (70 epochs) to a PReLU code (60 epochs); the earlier
# variants spell out the linear code so that they keep measuring what they measured.
LINEAR = {"model_kwargs": {"code_dim": 32, "code_act": "none"}, "epochs": 70}
VARIANTS = {  # name -> overrides of the fast-ae preset
    "fast-ae (PReLU code, PCA start, 60 epochs)": {},
    "PReLU code, 70 epochs": {"epochs": 70},
    "PReLU code, random start": {"pca_init": False},
    "linear code, PCA start, 70 epochs (fast-ae before session 5)": LINEAR,
    "linear code, random start": {**LINEAR, "pca_init": False},
    "random start, ReLU code (the seed's)": {**LINEAR, "pca_init": False, "model_kwargs": {"code_dim": 32, "code_act": "relu"}},
    "linear code, PCA start, 85 epochs": {**LINEAR, "epochs": 85},
    "linear code, PCA start, lr 1e-2": {**LINEAR, "lr": 1e-2},
    "linear code, PCA start, batch 512, lr 8e-3, 100 epochs": {**LINEAR, "batch_size": 512, "lr": 8e-3, "epochs": 100},
    "PCA start, tanh code": {**LINEAR, "model_kwargs": {"code_dim": 32, "code_act": "tanh"}},
    # Other seeds (the sampled PCA start, the batch order): the PReLU-vs-linear gap is not one lucky run.
    "fast-ae, seed 1": {"seed": 1},
    "fast-ae, seed 2": {"seed": 2},
    "linear code, PCA start, 70 epochs, seed 1": {**LINEAR, "seed": 1},
    "linear code, PCA start, 70 epochs, seed 2": {**LINEAR, "seed": 2},
}


def main() -> None:
    results = {"machine": machine(), "variants": {}}
    for i, (name, over) in enumerate(VARIANTS.items()):
        cfg, m, _ = run_preset("fast-ae", over, RESULTS / "runs" / "ae_variants" / f"v{i}")
        results["variants"][name] = {"overrides": over, "test_recon_mse": m["test_recon_mse"],
                                     "train_seconds": round(m["train_seconds"], 1), "epochs": cfg.epochs}
        print(name, results["variants"][name], flush=True)
        save_results(RESULTS / "ae_variants.json", results)
    from aeclass.io import atomic_write_text
    lines = ["| variant | test MSE | train s |", "|---|---|---|"]
    lines += [f"| {n} | {v['test_recon_mse']:.5f} | {v['train_seconds']} |" for n, v in results["variants"].items()]
    m = results["machine"]
    lines.append(f"\n{m['processor']}, {m['cpu_threads']} threads, torch {m['torch']}")
    atomic_write_text(RESULTS / "ae_variants.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
