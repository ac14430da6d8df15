"""`write_report(dir)`: a self-contained report.html for a run directory or a sweep directory.

    >>> from aeclass.report import write_report
    >>> write_report("runs/demo")             # summary, curves, reconstructions, latent map, confusion, ...
    PosixPath('runs/demo/report.html')

The page embeds every figure as a data: URI and references nothing outside itself, so it opens offline
and can be mailed as one file; the figures are also written as PNG files in DIR/report/.
A directory holding results.csv is a sweep: its page shows accuracy against the number of labels.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import AeclassError
from .plots import plot_accuracy_vs_labels

LATENT_METHODS = ("pca", "tsne")


def write_report(run_dir: str | Path, latent: str = "pca", max_points: int = 2000) -> Path:
    """Write `run_dir/report.html` (and the figures as PNG in `run_dir/report/`); return the page's path.

    `latent` picks the 2-D map of the test codes: 'pca' (fast, default) or 'tsne'; at most `max_points`
    test images are mapped. Raises AeclassError when `run_dir` is neither a run nor a sweep directory.
    """
    from .run import write_run_report
    from .sweep import is_sweep_dir, write_sweep_report
    path = Path(run_dir)
    if not path.is_dir():
        raise AeclassError(f"{path}: no such run directory")
    if latent not in LATENT_METHODS:
        raise AeclassError(f"--latent must be one of {', '.join(LATENT_METHODS)}, got '{latent}'")
    if max_points < 2:
        raise AeclassError(f"max_points must be at least 2, got {max_points}")
    if is_sweep_dir(path):
        return write_sweep_report(path)
    return write_run_report(path, latent=latent, max_points=max_points)


__all__ = ["write_report", "plot_accuracy_vs_labels"]
