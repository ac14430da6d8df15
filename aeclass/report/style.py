"""One look for every report figure: sizes, fonts, colours, and PNG output.

Figures are built with matplotlib's object API (`Figure` + the Agg canvas), never through pyplot, so no
global figure list grows, no display is needed and nothing has to be closed by hand.
"""
from __future__ import annotations

import functools
import io
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..io import atomic_write_bytes

DPI = 110
WIDTH = 10.0                  # inches: every full-width figure, so the page has one column width
CMAP_HEAT = "Blues"           # counts (confusion matrix)
CMAP_SALIENCY = "inferno"     # gradient magnitudes
CMAP_CAM = "jet"              # Grad-CAM overlays
MUTED = "#8a8f98"
# Colour per curve kind, shared by all panels so 'train' and 'test' mean the same colour everywhere.
COLORS = {"train": "#2a6fb0", "test": "#d1495b", "ce": "#edae49", "recon": "#00798c", "total": "#30343f"}

RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "lines.linewidth": 1.8,
    "lines.markersize": 4,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "image.interpolation": "nearest",
}


def styled(fn):
    """Run a plotting function under the shared rc settings (they apply when artists are created)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(RC):
            return fn(*args, **kwargs)
    return wrapper


def new_figure(height: float, width: float = WIDTH) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (no 'Software' metadata: the page should name no web address at all)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    fig.clear()
    return buf.getvalue()


def save_png(fig: Figure, path: str | Path) -> bytes:
    """Write the figure atomically to `path` and return its PNG bytes (for embedding)."""
    data = png_bytes(fig)
    atomic_write_bytes(Path(path), data)
    return data


def show_image(ax, img, title: str | None = None, fontsize: float = 8, **kw) -> None:
    """One (C, H, W) float image in [0, 1] on an axis without ticks or grid."""
    ax.imshow(as_display(img), cmap="gray" if img.shape[0] == 1 else None, vmin=0.0, vmax=1.0, **kw)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for s in ax.spines.values():
        s.set_visible(False)
    if title:
        ax.set_title(title, fontsize=fontsize, fontweight="normal")


def as_display(img):
    """(C, H, W) -> (H, W) for one channel, (H, W, C) otherwise, as a numpy array."""
    a = img.detach().cpu().numpy() if hasattr(img, "detach") else img
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def short(text: str, n: int = 14) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"
