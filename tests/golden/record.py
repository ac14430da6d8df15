"""Record the figures that must not move: small runs through the public command line, on the embedded digits.

    python tests/golden/record.py OUT.json [--only NAME ...]

Each case is an `aeclass train` or `aeclass sweep` command (the stable public interface). What is recorded
is every number in its metrics.json (times left out) and every loss / accuracy column of its metrics.csv.
`tests/test_golden.py` runs the same cases with the code as it is and compares them with
`tests/golden/figures/<CPU kind>.json`, written by this script from the code before the strategy plug-in
redesign (commit 1cfb6cd), so that a refactoring which changes any result, or any random draw, fails.

Float results of the same code differ between kinds of CPU (MKL and oneDNN take other code paths on AMD and
Intel processors, and with AVX2 or AVX-512), so the figures are kept per kind (`cpu_kind()`). To add a kind,
run this script with that commit's package first on the path, on a machine of that kind:

    git worktree add /tmp/old 1cfb6cd && cp tests/golden/record.py /tmp/old/tests/golden/
    cd /tmp/old && PYTHONPATH=/tmp/old python tests/golden/record.py FIGURES.json
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import tempfile
from pathlib import Path

QUICK = ["--data", "digits", "--labels", "100", "--seed", "1", "--no-report", "--quiet", "--threads", "2"]
# name -> argv after "aeclass"; "{out}" is the run or sweep directory.
CASES: dict[str, list[str]] = {
    "demo": ["train", "--out", "{out}", "--no-report", "--quiet", "--threads", "2"],
    "autoencoder": ["train", *QUICK, "--strategy", "autoencoder", "--model", "conv_ae", "--epochs", "2", "--out", "{out}"],
    "supervised-ema": ["train", *QUICK, "--strategy", "supervised", "--model", "cnn", "--epochs", "2", "--ema", "0.9",
                       "--label-smoothing", "0.1", "--out", "{out}"],
    "pretrain-finetune": ["train", *QUICK, "--strategy", "pretrain-finetune", "--epochs", "2", "--pretrain-epochs", "1",
                          "--noise", "0.2", "--out", "{out}"],
    "linear-probe": ["train", *QUICK, "--strategy", "linear-probe", "--model", "mlp_ae", "--epochs", "2",
                     "--pretrain-epochs", "2", "--out", "{out}"],
    "joint-sgd": ["train", *QUICK, "--strategy", "joint", "--epochs", "2", "--optimizer", "sgd", "--lr", "0.05",
                  "--nesterov", "true", "--schedule", "onecycle", "--warmup-epochs", "0.5", "--out", "{out}"],
    "semi-student": ["train", *QUICK, "--strategy", "semi", "--epochs", "3", "--student-epochs", "2", "--student-rounds",
                     "2", "--noise", "0.2", "--confidence", "0.8", "--dist-align", "true", "--ema", "0.9",
                     "--ema-teacher", "true", "--strong-labelled", "true", "--rampup-epochs", "1", "--out", "{out}"],
    "ladder": ["train", *QUICK, "--strategy", "ladder", "--model", "ladder", "--epochs", "3", "--noise", "0.3",
               "--model-opt", "hidden=[64,32]", "--out", "{out}"],
    "fastcnn": ["train", *QUICK, "--preset", "fastcnn-cifar", "--data", "digits", "--epochs", "2", "--batch-size", "128",
                "--precision", "fp32", "--tta-flip", "false", "--tta-shift", "0", "--augment", "crop=1",
                "--out", "{out}"],
    "sweep": ["sweep", "--data", "digits", "--strategies", "supervised,pretrain-finetune,linear-probe,joint,semi,ladder",
              "--labels", "100,all", "--seeds", "1", "--epochs", "2", "--threads", "2", "--no-report", "--quiet",
              "--out", "{out}"],
}


def cpu_kind() -> str:
    """The kind of CPU figures are recorded for: architecture, vendor and the vector ISA torch's kernels use."""
    import torch
    vendor = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            vendor = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("vendor_id")), vendor)
    except OSError:
        pass
    return f"{platform.machine()}-{vendor}-{torch.backends.cpu.get_cpu_capability()}"


TIME_KEYS = {"train_seconds", "eval_seconds", "epoch_seconds", "elapsed_seconds", "started"}


def _numbers(obj):
    """Every number, string and list in a metrics.json, times left out."""
    if isinstance(obj, dict):
        return {k: _numbers(v) for k, v in obj.items() if k not in TIME_KEYS}
    if isinstance(obj, list):
        return [_numbers(v) for v in obj]
    return obj


def _csv(path: Path, drop=TIME_KEYS) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


def run_case(name: str, workdir: Path) -> dict:
    from aeclass.cli import main
    out = workdir / name
    argv = [a.replace("{out}", str(out)) for a in CASES[name]]
    rc = main(argv)
    if rc != 0:
        raise SystemExit(f"{name}: aeclass {' '.join(argv)} exited {rc}")
    if argv[0] == "sweep":
        rows = _csv(out / "results.csv", drop=TIME_KEYS | {"run_dir", "config"})
        return {"results": rows, "runs": {p.name: _numbers(json.loads((p / "metrics.json").read_text()))
                                          for p in sorted((out / "runs").iterdir()) if (p / "metrics.json").is_file()}}
    return {"metrics": _numbers(json.loads((out / "metrics.json").read_text())), "csv": _csv(out / "metrics.csv")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--only", nargs="*", choices=sorted(CASES))
    args = ap.parse_args(argv)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or CASES:
            figures[name] = run_case(name, Path(tmp))
            print(f"{name}: recorded", file=sys.stderr)
    Path(args.out).write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
