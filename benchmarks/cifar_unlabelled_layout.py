"""Lay the CIFAR-10 zip out as a user with few labels has their photos: labelled class folders, one folder of
unlabelled images, and a labelled test set.

    python benchmarks/cifar_unlabelled_layout.py --labels 4000 --seed 0 --out /tmp/cifar-4000

writes (the JPEG bytes are copied from the zip, not re-encoded)

    OUT/train/<class>/*.jpg      --labels images, balanced per class, drawn by --seed from the 50,000
    OUT/train/unlabelled/*.jpg   the other training images, without their classes
    OUT/test/<class>/*.jpg       the 10,000 test images

and then, for example (docs/data.md, "Your own unlabelled images"):

    aeclass train --data folder:/tmp/cifar-4000 --strategy semi --val 500 ...
"""
from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def layout(zip_path: Path, out: Path, labels: int, seed: int) -> dict:
    """Write the layout; returns the counts written."""
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out}: exists and is not empty; choose another --out")
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(n for n in zf.namelist() if n.lower().endswith((".jpg", ".jpeg", ".png")))
        train = [n for n in names if "/train/" in f"/{n}"]
        test = [n for n in names if "/test/" in f"/{n}"]
        classes = sorted({Path(n).parent.name for n in train})
        rng = np.random.default_rng(seed)
        per_class = {c: [n for n in train if Path(n).parent.name == c] for c in classes}
        quota = {c: labels // len(classes) + (i < labels % len(classes)) for i, c in enumerate(classes)}
        chosen = {n for c in classes for n in rng.permutation(per_class[c])[:quota[c]]}
        counts = {"labelled": 0, "unlabelled": 0, "test": 0}
        for n in train:
            cls = Path(n).parent.name
            if n in chosen:
                dest, key = out / "train" / cls / Path(n).name, "labelled"
            else:  # the class is dropped: the file name must not tell it either
                dest, key = out / "train" / "unlabelled" / f"{counts['unlabelled']:05d}{Path(n).suffix}", "unlabelled"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(zf.read(n))
            counts[key] += 1
        for n in test:
            dest = out / "test" / Path(n).parent.name / Path(n).name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(zf.read(n))
            counts["test"] += 1
    return counts


def main(argv=None) -> int:
    from _common import cifar_zip
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zip", type=Path, default=None, help="the CIFAR-10 image-folder zip (default: ../shared/datasets)")
    ap.add_argument("--labels", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    counts = layout(args.zip or Path(cifar_zip()), args.out, args.labels, args.seed)
    print(f"{args.out}: {counts['labelled']} labelled, {counts['unlabelled']} unlabelled, {counts['test']} test images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
