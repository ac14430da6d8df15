"""Using a trained model: rebuild it, evaluate it, classify image files (and, in aeclass.export, release it).

Every entry point takes what `aeclass train` or `aeclass export` wrote: a run directory (the model its
metrics.json describes), a .pt checkpoint, OUT.safetensors (+ OUT.json) or OUT.onnx (+ OUT.json).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from .checkpoint import load_checkpoint, model_from_checkpoint
from .data import dataset_for
from .errors import AeclassError
from .export import export  # noqa: F401  (aeclass.inference.export, as before)
from .models import AEClassifier, create_model


def load_model(checkpoint: str | Path, device: str = "cpu") -> tuple[AEClassifier, dict]:
    """The model of a run directory, checkpoint or safetensors export, in eval mode, and its checkpoint dict
    (for an export: the fields its JSON holds)."""
    p = Path(checkpoint)
    if p.suffix == ".safetensors":
        return _load_safetensors(p, device)
    if p.suffix == ".onnx":
        raise AeclassError(f"{p}: an ONNX graph has no torch weights; use aeclass.load(path) or the .safetensors export")
    ck = load_checkpoint(p)
    return model_from_checkpoint(ck).to(device).eval(), ck


def _load_safetensors(p: Path, device: str) -> tuple[AEClassifier, dict]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .predictor import _sidecar
    meta = _sidecar(p)
    spec = meta["model_spec"]
    model = create_model(spec["name"], spec["input_shape"], spec["num_classes"], **spec.get("kwargs", {}))
    try:
        model.load_state_dict(load_file(str(p)))
    except (OSError, SafetensorError, RuntimeError) as e:
        raise AeclassError(f"{p}: not readable weights for '{spec['name']}' ({type(e).__name__})") from None
    tt = meta.get("test_time", {})
    ck = {"path": str(p), "model_spec": spec, "classes": meta["classes"], "image_shape": meta["image_shape"],
          "trained": meta.get("trained", {}), "data_name": meta.get("data"),
          "config": {**(meta.get("data_config") or {}), "tta_flip": tt.get("flip", False), "tta_shift": tt.get("shift", 0)}}
    return model.to(device).eval(), ck


def load_exported(path: str | Path) -> AEClassifier:
    """Rebuild a model from OUT.safetensors + OUT.json written by `aeclass export`."""
    return load_model(path)[0]


def _test_set(cfg: dict, image_shape, n_classes, data, data_dir):
    other = {"spec": data, "labels_csv": None} if data else {}  # another dataset: none of the run's label files
    if not (data or cfg.get("data")):
        raise AeclassError("evaluate: this export does not name its dataset; give --data")
    # unlabelled images play no part in test metrics: not decoded
    ds = dataset_for(cfg, unlabelled=None, data_dir=data_dir or cfg.get("data_dir"), **other)
    if list(ds.image_shape) != list(image_shape):
        raise AeclassError(f"--data {ds.name}: images are {tuple(ds.image_shape)} but the model expects {tuple(image_shape)}")
    if n_classes and ds.num_classes != n_classes:
        raise AeclassError(f"--data {ds.name}: {ds.num_classes} classes but the model has {n_classes}")
    return ds


def evaluate_checkpoint(checkpoint, data: str | None = None, data_dir: str | None = None) -> dict:
    """Test metrics of a saved model on its own dataset's test split (or on `data`). A run directory means the
    model its metrics.json describes; "checkpoint" says which file was evaluated."""
    if Path(checkpoint).suffix == ".onnx":
        return _evaluate_onnx(Path(checkpoint), data, data_dir)
    from .evaluation import evaluate, trained_only
    model, ck = load_model(checkpoint)
    cfg = ck["config"]
    ds = _test_set(cfg, ck["image_shape"], len(ck["classes"]) if model.has_head else 0, data, data_dir)
    m = evaluate(model, ds.test_x, ds.test_y, tta_flip=bool(cfg.get("tta_flip", False)),
                 tta_shift=int(cfg.get("tta_shift", 0)))
    # Like metrics.json (a --no-recon decoder, say). Checkpoints written before the "trained" key report
    # everything the model has.
    trained = ck.get("trained", {})
    m = trained_only(m, trained.get("head", True), trained.get("decoder", True))
    return {"test_accuracy": m.get("accuracy"), "test_loss": m.get("loss"), "test_recon_mse": m.get("recon_mse"),
            "n_test": int(ds.test_x.shape[0]), "data": ds.name, "checkpoint": ck["path"]}


def _evaluate_onnx(p: Path, data, data_dir) -> dict:
    from .predictor import load
    pred = load(p)
    ds = _test_set(pred.meta.get("data_config") or {}, pred.image_shape, len(pred.classes_), data, data_dir)
    logits = torch.from_numpy(pred.scores(ds.test_x))
    y = ds.test_y
    return {"test_accuracy": float((logits.argmax(1) == y).float().mean()),
            "test_loss": float(torch.nn.functional.cross_entropy(logits, y)), "test_recon_mse": None,
            "n_test": int(y.shape[0]), "data": ds.name, "checkpoint": str(p)}


def _image_paths(inputs: list[str]) -> list[Path]:
    from .data.folder import IMAGE_EXTS
    paths = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTS and not q.name.startswith("."))
            if not found:
                raise AeclassError(f"{p}: no image files ({', '.join(sorted(IMAGE_EXTS))}) in this directory")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise AeclassError(f"{p}: no such image file or directory")
    return paths


def load_images(paths: list[Path], image_shape) -> torch.Tensor:
    """Decode image files into uint8 (N, C, H, W) the way training data were: mode converted, resized."""
    from .predictor import as_images
    return as_images([str(p) for p in paths], image_shape)


def predict_files(checkpoint, inputs: list[str], top_k: int = 1, batch_size: int = 256,
                  skip_errors: bool = False, warn=None) -> list[dict]:
    """Classify image files/folders: [{path, classes: [top-k names], probabilities: [...]}, ...], scored as the
    run was evaluated (its test-time views). With `skip_errors` an unreadable file is reported through
    `warn` (default: a line on stderr) and left out; otherwise it stops everything, named."""
    from .predictor import load
    pred = load(checkpoint)
    if not len(pred.classes_):
        raise AeclassError(f"{checkpoint}: this model has no classification head (an autoencoder run)")
    paths, x = _decoded(_image_paths(inputs), pred.image_shape, skip_errors,
                        warn or (lambda m: print(m, file=sys.stderr)))
    k = max(1, min(top_k, len(pred.classes_)))
    rows = []
    for i in range(0, len(paths), batch_size):
        probs = torch.from_numpy(pred.predict_proba(x[i:i + batch_size]))
        top = probs.topk(k, dim=1)
        for j, p in enumerate(paths[i:i + batch_size]):
            rows.append({"path": str(p), "classes": [str(pred.classes_[c]) for c in top.indices[j].tolist()],
                         "probabilities": [round(float(v), 6) for v in top.values[j]]})
    return rows


def _decoded(paths: list[Path], image_shape, skip_errors: bool, warn) -> tuple[list[Path], torch.Tensor]:
    """The files that decode, and their images (uint8); an unreadable one stops it, unless skipped (warned)."""
    from .predictor import as_images
    ok, images = [], []
    for p in paths:
        try:
            images.append(as_images([str(p)], image_shape))
            ok.append(p)
        except AeclassError as e:
            if not skip_errors:
                raise
            warn(f"skipped: {e}")
    if not ok:
        raise AeclassError("predict: none of the given files could be read as an image")
    return ok, torch.cat(images)

