"""Which autoencoder to pre-train: plain, denoising or masked, judged as the MAE paper judges (linear probe and
fine-tuning), on CIFAR-10 (JPEG q75 variant) with 4,000 labels.

One encoder, `hybrid`'s (conv 32-64-128 with BatchNorm, a dense ReLU code of 128; its conv decoder for the
pre-training), pre-trained on all 50,000 training images without labels by
- ae:        `aeclass train --strategy autoencoder`
- mae:       `--strategy mae`'s pre-training phase (`--mask-ratio 0.5 --patch-size 4`, its defaults), through
             `bench-mae-pretrain`, mae without its fine-tuning phase (as `--no-finetune` trains it; the
             script's runs predate that option)
- dae-gauss: `--strategy autoencoder --noise 0.2` (Gaussian noise, std 0.2)
- dae-mask:  `--strategy autoencoder --noise 0.5 --noise-kind mask` (half of the pixels set to 0)
- none:      no pre-training (the encoder as seed 0 initialises it: the start of the others)
each for the same wall-clock budget (--pretrain-seconds): epochs = max(1, round(budget / s)), s the seconds of
one epoch of that method, measured as the fastest of epochs 2-4 on a 3,840-image slice, scaled to 50,000
(runs/pretrain-cifar/calibration.json keeps them, so a resumed benchmark reuses them). All pre-training:
Adam lr 2e-3, cosine schedule, batch 128, no augmentation, seed 0. Every run: `--precision bf16` (bf16 autocast,
as the fast presets train). Then, with the labels of 4,000 training
images (balanced, drawn by seed 0), each encoder is judged by
- linear probe: `--strategy linear-probe --init PRE/checkpoints/last.pt --epochs P` (encoder frozen, in eval mode;
  a linear head on the 128-unit code); for `none` the same phase on the initial encoder (`bench-random-probe`);
- fine-tune: `--strategy pretrain-finetune --init PRE/checkpoints/last.pt --epochs F` (encoder + head); for
  `none`, `--strategy supervised` (the same phase from the initial weights);
both Adam lr 2e-3, cosine, batch 128, default augmentation (crop 4, flip); an epoch is 390 steps (the labelled
set is cycled). No validation set: nothing is selected, the last epoch is the model. Also reported: the
pre-trained model's test reconstruction MSE (clean input, every pixel) and its MSE on hidden patches (test
images with 50 % of their 4x4 patches set to the mean, mae's masking with a fixed seed; what mae trains on).
The 2 CPU cores were shared with other processes while this ran.

    python benchmarks/pretrain_compare.py --pretrain-seconds 180 --probe-epochs 10 --threads 1  # results/pretrain_compare.*
Finished runs under benchmarks/results/runs/pretrain-cifar/ are reused and interrupted ones resumed.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import tempfile

import torch
from _common import (RESULTS, cifar_zip, load_average, load_results, machine, save_results, shared_datasets,
                     trained)

from aeclass.strategies.base import register_strategy
from aeclass.strategies.linear_probe import LinearProbe
from aeclass.strategies.mae import Mae, masked_mse, patch_mask

RUNS = RESULTS / "runs" / "pretrain-cifar"
OUT = RESULTS / "pretrain_compare"
COMMON = {"data": "folder:{cifar}", "model": "hybrid", "batch_size": 128, "lr": 2e-3, "schedule": "cosine", "seed": 0,
          "precision": "bf16"}
PRETRAIN = {**COMMON, "augment": "none"}
LABELLED = {**COMMON, "labels": 4000, "augment": "default"}
METHODS = {"none": None,
           "ae": {"strategy": "autoencoder"},
           "mae": {"strategy": "bench-mae-pretrain", "mask_ratio": 0.5, "patch_size": 4},
           "dae-gauss": {"strategy": "autoencoder", "noise": 0.2, "noise_kind": "gaussian"},
           "dae-mask": {"strategy": "autoencoder", "noise": 0.5, "noise_kind": "mask"}}
N_CAL = 3840  # training images of the calibration slice (30 steps of 128)


@register_strategy
class MaePretrain(Mae):
    name = "bench-mae-pretrain"
    summary = "benchmarks/pretrain_compare.py: mae's masked pre-training phase alone (no fine-tuning)"

    def requires(self, pretrained=False):
        return {"decoder"}

    def phases(self, model, pretrained=False):
        return self.pretrain_phases(pretrained)


@register_strategy
class RandomProbe(LinearProbe):
    name = "bench-random-probe"
    summary = "benchmarks/pretrain_compare.py: the linear probe of the encoder as initialised (no pre-training)"

    def phases(self, model, pretrained=False):
        return super().phases(model, pretrained=True)


def seconds_per_epoch(overrides: dict, ds) -> float:
    """Seconds of one pre-training epoch over every training image: the fastest of epochs 2-4 on a slice
    (the first pays the warm-up; slower ones measure the other work on the shared cores), scaled by the
    number of steps."""
    from aeclass import build_config, train
    part = dataclasses.replace(ds, train_x=ds.train_x[:N_CAL], train_y=ds.train_y[:N_CAL], test_x=ds.test_x[:256],
                               test_y=ds.test_y[:256])
    with tempfile.TemporaryDirectory() as tmp:
        cfg = build_config(overrides={**overrides, "data": f"folder:{cifar_zip()}", "epochs": 4, "out": f"{tmp}/run",
                                      "report": False})
        train(cfg, dataset=part, log=lambda *a: None, progress=False)
        with open(f"{tmp}/run/metrics.csv") as f:
            fastest = min(float(r["epoch_seconds"]) for r in list(csv.DictReader(f))[1:])
    return fastest * (ds.train_x.shape[0] // 128) / (N_CAL // 128)


@torch.no_grad()
def hidden_patch_mse(run_dir, test_x: torch.Tensor, ratio: float = 0.5, patch: int = 4) -> float:
    """MSE on the hidden pixels of test images whose patches are hidden as mae hides them (a fixed seed)."""
    from aeclass.data import to_float
    from aeclass.inference import load_model
    model, _ = load_model(run_dir / "checkpoints" / "last.pt")
    errs = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for i in range(0, test_x.shape[0], 1000):
            x = to_float(test_x[i:i + 1000])
            hidden = patch_mask(x.shape[0], x.shape[-2:], patch, ratio)
            recon = model(torch.where(hidden, model.in_mean, x), classify=False)["recon"]
            errs.append(float(masked_mse(recon, x, hidden)))  # equal batches, equal hidden counts: mean of means
    return sum(errs) / len(errs)


def pretrain_epochs(methods, ds, budget: float, threads: int) -> tuple[dict, dict]:
    """Epochs per method for `budget` seconds of pre-training, and the measured seconds per epoch."""
    path = RUNS / "calibration.json"
    cal = load_results(path)
    for m in methods:
        if METHODS[m] is not None and m not in cal:
            cal[m] = seconds_per_epoch({**PRETRAIN, **METHODS[m], "threads": threads}, ds)
            print(f"calibration: {m} {cal[m]:.1f} s per epoch", flush=True)
            RUNS.mkdir(parents=True, exist_ok=True)
            save_results(path, cal)
    return {m: (max(1, round(budget / cal[m])) if METHODS[m] is not None else 0) for m in methods}, cal


def judge(method: str, epochs: int, args) -> dict:
    """Pre-train (unless `none`), then the linear probe and the fine-tuning; one row of the table."""
    log = lambda line: print(f"  {method}: {line}", flush=True)  # noqa: E731
    row = {"method": method, "pretrain_epochs": epochs, "pretrain_seconds": 0.0}
    init, lp, ft = None, {"strategy": "bench-random-probe"}, {"strategy": "supervised"}
    if METHODS[method] is not None:
        pre = RUNS / f"{method}-pre-{epochs}ep"
        m = trained(None, {**PRETRAIN, **METHODS[method], "epochs": epochs, "threads": args.threads}, pre, log=log)
        init = str(pre / "checkpoints" / "last.pt")
        row.update(pretrain_seconds=m["train_seconds"], test_recon_mse=m["test_recon_mse"],
                   hidden_patch_mse=hidden_patch_mse(pre, args.test_x))
        lp, ft = {"strategy": "linear-probe"}, {"strategy": "pretrain-finetune"}
        tag = f"{method}-{epochs}ep"
    else:
        tag = method
    for kind, over, n in (("probe", lp, args.probe_epochs), ("finetune", ft, args.finetune_epochs)):
        m = trained(None, {**LABELLED, **over, "epochs": n, "threads": args.threads}, RUNS / f"{tag}-{kind}-{n}ep",
                    init=init, log=log)
        row.update({f"{kind}_test_accuracy": m["test_accuracy"], f"{kind}_seconds": m["train_seconds"]})
    print(row, flush=True)
    return row


def write(res: dict) -> None:
    save_results(OUT.with_suffix(".json"), res)
    s = res["settings"]
    lines = ["# Which autoencoder to pre-train: CIFAR-10 (JPEG q75 variant), 4,000 labels", "",
             f"Command: `{res['command']}`. Encoder: `hybrid` (conv 32-64-128 + BN, code 128). Pre-training budget "
             f"{s['pretrain_seconds']:.0f} s per method on all 50,000 training images (epochs from the measured "
             f"seconds per epoch); linear probe {s['probe_epochs']} and fine-tuning {s['finetune_epochs']} epochs "
             "(390 steps each) on 4,000 labels (seed 0), last epoch, no validation set; test set of 10,000. "
             f"Other processes shared the 2 cores (1-minute load average {res['load_average_start_end'][0]:.1f} at "
             f"the start, {res['load_average_start_end'][1]:.1f} at the end).", "",
             "| pre-training | epochs | seconds | test recon MSE | hidden-patch MSE | linear probe acc | fine-tune acc |",
             "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        mse = f"{r['test_recon_mse']:.5f} | {r['hidden_patch_mse']:.5f}" if "test_recon_mse" in r else "- | -"
        lines.append(f"| {r['method']} | {r['pretrain_epochs']} | {r['pretrain_seconds']:.0f} | {mse} | "
                     f"{r['probe_test_accuracy']:.2%} | {r['finetune_test_accuracy']:.2%} |")
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated, of %(default)s")
    ap.add_argument("--pretrain-seconds", type=float, default=180)
    ap.add_argument("--probe-epochs", type=int, default=10)
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from aeclass.data import load_dataset
    methods = args.methods.split(",")
    ds = load_dataset(f"folder:{cifar_zip()}", str(shared_datasets()))
    args.test_x = ds.test_x
    res = {"command": " ".join(["python", "benchmarks/pretrain_compare.py", *sys.argv[1:]]), "machine": machine(),
           "settings": {"pretrain_seconds": args.pretrain_seconds, "probe_epochs": args.probe_epochs,
                        "finetune_epochs": args.finetune_epochs, "labels": 4000, "seed": 0},
           "load_average_start_end": [load_average(), None], "rows": []}
    epochs, res["seconds_per_epoch"] = pretrain_epochs(methods, ds, args.pretrain_seconds, args.threads)
    for m in methods:
        res["rows"].append(judge(m, epochs[m], args))
        res["load_average_start_end"][1] = load_average()
        write(res)  # after every method: an interrupted benchmark leaves the rows it finished


if __name__ == "__main__":
    main()
