"""Shared test fixtures: the real data, cutting a run short, the thread count a test leaves behind."""
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
