"""The report's figures. Each function draws one figure, writes it atomically as PNG and returns the bytes.

`plot_accuracy_vs_labels(rows, path)` is public: a sweep reuses it for its own summary figure.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .style import (CMAP_CAM, CMAP_HEAT, CMAP_SALIENCY, COLORS, MUTED, as_display, new_figure, save_png,
                    show_image, short, styled)


def _phase_spans(rows: list[dict]) -> list[tuple[str, float, float]]:
    """[(phase, first epoch, last epoch)] in order of the metrics rows."""
    spans: list[list] = []
    for r in rows:
        if spans and spans[-1][0] == r["phase"]:
            spans[-1][2] = r["epoch"]
        else:
            spans.append([r["phase"], r["epoch"], r["epoch"]])
    return [tuple(s) for s in spans]


def _mark_phases(ax, spans, label: bool) -> None:
    for i, (name, first, last) in enumerate(spans):
        if i:
            ax.axvline(first - 0.5, color=MUTED, linestyle="--", linewidth=1)
        if label and len(spans) > 1:
            ax.text((first + last) / 2, 1.01, name, transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                    fontsize=8, color=MUTED)


def _series(ax, rows, key, label, color, style="-", when=None):
    """One curve, broken where a phase ends (a new phase may define the loss differently)."""
    pts = [(r["phase"], r["epoch"], r[key]) for r in rows if r.get(key) is not None and (when is None or when(r))]
    marker = "o" if len(pts) < 40 else None
    start = 0
    for i in range(1, len(pts) + 1):
        if i == len(pts) or pts[i][0] != pts[start][0]:
            _, x, y = zip(*pts[start:i])
            ax.plot(x, y, style, color=color, label=label if start == 0 else None, marker=marker)
            start = i
    return bool(pts)


def _epoch_axis(ax, rows):
    ax.set_xlabel("epoch")
    n = rows[-1]["epoch"] if rows else 1
    if n <= 12:
        ax.set_xticks(range(1, int(n) + 1))


@styled
def plot_curves(rows: list[dict], path: Path, show_mse: bool = True) -> bytes:
    """Learning curves: loss parts, train/test accuracy and test reconstruction MSE per epoch, with dashed
    lines where one training phase hands over to the next. Accuracy is drawn only for epochs in which the
    classification head was trained (a pre-training phase's head is untrained, its accuracy is chance)."""
    has_acc = any(r.get("train_ce") is not None for r in rows)
    has_mse = show_mse and any(r.get("test_recon_mse") is not None for r in rows)
    panels = ["loss"] + (["acc"] if has_acc else []) + (["mse"] if has_mse else [])
    fig = new_figure(3.9)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    spans = _phase_spans(rows)
    trained_head = lambda r: r.get("train_ce") is not None  # noqa: E731
    for ax, kind in zip(axes, panels):
        if kind == "loss":
            _series(ax, rows, "train_loss", "train total", COLORS["total"])
            _series(ax, rows, "train_ce", "train cross-entropy", COLORS["ce"])
            _series(ax, rows, "train_recon", "train reconstruction", COLORS["recon"])
            _series(ax, rows, "test_loss", "test cross-entropy", COLORS["test"], "--", when=trained_head)
            vals = [r[k] for r in rows for k in ("train_loss", "train_ce", "train_recon") if r.get(k) is not None]
            if vals and min(vals) > 0 and max(vals) / min(vals) > 20:
                ax.set_yscale("log")
            ax.set_title("Loss")
            ax.set_ylabel("loss")
        elif kind == "acc":
            _series(ax, rows, "train_accuracy", "train (labelled batches)", COLORS["train"], when=trained_head)
            _series(ax, rows, "test_accuracy", "test", COLORS["test"], when=trained_head)
            ax.set_title("Accuracy")
            ax.set_ylabel("accuracy")
            ax.set_ylim(top=1.01)
        else:
            _series(ax, rows, "test_recon_mse", "test", COLORS["recon"])
            ax.set_title("Test reconstruction MSE")
            ax.set_ylabel("mean squared error")
        _epoch_axis(ax, rows)
        _mark_phases(ax, spans, label=True)
        if len(spans) > 1:
            ax.set_title(ax.get_title(), pad=16)  # room for the phase names above the axes
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8.5)
    return save_png(fig, path)


def _mosaic(images: np.ndarray, cols: int, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> one (C, rows*(H+pad)-pad, cols*(W+pad)-pad) image with white gutters."""
    n, c, h, w = images.shape
    rows = math.ceil(n / cols)
    out = np.ones((c, rows * (h + pad) - pad, cols * (w + pad) - pad), dtype=np.float32)
    for i in range(n):
        r, k = divmod(i, cols)
        out[:, r * (h + pad): r * (h + pad) + h, k * (w + pad): k * (w + pad) + w] = images[i]
    return out


@styled
def plot_reconstructions(originals, recons, path: Path, cols: int = 8) -> bytes:
    """Rows of `cols` test originals, each directly above its reconstruction."""
    x, r = np.asarray(originals), np.asarray(recons)
    groups = math.ceil(x.shape[0] / cols)
    h, w = x.shape[2:]
    row_h = min(1.1, 7.5 / cols * h / w)
    ratios = []
    for g in range(groups):
        ratios += ([0.3] if g else []) + [1, 1]
    fig = new_figure(row_h * sum(ratios) + 0.2, width=8.5)
    axes = fig.subplots(len(ratios), 1, squeeze=False, gridspec_kw={"height_ratios": ratios})[:, 0]
    for ax in axes[2::3]:
        ax.axis("off")  # spacer between groups
    fig.get_layout_engine().set(h_pad=0.01, hspace=0.0)
    for g in range(groups):
        sl = slice(g * cols, (g + 1) * cols)
        for j, (imgs, name) in enumerate(((x[sl], "original"), (r[sl], "reconstruction"))):
            ax = axes[3 * g + j]
            show_image(ax, _mosaic(np.clip(imgs, 0, 1), cols))
            ax.set_ylabel(name, fontsize=9, rotation=0, ha="right", va="center")
    return save_png(fig, path)


@styled
def plot_mosaic(images, path: Path, cols: int = 8, row_labels: list[str] | None = None) -> bytes:
    """Images in a grid of `cols` columns (a VAE's samples; with `row_labels`, one latent traversal per row)."""
    x = np.clip(np.asarray(images), 0, 1)
    rows = math.ceil(x.shape[0] / cols)
    h, w = x.shape[2:]
    fig = new_figure(min(9.0, 8.5 / cols * h / w * rows) + 0.3, width=8.5)
    ax = fig.subplots()
    show_image(ax, _mosaic(x, cols))
    if row_labels:
        ax.set_yticks([(h + 1) * i + h / 2 for i in range(len(row_labels))], row_labels, fontsize=8)
    return save_png(fig, path)


@styled
def plot_latent(xy: np.ndarray, labels: np.ndarray, classes: list[str], path: Path, title: str) -> bytes:
    """2-D map of the codes, one colour per class (a colour bar instead of a legend past 20 classes)."""
    from matplotlib import colormaps
    k = len(classes)
    fig = new_figure(5.6, width=7.8)
    ax = fig.subplots()
    size = 14 if xy.shape[0] <= 1000 else 7
    if k <= 20:
        cmap = colormaps["tab10" if k <= 10 else "tab20"]
        for c in range(k):
            m = labels == c
            if m.any():
                ax.scatter(xy[m, 0], xy[m, 1], s=size, color=cmap(c), alpha=0.75, linewidths=0, label=short(classes[c]))
        ax.legend(title="class", loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=2)
    else:
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, s=size, cmap="viridis", alpha=0.75, linewidths=0)
        fig.colorbar(sc, ax=ax, label="class index")
    ax.set_title(title)
    ax.set_xlabel("component 1")
    ax.set_ylabel("component 2")
    return save_png(fig, path)


@styled
def plot_confusion(cm: np.ndarray, classes: list[str], path: Path) -> bytes:
    """Heatmap of test counts, true class by row, predicted by column, counts written in the cells."""
    k = len(classes)
    side = min(9.0, max(4.2, 0.38 * k + 1.6))
    fig = new_figure(side, width=side + 1.2)
    ax = fig.subplots()
    im = ax.imshow(cm, cmap=CMAP_HEAT, interpolation="nearest")
    ax.grid(False)
    names = [short(c, 12) for c in classes]
    ticks = range(k) if k <= 40 else range(0, k, max(1, k // 20))
    ax.set_xticks(list(ticks), [names[i] for i in ticks], rotation=45 if max(map(len, names)) > 2 else 0,
                  ha="right" if max(map(len, names)) > 2 else "center")
    ax.set_yticks(list(ticks), [names[i] for i in ticks])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix (test counts)")
    if k <= 20:
        top = cm.max() if cm.size else 0
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8 if k <= 12 else 6,
                            color="white" if cm[i, j] > top * 0.55 else "#222222")
    fig.colorbar(im, ax=ax, shrink=0.8, label="images")
    return save_png(fig, path)


@styled
def plot_per_class(acc: list[float], classes: list[str], path: Path, overall: float | None = None) -> bytes:
    k = len(classes)
    fig = new_figure(3.2 if k <= 20 else 4.0)
    ax = fig.subplots()
    ax.bar(range(k), [a * 100 for a in acc], color=COLORS["train"], width=0.7)
    title = "Per-class test accuracy"
    if overall is not None:
        ax.axhline(overall * 100, color=COLORS["test"], linestyle="--", linewidth=1.2)
        title += f" (dashed line: overall {overall * 100:.1f}%)"
    names = [short(c, 12) for c in classes]
    ticks = range(k) if k <= 40 else range(0, k, max(1, k // 20))
    ax.set_xticks(list(ticks), [names[i] for i in ticks], rotation=45 if max(map(len, names)) > 2 else 0,
                  ha="right" if max(map(len, names)) > 2 else "center")
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax.set_xlabel("true class")
    ax.set_title(title)
    ax.grid(axis="x", visible=False)
    return save_png(fig, path)


@styled
def plot_gallery(images, titles: list[str], path: Path, cols: int = 8) -> bytes:
    """Images with a two-line title each (used for the misclassified test images)."""
    n = len(titles)
    rows = math.ceil(n / cols)
    fig = new_figure(1.45 * rows + 0.1, width=1.2 * cols)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            show_image(ax, images[i], titles[i], fontsize=7.5)
        else:
            ax.axis("off")
    return save_png(fig, path)


@styled
def plot_saliency(images, sal, cam, titles: list[str], path: Path) -> bytes:
    """Images in the first row, |d logit / d x| below, and the Grad-CAM overlay (when given) below that."""
    n = len(titles)
    rows = [("image", None), ("saliency", sal)] + ([("Grad-CAM", cam)] if cam is not None else [])
    fig = new_figure(1.35 * len(rows) + 0.25, width=1.15 * n + 0.9)
    axes = fig.subplots(len(rows), n, squeeze=False)
    for i in range(n):
        img = np.asarray(images[i])
        grey = as_display(img) if img.shape[0] == 1 else as_display(img).mean(-1)
        for r, (name, maps) in enumerate(rows):
            ax = axes[r, i]
            if maps is None:
                show_image(ax, img, titles[i], fontsize=7.5)
            elif name == "saliency":
                show_image(ax, np.asarray(maps[i])[None])
                ax.images[0].set_cmap(CMAP_SALIENCY)
            else:
                show_image(ax, grey[None])
                ax.imshow(np.asarray(maps[i]), cmap=CMAP_CAM, alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
            if i == 0:
                ax.set_ylabel(name, fontsize=9)
    return save_png(fig, path)


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def sweep_groups(rows: list[dict], key: str = "test_accuracy") -> dict[str, dict[str, list[float]]]:
    """{strategy: {labels as written ('100', 'all'): [values over seeds]}}, in first-seen order."""
    out: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        v = _num(r.get(key))
        labels = str(r.get("labels", "all")).strip() or "all"
        if labels.lower() in ("none", "all"):
            labels = "all"
        out.setdefault(str(r.get("strategy", "?")), {}).setdefault(labels, [])
        if v is not None:
            out[str(r.get("strategy", "?"))][labels].append(v)
    return out


def sweep_n_train(rows: list[dict]) -> int | None:
    """The training-set size from the rows' n_train column, if they have one."""
    vals = [_num(r.get("n_train")) for r in rows]
    vals = [v for v in vals if v]
    return int(max(vals)) if vals else None


@styled
def plot_accuracy_vs_labels(rows: list[dict], path: str | Path, n_train: int | None = None) -> bytes:
    """Test accuracy against the number of training labels, one line per strategy: the mean over seeds with
    the standard deviation as error bars, on a log x axis. `rows` are dicts as read from results.csv
    (strategy, labels, seed, test_accuracy, ...), labels an integer count or 'all'; 'all' is drawn at the
    training-set size (`n_train`, else the rows' n_train column, else twice the largest count).
    Writes a PNG to `path` (atomically) and returns its bytes."""
    groups = sweep_groups(rows)
    n_train = n_train or sweep_n_train(rows)
    counts = [float(lab) for g in groups.values() for lab in g if lab != "all"]
    all_x = float(n_train) if n_train else (2 * max(counts) if counts else 1.0)
    fig = new_figure(4.4, width=8.0)
    ax = fig.subplots()
    palette = [COLORS["train"], COLORS["test"], COLORS["recon"], COLORS["ce"], "#6a4c93", COLORS["total"], "#8ac926"]
    ticks: dict[float, str] = {}
    for i, (strategy, by_labels) in enumerate(groups.items()):
        pts = []
        for lab, vals in by_labels.items():
            if not vals:
                continue
            x = all_x if lab == "all" else float(lab)
            ticks[x] = (f"all\n({int(x)})" if n_train else "all") if lab == "all" else lab
            pts.append((x, float(np.mean(vals)) * 100, float(np.std(vals)) * 100, len(vals)))
        if not pts:
            continue
        pts.sort()
        x, m, s, _ = zip(*pts)
        ax.errorbar(x, m, yerr=s, marker="o", capsize=3, color=palette[i % len(palette)], label=strategy)
    ax.set_xscale("log")
    if ticks:
        ax.set_xticks(sorted(ticks), [ticks[t] for t in sorted(ticks)], rotation=0)
        ax.minorticks_off()
    ax.set_xlabel("training labels (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy vs number of labels (mean ± std over seeds)")
    if groups:
        # Outside the axes: inside, it covers whichever line runs along the bottom (often linear-probe).
        ax.legend(title="strategy", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save_png(fig, path)
