"""The report of one training run: read its files, load its model and test set, draw, assemble the page.

Sections that need only the run's CSV/JSON files (summary, curves, confusion) are always written; those
that need the model and the test images (reconstructions, latent map, errors, saliency) are skipped, with
the reason stated on the page, when the checkpoint or the dataset cannot be loaded.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import yaml

from .._version import __version__
from ..data import to_float
from ..errors import AeclassError
from ..io import atomic_write_text
from . import analysis, plots
from .html import Page, card, data_table, esc, figure, kv_table
from .style import short

N_RECON = 16
N_ERRORS = 16
N_SALIENCY = 8
N_SAMPLES = 32
N_TRAVERSE = 6
TRAVERSE_STEPS = 9
FIG_DIR = "report"
INT_FIELDS = {"epoch", "phase_epoch"}
FIGURES = ("curves", "reconstructions", "samples", "traversal", "latent", "confusion", "per_class_accuracy", "errors", "saliency")


def read_metrics_csv(path: Path) -> list[dict]:
    """metrics.csv rows with numbers parsed; empty cells (not applicable) become None."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            row = {}
            for k, v in r.items():
                if k is None:
                    continue
                if k == "phase":
                    row[k] = v or "train"
                elif v in ("", None):
                    row[k] = None
                else:
                    try:
                        row[k] = int(float(v)) if k in INT_FIELDS else float(v)
                    except ValueError:
                        row[k] = None
            rows.append(row)
    return [r for r in rows if r.get("epoch") is not None]


def _read(path: Path, loader):
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return loader(f)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise AeclassError(f"{path}: cannot read ({type(e).__name__}: {e})") from None


@dataclass
class RunFiles:
    run_dir: Path
    config: dict
    info: dict
    metrics: dict
    rows: list[dict]

    @classmethod
    def read(cls, run_dir: Path) -> "RunFiles":
        cfg = _read(run_dir / "config.yaml", yaml.safe_load) or {}
        info = _read(run_dir / "run.json", json.load) or {}
        metrics = _read(run_dir / "metrics.json", json.load) or {}
        try:
            rows = read_metrics_csv(run_dir / "metrics.csv") if (run_dir / "metrics.csv").is_file() else []
        except (OSError, csv.Error, UnicodeDecodeError) as e:
            raise AeclassError(f"{run_dir / 'metrics.csv'}: cannot read ({e})") from None
        if not (metrics or rows):
            raise AeclassError(f"{run_dir}: not a run directory (no metrics.json or metrics.csv) "
                               "and not a sweep directory (no results.csv)")
        return cls(run_dir, cfg if isinstance(cfg, dict) else {}, info, metrics, rows)

    def get(self, key, default=None):
        for src in (self.metrics, self.config, self.info):
            if src.get(key) is not None:
                return src[key]
        return default

    @property
    def strategy(self) -> str:
        return str(self.get("strategy", "?"))

    @property
    def classes(self) -> list[str]:
        c = self.metrics.get("classes") or (self.info.get("data") or {}).get("classes") or []
        return [str(x) for x in c]

    def _trained(self, part: str, column: str) -> bool:
        """Whether the run trained this part: as its metrics.json (or run.json) says, or, for runs written
        before those recorded it, whether any epoch of metrics.csv had the part's loss."""
        for src in (self.metrics, self.info):
            if isinstance(src.get("trained"), dict) and part in src["trained"]:
                return bool(src["trained"][part])
        return any(r.get(column) is not None for r in self.rows)

    @property
    def trains_head(self) -> bool:
        """Classification sections only when training used the head (an autoencoder's head is random)."""
        return self._trained("head", "train_ce")

    @property
    def trains_decoder(self) -> bool:
        """Reconstructions only when training used the decoder (a supervised run leaves it random)."""
        return self._trained("decoder", "train_recon")


@dataclass
class Loaded:
    model: torch.nn.Module
    x: torch.Tensor          # uint8 test images
    y: torch.Tensor          # test labels
    classes: list[str]
    checkpoint: str


def load_model_and_data(files: RunFiles) -> tuple[Loaded | None, str | None]:
    """The run's final model (checkpoints/last.pt, the model metrics.json describes) and its test set, or None
    and the reason they are unavailable."""
    from ..data import dataset_for
    from ..device import pick_device
    from ..inference import load_model
    try:
        model, ck = load_model(files.run_dir, device=str(pick_device("auto")))
    except AeclassError as e:
        return None, f"the model could not be loaded: {e}"
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        return None, f"the checkpoint does not rebuild a model ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
    cfg = files.config or ck.get("config", {})
    name = cfg.get("data") or ck.get("data_name")
    if not name:
        return None, "the run does not name its dataset (no config.yaml)"
    try:
        ds = dataset_for({**cfg, "data": name}, download=False, unlabelled=None)
    except AeclassError as e:
        return None, f"the dataset '{name}' could not be loaded: {e}"
    want = list(ck.get("image_shape") or model.input_shape)
    if list(ds.image_shape) != want:
        return None, (f"the dataset '{name}' now has images of shape {tuple(ds.image_shape)}, "
                      f"but the model expects {tuple(want)}")
    ckname = os.path.relpath(ck["path"], files.run_dir)  # checkpoints/last.pt
    return Loaded(model, ds.test_x, ds.test_y, list(ds.classes), ckname), None


def _fmt(v, spec: str = ".4g") -> str | None:
    if v is None:
        return None
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _augment_of(f) -> str | None:
    return f.info.get("augment") or f.config.get("augment")


def _lines(v):
    """A dict (e.g. a dataset's source files) as 'key: value' lines; anything else unchanged."""
    if isinstance(v, dict):
        return [f"{k}: {x}" for k, x in v.items()]
    return v


class RunReport:
    def __init__(self, run_dir: Path, latent: str, max_points: int):
        self.files = RunFiles.read(run_dir)
        self.dir = run_dir
        self.fig_dir = run_dir / FIG_DIR
        self.latent = latent
        self.max_points = max_points
        self.skipped: list[tuple[str, str]] = []
        self.timings: dict[str, float] = {}
        self.written: set[str] = set()
        self._pass: analysis.TestPass | None = None

    def png(self, name: str, fn, *args, **kw) -> bytes:
        t = time.perf_counter()
        data = fn(*args, path=self.fig_dir / f"{name}.png", **kw)
        self.timings[name] = time.perf_counter() - t
        self.written.add(name)
        return data

    def build(self) -> Path:
        t0 = time.perf_counter()
        f = self.files
        name = self.dir.resolve().name
        page = Page(f"aeclass report — {name}",
                    f"{f.strategy} · model {f.get('model', '?')} · data {f.get('data', '?')} · "
                    f"seed {f.get('seed', '?')}")
        loaded, why = load_model_and_data(f)
        if loaded is None:
            self.skipped.append(("Reconstructions, latent map, misclassified images and saliency", why))
        self.timings["load"] = time.perf_counter() - t0
        sections = [self.curves(), self.reconstructions(loaded), *self.samples(loaded), self.latent_map(loaded), self.confusion(),
                    self.errors(loaded), self.saliency(loaded)]
        page.add("summary", "Summary", self.summary(loaded))
        for s in sections:
            if s is not None:
                page.add(*s)
        total = time.perf_counter() - t0
        footer = (f"Written by aeclass {esc(__version__)} on {datetime.now():%Y-%m-%d %H:%M} in {total:.1f} s from "
                  f"the files of <code>{esc(self.dir)}</code>. Figures are also saved as PNG in "
                  f"<code>{esc(self.fig_dir)}</code>.")
        out = self.dir / "report.html"
        atomic_write_text(out, page.render(footer))
        for stale in set(FIGURES) - self.written:  # a figure an earlier report drew and this one could not
            (self.fig_dir / f"{stale}.png").unlink(missing_ok=True)
        return out

    # ---------------------------------------------------------------- sections
    def summary(self, loaded: Loaded | None) -> str:
        f = self.files
        cards = self._cards()
        parts = [f'<div class="cards">{"".join(cards)}</div>' if cards else
                 '<p class="note">No final metrics: metrics.json is missing (the run may not have '
                 'finished). The curves below show the epochs recorded so far.</p>']
        if not f.trains_head:
            self.skipped.append(("Test accuracy, confusion matrix, misclassified images, saliency",
                                 f"the classification head was not trained ({f.strategy} strategy)"))
        run_rows, data_rows = self._run_rows(loaded), self._data_rows()
        parts.append('<div class="grid">'
                     f'<div><h3>Run</h3>{kv_table([r for r in run_rows if r[1] is not None])}</div>'
                     f'<div><h3>Data</h3>{kv_table([r for r in data_rows if r[1] is not None])}</div></div>')
        cfg = [(k, json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in f.config.items()]
        if cfg:
            third = math.ceil(len(cfg) / 3)
            cols = "".join(f"<div>{kv_table(cfg[i:i + third])}</div>" for i in range(0, len(cfg), third))
            parts.append(f'<h3>Configuration (config.yaml)</h3><div class="grid3">{cols}</div>')
        if self.skipped:
            items = "".join(f"<li><b>{esc(what)}</b>: {esc(why)}</li>" for what, why in self.skipped)
            parts.append(f'<div class="note skipped">Not shown:<ul>{items}</ul></div>')
        return "\n".join(parts)

    def _cards(self) -> list[str]:
        """The headline figures, only of the parts the run trained."""
        f, m = self.files, self.files.metrics
        cards = []
        if f.trains_head and m.get("test_accuracy") is not None:
            cards.append(card("test accuracy", f"{m['test_accuracy'] * 100:.2f}%", "test_accuracy", m["test_accuracy"]))
            if m.get("test_loss") is not None:
                cards.append(card("test cross-entropy", f"{m['test_loss']:.4f}", "test_loss", m["test_loss"]))
        mse = m.get("test_recon_mse")
        if mse is not None and f.trains_decoder:
            cards.append(card("test reconstruction MSE", f"{mse:.5f}", "test_recon_mse", mse))
            cards.append(card("test PSNR = 10·log10(1/MSE)", f"{analysis.psnr(mse):.2f} dB", "test_psnr",
                              analysis.psnr(mse)))
        if m.get("train_seconds") is not None:
            cards.append(card("training time", f"{m['train_seconds']:.1f} s", "train_seconds", m["train_seconds"]))
        if m.get("epochs") is not None:
            cards.append(card("epochs", str(m["epochs"]), "epochs", m["epochs"]))
        return cards

    def _run_rows(self, loaded: Loaded | None) -> list[tuple]:
        f, m, info = self.files, self.files.metrics, self.files.info
        procs = info.get("processes")
        return [("strategy", f.strategy), ("model", f.get("model")),
                ("parameters", f"{info['parameters']:,}" if isinstance(info.get("parameters"), int) else None),
                ("seed", f.get("seed")), ("device", info.get("device")), ("precision", info.get("precision")),
                ("processes", f"{procs} ({info.get('distributed_backend')})" if procs and procs > 1 else None),
                ("phases", ", ".join(f"{p.get('name')} ({p.get('epochs')} epochs, {p.get('images')} images)"
                                     for p in info.get("phases", [])) or None),
                ("best epoch", m.get("best_epoch")),
                ("model described", f"{m.get('checkpoint')} (selected by {m.get('selected_by')})"
                 if m.get("checkpoint") else None),
                ("validation accuracy", f"{m['val_accuracy']:.4f}" if m.get("val_accuracy") is not None else None),
                ("checkpoint used for figures", loaded.checkpoint if loaded else None),
                ("started", info.get("started")),
                ("versions", ", ".join(f"{k} {v}" for k, v in (info.get("versions") or {}).items()
                                       if k != "platform") or None)]

    def _data_rows(self) -> list[tuple]:
        f = self.files
        data, classes = f.info.get("data") or {}, f.classes
        shape = data.get("image_shape")
        return [("dataset", data.get("name") or f.get("data")),
                ("image shape (C, H, W)", " × ".join(map(str, shape)) if shape else None),
                ("train images", f.get("n_train") or data.get("train_size")),
                ("test images", f.get("n_test") or data.get("test_size")),
                ("labelled train images", f.get("n_labelled")),
                ("unlabelled train images", f.get("n_unlabelled")),
                ("of them given unlabelled", data.get("unlabelled") or None),
                ("unlabelled images from", data.get("unlabelled_source")),
                ("labels from", data.get("labels")),
                ("validation images (held out of the labels)", f.get("n_val") or None),
                ("classes", f"{len(classes)}: " + ", ".join(classes[:30]) + (" …" if len(classes) > 30 else "")
                 if classes else None),
                ("augmentation", _augment_of(f)),
                ("source", _lines(data.get("source"))), ("split", _lines(data.get("split")))]

    def curves(self):
        rows = self.files.rows
        if not rows:
            self.skipped.append(("Learning curves", "metrics.csv is missing or empty"))
            return None
        png = self.png("curves", plots.plot_curves, rows, show_mse=self.files.trains_decoder)
        phases = []
        for r in rows:
            if not phases or phases[-1] != r["phase"]:
                phases.append(r["phase"])
        cap = (f"{len(rows)} epoch{'s' if len(rows) != 1 else ''} from metrics.csv"
               + (f"; phases {' → '.join(esc(p) for p in phases)}, separated by dashed lines" if len(phases) > 1 else "")
               + ". Train figures are means over each epoch's batches; test figures are measured on the whole "
                 "test set after each epoch."
               + (" Accuracy is drawn only for epochs in which the head was trained." if self.files.trains_head else ""))
        last = rows[-1]
        # Every train_* column the strategy wrote (its own loss parts included), then the test figures.
        table_keys = [k for k in last if k.startswith("train_")] + ["test_accuracy", "test_loss", "test_recon_mse",
                                                                     "lr", "elapsed_seconds"]
        keys = [k for k in table_keys if last.get(k) is not None]
        table = data_table(["epoch", "phase"] + keys, [[r["epoch"], r["phase"]] + [_fmt(r.get(k)) or "" for k in keys]
                                                       for r in rows], numeric=set(range(2, 2 + len(keys))))
        return ("curves", "Learning curves",
                figure(png, "learning curves", cap) + f"<details><summary>metrics.csv as a table</summary>{table}</details>")

    def reconstructions(self, loaded: Loaded | None):
        if loaded is None:
            return None
        if not loaded.model.has_decoder:
            self.skipped.append(("Reconstructions", "the model has no decoder"))
            return None
        if not self.files.trains_decoder:
            self.skipped.append(("Reconstructions and reconstruction error",
                                 f"the decoder was not trained ({self.files.strategy} strategy)"))
            return None
        idx = analysis.pick(loaded.x.shape[0], N_RECON)
        xs, rs, mse = analysis.reconstruct(loaded.model, loaded.x[idx])
        png = self.png("reconstructions", plots.plot_reconstructions, xs.numpy(), rs.numpy())
        m = float(mse.mean())
        whole = self.files.metrics.get("test_recon_mse")
        cap = (f"{len(idx)} test images chosen at random (seed 0), each above its reconstruction. "
               f"These images: MSE {m:.5f}, PSNR {analysis.psnr(m):.2f} dB"
               + (f" (whole test set: MSE {whole:.5f}, PSNR {analysis.psnr(whole):.2f} dB)." if whole else ".")
               + f" Per-image MSE ranges from {float(mse.min()):.5f} to {float(mse.max()):.5f}.")
        return "reconstructions", "Reconstructions", figure(png, "test images and their reconstructions", cap)

    def samples(self, loaded: Loaded | None) -> list:
        """A variational model's prior samples and a latent traversal (the two sections, or none)."""
        if loaded is None or "variational" not in loaded.model.capabilities or not self.files.trains_decoder:
            return []
        model = loaded.model
        dev = next(model.parameters()).device
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            grid = model.decode(torch.randn(N_SAMPLES, model.code_dim, generator=gen).to(dev)).float().cpu()
            # Traverse the code units the test images use most (the largest mean KL to the prior), from -3 to +3
            # prior standard deviations, around the first test image's code, the other units held.
            mu, logvar = model.encode_stats(to_float(loaded.x[:1000].to(dev)))
            kl = (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).mean(0)
            units = kl.argsort(descending=True)[:N_TRAVERSE].tolist()
            steps = torch.linspace(-3, 3, TRAVERSE_STEPS, device=dev)
            z = mu[:1].repeat(len(units) * TRAVERSE_STEPS, 1)
            for i, u in enumerate(units):
                z[i * TRAVERSE_STEPS:(i + 1) * TRAVERSE_STEPS, u] = steps
            trav = model.decode(z).float().cpu()
        png = self.png("samples", plots.plot_mosaic, grid.numpy(), cols=8)
        cap = f"{N_SAMPLES} codes drawn from the prior N(0, I) (seed 0) and decoded (aeclass sample RUN draws more)."
        png2 = self.png("traversal", plots.plot_mosaic, trav.numpy(), cols=TRAVERSE_STEPS,
                        row_labels=[f"unit {u} (KL {float(kl[u]):.2f})" for u in units])
        cap2 = (f"Each row moves one code unit from -3 to +3 around the first test image's mean code, the others held: "
                f"the {len(units)} units with the largest mean KL to the prior over the first 1000 test images.")
        return [("samples", "Samples", figure(png, "decoded prior samples", cap)),
                ("traversal", "Latent traversal", figure(png2, "latent traversal", cap2))]

    def _test_pass(self, loaded: Loaded) -> analysis.TestPass:
        if self._pass is None:
            t = time.perf_counter()
            classify = self.files.trains_head and loaded.model.has_head
            self._pass = analysis.test_pass(loaded.model, loaded.x, classify)
            self.timings["test_pass"] = time.perf_counter() - t
        return self._pass

    def latent_map(self, loaded: Loaded | None):
        if loaded is None:
            return None
        tp = self._test_pass(loaded)
        n = loaded.x.shape[0]
        idx = analysis.pick(n, self.max_points, seed=1)
        idx = idx.sort().values
        t = time.perf_counter()
        xy, how = analysis.latent_2d(tp.codes[idx], self.latent)
        self.timings["projection"] = time.perf_counter() - t
        method = "t-SNE" if self.latent == "tsne" else "PCA"
        png = self.png("latent", plots.plot_latent, xy, loaded.y[idx].numpy(), loaded.classes,
                       title=f"{method} of test-set codes")
        sub = f"{len(idx)} of the {n} test images (chosen at random)" if len(idx) < n else f"all {n} test images"
        cap = (f"Codes (<code>model.encode</code>) of {sub}, coloured by true class. {esc(how)}."
               + ("" if self.latent == "tsne" else " Run <code>aeclass report RUN_DIR --latent tsne</code> for a t-SNE map."))
        return "latent", "Latent space", figure(png, f"{method} map of the codes", cap)

    def confusion(self):
        f, m = self.files, self.files.metrics
        if not f.trains_head:
            return None
        cm = m.get("confusion_matrix")
        if not cm:
            self.skipped.append(("Confusion matrix", "metrics.json has no confusion matrix"))
            return None
        cm = np.asarray(cm, dtype=np.int64)
        classes = f.classes if len(f.classes) == cm.shape[0] else [str(i) for i in range(cm.shape[0])]
        png = self.png("confusion", plots.plot_confusion, cm, classes)
        acc = m.get("per_class_accuracy") or (np.diag(cm) / np.maximum(cm.sum(1), 1)).tolist()
        png2 = self.png("per_class_accuracy", plots.plot_per_class, acc, classes, overall=m.get("test_accuracy"))
        off = [(int(cm[i, j]), i, j) for i in range(cm.shape[0]) for j in range(cm.shape[1]) if i != j and cm[i, j]]
        off.sort(reverse=True)
        top = ", ".join(f"{esc(classes[i])} → {esc(classes[j])} ({c})" for c, i, j in off[:6])
        cap = (f"Rows: true class; columns: predicted class; {int(cm.sum())} test images (from metrics.json). "
               + (f"Most frequent confusions (true → predicted): {top}." if top else "No test image is misclassified."))
        worst = int(np.argmin(acc))
        cap2 = (f"Fraction of each class's test images classified correctly; lowest: {esc(classes[worst])} "
                f"({acc[worst] * 100:.1f}%). The dashed line is the overall test accuracy.")
        return "confusion", "Confusion matrix", figure(png, "confusion matrix", cap) + figure(png2, "per-class accuracy", cap2)

    def errors(self, loaded: Loaded | None):
        if loaded is None or not self.files.trains_head or not loaded.model.has_head:
            return None
        tp = self._test_pass(loaded)
        wrong = (tp.preds != loaded.y).nonzero().flatten()
        if wrong.numel() == 0:
            return "errors", "Most confident mistakes", "<p>No test image is misclassified.</p>"
        conf = tp.probs[wrong, tp.preds[wrong]]
        order = wrong[conf.argsort(descending=True)][:N_ERRORS]
        c = loaded.classes
        titles = [f"true {short(c[int(loaded.y[i])])}\npred {short(c[int(tp.preds[i])])} "
                  f"({float(tp.probs[i, tp.preds[i]]) * 100:.1f}%)" for i in order.tolist()]
        imgs = (loaded.x[order].float() / 255).numpy()
        png = self.png("errors", plots.plot_gallery, imgs, titles)
        cap = (f"The {len(order)} misclassified test images the model was most sure about, of {wrong.numel()} "
               f"misclassified in all ({wrong.numel() / loaded.x.shape[0] * 100:.1f}% of the test set); "
               "each title gives the true class, the predicted class and its softmax probability.")
        return "errors", "Most confident mistakes", figure(png, "misclassified test images", cap)

    def saliency(self, loaded: Loaded | None):
        if loaded is None or not self.files.trains_head or not loaded.model.has_head:
            return None
        idx = analysis.one_per_class(loaded.y, N_SALIENCY)
        x = loaded.x[idx]
        tp = self._test_pass(loaded)
        pred = tp.preds[idx]
        t = time.perf_counter()
        sal = analysis.saliency(loaded.model, x, pred)
        layer = analysis.grad_cam_layer(loaded.model, tuple(x.shape[1:]))
        cam = analysis.grad_cam(loaded.model, x, pred, layer) if layer is not None else None
        self.timings["saliency_compute"] = time.perf_counter() - t
        c = loaded.classes
        titles = [f"true {short(c[int(loaded.y[i])])}\npred {short(c[int(p)])}"
                  for i, p in zip(idx.tolist(), pred.tolist())]
        png = self.png("saliency", plots.plot_saliency, (x.float() / 255).numpy(), sal.numpy(),
                       None if cam is None else cam.numpy(), titles)
        cap = ("Row 2: input-gradient saliency |∂ logit<sub>pred</sub> / ∂x| (max over channels), scaled per image; "
               "bright pixels change the predicted class's score most.")
        if cam is not None:
            cap += (" Row 3: Grad-CAM for the predicted class at the deepest convolutional activation of at least "
                    "4×4 pixels, over the image in grey.")
        else:
            cap += " (No Grad-CAM: the encoder has no convolutional layers.)"
        return "saliency", "Saliency", figure(png, "saliency maps", cap)


def write_run_report(run_dir: Path, latent: str = "pca", max_points: int = 2000) -> Path:
    return RunReport(run_dir, latent, max_points).build()
