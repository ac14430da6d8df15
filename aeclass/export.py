"""Released models: `aeclass export` writes weights and programs that run without the training code.

    OUT.safetensors + OUT.json   the weights, and how to rebuild and feed the model (aeclass.load reads both)
    OUT.pt2                      a torch.export program (torch.export.load(path).module(); no aeclass needed)
    OUT.onnx                     an ONNX graph with a dynamic batch, outputs named code / logits / recon

OUT.json is what any consumer needs to feed the model: the input size and channels, that pixels are floats
in [0, 1] (the model standardises them itself, with the mean and std stated), how training images were
resized and converted, the class names in score order, the outputs, and the test-time views the run used.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import torch

from .errors import AeclassError
from .io import atomic_write_bytes, atomic_write_json

FORMAT = "aeclass-export-2"
FORMATS = ("safetensors", "program", "onnx", "all")


class Outputs(torch.nn.Module):
    """The model's outputs as a tuple, in the order `names` (exported programs want tensors, not dicts)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        # recon only from a decoder that reconstructs from the code: the Ladder network's lateral estimate is
        # left out (its exported graph gives NaN where PyTorch does not; tests/test_exports.py)
        self.names = ["code"] + (["logits"] if model.has_head else []) + (
            ["recon"] if "decoder" in model.capabilities else [])

    def forward(self, x):
        out = self.model(x)
        return tuple(out[k] for k in self.names)


class ProgramOutputs(torch.nn.Module):
    """The .pt2 program's outputs: (logits or code, recon or an empty tensor)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return out.get("logits", out["code"]), out.get("recon", torch.zeros(0))


def metadata(model, ck: dict) -> dict:
    c, h, w = ck["image_shape"]
    cfg = ck.get("config", {})
    return {
        "format": FORMAT, "model_spec": ck["model_spec"], "classes": ck["classes"], "image_shape": [c, h, w],
        "input": {"name": "image", "dtype": "float32", "layout": "NCHW", "shape": ["batch", c, h, w], "range": [0, 1],
                  "channels": "greyscale" if c == 1 else "RGB",
                  "resize": f"to {h}x{w}, bilinear, aspect ratio ignored",
                  "modes": "alpha composited over black; 16-bit greys scaled to 8 bits",
                  "normalisation": {"inside_model": True, "mean": model.in_mean.flatten().tolist(),
                                    "std": model.in_std.flatten().tolist()}},
        "outputs": {"onnx": Outputs(model).names, "program": ["logits" if model.has_head else "code",
                                                              "recon" if model.has_decoder else "empty"]},
        "test_time": {"flip": bool(cfg.get("tta_flip", False)), "shift": int(cfg.get("tta_shift", 0))},
        "trained": ck.get("trained", {}),
        "data": ck.get("data_name"),
        "data_config": {k: cfg.get(k) for k in ("data", "data_dir", "image_size", "channels", "seed", "labels_csv")},
    }


def export(checkpoint, out: str | Path, fmt: str = "all") -> list[Path]:
    """Write OUT.safetensors + OUT.json, OUT.pt2 and/or OUT.onnx (`fmt`); each file atomically."""
    from .inference import load_model
    if fmt not in FORMATS:
        raise AeclassError(f"--format: expected one of {', '.join(FORMATS)}, got '{fmt}'")
    model, ck = load_model(checkpoint)
    out, meta, written = Path(out), metadata(model, ck), []
    if fmt in ("safetensors", "all"):
        from safetensors.torch import save as st_save
        tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
        atomic_write_bytes(out.with_suffix(".safetensors"), st_save(tensors, metadata={"aeclass": json.dumps(meta)}))
        written.append(out.with_suffix(".safetensors"))
    if fmt in ("program", "all"):
        # torch.export: a self-contained program with a dynamic batch dimension (TorchScript is deprecated).
        # Its outputs stay (logits, or the code without a head; recon, or an empty tensor), as they always were.
        program = torch.export.export(ProgramOutputs(model), (torch.rand(2, *ck["image_shape"]),),
                                      dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        buf = io.BytesIO()
        torch.export.save(program, buf)
        atomic_write_bytes(out.with_name(out.name + ".pt2"), buf.getvalue())
        written.append(out.with_name(out.name + ".pt2"))
    if fmt in ("onnx", "all"):
        path = _export_onnx(model, ck, out, required=fmt == "onnx")
        written += [path] if path else []
    atomic_write_json(out.with_suffix(".json"), meta)
    return written + [out.with_suffix(".json")]


@contextlib.contextmanager
def _quiet_logs():
    root = logging.getLogger("torch")
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _export_onnx(model, ck: dict, out: Path, required: bool) -> Path | None:
    """OUT.onnx through torch's exporter (needs the `onnx` extra: onnx, onnxscript; onnxruntime to check)."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        if required:
            raise AeclassError("--format onnx needs the onnx extra: pip install 'aeclass[onnx]'") from None
        return None
    wrapped, path = Outputs(model).eval(), out.with_suffix(".onnx")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        # The exporter's progress lines and its notes on optional torchvision ops mean nothing to the user.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_logs():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapped, (torch.rand(2, *ck["image_shape"]),), str(tmp), input_names=["image"],
                              output_names=wrapped.names, dynamo=True, verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        atomic_write_bytes(path, tmp.read_bytes())
    except Exception as e:  # the exporter raises many kinds; the user needs the model's name and the reason
        raise AeclassError(f"--format onnx: model '{ck['model_spec']['name']}' could not be exported "
                           f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path
