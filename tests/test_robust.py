"""Faults around a run: a second process on the same run directory, a resume with changed options, a
diverging run whose loss stays finite, a full disk, a read-only directory, leftovers of a killed process, and
bad values that must be one line (issue #19, sections 0-1)."""
from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import aeclass.io
import aeclass.train  # noqa: F401  (the module; aeclass.train is also the function)
from aeclass import engine
from aeclass.checkpoint import load_checkpoint
from aeclass.cli import main
from aeclass.errors import AeclassError
from aeclass.io import DirectoryLock

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--labels", "50", "--no-report", "--quiet"]


def aeclass_cmd(*argv) -> list[str]:
    return [sys.executable, "-m", "aeclass", *argv]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1"}


def one_line_error(code: int, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("aeclass: error:"), err
    for n in needles:
        assert n in lines[0], (n, err)


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def cut_run(tmp_path_factory):
    """A 2-epoch run interrupted after epoch 1 (as a Ctrl-C would): a run to resume."""
    tr = sys.modules["aeclass.train"]
    out = tmp_path_factory.mktemp("robust") / "cut"
    real = tr._write_csv

    def stop(*a):
        real(*a)
        raise KeyboardInterrupt
    tr._write_csv = stop
    try:
        assert main(["train", "--epochs", "2", "--out", str(out), *QUICK]) == 130
    finally:
        tr._write_csv = real
    return out


# ---------------------------------------------------------------- run-directory lock

@pytest.mark.slow
def test_a_second_process_on_the_same_run_directory_fails_at_once(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(aeclass_cmd("train", "--epochs", "300", "--out", str(out), *QUICK), env=env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "metrics.csv").exists():  # the first one is training (and holds the lock)
            assert first.poll() is None and time.time() < deadline, first.stderr.read() if first.poll() else "slow"
            time.sleep(0.2)
        csv_before = (out / "checkpoints" / "last.pt").stat().st_mtime_ns
        for argv in (["train", "--epochs", "300", "--out", str(out), *QUICK], ["train", "--resume", str(out), *QUICK]):
            t0 = time.time()
            second = subprocess.run(aeclass_cmd(*argv), env=env(), capture_output=True, text=True, timeout=120)
            one_line_error(second.returncode, second.stderr, "another aeclass process is using this directory")
            assert time.time() - t0 < 60  # refused at once, not after waiting for the first
        assert first.poll() is None  # untouched by the refused ones
        assert (out / "checkpoints" / "last.pt").stat().st_mtime_ns >= csv_before
    finally:
        first.kill()
        first.wait()
    with DirectoryLock(out):  # the kernel released the killed process's lock: no stale lock
        pass


def test_a_lock_on_a_directory_it_created_leaves_nothing_when_discarded(tmp_path):
    with DirectoryLock(tmp_path / "a" / "b" / "run") as lock:
        lock.discard()
    assert not (tmp_path / "a").exists()
    (tmp_path / "kept").mkdir()
    with DirectoryLock(tmp_path / "kept") as lock:  # not created by it: kept, lock file and all
        lock.discard()
    assert (tmp_path / "kept" / ".lock").exists()


def test_the_lock_is_exclusive_within_one_machine(tmp_path):
    with DirectoryLock(tmp_path / "r"):
        with pytest.raises(AeclassError, match="another aeclass process"):
            with DirectoryLock(tmp_path / "r"):
                pass
    with DirectoryLock(tmp_path / "r"):
        pass


# ---------------------------------------------------------------- --resume keeps the run's options

@pytest.mark.parametrize("flag, value, saved", [
    ("--epochs", "9", "2"), ("--labels", "60", "50"), ("--seed", "3", "0"), ("--lr", "0.1", "0.002"),
    ("--batch-size", "32", "64"), ("--data", "mnist", "'digits'"), ("--strategy", "semi", "'joint'"),
    ("--model-opt", "code_dim=16", "{}"), ("--noise", "0.3", "0.0"), ("--preset", "demo", None),
])
def test_resume_refuses_changed_options(cut_run, capsys, flag, value, saved):
    before = {f: (cut_run / f).read_bytes() for f in ("config.yaml", "run.json", "metrics.csv")}
    code, _, err = cli(capsys, "train", "--resume", str(cut_run), flag, value, "--no-report", "--quiet")
    one_line_error(code, err, "--resume", "differs from the run's")
    if saved is not None:
        assert f"{flag} " in err and f"the run's {saved}" in err
    assert {f: (cut_run / f).read_bytes() for f in before} == before


def test_a_broken_saved_config_is_named(cut_run, tmp_path, capsys):
    import shutil
    for text, needle in (("epochs: [1,\n", "cannot read"), ("seed: abc\n", "--seed"), ("augment: 5\n", "--augment")):
        run = tmp_path / f"r{len(needle)}"
        shutil.copytree(cut_run, run)
        (run / "config.yaml").write_text(text)
        code, _, err = cli(capsys, "train", "--resume", str(run), "--quiet")
        one_line_error(code, err, str(run / "config.yaml"), needle)


# ---------------------------------------------------------------- non-finite state

def test_inf_batchnorm_statistics_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    """Epoch 2 leaves a BatchNorm running variance infinite while its loss was finite: the run stops naming
    the epoch, last.pt stays the finite epoch 1."""
    real, calls = engine.train_one_epoch, {"n": 0}

    def poisoned(run, *a, **kw):
        out = real(run, *a, **kw)
        calls["n"] += 1
        if calls["n"] == 2:
            bn = next(m for m in run.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var.fill_(float("inf"))
        return out
    monkeypatch.setattr(engine, "train_one_epoch", poisoned)
    out = tmp_path / "r"
    code, _, err = cli(capsys, "train", "--epochs", "3", "--out", str(out), *QUICK)
    one_line_error(code, err, "training diverged", "running_var", "after epoch 2", "step", "last.pt keeps")
    ck = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ck["progress"]["phase_epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ck["model_state"].values() if v.is_floating_point())
    assert load_checkpoint(out / "checkpoints" / "best.pt")["progress"]["phase_epoch"] == 1
    assert not (out / "metrics.json").exists()


@pytest.mark.slow
def test_a_huge_learning_rate_is_an_error_not_a_run(tmp_path):
    out = tmp_path / "r"
    p = subprocess.run(aeclass_cmd("train", "--epochs", "2", "--lr", "1e6", "--out", str(out), *QUICK), env=env(),
                       capture_output=True, text=True, timeout=300)
    one_line_error(p.returncode, p.stderr, "training diverged", "epoch 1")
    for name in ("last.pt", "best.pt"):  # nothing non-finite was saved
        if (out / "checkpoints" / name).exists():
            ck = load_checkpoint(out / "checkpoints" / name)
            assert all(torch.isfinite(v).all() for v in ck["model_state"].values() if v.is_floating_point())
    assert not (out / "metrics.json").exists()


# ---------------------------------------------------------------- storage faults

def _fail_writes_after_epoch_1(monkeypatch, error: OSError, where: str):
    """From the second epoch's checkpoints on, atomic_write fails as a full disk (in fsync) or a read-only
    directory (creating the temporary file) would."""
    tr = sys.modules["aeclass.train"]
    real_csv, armed = tr._write_csv, {"on": False}

    def csv_then_arm(*a):
        real_csv(*a)
        armed["on"] = True
    monkeypatch.setattr(tr, "_write_csv", csv_then_arm)
    real = {"fsync": os.fsync, "mkstemp": aeclass.io.tempfile.mkstemp, "write": os.fdopen}[where]

    class Full(io.RawIOBase):  # a file on a full disk: every write fails, as torch.save's first one will
        def __init__(self, f):
            self.f = f

        def writable(self):
            return True

        def write(self, b):
            raise error

        def close(self):
            self.f.close()
            super().close()

    def failing(*a, **kw):
        if armed["on"]:
            if where == "write":
                return Full(real(*a, **kw))
            raise error
        return real(*a, **kw)
    target = {"fsync": (aeclass.io.os, "fsync"), "mkstemp": (aeclass.io.tempfile, "mkstemp"),
              "write": (aeclass.io.os, "fdopen")}[where]
    monkeypatch.setattr(*target, failing)


@pytest.mark.parametrize("where, error, message", [
    ("fsync", OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    ("write", OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    ("mkstemp", OSError(errno.EROFS, "Read-only file system"), "Read-only file system"),
])
def test_a_full_disk_or_read_only_directory_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys,
                                                                          where, error, message):
    _fail_writes_after_epoch_1(monkeypatch, error, where)
    out = tmp_path / "r"
    code, _, err = cli(capsys, "train", "--epochs", "3", "--out", str(out), *QUICK)
    one_line_error(code, err, "cannot write", message, "is unchanged")
    monkeypatch.undo()
    assert load_checkpoint(out / "checkpoints" / "last.pt")["progress"]["phase_epoch"] == 1
    assert not list(out.rglob("*.tmp"))


# ---------------------------------------------------------------- leftovers of a killed process

def test_resume_removes_stale_temporaries_and_completes_metrics_csv(cut_run, tmp_path, capsys):
    import shutil
    run = tmp_path / "r"
    shutil.copytree(cut_run, run)
    stale = [run / "checkpoints" / ".last.pt.k1ll3d.tmp", run / ".metrics.csv.abc.tmp", run / ".metrics.json.x.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    keep = run / ".notes.tmp"  # not a file aeclass writes there: left alone
    keep.write_text("mine")
    (run / "metrics.csv").write_text((run / "metrics.csv").read_text().splitlines()[0] + "\n")  # killed before the csv
    code, _, _ = cli(capsys, "train", "--resume", str(run), "--no-report", "--quiet")
    assert code == 0
    assert not any(p.exists() for p in stale) and keep.exists()
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 1 + 2


# ---------------------------------------------------------------- bad values: one line each

@pytest.mark.parametrize("argv, needle", [
    (["--model-opt", "code_dim=-4"], "code_dim=-4"),
    (["--model-opt", "code_dim=0"], "code_dim=0"),
    (["--image-size", "100000"], "--image-size"),
    (["--threads", "-3"], "--threads"),
    (["--device", "meta"], "--device"),
    (["--warmup-epochs", "-4"], "--warmup-epochs"),
    (["--labelled-batch-size", "0"], "--labelled-batch-size"),
    (["--label-smoothing", "-0.5"], "--label-smoothing"),
    (["--strategy", "pretrain-finetune", "--pretrain-epochs", "-2"], "--pretrain-epochs"),
    (["--out", "/proc/aeclass-x"], "/proc/aeclass-x"),
])
def test_out_of_domain_values_are_one_line(tmp_path, capsys, argv, needle):
    out = [] if "--out" in argv else ["--out", str(tmp_path / "r")]
    code, _, err = cli(capsys, "train", "--epochs", "1", *out, *argv, "--no-report", "--quiet")
    one_line_error(code, err, needle)
    assert not (tmp_path / "r").exists()  # nothing half-written, not even the lock's directory


@pytest.mark.parametrize("text, needle", [("confidence: high\nstrategy: semi\n", "--confidence"),
                                          ("augment: 5\n", "--augment"), ("seed: abc\n", "--seed"),
                                          ("epochs: true\n", "--epochs"), ("labels: 10.7\n", "--labels"),
                                          ("epochz: 3\n", "epochz"),
                                          ("epochs: !!python/object/apply:os.system [echo hi]\n", "not valid YAML")])
def test_wrong_yaml_types_are_one_line(tmp_path, capsys, text, needle):
    (tmp_path / "c.yaml").write_text(text)
    code, _, err = cli(capsys, "train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r"), "--quiet")
    one_line_error(code, err, needle)


@pytest.mark.parametrize("argv", [["evaluate", "{z}"], ["predict", "{z}", "{z}"],
                                  ["train", "--init", "{z}", "--epochs", "1", "--out", "{o}", "--quiet"],
                                  ["train", "--strategy", "semi", "--teacher", "{z}", "--student-epochs", "1",
                                   "--epochs", "1", "--out", "{o}", "--quiet"]])
def test_an_empty_checkpoint_is_one_line(tmp_path, capsys, argv):
    z = tmp_path / "zero.pt"
    z.write_bytes(b"")
    argv = [a.format(z=z, o=tmp_path / "r") for a in argv]
    code, _, err = cli(capsys, *argv)
    one_line_error(code, err, "zero.pt", "not a readable aeclass checkpoint")


def test_an_empty_last_checkpoint_on_resume_is_one_line(cut_run, tmp_path, capsys):
    import shutil
    run = tmp_path / "r"
    shutil.copytree(cut_run, run)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    code, _, err = cli(capsys, "train", "--resume", str(run), "--quiet")
    one_line_error(code, err, "last.pt", "not a readable aeclass checkpoint")


def _edited_checkpoint(cut_run, tmp_path, edit) -> Path:
    import shutil
    run = tmp_path / "r"
    shutil.copytree(cut_run, run)
    path = run / "checkpoints" / "last.pt"
    ck = torch.load(path, weights_only=True)
    edit(ck)
    torch.save(ck, path)
    return run


def _bad_shape(ck):
    ck["model_state"]["in_mean"] = torch.zeros(3, 3)


@pytest.mark.parametrize("edit, needle", [
    (lambda ck: ck.update(model_spec={"name": "hybrid"}), "model_spec is not a model description"),
    (lambda ck: ck.update(model_spec="garbage"), "model_spec is not a model description"),
    (lambda ck: ck["model_spec"].update(name="nope"), "cannot rebuild its model"),
    (_bad_shape, "do not fit its model 'hybrid' (size mismatch for in_mean"),
    (lambda ck: ck["model_state"].pop("in_mean"), "Missing key(s)"),
])
def test_checkpoints_with_a_bad_spec_or_shapes_are_one_line(cut_run, tmp_path, capsys, edit, needle):
    run = _edited_checkpoint(cut_run, tmp_path, edit)
    code, _, err = cli(capsys, "evaluate", str(run))
    one_line_error(code, err, "last.pt", needle)


def test_resuming_from_a_checkpoint_of_other_shapes_is_one_line(cut_run, tmp_path, capsys):
    run = _edited_checkpoint(cut_run, tmp_path, _bad_shape)
    code, _, err = cli(capsys, "train", "--resume", str(run), "--quiet", "--no-report")
    one_line_error(code, err, "--resume", "does not fit this run", "in_mean")


def test_a_pickled_checkpoint_is_refused_without_torchs_advice(tmp_path, capsys):
    torch.save({"model_state": {}, "model_spec": {}, "extra": DirectoryLock(tmp_path)}, tmp_path / "p.pt")
    code, _, err = cli(capsys, "evaluate", str(tmp_path / "p.pt"))
    one_line_error(code, err, "pickled Python objects")
    assert "weights_only" not in err


def test_a_sweep_directory_in_use_is_refused(tmp_path):
    from aeclass.sweep import run_sweep
    with DirectoryLock(tmp_path / "sw"):
        with pytest.raises(AeclassError, match="another aeclass process is using this directory"):
            run_sweep(tmp_path / "sw", strategies="supervised", labels="50", seeds=1, epochs=1, baseline=False,
                      report=False, log=lambda *a: None)
    assert not (tmp_path / "sw" / "results.csv").exists()


# ---------------------------------------------------------------- a shared machine (section 2)

def test_available_cpus_follow_the_affinity_mask_and_the_cgroup_quota(monkeypatch):
    from aeclass import cpu
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(cpu, "_cgroup_cpu_quota", lambda: None)
    assert cpu.available_cpus() == 4
    monkeypatch.setattr(cpu, "_cgroup_cpu_quota", lambda: 1.5)  # docker --cpus 1.5
    assert cpu.available_cpus() == 1
    monkeypatch.setattr(cpu, "_cgroup_cpu_quota", lambda: 0.2)
    assert cpu.available_cpus() == 1
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.setattr(cpu, "_cgroup_cpu_quota", lambda: 8.0)
    assert cpu.available_cpus() == 1


def test_an_xdist_worker_and_the_processes_it_starts_get_their_share_of_the_cpus():
    """tests/conftest.py: under `-n N` each worker's share of threads, and threads that sleep while they wait."""
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not os.environ.get("PYTEST_XDIST_WORKER") or not count:
        pytest.skip("not run by a pytest-xdist worker (-n 0): there is no share to check")
    from aeclass.cpu import available_cpus
    share = str(max(1, available_cpus() // int(count)))
    child = subprocess.run([sys.executable, "-c", "import os, torch; print(os.environ['OMP_WAIT_POLICY'], "
                            "torch.get_num_threads())"], capture_output=True, text=True, timeout=120)
    policy = os.environ["OMP_WAIT_POLICY"]  # PASSIVE, unless the one who ran pytest chose otherwise
    assert os.environ["OMP_NUM_THREADS"] == share and child.stdout.split() == [policy, share], child.stderr


@pytest.mark.parametrize("argv, preset, expected", [
    ("['/usr/bin/aeclass', 'train']", None, "decided"),             # the console script
    ("['python', '-m', 'aeclass', 'train']", None, "decided"),      # python -m aeclass
    ("['python', 'my_script.py']", None, "None None"),              # a library user: left alone
    ("['/usr/bin/aeclass', 'train']", "ACTIVE", "ACTIVE None"),     # the user's choice wins
])
def test_the_command_line_chooses_its_openmp_wait_policy_before_torch_loads(argv, preset, expected):
    code = (f"import sys; sys.argv[:] = {argv}; sys.orig_argv[:] = {argv}\n"
            "import aeclass, os, torch; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('AECLASS_WAIT_POLICY'))")
    e = {k: v for k, v in env().items() if k not in ("OMP_WAIT_POLICY", "AECLASS_WAIT_POLICY")}
    e |= {"OMP_WAIT_POLICY": preset} if preset else {}
    out = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    if expected != "decided":
        assert out.stdout.strip() == expected
        return
    policy, decided = out.stdout.strip().split(" ", 1)  # which one depends on the machine's load right now
    assert (policy, decided.split(" ")[0]) in {("PASSIVE", "PASSIVE"), ("None", "default")}, out.stdout
    assert "cores at start" in decided


def test_the_wait_policy_check_sees_a_busy_neighbour():
    from aeclass import cpu
    if cpu.competing_load(0.01) is None:
        pytest.skip("no /proc/stat on this system: the check is off")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        load = cpu.competing_load(0.5)
    finally:
        busy.kill()
        busy.wait()
    assert load >= cpu.BUSY_THRESHOLD  # a spinning process is about one core's worth


def test_resuming_keeps_the_runs_own_start_and_command_in_run_json(tmp_path, interrupt_training):
    import json

    from aeclass import TrainConfig
    cfg = TrainConfig(data="digits", labels=100, strategy="supervised", epochs=2, out=str(tmp_path / "r"), report=False)
    interrupt_training.arm(1)
    with pytest.raises(KeyboardInterrupt):
        aeclass_train(cfg)
    interrupt_training.disarm()
    first = json.loads((tmp_path / "r" / "run.json").read_text())
    time.sleep(1.1)  # run.json's times are to the second
    aeclass_train(cfg, resume=True)
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["started"] == first["started"] and info["command"] == first["command"]
    assert len(info["resumed"]) == 1 and info["resumed"][0]["started"] > first["started"]


def aeclass_train(cfg, resume=False):
    import sys

    import aeclass.train  # noqa: F401
    return sys.modules["aeclass.train"].train(cfg, resume=resume, log=lambda *a: None, progress=False)
