"""Using a trained run: rebuild its model, evaluate it, classify image files, export its weights."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .data import load_dataset, to_float
from .errors import AeclassError
from .checkpoint import load_checkpoint, model_from_checkpoint
from .io import atomic_write_bytes, atomic_write_json
from .models import AEClassifier, create_model


def load_model(checkpoint: str | Path, device: str = "cpu") -> tuple[AEClassifier, dict]:
    """The model of a run directory or checkpoint file, in eval mode, and the checkpoint dict."""
    ck = load_checkpoint(checkpoint)
    return model_from_checkpoint(ck).to(device).eval(), ck


def evaluate_checkpoint(checkpoint, data: str | None = None, data_dir: str | None = None) -> dict:
    """Test metrics of a saved model on its own dataset's test split (or on `data`). A run directory means its
    final model, checkpoints/last.pt: the model its metrics.json describes ("checkpoint" says which file)."""
    from .evaluation import evaluate, trained_only
    model, ck = load_model(checkpoint)
    cfg = ck["config"]
    ds = load_dataset(data or cfg["data"], data_dir or cfg.get("data_dir"), image_size=cfg.get("image_size"), channels=cfg.get("channels"),
                      seed=cfg.get("seed", 0))
    if list(ds.image_shape) != list(ck["image_shape"]):
        raise AeclassError(f"--data {ds.name}: images are {tuple(ds.image_shape)} but the model expects {tuple(ck['image_shape'])}")
    if model.has_head and ds.num_classes != len(ck["classes"]):
        raise AeclassError(f"--data {ds.name}: {ds.num_classes} classes but the model has {len(ck['classes'])}")
    m = evaluate(model, ds.test_x, ds.test_y, tta_flip=bool(cfg.get("tta_flip", False)),
                 tta_shift=int(cfg.get("tta_shift", 0)))
    # Like metrics.json (a --no-recon decoder, say). Checkpoints written before the "trained" key report
    # everything the model has.
    trained = ck.get("trained", {})
    m = trained_only(m, trained.get("head", True), trained.get("decoder", True))
    return {"test_accuracy": m.get("accuracy"), "test_loss": m.get("loss"), "test_recon_mse": m.get("recon_mse"),
            "n_test": int(ds.test_x.shape[0]), "data": ds.name, "checkpoint": ck["path"]}


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
    from .data.folder import decode_image
    c, h, w = image_shape
    arrays = []
    for p in paths:
        try:
            data = p.read_bytes()
        except OSError as e:
            raise AeclassError(f"{p}: cannot read ({e.strerror})") from None
        a = decode_image(data, str(p), channels=c, size=(h, w))
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(arrays))


@torch.no_grad()
def predict_files(checkpoint, inputs: list[str], top_k: int = 1, batch_size: int = 256) -> list[dict]:
    """Classify image files/folders: [{path, classes: [top-k names], probabilities: [...]}, ...]."""
    from .evaluation import tta_logits
    model, ck = load_model(checkpoint)
    if not model.has_head:
        raise AeclassError(f"{checkpoint}: this model has no classification head (an autoencoder run)")
    classes = ck["classes"]
    k = max(1, min(top_k, len(classes)))
    paths = _image_paths(inputs)
    x = load_images(paths, ck["image_shape"])
    rows = []
    # predict as the run was evaluated
    flip, shift = bool(ck["config"].get("tta_flip", False)), int(ck["config"].get("tta_shift", 0))
    for i in range(0, len(paths), batch_size):
        xb = to_float(x[i:i + batch_size])
        logits = model(xb, decode=False)["logits"].float()
        if flip or shift:
            logits = tta_logits(model, xb, logits, flip, shift)
        probs = torch.softmax(logits, dim=1)
        top = probs.topk(k, dim=1)
        for j in range(probs.shape[0]):
            rows.append({"path": str(paths[i + j]), "classes": [classes[c] for c in top.indices[j].tolist()],
                         "probabilities": [round(float(v), 6) for v in top.values[j]]})
    return rows


def export(checkpoint, out: str | Path, fmt: str = "all") -> list[Path]:
    """Write released weights: OUT.safetensors + OUT.json (how to rebuild and feed the model), and/or
    OUT.pt2, a torch.export program (runs without aeclass installed). Each file is written atomically."""
    from safetensors.torch import save as st_save
    model, ck = load_model(checkpoint)
    out = Path(out)
    written = []
    meta = {"format": "aeclass-export-1", "model_spec": ck["model_spec"], "classes": ck["classes"],
            "image_shape": ck["image_shape"], "input": "float32 (N, C, H, W) in [0, 1]",
            "outputs": "code, logits (if classes), recon (if decoder)", "data": ck.get("data_name")}
    if fmt in ("safetensors", "all"):
        tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
        atomic_write_bytes(out.with_suffix(".safetensors"), st_save(tensors, metadata={"aeclass": json.dumps(meta)}))
        atomic_write_json(out.with_suffix(".json"), meta)
        written += [out.with_suffix(".safetensors"), out.with_suffix(".json")]
    if fmt in ("program", "all"):
        # torch.export: a self-contained program (torch.export.load(path).module() runs it without
        # aeclass), with a dynamic batch dimension. TorchScript is deprecated in recent torch.
        import io
        example = torch.rand(2, *ck["image_shape"])
        program = torch.export.export(_Exportable(model), (example,),
                                      dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        buf = io.BytesIO()
        torch.export.save(program, buf)
        path = out.with_name(out.name + ".pt2")
        atomic_write_bytes(path, buf.getvalue())
        written.append(path)
    return written


class _Exportable(torch.nn.Module):
    """Tuple outputs (exported programs want tensors, not dicts): (logits or code, recon or empty)."""

    def __init__(self, model: AEClassifier):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return out.get("logits", out["code"]), out.get("recon", torch.zeros(0))


def load_exported(path: str | Path) -> AEClassifier:
    """Rebuild a model from OUT.safetensors + OUT.json written by `export`."""
    from safetensors.torch import load_file
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        raise AeclassError(f"{path}: missing {meta_path.name} beside the weights")
    meta = json.loads(meta_path.read_text())
    spec = meta["model_spec"]
    model = create_model(spec["name"], spec["input_shape"], spec["num_classes"], **spec.get("kwargs", {}))
    model.load_state_dict(load_file(str(path.with_suffix(".safetensors"))))
    return model.eval()
