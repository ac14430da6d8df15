#!/usr/bin/env bash
# What does `aeclass sweep` cost, and what does it say, with its defaults on a CIFAR-sized photo folder? The
# shared CIFAR-10 JPEG-q75 zip with no strategy, label, seed, epoch or config flag: the `photos` plan
# (aeclass/sweep_plans.py, docs/sweeps.md) picks supervised + semi at 250 / 4000 / all labels, 1 seed, plus the
# LabelSpreading-on-PCA baseline. Resumable: rerun to continue; each call is timed on its own.
# Writes benchmarks/results/sweep-photos/ (SWEEP_OUT=DIR writes elsewhere, e.g. to time the plan afresh on
# another host): the sweep's results.csv, summary.md and accuracy_vs_labels.png (once every cell is done),
# sweep.log (its output, with each cell's wall-clock) and timing.json (one entry per call, interrupted ones
# too: its wall-clock, cells finished, and the host's bf16 matmul speed, as hosts of the same kind differ
# more than 3x: 382 to 2,419 GFLOP/s over the calls so far), and the total over calls.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR="${AECLASS_DATA:-../shared/datasets}"
OUT="${SWEEP_OUT:-benchmarks/results/sweep-photos}"
mkdir -p "$OUT"
gflops() { python -c 'import sys; sys.path.insert(0, "benchmarks")
from cifar_few_labels import bf16_matmul_gflops; print(round(bf16_matmul_gflops()))'; }
record() {  # on any exit: append this call to timing.json (atomically)
  local code=$? end; end=$(date +%s)
  python - "$OUT" "$start" "$end" "$before" "$code" <<'PY'
import csv, json, os, sys
from pathlib import Path
out, start, end, gflops, code = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
path = out / "timing.json"
t = json.loads(path.read_text()) if path.is_file() else {"calls": []}
rows = list(csv.DictReader(open(out / "results.csv"))) if (out / "results.csv").is_file() else []
t["calls"].append({"wall_seconds": end - start, "exit_code": code, "cells_finished": len(rows),
                   "bf16_matmul_gflops": gflops})
t["wall_seconds_total"] = sum(c["wall_seconds"] for c in t["calls"])
t["command"] = "bash benchmarks/sweep_photos.sh (aeclass sweep --data folder:cifar10-jpeg.zip, the photos plan)"
path.with_suffix(".tmp").write_text(json.dumps(t, indent=2) + "\n")
os.replace(path.with_suffix(".tmp"), path)
PY
  echo "== $(date -u +%FT%TZ) end, exit $code, $(( end - start )) s" >> "$OUT/sweep.log"
}
before=$(gflops)
start=$(date +%s)
trap record EXIT
echo "== $(date -u +%FT%TZ) start, bf16 matmul $before GFLOP/s" >> "$OUT/sweep.log"
aeclass sweep --data "folder:$DATA_DIR/cifar10-jpeg/cifar10-jpeg.zip" --out "$OUT" --no-report "$@" 2>&1 | tee -a "$OUT/sweep.log"
