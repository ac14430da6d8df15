"""Crash consistency: real `aeclass train` / `aeclass sweep` processes killed with SIGKILL at random moments, then
resumed (a sweep: rerun), must end exactly where an uninterrupted run ends: the same metrics.json, the same
weights in last.pt and best.pt, the same metrics.csv figures. After every kill each file the run holds must load.
SIGTERM must behave like Ctrl-C: one line, exit 143, a resumable run.

Each process costs a few seconds of start-up (torch, scikit-learn), so the runs are tiny digits runs on one
thread; the kills are spread over start-up, training and checkpoint writes by a fixed-seed random delay.
"""
from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from aeclass.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--labels", "50", "--threads", "1", "--no-report", "--quiet"]
RUNS = {  # name -> (train options, SIGKILLs, longest random delay: about an epoch and its evaluation, s)
    "supervised": (["--strategy", "supervised", "--epochs", "8"], 6, 0.4),
    "semi-student": (["--strategy", "semi", "--epochs", "4", "--student-epochs", "3"], 6, 1.2),
    "ladder": (["--strategy", "ladder", "--model", "ladder", "--epochs", "7"], 5, 0.4),
}
SWEEP = ["sweep", "--data", "digits", "--strategies", "supervised,joint", "--labels", "50", "--seeds", "1",
         "--epochs", "3", "--no-baseline", "--no-report", "--threads", "1", "--quiet"]
SWEEP_KILLS = 5
TIMING = ("train_seconds", "eval_seconds", "epoch_seconds", "elapsed_seconds", "elapsed")


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1", "AECLASS_NO_CACHE": "1"}


def launch(argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aeclass", *argv], env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def newest_write(d: Path) -> int:
    """The latest mtime of the files a run writes under d (not the lock file, which is touched first).
    A temp file may be renamed between listing and stat (the saver's os.replace): it is skipped."""
    newest = 0
    for p in d.rglob("*"):
        try:
            if p.is_file() and p.name != ".lock":
                newest = max(newest, p.stat().st_mtime_ns)
        except FileNotFoundError:
            pass
    return newest


def epochs_done(d: Path) -> int:
    """Rows in every metrics.csv under d (a run's, or a sweep's cells'): the epochs checkpointed so far."""
    n = 0
    for p in d.rglob("metrics.csv"):
        try:
            n += max(0, len(p.read_text().strip().splitlines()) - 1)
        except OSError:
            pass
    return n


def kill_at_random(proc: subprocess.Popen, out: Path, rng: random.Random, longest: float) -> bool:
    """SIGKILL `proc` at a random moment; False if it finished first. Mostly within the epoch after the first
    one this process completes (so that every kill costs the run progress it must redo, and some land inside
    checkpoint writes), sometimes (1 in 5) soon after it starts writing, before any epoch of its own."""
    early = rng.random() < 0.2
    probe = (lambda: newest_write(out)) if early else (lambda: epochs_done(out))
    before, deadline = (probe() if out.exists() else 0), time.time() + 120
    while proc.poll() is None and (not out.exists() or probe() <= before):
        assert time.time() < deadline, "the process wrote nothing for 2 minutes"
        time.sleep(0.01)
    time.sleep(rng.uniform(0, longest))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def assert_everything_loads(d: Path) -> None:
    """No kill may leave a file that does not load (the temporary files aside, which a resume removes)."""
    for p in d.rglob("*"):
        if not p.is_file() or p.name.endswith(".tmp") or p.name == ".lock":
            continue
        if p.suffix == ".pt":
            load_checkpoint(p)
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".yaml":
            assert isinstance(yaml.safe_load(p.read_text()), dict), p
        elif p.suffix == ".csv":
            rows = list(csv.DictReader(io.StringIO(p.read_text())))
            assert all(None not in r for r in rows), p  # no row longer than the header (a torn write)


def where_it_stopped(d: Path) -> str:
    """For the log (pytest -s): the epoch last.pt holds and the temporary files the kill left."""
    ck = d / "checkpoints" / "last.pt"
    at = "no checkpoint yet" if not ck.is_file() else "last.pt at epoch {}".format(
        len(load_checkpoint(ck)["progress"]["history"]))
    tmp = [p.name for p in d.rglob("*.tmp")]
    return at + (f", left {tmp}" if tmp else "")


def finish(argv, what: str) -> None:
    p = subprocess.run([sys.executable, "-m", "aeclass", *argv], env=env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (what, p.stderr[-2000:])


def train_argv(opts, out: Path) -> list[str]:
    """Resume when there is a checkpoint to resume from, else start (again) from scratch."""
    if (out / "checkpoints" / "last.pt").is_file():
        return ["train", "--resume", str(out), "--threads", "1", "--no-report", "--quiet"]
    return ["train", *opts, *COMMON, "--out", str(out)]


def without_timing(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in TIMING}


def csv_figures(path: Path) -> list[dict]:
    return [without_timing(r) for r in csv.DictReader(io.StringIO(path.read_text()))]


def assert_same_run(ref: Path, got: Path) -> None:
    assert without_timing(json.loads((got / "metrics.json").read_text())) == \
        without_timing(json.loads((ref / "metrics.json").read_text()))
    for name in ("last.pt", "best.pt"):
        a, b = (load_checkpoint(d / "checkpoints" / name)["model_state"] for d in (ref, got))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert csv_figures(got / "metrics.csv") == csv_figures(ref / "metrics.csv")
    assert not list(got.rglob("*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(name, tmp_path):
    opts, kills, longest = RUNS[name]
    ref, out = tmp_path / "ref", tmp_path / "cut"
    finish(["train", *opts, *COMMON, "--out", str(ref)], "reference")
    rng, hit, tries = random.Random(f"{name}-19"), 0, 0
    while hit < kills:
        tries += 1
        assert tries < 4 * kills, f"only {hit} of {tries} kills hit a live process"
        proc = launch(train_argv(opts, out))
        if kill_at_random(proc, out, rng, longest):
            hit += 1
            assert_everything_loads(out)
            print(f"{name} kill {hit}: {where_it_stopped(out)}")
        else:
            assert proc.returncode == 0, proc.stderr.read()[-2000:]
            if (out / "metrics.json").exists():  # it finished first: start over to place the remaining kills
                out.rename(out.with_name(f"done{tries}"))
    finish(train_argv(opts, out), "final resume")
    assert_same_run(ref, out)


@pytest.mark.slow
def test_sigkill_during_a_sweep_then_rerun_equals_an_uninterrupted_sweep(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "cut"
    finish([*SWEEP, "--out", str(ref)], "reference sweep")
    rng, hit, tries = random.Random("sweep-19"), 0, 0
    while hit < SWEEP_KILLS:
        tries += 1
        assert tries < 4 * SWEEP_KILLS, f"only {hit} of {tries} kills hit a live process"
        proc = launch([*SWEEP, "--out", str(out)])
        if kill_at_random(proc, out, rng, 0.6):
            hit += 1
            assert_everything_loads(out)
            print(f"sweep kill {hit}: {epochs_done(out)} epochs done")
        elif (out / "summary.md").exists():
            out.rename(out.with_name(f"done{tries}"))
    finish([*SWEEP, "--out", str(out)], "final rerun")
    keep = ("strategy", "labels", "seed", "test_accuracy", "test_recon_mse", "n_labelled", "n_train", "run_dir")
    rows = [[{k: r[k] for k in keep} for r in csv.DictReader(io.StringIO((d / "results.csv").read_text()))]
            for d in (ref, out)]
    assert rows[0] == rows[1] and len(rows[0]) == 2
    for cell in ("supervised-50-s0", "joint-50-s0"):
        assert_same_run(ref / "runs" / cell, out / "runs" / cell)


@pytest.mark.slow
def test_sigterm_is_like_ctrl_c_one_line_exit_143_and_resumable(tmp_path):
    opts = RUNS["supervised"][0]
    out = tmp_path / "r"
    for delay in (0.6, 0.3, 0.1, 0.0):
        proc = launch(["train", *opts, *COMMON, "--out", str(out)])
        while proc.poll() is None and not (out / "config.yaml").exists():
            time.sleep(0.02)
        time.sleep(delay)
        if proc.poll() is None:
            break
        proc.wait()
        out.rename(tmp_path / f"finished-{delay}")
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aeclass: terminated (SIGTERM)") and "--resume" in lines[0], err
    assert_everything_loads(out)
    finish(train_argv(opts, out), "resume after SIGTERM")
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 8

