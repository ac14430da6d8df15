"""fp32 against bf16 autocast on this machine: the training step of the models the fast presets use.

Where the CPU has bf16 arithmetic (AVX512-BF16 or AMX on x86) bf16 autocast makes these steps faster; where it
has not (an AVX2-only CPU, for example), torch still runs bf16 autocast, converting in software around fp32
kernels, and the same step takes many times longer. `--precision auto` (the presets' setting) picks bf16 on the
first kind and fp32 on the second; this benchmark measures both precisions and says what `auto` picks here.

Each entry is one model as a preset builds it, on a random batch: forward (class scores, and the
reconstruction where the model has a decoder), cross-entropy plus MSE, backward and an SGD step, in the
channels_last layout for convolutional models, as the engine trains them. fp32 and bf16 take turns, `--rounds`
times; each turn times steps until `--seconds` have passed (one step at least), and the best turn counts.
Writes benchmarks/results/precision.json and .md. On an AVX512-BF16 CPU about a minute; where bf16 is
emulated several minutes.

    python benchmarks/precision.py
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from _common import RESULTS, cpu_model, machine, save_results

from aeclass.device import autocast, native_bf16, resolve_precision
from aeclass.io import atomic_write_text
from aeclass.models.registry import create_model

# name -> (the preset it stands for, model, model kwargs, input shape, batch)
ENTRIES = {
    "fastcnn+decoder": ("cifar-4000, cifar-250", "fastcnn", {"decoder": True}, (3, 32, 32), 256),
    "fastcnn": ("fastcnn-cifar", "fastcnn", {}, (3, 32, 32), 256),
    "resnet 24-48-96": ("fast-mnist", "resnet", {"widths": [24, 48, 96], "decoder": False}, (1, 28, 28), 128),
    "mlp_ae 784-32-784": ("fast-ae", "mlp_ae", {"code_dim": 32, "code_act": "prelu"}, (1, 28, 28), 256),
}


def step_fn(model_name: str, kwargs: dict, shape, batch: int):
    """One training step of the model on a fixed random batch, as a function of the precision."""
    torch.manual_seed(0)
    model = create_model(model_name, shape, 10, **kwargs)
    conv = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    fmt = torch.channels_last if conv else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    x = torch.rand(batch, *shape).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    cpu = torch.device("cpu")

    def step(precision: str) -> None:
        with autocast(cpu, precision):
            out = model(x)
        loss = F.cross_entropy(out["logits"].float(), y) if "logits" in out else 0.0
        if "recon" in out:
            loss = loss + F.mse_loss(out["recon"].float(), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def turn_seconds(step, precision: str, seconds: float) -> float:
    """Seconds per step over one turn: steps until `seconds` have passed, at least one."""
    n, t0 = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - t0 < seconds:
        step(precision)
        n += 1
    return (time.perf_counter() - t0) / n


def measure(entry: tuple, rounds: int, seconds: float) -> dict:
    preset, model_name, kwargs, shape, batch = entry
    step = step_fn(model_name, kwargs, shape, batch)
    best = {"fp32": float("inf"), "bf16": float("inf")}
    for p in best:  # warm-up: the first steps allocate and pick kernels
        step(p)
    for _ in range(rounds):
        for p in best:
            best[p] = min(best[p], turn_seconds(step, p, seconds))
    return {"presets": preset, "batch": batch, "fp32_step_ms": round(best["fp32"] * 1e3, 1),
            "bf16_step_ms": round(best["bf16"] * 1e3, 1), "bf16_over_fp32": round(best["bf16"] / best["fp32"], 2)}


def cpu_features() -> dict:
    """The CPU and what torch's probes say of it (None where this torch has no such probe)."""
    probe = {name: getattr(torch.cpu, f"_is_{name}_supported", lambda: None)()
             for name in ("avx2", "avx512", "avx512_bf16", "amx_tile")}
    cpu = torch.device("cpu")
    return {"model": cpu_model(), "capability": torch.backends.cpu.get_cpu_capability(), **probe,
            "native_bf16": native_bf16(cpu), "auto_picks": resolve_precision(cpu, "auto")}


def write_markdown(results: dict) -> None:
    f = results["cpu"]
    lines = ["| model | presets | batch | fp32 ms/step | bf16 ms/step | bf16 / fp32 |", "|---|---|---|---|---|---|"]
    for name, e in results["entries"].items():
        lines.append(f"| {name} | {e['presets']} | {e['batch']} | {e['fp32_step_ms']:,.1f} | {e['bf16_step_ms']:,.1f} "
                     f"| {e['bf16_over_fp32']:.2f} |")
    m = results["machine"]
    lines.append(f"\nOne training step on a random batch, best of {results['rounds']} turns. {f.get('model') or ''} "
                 f"({m['processor']}), {m['cpu_threads']} threads, torch {m['torch']}; "
                 f"CPU capability {f['capability']}, AVX512-BF16 "
                 f"{f['avx512_bf16']}, AMX {f['amx_tile']}: `--precision auto` computes in **{f['auto_picks']}** here.")
    atomic_write_text(RESULTS / "precision.md", "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.0, help="least time a turn takes")
    ap.add_argument("--only", help="comma-separated entry names")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n] if args.only else list(ENTRIES)
    if unknown := [n for n in names if n not in ENTRIES]:
        raise SystemExit(f"--only: unknown entries {', '.join(unknown)}; expected some of: {', '.join(ENTRIES)}")
    results = {"machine": machine(), "cpu": cpu_features(), "rounds": args.rounds, "entries": {}}
    for name in names:
        results["entries"][name] = measure(ENTRIES[name], args.rounds, args.seconds)
        print(name, results["entries"][name], flush=True)
    save_results(RESULTS / "precision.json", results)
    write_markdown(results)


if __name__ == "__main__":
    main()
