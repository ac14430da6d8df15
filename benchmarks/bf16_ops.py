"""The non-matmul kernels of the seed CNN's first stage, fp32 against bf16.

The throughput benchmark's kernels-alone bound shows that half of the seed CNN's bf16 training step is spent
outside its matmuls and convolutions. This times those other kernels on the first stage's tensor (batch 64,
32 channels, 30x30, channels_last, as aeclass trains the Keras-exact seed CNN): max-pool 2x2 forward and
backward, ReLU forward (on the pooled map, aeclass's order) and backward. Best of `--reps` calls each.
Writes benchmarks/results/bf16_ops.json and .md. About 10 s.

    python benchmarks/bf16_ops.py
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _common import RESULTS, best_seconds, machine, save_results


def best_us(fn, reps: int) -> float:
    return best_seconds(fn, reps) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args()
    rows = {}
    for dtype in (torch.float32, torch.bfloat16):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 32, 30, 30, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
        pooled, idx = F.max_pool2d_with_indices(x, 2)
        grad = torch.randn(pooled.shape, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
        relu_out = torch.relu(pooled)
        with torch.no_grad():
            rows[str(dtype).split(".")[-1]] = {
                "max_pool2d forward": best_us(lambda: F.max_pool2d(x, 2), args.reps),
                "max_pool2d backward": best_us(lambda: torch.ops.aten.max_pool2d_with_indices_backward(
                    grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, idx), args.reps),
                "relu forward": best_us(lambda: torch.relu(pooled), args.reps),
                "relu backward": best_us(lambda: torch.ops.aten.threshold_backward(grad, relu_out, 0), args.reps),
            }
    results = {"machine": machine(), "shape": [64, 32, 30, 30], "microseconds": rows}
    save_results(RESULTS / "bf16_ops.json", results)
    from aeclass.io import atomic_write_text
    lines = ["| kernel | fp32 us | bf16 us | bf16 / fp32 |", "|---|---|---|---|"]
    for k in rows["float32"]:
        a, b = rows["float32"][k], rows["bfloat16"][k]
        lines.append(f"| {k} | {a:.0f} | {b:.0f} | {b / a:.2f} |")
    m = results["machine"]
    lines.append(f"\nThe seed CNN's first stage, batch 64, 32 x 30 x 30, channels_last; best of {args.reps}. "
                 f"{m['processor']}, {m['cpu_threads']} threads, torch {m['torch']}.")
    atomic_write_text(RESULTS / "bf16_ops.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
