"""`aeclass sweep --shard I/N` and `--collect`: the split, shards sharing a directory, the merge and its refusals."""
import contextlib
import csv
import io
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from aeclass.cli import main
from aeclass.errors import AeclassError, ConfigError
from aeclass.io import DirectoryLock
from aeclass.sweep import BASELINE, collect_sweep, parse_shard, run_sweep, sweep_cells

sweep_mod = sys.modules["aeclass.sweep"]
# 9 cells in sweep order; the 3 at 5000 labels (>= the 1437 digits training images) are skipped by the sweep.
GRID = ["sweep", "--data", "digits", "--strategies", "supervised,joint", "--labels", "100,5000,all", "--seeds", "1",
        "--epochs", "1", "--threads", "1", "--no-report", "--quiet"]
CELLS = [c.name for c in sweep_cells(["supervised", "joint"], [100, 5000, None], [0], True)]
DONE = [c for c in CELLS if "-5000-" not in c]  # the cells that train
MERGED = ("results.csv", "summary.md", "accuracy_vs_labels.png", "report.html", "sweep.json")


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def cli(argv) -> tuple[int, str, list[str]]:
    """main(argv): exit status, stdout, and the cells it trained (network runs and baseline cells)."""
    calls = []
    real_train, real_baseline = sweep_mod.train, sweep_mod.run_labelspreading

    def train(cfg, **kw):
        calls.append(Path(cfg.out).name)
        return real_train(cfg, **kw)

    def baseline(ds, labels, seed):
        calls.append(f"{BASELINE}-{'all' if labels is None else labels}-s{seed}")
        return real_baseline(ds, labels, seed)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep_mod, "train", train)
        mp.setattr(sweep_mod, "run_labelspreading", baseline)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(argv)
    return code, out.getvalue(), calls


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The grid swept unsharded (ref), and as shards 0/2 and 1/2 into one shared directory; shard 1 runs while
    shard 0's locks are held, as when both run at once on two machines."""
    root, before = tmp_path_factory.mktemp("shards"), torch.get_num_threads()
    ref, shared = root / "ref", root / "shared"
    code, _, ref_calls = cli(GRID + ["--out", str(ref)])
    assert code == 0
    with DirectoryLock(shared, shared=True), DirectoryLock(shared, name=".lock-shard-0-of-2"):
        code1, said1, calls1 = cli(GRID + ["--shard", "1/2", "--out", str(shared)])
    code0, said0, calls0 = cli(GRID + ["--shard", "0/2", "--out", str(shared)])
    assert code0 == code1 == 0
    torch.set_num_threads(before)
    return {"ref": ref, "shared": shared, "ref_calls": ref_calls, "calls": [calls0, calls1], "said": [said0, said1]}


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock*"))
    return dst


@pytest.fixture
def no_training(monkeypatch):
    """--collect trains nothing and loads no data: any attempt fails the test."""
    def refuse(*a, **k):
        raise AssertionError("--collect trained or loaded data")
    for name in ("train", "run_labelspreading", "dataset_for"):
        monkeypatch.setattr(sweep_mod, name, refuse)


def test_the_split_is_every_nth_cell_of_the_grid_in_sweep_order():
    assert CELLS == ["supervised-100-s0", "joint-100-s0", f"{BASELINE}-100-s0", "supervised-5000-s0", "joint-5000-s0",
                     f"{BASELINE}-5000-s0", "supervised-all-s0", "joint-all-s0", f"{BASELINE}-all-s0"]
    assert parse_shard("3/4") == (3, 4) and parse_shard(" 0 / 1 ") == (0, 1) and parse_shard((1, 2)) == (1, 2)
    assert parse_shard(None) is None


def test_shards_run_each_cell_once_and_collect_equals_the_unsharded_sweep(runs, tmp_path, no_training):
    ref, shared = runs["ref"], runs["shared"]
    calls0, calls1 = runs["calls"]
    assert sorted(runs["ref_calls"]) == sorted(DONE)
    assert calls0 == [c for k, c in enumerate(CELLS) if k % 2 == 0 and c in DONE]
    assert calls1 == [c for k, c in enumerate(CELLS) if k % 2 == 1 and c in DONE]
    assert sorted(calls0 + calls1) == sorted(DONE)  # together every cell, none twice
    # A shard writes its part and its record, never the merged files, and says how to collect.
    assert not any((shared / f).exists() for f in MERGED)
    for i in (0, 1):
        rec = json.loads((shared / f"sweep-shard-{i}-of-2.json").read_text())
        assert rec["shard"] == [i, 2] and rec["finished"] and rec["cells"] == CELLS[i::2]
        assert [r["run_dir"] for r in read_rows(shared / f"results-shard-{i}-of-2.csv")] == \
            [f"runs/{c}" for c in CELLS[i::2] if c in DONE]
        assert f"aeclass sweep --collect {shared}" in runs["said"][i]
    parts = {r["run_dir"]: r for i in (0, 1) for r in read_rows(shared / f"results-shard-{i}-of-2.csv")}
    d = copy(shared, tmp_path / "merged")
    code, printed, _ = cli(["sweep", "--collect", str(d), "--no-report", "--quiet"])
    assert code == 0 and printed.startswith("# aeclass sweep: digits")
    rows, want = read_rows(d / "results.csv"), read_rows(ref / "results.csv")
    assert [r["run_dir"] for r in rows] == [f"runs/{c}" for c in DONE] == [r["run_dir"] for r in want]
    assert rows == [parts[r["run_dir"]] for r in rows]  # every value as the shards' cells recorded it
    timing = {"train_seconds"}  # the only column two trainings of a cell do not share
    assert [{k: v for k, v in r.items() if k not in timing} for r in rows] == \
           [{k: v for k, v in r.items() if k not in timing} for r in want]
    assert accuracy_table(d / "summary.md") == accuracy_table(ref / "summary.md")
    assert (d / "accuracy_vs_labels.png").read_bytes()[:4] == b"\x89PNG"
    merged, ref_json = json.loads((d / "sweep.json").read_text()), json.loads((ref / "sweep.json").read_text())
    for k in ("data", "strategies", "labels", "seeds", "baseline", "resolved"):
        assert merged[k] == ref_json[k], k
    assert merged["collected"]["shards"] == 2


def accuracy_table(summary: Path) -> list[str]:
    lines = summary.read_text().splitlines()
    start = lines.index("## Test accuracy (%)")
    return lines[1:3] + lines[start:lines.index("## Training seconds per run")]


def test_collect_merges_the_copies_of_several_machines(runs, tmp_path, no_training):
    """Each node kept only its own shard's cells: collect copies them into the first directory, or into --out."""
    a, b = copy(runs["shared"], tmp_path / "node-a"), copy(runs["shared"], tmp_path / "node-b")
    for d, other in ((a, 1), (b, 0)):
        for p in [d / f"sweep-shard-{other}-of-2.json", d / f"results-shard-{other}-of-2.csv"]:
            p.unlink()
        for c in CELLS[other::2]:
            shutil.rmtree(d / "runs" / c, ignore_errors=True)
    (a / "runs" / "joint-100-s0").mkdir()  # an unfinished attempt of a shard-1 cell on node a: replaced
    (a / "runs" / "joint-100-s0" / "metrics.csv").write_text("epoch\n")
    want = [{k: v for k, v in r.items() if k != "train_seconds"} for r in read_rows(runs["ref"] / "results.csv")]
    res = collect_sweep([a, b], out=tmp_path / "elsewhere", report=True, log=lambda *x: None)
    assert res.sweep_dir == tmp_path / "elsewhere" and (res.sweep_dir / "report.html").is_file()
    assert sorted(p.name for p in (res.sweep_dir / "runs").iterdir()) == sorted(DONE)
    assert cli(["sweep", "--collect", str(a), str(b), "--no-report", "--quiet"])[0] == 0
    assert sorted(p.name for p in (a / "runs").iterdir()) == sorted(DONE)  # copied in, no temporaries left
    assert (a / "runs" / "joint-100-s0" / "metrics.json").is_file()
    assert sorted(p.name for p in (b / "runs").iterdir()) == sorted(c for c in CELLS[1::2] if c in DONE)
    for d in (a, res.sweep_dir):
        assert [{k: v for k, v in r.items() if k != "train_seconds"} for r in read_rows(d / "results.csv")] == want


@pytest.mark.parametrize("state, said", [
    ("finished", "shard 1/2 finished, but its cells are not in these directories: joint-100-s0"),
    ("unfinished", "shard 1/2 started, not finished: joint-100-s0"),
    ("absent", "shard 1/2 not started (no sweep-shard-1-of-2.json): joint-100-s0, joint-all-s0"),
])
def test_collect_refuses_missing_cells_and_names_their_shard(runs, tmp_path, capsys, no_training, state, said):
    """A missing cell is an error, with nothing written: a summary without it would pass for the whole sweep."""
    d = copy(runs["shared"], tmp_path / "s")
    record = d / "sweep-shard-1-of-2.json"
    shutil.rmtree(d / "runs" / "joint-100-s0")
    if state == "unfinished":
        record.write_text(json.dumps(dict(json.loads(record.read_text()), finished=None)))
    elif state == "absent":
        record.unlink()
        for c in CELLS[1::2]:
            shutil.rmtree(d / "runs" / c, ignore_errors=True)
    assert main(["sweep", "--collect", str(d), "--no-report", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("aeclass: error: --collect: ")
    n = 2 if state == "absent" else 1
    assert f"{n} of the sweep's 6 cells are not finished; {said}" in err  # the skipped 5000-label cells are not due
    assert not any((d / f).exists() for f in MERGED)


def test_collect_refuses_shards_started_with_other_settings(runs, tmp_path, capsys):
    """Shard 1 run on its own disk with --epochs 2: its record (and cells) disagree with shard 0's."""
    a = copy(runs["shared"], tmp_path / "node-a")
    (a / "sweep-shard-1-of-2.json").unlink()
    b = tmp_path / "node-b"
    argv = list(GRID)
    argv[argv.index("--epochs") + 1] = "2"
    assert cli(argv + ["--shard", "1/2", "--out", str(b)])[0] == 0
    assert main(["sweep", "--collect", str(a), str(b), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the shards ran with different settings: supervised's epochs is 1 in" in err
    assert f"but 2 in {b / 'sweep-shard-1-of-2.json'}" in err
    assert not any((a / f).exists() for f in MERGED)


def test_collect_refuses_a_cell_trained_with_other_options(runs, tmp_path, capsys, no_training):
    d = copy(runs["shared"], tmp_path / "s")
    cfg_path = d / "runs" / "joint-all-s0" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg_path.write_text(yaml.safe_dump(dict(cfg, lr=cfg["lr"] * 2)))
    assert main(["sweep", "--collect", str(d), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "joint-all-s0 was trained with another configuration (lr:" in err
    assert "--collect trains nothing" in err and not (d / "results.csv").exists()


def test_a_shard_of_another_split_or_other_options_is_refused_at_start(runs, tmp_path, no_training):
    d = copy(runs["shared"], tmp_path / "s")
    quiet = dict(data="digits", strategies="supervised,joint", labels="100,5000,all", seeds=1,
                 overrides={"threads": 1}, report=False, log=lambda *a: None)
    with pytest.raises(ConfigError, match=r"--shard 1/2: supervised's epochs is 2 here but 1 in .*sweep-shard-0-of-2"):
        run_sweep(d, epochs=2, shard="1/2", **quiet)
    with pytest.raises(ConfigError, match="--shard 0/3: .* is a shard of a split into 2"):
        run_sweep(d, epochs=1, shard="0/3", **quiet)
    rec = d / "sweep-shard-1-of-2.json"
    rec.write_text(json.dumps(dict(json.loads(rec.read_text()), shard=[1, 3])))
    with pytest.raises(AeclassError, match="split into 3, .* of a split into 2"):
        collect_sweep([d], report=False, log=lambda *a: None)


def test_shards_share_a_directory_only_with_each_other(runs, tmp_path, no_training):
    d = copy(runs["shared"], tmp_path / "s")
    quiet = dict(data="digits", strategies="supervised,joint", labels="100,5000,all", seeds=1, epochs=1,
                 overrides={"threads": 1}, report=False, log=lambda *a: None)
    with DirectoryLock(d, shared=True):  # a shard is running
        with pytest.raises(AeclassError, match="another aeclass process is using this directory"):
            run_sweep(d, **quiet)
        with pytest.raises(AeclassError, match="a shard or a sweep is still running in this directory"):
            collect_sweep([d], report=False, log=lambda *a: None)
    with DirectoryLock(d, name=".lock-shard-0-of-2"):
        with pytest.raises(AeclassError, match="--shard 0/2: this shard is already running"):
            run_sweep(d, shard="0/2", **quiet)
    with DirectoryLock(d):  # a whole sweep, or --collect
        with pytest.raises(AeclassError, match="a sweep without --shard, or --collect"):
            run_sweep(d, shard="1/2", **quiet)
    assert not (d / "results.csv").exists()


def test_a_shard_without_cells_succeeds_and_leaves_its_part(tmp_path, no_training):
    code, said, _ = cli(GRID + ["--shard", "9/10", "--out", str(tmp_path / "s")])
    assert code == 0 and "0 cells in" in said
    assert read_rows(tmp_path / "s" / "results-shard-9-of-10.csv") == []
    assert json.loads((tmp_path / "s" / "sweep-shard-9-of-10.json").read_text())["cells"] == []


@pytest.mark.parametrize("flag, needle", [
    (["--shard", "2/2"], "--shard 2/2: expected I from 0 to 1"),
    (["--shard", "a/b"], "--shard: expected I/N"),
    (["--shard", "0/0"], "--shard 0/0: expected at least 1 shard"),
    (["--shard=-1/2"], "--shard: expected I/N"),
    (["--shard", "-1/2"], "argument --shard: expected one argument"),  # argparse reads -1/2 as an option
    (["--shard", "0/2", "--collect", "x"], "--shard and --collect"),
])
def test_bad_shard_values_are_one_line_errors(tmp_path, capsys, no_training, flag, needle):
    out = tmp_path / "s"
    assert main([*GRID, "--out", str(out), *flag]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("aeclass: error: ") and needle in err
    assert not out.exists()


def test_collect_needs_shard_records(tmp_path, capsys, no_training):
    (tmp_path / "plain").mkdir()
    assert main(["sweep", "--collect", str(tmp_path / "plain")]) == 2
    assert "no shard record (sweep-shard-I-of-N.json)" in capsys.readouterr().err
    assert main(["sweep", "--collect", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["sweep", "--data", "digits"]) == 2
    assert "required: --out" in capsys.readouterr().err
