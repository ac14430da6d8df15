#!/usr/bin/env bash
# Does the autoencoder help on CIFAR-10 photos with 100 or 1,000 labels? Every strategy x {100, 1000} labels
# x 2 seeds, one short-budget run each (benchmarks/configs/sweep-cifar.yaml: 2 epochs per phase, bf16), plus
# the LabelSpreading-on-PCA baseline, on the shared CIFAR-10 JPEG-q75 zip. Resumable: rerun to continue.
# Writes benchmarks/results/sweep-cifar/{results.csv,summary.md,accuracy_vs_labels.png} and copies the plot
# to docs/images/sweep-cifar.png for the README.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR="${AECLASS_DATA:-../shared/datasets}"
aeclass sweep --data "folder:$DATA_DIR/cifar10-jpeg/cifar10-jpeg.zip" \
  --strategies supervised,pretrain-finetune,linear-probe,joint,semi --labels 100,1000 --seeds 2 --epochs 2 \
  --config benchmarks/configs/sweep-cifar.yaml --out benchmarks/results/sweep-cifar --no-report "$@"
cp benchmarks/results/sweep-cifar/accuracy_vs_labels.png docs/images/sweep-cifar.png
