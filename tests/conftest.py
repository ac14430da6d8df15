"""Shared test fixtures (data only)."""
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
