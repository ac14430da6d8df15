"""Outcomes that must not move: the figures of small public commands, and the files of an old run.

`tests/golden/figures/<CPU kind>.json` was written by `tests/golden/record.py` from the code before the strategy
plug-in redesign (commit 1cfb6cd), on a machine of that kind: float results differ between kinds, so a kind
without recorded figures skips those tests, saying so (record.py says how to add one). `tests/golden/old-run/`
is a run directory that code wrote, and `old-run-expected.json` what its `evaluate` and `predict` said. Any change of a result, of a random draw, or of
how an old checkpoint loads fails here.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
sys.path.insert(0, str(GOLDEN))
import record  # noqa: E402

KIND = record.cpu_kind()
FIGURES_FILE = GOLDEN / "figures" / f"{KIND}.json"
FIGURES = json.loads(FIGURES_FILE.read_text()) if FIGURES_FILE.is_file() else None
recorded_here = pytest.mark.skipif(FIGURES is None, reason=f"no golden figures recorded on this kind of CPU ({KIND}); "
                                   "tests/golden/record.py says how to record them")


def _close(a, b) -> bool:
    """`a` (now) holds everything `b` (recorded) holds, numbers (or number strings from metrics.csv) equal to
    1e-5 relative. Keys added since are allowed: public files may gain fields, never lose or change one."""
    if isinstance(a, dict) and isinstance(b, dict):
        return b.keys() <= a.keys() and all(_close(a[k], b[k]) for k in b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    try:
        fa, fb = float(a), float(b)
    except (TypeError, ValueError):
        return a == b
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    return math.isclose(fa, fb, rel_tol=1e-5, abs_tol=1e-8) or (math.isnan(fa) and math.isnan(fb))


def _first_difference(a, b, where="") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        if not b.keys() <= a.keys():
            return f"{where}: keys {sorted(set(b) - set(a))} are missing"
        for k in b:
            if not _close(a[k], b[k]):
                return _first_difference(a[k], b[k], f"{where}.{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if not _close(x, y):
                return _first_difference(x, y, f"{where}[{i}]")
    return f"{where}: {a!r} now, {b!r} recorded"


@pytest.mark.slow
@recorded_here
@pytest.mark.parametrize("name", sorted(record.CASES))
def test_figures_equal_the_recorded_ones(name, tmp_path):
    now = record.run_case(name, tmp_path)
    assert _close(now, FIGURES[name]), _first_difference(now, FIGURES[name])


def test_an_old_run_still_evaluates_and_predicts(tmp_path):
    import shutil

    from aeclass.inference import evaluate_checkpoint, predict_files
    want = json.loads((GOLDEN / "old-run-expected.json").read_text())
    run = tmp_path / "old-run"
    shutil.copytree(GOLDEN / "old-run", run)  # a copy: nothing may write into the fixture
    ev = evaluate_checkpoint(run)
    assert _close({k: ev[k] for k in want["evaluate"]}, want["evaluate"])
    rows = predict_files(run, [str(GOLDEN / "old-run-images")], top_k=2)
    for r in rows:
        r["path"] = Path(r["path"]).name
    assert _close(rows, want["predict"])


@pytest.mark.slow
@recorded_here
@pytest.mark.parametrize("name, after", [("semi-student", 2), ("semi-student", 3), ("semi-student", 6),
                                         ("ladder", 1), ("pretrain-finetune", 1)])
def test_an_interrupted_run_resumes_to_the_recorded_figures(name, after, tmp_path, interrupt_training):
    """Interrupted after epoch `after` (inside the semi phase, at the teacher -> student hand-over, between two
    students; after an autoencoder pre-training phase), then `aeclass train --resume`: the recorded figures."""
    from aeclass.cli import main
    interrupt_training.arm(after)
    out = tmp_path / name
    argv = [a.replace("{out}", str(out)) for a in record.CASES[name]]
    assert main(argv) == 130  # as after Ctrl-C
    interrupt_training.disarm()
    assert main(["train", "--resume", str(out), "--quiet", "--no-report"]) == 0
    now = {"metrics": record._numbers(json.loads((out / "metrics.json").read_text())),
           "csv": record._csv(out / "metrics.csv")}
    assert _close(now, FIGURES[name]), _first_difference(now, FIGURES[name])
