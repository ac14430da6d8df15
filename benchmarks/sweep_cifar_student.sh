#!/usr/bin/env bash
# Does self-training help on photos? `semi` with a 2-epoch student (--student-epochs 2), otherwise exactly the
# cells of benchmarks/sweep_cifar.sh (its config, 100 and 1000 labels, 2 seeds, 2 epochs), so the semi rows of
# the two sweeps compare directly. About 10 min on 2 CPU cores. Resumable: rerun to continue.
# Writes benchmarks/results/sweep-cifar-student/{results.csv,summary.md}.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR="${AECLASS_DATA:-../shared/datasets}"
CONFIG="$(mktemp --suffix=.yaml)"
trap 'rm -f "$CONFIG"' EXIT
{ cat benchmarks/configs/sweep-cifar.yaml; echo "student_epochs: 2"; } > "$CONFIG"
aeclass sweep --data "folder:$DATA_DIR/cifar10-jpeg/cifar10-jpeg.zip" --strategies semi --labels 100,1000 --seeds 2 \
  --epochs 2 --config "$CONFIG" --out benchmarks/results/sweep-cifar-student --no-baseline --no-report "$@"
