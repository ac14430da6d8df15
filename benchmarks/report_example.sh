#!/usr/bin/env bash
# Makes the report pictures shown in the README from a real MNIST run:
# joint training with 1,000 labels, then `aeclass report`, then a headless-Chromium screenshot.
# Writes docs/images/*.png. Needs MNIST in $AECLASS_DATA or ../shared/datasets (about 5 min on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${AECLASS_DATA:-../shared/datasets}"
run=benchmarks/results/runs/mnist-report
rm -rf "$run"
aeclass train --data mnist --data-dir "$data" --labels 1000 --strategy joint --noise 0.2 --model hybrid \
  --epochs 4 --batch-size 128 --out "$run" --quiet
mkdir -p docs/images
cp "$run"/report/curves.png "$run"/report/reconstructions.png "$run"/report/latent.png \
   "$run"/report/confusion.png "$run"/report/saliency.png docs/images/ 2>/dev/null || cp "$run"/report/*.png docs/images/
if command -v chromium >/dev/null 2>&1; then
  profile=$(mktemp -d)
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$profile" --window-size=1200,1600 \
    --screenshot="$PWD/docs/images/report-screenshot.png" "file://$PWD/$run/report.html" 2>/dev/null
  rm -rf "$profile"
fi
ls docs/images
