"""`aeclass.load(path)`: a trained model as a predictor, whatever form it was saved in.

    >>> clf = aeclass.load("runs/photos")            # a run directory, a .pt checkpoint, OUT.safetensors or OUT.onnx
    >>> clf.predict(["cat.jpg", "dog.png"])          # class names; also numpy arrays, tensors, PIL images
    >>> clf.predict_proba(x)                         # (N, classes) probabilities, columns in clf.classes_ order
    >>> clf.encode(x)                                # (N, code) autoencoder codes

Inputs are converted as training images were (mode, size, alpha; see aeclass/data/folder.py): uint8 arrays
are read as 0-255 pixels, float arrays as [0, 1]; (N, H, W), (N, H, W, C) and (N, C, H, W) are accepted. Class
scores average the test-time views the run was evaluated with (flip, shifts), so predictions match `aeclass
evaluate`. An ONNX file runs through onnxruntime (the `onnx` extra) without torch models being built.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .errors import AeclassError


class Predictor:
    """predict / predict_proba / encode over images; `classes_`, `image_shape`, `source` describe it."""

    def __init__(self, run, meta: dict, source: str):
        self._run = run  # callable: float tensor (N, C, H, W) in [0, 1] -> {"code", "logits"?, "recon"?}
        self.meta = meta
        self.classes_ = np.array(meta.get("classes") or [])
        self.image_shape = tuple(meta["image_shape"])
        self.source = source
        tt = meta.get("test_time", {})
        self.flip, self.shift = bool(tt.get("flip")), int(tt.get("shift", 0))

    def _batches(self, X, batch_size: int = 256):
        x = as_images(X, self.image_shape)
        for i in range(0, x.shape[0], batch_size):
            yield x[i:i + batch_size].float() / 255.0

    @torch.no_grad()
    def scores(self, X) -> np.ndarray:
        """Class scores (logits), averaged over the run's test-time views."""
        from .evaluation import tta_views
        out = []
        for xb in self._batches(X):
            logits = [self._logits(v) for v in [xb] + tta_views(xb, self.flip, self.shift)]
            out.append(torch.stack(logits).mean(0))
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes_)), np.float32)

    def _logits(self, x):
        res = self._run(x)
        if "logits" not in res:
            raise AeclassError(f"{self.source}: this model has no classification head (an autoencoder run)")
        return res["logits"].float()

    def predict_proba(self, X) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self.scores(X)), dim=1).numpy()

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.scores(X).argmax(1)]

    @torch.no_grad()
    def encode(self, X) -> np.ndarray:
        parts = [self._run(xb)["code"].float() for xb in self._batches(X)]
        return torch.cat(parts).numpy() if parts else np.zeros((0, 0), np.float32)

    @torch.no_grad()
    def reconstruct(self, X) -> np.ndarray:
        parts = []
        for xb in self._batches(X):
            res = self._run(xb)
            if "recon" not in res:
                raise AeclassError(f"{self.source}: this model has no decoder")
            parts.append(res["recon"].float())
        return torch.cat(parts).numpy()


def as_images(X, image_shape) -> torch.Tensor:
    """uint8 (N, C, H, W) from paths, PIL images, or arrays / tensors of images (one image or a batch)."""
    from .data.folder import decode_image
    c, h, w = image_shape
    items = X if isinstance(X, (list, tuple)) else [X] if isinstance(X, (str, Path)) or _is_pil(X) else None
    if items is None:  # an array or tensor
        a = torch.as_tensor(np.asarray(X))
        if a.ndim == 2 or (a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[1:] == (h, w)) or (
                a.ndim == 3 and a.shape[-1] in (1, 3) and a.shape[:2] == (h, w)):
            a = a[None]  # one image
        if a.ndim == 3:
            a = a[:, None]  # (N, H, W)
        if a.ndim == 4 and a.shape[1] not in (1, 3) and a.shape[-1] in (1, 3):
            a = a.permute(0, 3, 1, 2)
        if a.ndim != 4 or tuple(a.shape[1:]) != (c, h, w):
            raise AeclassError(f"images: expected arrays of shape (N, {c}, {h}, {w}) (or (N, {h}, {w}[, {c}])), "
                               f"got {tuple(a.shape)}; pass file paths or PIL images to have them resized")
        if a.is_floating_point():
            return (a.clamp(0, 1) * 255).round().to(torch.uint8)
        return a.to(torch.uint8)
    arrays = []
    for item in items:
        if _is_pil(item):
            import io
            buf = io.BytesIO()
            item.save(buf, format="PNG")
            data, label = buf.getvalue(), "PIL image"
        else:
            try:
                data, label = Path(item).read_bytes(), str(item)
            except OSError as e:
                raise AeclassError(f"{item}: cannot read ({e.strerror})") from None
        a = decode_image(data, label, channels=c, size=(h, w))
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros((0, c, h, w), dtype=torch.uint8)


def _is_pil(x) -> bool:
    try:
        from PIL import Image
        return isinstance(x, Image.Image)
    except ImportError:
        return False


def load(path: str | Path, device: str = "cpu") -> Predictor:
    """A Predictor for a run directory, a .pt checkpoint, OUT.safetensors (+ OUT.json) or OUT.onnx (+ OUT.json)."""
    p = Path(path)
    if p.suffix == ".onnx":
        return _load_onnx(p)
    from .export import metadata
    from .inference import load_model
    model, ck = load_model(p, device)
    meta = metadata(model, ck)

    def run(x):
        return model(x.to(device))
    return Predictor(lambda x: {k: v.cpu() for k, v in run(x).items()}, meta, str(ck.get("path", p)))


def _load_onnx(p: Path) -> Predictor:
    meta = _sidecar(p)
    try:
        import onnxruntime as ort
    except ImportError:
        raise AeclassError(f"{p}: running an ONNX model needs onnxruntime (pip install 'aeclass[onnx]')") from None
    try:
        session = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
        raise AeclassError(f"{p}: not a readable ONNX model ({type(e).__name__})") from None
    names = [o.name for o in session.get_outputs()]
    inp = session.get_inputs()[0].name

    def run(x):
        outs = session.run(None, {inp: x.numpy().astype(np.float32)})
        return {k: torch.from_numpy(v) for k, v in zip(names, outs)}
    return Predictor(run, meta, str(p))


def _sidecar(p: Path) -> dict:
    """OUT.json beside an exported file: the classes, input shape and test-time views it needs."""
    meta_path = p.with_suffix(".json")
    if not meta_path.is_file():
        raise AeclassError(f"{p}: missing {meta_path.name} beside it (aeclass export writes both)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise AeclassError(f"{meta_path}: cannot read ({e})") from None
    if not isinstance(meta, dict) or "image_shape" not in meta or "model_spec" not in meta:
        raise AeclassError(f"{meta_path}: not an aeclass export description")
    return meta
