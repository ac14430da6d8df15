#!/usr/bin/env bash
# Does the autoencoder help on MNIST, and with how many labels? Every strategy x {100, 1000, all} labels x
# 2 seeds, one short-budget training run each (benchmarks/configs/sweep-mnist.yaml: 1 epoch per phase, bf16),
# plus the LabelSpreading-on-PCA baseline. Resumable: rerun to continue. About 15 min on 2 CPU cores.
# Writes benchmarks/results/sweep-mnist/{results.csv,summary.md,accuracy_vs_labels.png} and copies the
# plot to docs/images/sweep-mnist.png for the README.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR="${AECLASS_DATA:-../shared/datasets}"
aeclass sweep --data mnist --data-dir "$DATA_DIR" \
  --strategies supervised,pretrain-finetune,linear-probe,joint,semi,ladder --labels 100,1000,all --seeds 2 --epochs 1 \
  --config benchmarks/configs/sweep-mnist.yaml --out benchmarks/results/sweep-mnist --no-report "$@"
cp benchmarks/results/sweep-mnist/accuracy_vs_labels.png docs/images/sweep-mnist.png
