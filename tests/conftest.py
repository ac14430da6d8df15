"""Shared test fixtures (the real data, cutting a run short, the thread count a test leaves behind) and how the
suite runs on several CPUs (pytest-xdist workers: their threads, their number, slow tests first)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Read once at import, before any test's monkeypatching of the environment.
_SHARED_DATASETS = Path(os.environ.get("AECLASS_DATA", "").split(os.pathsep)[0]
                        or Path(__file__).resolve().parents[1].parent / "shared" / "datasets")


@pytest.fixture
def shared_datasets() -> Path:
    """The real datasets directory ($AECLASS_DATA or ../shared/datasets); skips the test when absent."""
    if not _SHARED_DATASETS.is_dir():
        pytest.skip(f"real datasets not found at {_SHARED_DATASETS}: set AECLASS_DATA to a directory with mnist/ "
                    "and cifar10-jpeg/")
    return _SHARED_DATASETS


@pytest.fixture
def keep_threads():
    """Training with --threads 1 sets torch's thread count for the process; put it back after the test."""
    import torch
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def interrupt_training(monkeypatch):
    """`arm(n)`: the next training run raises KeyboardInterrupt right after its n-th epoch's files (metrics.csv,
    checkpoints) are written, as a user's Ctrl-C would; `disarm()` restores normal training."""
    import sys
    import aeclass.train
    tr = sys.modules["aeclass.train"]
    real = tr._write_csv

    class Interrupt:
        def arm(self, n: int = 1):
            calls = {"n": 0}

            def write_then_stop(*args):
                real(*args)
                calls["n"] += 1
                if calls["n"] == n:
                    raise KeyboardInterrupt
            monkeypatch.setattr(tr, "_write_csv", write_then_stop)

        def disarm(self):
            monkeypatch.setattr(tr, "_write_csv", real)

        def resume_after_cut(self, cfg, after: int, before_resume=None):
            """Train `cfg` until it is interrupted after epoch `after`, call `before_resume()` if given,
            resume the run and return the resumed run's result."""
            quiet = dict(log=lambda *a: None, progress=False)
            self.arm(after)
            with pytest.raises(KeyboardInterrupt):
                tr.train(cfg, **quiet)
            self.disarm()
            if before_resume is not None:
                before_resume()
            return tr.train(cfg, resume=True, **quiet)
    return Interrupt()


def assert_same_weights(a, b) -> None:
    """Two models' state dicts are identical, tensor by tensor (bit for bit)."""
    import torch
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def pytest_configure(config):
    """Under pytest-xdist (`-n N`) the N workers share the CPUs: each trains on its share of threads (aeclass keeps
    torch's count when it is below the CPUs it may use), and so do the processes a test starts, so that N workers'
    torch threads do not wait on each other at every parallel region. Not pinned to cores: a test's own
    processes (distributed ranks, crash runs) may then use a core another worker leaves idle."""
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not os.environ.get("PYTEST_XDIST_WORKER") or not count:
        return
    # OpenMP threads that wait by spinning hold their core while another worker's process needs it: a test that
    # starts a 2-thread run beside another worker took 2-3x longer than when they sleep. Read when torch loads,
    # so set before aeclass (and torch) is imported; the processes a test starts inherit it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from aeclass.cpu import available_cpus
    share = max(1, available_cpus() // int(count))
    os.environ["OMP_NUM_THREADS"] = str(share)
    import torch
    torch.set_num_threads(share)


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per CPU this process may use (aeclass.cpu: the affinity mask and a cgroup quota, which
    xdist's own count ignores), at most 8: each worker holds its own torch and datasets in memory."""
    from aeclass.cpu import available_cpus
    return min(available_cpus(), 8)


def pytest_collection_modifyitems(config, items):
    """The slow tests first, in their files' order: under xdist a minute-long test that starts last keeps one
    worker busy while the others have nothing left to do."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
