"""Models people take away: ONNX for every registered model, and predict / evaluate / aeclass.load on every
form a model is saved in giving the same answers as the run itself."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import aeclass
from aeclass.cli import main
from aeclass.models import create_model, list_models

ort = pytest.importorskip("onnxruntime", reason="the onnx extra (onnx, onnxscript, onnxruntime) is not installed")
DIGITS = Path(__file__).parent / "golden" / "old-run-images"  # eight 8x8 digit PNGs


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_onnx_outputs_equal_pytorch_for_every_model(name, tmp_path):
    """Every registered model exports (none is left out) with a dynamic batch, outputs named code / logits /
    recon, equal to PyTorch's within 1e-4."""
    from aeclass.export import Outputs, _export_onnx
    shape = (3, 8, 8) if name == "fastcnn" else (1, 8, 8)
    torch.manual_seed(0)
    if name == "ladder":  # an untrained Ladder decoder's running statistics give inf - inf: train it briefly
        model = aeclass.train(aeclass.TrainConfig(data="digits", strategy="ladder", model="ladder", labels=50,
                                                  model_kwargs={"hidden": [32, 16]}, epochs=1, threads=1,
                                                  out=str(tmp_path / "ladder-run"), report=False),
                              log=lambda *a: None, progress=False).model
    else:
        model = create_model(name, shape, 10)
        with torch.no_grad():  # one training-mode pass gives BatchNorm its running statistics
            model.train()(torch.rand(16, *shape))
    model.eval()
    ck = {"image_shape": list(shape), "model_spec": model.spec}
    path = _export_onnx(model, ck, tmp_path / name, required=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert names == Outputs(model).names
    for n in (1, 5):  # the batch is dynamic
        x = torch.rand(n, *shape)
        ref = model(x)
        outs = session.run(None, {"image": x.numpy()})
        for k, v in zip(names, outs):
            assert np.allclose(v, ref[k].detach().numpy(), atol=1e-4), (name, k)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("exp")
    assert main(["train", "--data", "digits", "--labels", "200", "--strategy", "joint", "--model", "hybrid",
                 "--model-opt", "widths=[8,16]", "--model-opt", "code_dim=16", "--epochs", "2", "--tta-flip",
                 "--threads", "1", "--quiet", "--no-report", "--out", str(d / "run")]) == 0
    assert main(["export", str(d / "run"), "--out", str(d / "m")]) == 0
    return d


def test_every_saved_form_predicts_and_evaluates_alike(exported, capsys):
    forms = [exported / "run", exported / "run" / "checkpoints" / "last.pt", exported / "m.safetensors",
             exported / "m.onnx"]
    meta = json.loads((exported / "m.json").read_text())
    assert meta["outputs"]["onnx"] == ["code", "logits", "recon"] and meta["input"]["range"] == [0, 1]
    assert meta["test_time"]["flip"] is True and meta["classes"] == [str(i) for i in range(10)]
    assert meta["input"]["shape"][1:] == [1, 8, 8] and len(meta["input"]["normalisation"]["mean"]) == 1
    capsys.readouterr()
    results = []
    for f in forms:
        assert main(["predict", str(f), str(DIGITS), "--json", "--top-k", "2"]) == 0
        results.append(json.loads(capsys.readouterr().out))
        assert main(["evaluate", str(f), "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out)["test_accuracy"])
    preds, accs = results[0::2], results[1::2]
    for p in preds[1:]:
        assert [r["classes"] for r in p] == [r["classes"] for r in preds[0]]
        assert np.allclose([r["probabilities"] for r in p], [r["probabilities"] for r in preds[0]], atol=1e-4)
    assert max(accs) - min(accs) < 1e-6, accs
    assert accs[0] == json.loads((exported / "run" / "metrics.json").read_text())["test_accuracy"]


def test_load_takes_arrays_pil_images_and_paths(exported):
    from PIL import Image
    files = sorted(DIGITS.glob("*.png"))
    clf = aeclass.load(exported / "m.onnx")
    by_path = clf.predict([str(f) for f in files])
    arrays = np.stack([np.asarray(Image.open(f)) for f in files])  # (N, 8, 8) uint8
    assert list(clf.predict(arrays)) == list(by_path)
    assert list(clf.predict([Image.open(f) for f in files])) == list(by_path)
    assert list(aeclass.load(exported / "run").predict(arrays.astype(np.float32) / 255)) == list(by_path)
    assert clf.predict_proba(arrays).shape == (8, 10) and clf.encode(arrays).shape == (8, 16)
    with pytest.raises(aeclass.AeclassError, match="expected arrays of shape"):
        clf.predict(np.zeros((2, 5, 5)))


def test_predict_skips_unreadable_files_only_when_asked(exported, tmp_path, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for f in sorted(DIGITS.glob("*.png"))[:3]:
        (imgs / f.name).write_bytes(f.read_bytes())
    (imgs / "zz-broken.png").write_bytes(b"not a png")
    capsys.readouterr()
    assert main(["predict", str(exported / "run"), str(imgs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "zz-broken.png" in err[0]
    assert main(["predict", str(exported / "run"), str(imgs), "--skip-errors"]) == 0
    cap = capsys.readouterr()
    assert len(cap.out.strip().splitlines()) == 3 and "skipped" in cap.err and "zz-broken.png" in cap.err
