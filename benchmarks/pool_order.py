"""Pool before ReLU: the seed CNN's training speed with conv -> pool -> ReLU (aeclass's order) against
conv -> ReLU -> pool (the seed article's), interleaved in one process.

Both orders compute the same function and the same gradients (tests/test_models.py checks it bit for bit);
the first runs the ReLU and its backward on a quarter of the elements. To keep this VM's speed drift out of
the comparison, the two models take turns, one slice of CIFAR-10 (12,800 images, batch 64) each, `rounds`
times, in fp32 and bf16. Writes benchmarks/results/pool_order.json and .md. About 2 minutes here.

    python benchmarks/pool_order.py
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
from _common import RESULTS, cifar_zip, machine, save_results
from torch import nn

from aeclass import build_config
from aeclass.cpu import tune_allocator
from aeclass.data import load_dataset
from aeclass.data.train_data import TrainData
from aeclass.engine import Run, make_optimizer, train_one_epoch
from aeclass.strategies import create_strategy
from aeclass.train import build_model


def relu_before_pool(model):
    """A copy of `model` whose encoder runs every ReLU before the max-pool it follows (the seed's order)."""
    ref = copy.deepcopy(model)
    order: list[nn.Module] = []
    for m in ref.encoder.features:
        if isinstance(m, nn.ReLU) and order and isinstance(order[-1], nn.MaxPool2d):
            order.insert(len(order) - 1, m)
        else:
            order.append(m)
    ref.encoder.features = nn.Sequential(*order)
    return ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--images", type=int, default=12800)
    args = ap.parse_args()
    tune_allocator()  # as aeclass.train does on CPU
    ds = load_dataset(f"folder:{cifar_zip()}")
    ds.train_x, ds.train_y = ds.train_x[:args.images], ds.train_y[:args.images]
    dev = torch.device("cpu")
    results = {"machine": machine(), "images_per_slice": args.images, "rounds": args.rounds, "precisions": {}}
    for precision in ("fp32", "bf16"):
        cfg = build_config(overrides=dict(data="cifar10", strategy="supervised", model="cnn", model_kwargs={"padding": "valid"},
                                          batch_size=64, optimizer="adam", lr=1e-3, augment="none", epochs=1,
                                          report=False, precision=precision))
        pool_first = build_model(cfg, ds).to(memory_format=torch.channels_last)
        models = {"pool -> relu (aeclass)": pool_first, "relu -> pool (seed)": relu_before_pool(pool_first)}
        data = TrainData.build(ds, cfg, dev)
        steps = args.images // cfg.batch_size
        strategy = create_strategy(cfg)
        parts = {k: (m, strategy.phases(m)[0], make_optimizer(m.parameters(), cfg)) for k, m in models.items()}
        speeds: dict[str, list[float]] = {k: [] for k in models}
        for r in range(args.rounds + 1):  # round 0 warms both up and is not counted
            for name, (m, phase, opt) in parts.items():
                t = time.perf_counter()
                run = Run(cfg, ds, data, m, strategy, [phase], dev, torch.Generator().manual_seed(r), lambda: None,
                          {"head": True, "decoder": False})
                train_one_epoch(run, phase, data, opt, 0, steps, 0)
                if r:
                    speeds[name].append(args.images / (time.perf_counter() - t))
        results["precisions"][precision] = speeds
        print(precision, {k: [round(v) for v in s] for k, s in speeds.items()}, flush=True)
    save_results(RESULTS / "pool_order.json", results)
    write_markdown(results)


def write_markdown(results: dict) -> None:
    from aeclass.io import atomic_write_text
    lines = ["| precision | order | images/s per round | mean | vs the seed's order |", "|---|---|---|---|---|"]
    for precision, speeds in results["precisions"].items():
        base = sum(speeds["relu -> pool (seed)"]) / len(speeds["relu -> pool (seed)"])
        for name, s in speeds.items():
            mean = sum(s) / len(s)
            lines.append(f"| {precision} | {name} | {', '.join(f'{v:,.0f}' for v in s)} | {mean:,.0f} | {mean / base:.2f}x |")
    m = results["machine"]
    lines.append(f"\nSeed CNN ('valid' convs, batch 64), {results['images_per_slice']} CIFAR-10 images per slice, the two "
                 f"orders taking turns. {m['processor']}, {m['cpu_threads']} threads, torch {m['torch']}.")
    atomic_write_text(RESULTS / "pool_order.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
