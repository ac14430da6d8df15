"""aeclass sample / interpolate / encode / decode on small digits runs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import aeclass
from aeclass.cli import main
from aeclass.codes import read_codes
from aeclass.data import load_dataset, to_float
from aeclass.generate import sample
from aeclass.inference import load_model

DIGITS = Path(__file__).parent / "golden" / "old-run-images"  # eight 8x8 digit PNGs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    quiet = dict(log=lambda *a: None, progress=False)
    base = dict(data="digits", augment="none", report=False, threads=1, batch_size=32)
    vae = aeclass.train(aeclass.TrainConfig(strategy="vae-joint", model="vae_mlp", labels=200, epochs=15,
                                            model_kwargs={"code_dim": 8, "hidden": [64]}, out=str(root / "vae"), **base), **quiet)
    ae = aeclass.train(aeclass.TrainConfig(strategy="autoencoder", model="mlp_ae", epochs=3, out=str(root / "ae"), **base),
                       **quiet)
    cnn = aeclass.train(aeclass.TrainConfig(strategy="supervised", model="cnn", epochs=1, labels=50, out=str(root / "cnn"),
                                            **base), **quiet)
    return {"vae": vae.run_dir, "ae": ae.run_dir, "cnn": cnn.run_dir}


def test_sample_grid_and_seeds(runs, tmp_path, capsys):
    assert main(["sample", str(runs["vae"]), "--n", "12", "--cols", "4", "--out", str(tmp_path / "g.png")]) == 0
    assert "prior N(0, I)" in capsys.readouterr().out
    img = np.asarray(Image.open(tmp_path / "g.png"))
    assert img.shape == (3 * 33 - 1, 4 * 33 - 1)  # 8x8 digits enlarged 4x, 1-pixel gutters
    a, _ = sample(runs["vae"], 6, seed=1)
    b, _ = sample(runs["vae"], 6, seed=1)
    c, _ = sample(runs["vae"], 6, seed=2)
    assert a.shape == (6, 1, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)


def test_class_conditional_samples_are_of_that_class(runs):
    model, _ = load_model(runs["vae"])
    x, source = sample(runs["vae"], 200, klass="3", seed=0)
    assert "'3'" in source
    with torch.no_grad():
        pred = model(x, decode=False)["logits"].argmax(1)
    assert float((pred == 3).float().mean()) > 0.5  # chance: 0.1
    with pytest.raises(aeclass.AeclassError, match="unknown class"):
        sample(runs["vae"], 2, klass="cat")


def test_a_plain_autoencoder_samples_its_codes_gaussian_and_a_classifier_refuses(runs, capsys):
    x, source = sample(runs["ae"], 4)
    assert x.shape == (4, 1, 8, 8) and "fitted to the codes" in source
    with pytest.raises(aeclass.AeclassError, match="class"):
        sample(runs["ae"], 4, klass="1")  # an autoencoder run trained no head
    assert main(["sample", str(runs["cnn"]), "--out", "never.png"]) == 2
    assert "no trained decoder" in capsys.readouterr().err and not Path("never.png").exists()


def test_interpolation_ends_are_the_images_reconstructions(runs, tmp_path):
    from aeclass.generate import interpolate
    from aeclass.inference import load_images
    a, b = sorted(DIGITS.glob("*.png"))[:2]
    strip = interpolate(runs["vae"], a, b, steps=5)
    model, ck = load_model(runs["vae"])
    with torch.no_grad():
        ends = model(to_float(load_images([a, b], ck["image_shape"])))["recon"]
    assert strip.shape == (5, 1, 8, 8) and torch.allclose(strip[0], ends[0], atol=1e-6) and torch.allclose(strip[-1], ends[1], atol=1e-6)
    assert main(["interpolate", str(runs["vae"]), str(a), str(b), "--steps", "5", "--out", str(tmp_path / "s.png")]) == 0
    assert np.asarray(Image.open(tmp_path / "s.png")).shape == (32, 5 * 33 - 1)


def test_decode_equals_the_models_reconstructions(runs, tmp_path, capsys):
    run = runs["vae"]
    assert main(["encode", str(run), "--out", str(tmp_path / "c.npz")]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["n"] == 360 and meta["bytes_per_image"] == 8 * 4 and meta["header_bytes"] == 0
    # the distortion encode reports is the run's own test reconstruction error
    assert meta["recon_mse"] == pytest.approx(json.loads((run / "metrics.json").read_text())["test_recon_mse"], rel=1e-5)
    assert main(["decode", str(run), str(tmp_path / "c.npz"), "--out", str(tmp_path / "png")]) == 0
    files = sorted((tmp_path / "png").glob("*.png"))
    decoded = np.stack([np.asarray(Image.open(f)) for f in files])
    model, _ = load_model(run)
    with torch.no_grad():
        recon = model(to_float(load_dataset("digits").test_x))["recon"]
    expected = (recon.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()
    assert len(files) == 360 and np.array_equal(decoded, expected)


def test_dtypes_sizes_and_csv(runs, tmp_path, capsys):
    run = runs["vae"]
    sizes, mses = {}, {}
    for dtype in ("float32", "float16", "int8"):
        main(["encode", str(run), "--dtype", dtype, "--out", str(tmp_path / f"{dtype}.npz")])
        m = json.loads(capsys.readouterr().out)
        sizes[dtype], mses[dtype] = m["bytes_per_image"], m["recon_mse"]
    assert sizes == {"float32": 32, "float16": 16, "int8": 8}
    # 256 levels per dimension cost little: quantisation noise moves the error by a small fraction either way
    assert 0.9 * mses["float32"] < mses["int8"] < 1.5 * mses["float32"] and mses["int8"] != mses["float32"]
    f32, labels, _, _ = read_codes(tmp_path / "float32.npz")
    q8, _, _, meta = read_codes(tmp_path / "int8.npz")
    assert meta["header_bytes"] == 2 * 8 * 4 and np.abs(q8 - f32).max() <= 0.51 * (f32.max(0) - f32.min(0)).max() / 255
    assert np.array_equal(labels, load_dataset("digits").test_y.numpy())
    main(["encode", str(run), "--dtype", "int8", "--out", str(tmp_path / "int8.csv")])
    capsys.readouterr()
    q8csv, labels_csv, _, _ = read_codes(tmp_path / "int8.csv")
    assert np.array_equal(q8csv, q8) and np.array_equal(labels_csv, labels)


def test_image_files_keep_their_names(runs, tmp_path, capsys):
    assert main(["encode", str(runs["ae"]), "--data", str(DIGITS), "--out", str(tmp_path / "f.npz")]) == 0
    _, _, names, meta = read_codes(tmp_path / "f.npz")
    assert meta["n"] == 8 and [Path(n).name for n in names] == sorted(p.name for p in DIGITS.glob("*.png"))
    capsys.readouterr()
    assert main(["decode", str(runs["ae"]), str(tmp_path / "f.npz"), "--out", str(tmp_path / "d")]) == 0
    assert sorted(p.name[6:] for p in (tmp_path / "d").glob("*.png")) == sorted(p.name for p in DIGITS.glob("*.png"))
    assert main(["decode", str(runs["vae"]), str(tmp_path / "f.npz"), "--out", str(tmp_path / "x")]) == 2  # 32 vs 8
    assert "code has 8" in capsys.readouterr().err


def test_the_report_of_a_vae_has_samples_and_a_traversal(runs):
    from aeclass.report import write_report
    page = write_report(runs["vae"]).read_text()
    assert "Latent traversal" in page and "decoded prior samples" in page
    assert (runs["vae"] / "report" / "traversal.png").is_file()
    assert "Latent traversal" not in write_report(runs["ae"]).read_text()  # a plain autoencoder has no prior
