"""report.html: sections per kind of run, embedded images, numbers, self-containment, sweeps, a real browser."""
import base64
import io
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from aeclass.cli import main as cli_main
from aeclass.config import TrainConfig
from aeclass.errors import AeclassError
from aeclass.report import plot_accuracy_vs_labels, write_report
from aeclass.train import train

CHROMIUM = Path("/usr/bin/chromium")
SMALL = {"widths": (8, 16), "code_dim": 16}  # a small hybrid keeps the fixtures fast; same parts as the default
RUN_SECTIONS = ["summary", "curves", "reconstructions", "latent", "confusion", "errors", "saliency"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models train fastest on one thread (and spinning OpenMP threads on a busy CI machine cost
    seconds per step); train(threads=1) sets this process-wide, so restore it for the other test files."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _train(tmp_path_factory, name, **kw) -> Path:
    out = tmp_path_factory.mktemp("runs") / name
    train(TrainConfig(data="digits", out=str(out), threads=1, **kw), log=lambda *a: None, progress=False)
    return out


@pytest.fixture(scope="module")
def joint(tmp_path_factory):
    """Joint training of a hybrid (decoder + head), through the command line, which writes the report at the
    end (the Python API's train() leaves reports to aeclass.report.write_report)."""
    from aeclass.cli import main
    run = tmp_path_factory.mktemp("runs") / "joint"
    assert main(["train", "--data", "digits", "--labels", "100", "--epochs", "2", "--threads", "1", "--quiet",
                 "--model-opt", f"widths={list(SMALL['widths'])}", "--model-opt", f"code_dim={SMALL['code_dim']}",
                 "--out", str(run)]) == 0
    assert (run / "report.html").is_file()
    return run, (run / "report.html").read_text()


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    run = _train(tmp_path_factory, "cnn", strategy="supervised", model="cnn", labels=200, epochs=2,
                 model_kwargs={"widths": (8, 16), "dense": 32}, report=False)
    return run, write_report(run).read_text()


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    run = _train(tmp_path_factory, "ae", strategy="autoencoder", model="mlp_ae", epochs=1, report=False)
    return run, write_report(run).read_text()


def section_ids(page: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)"', page)


def section(page: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', page, re.S)
    assert m, f"no section {sid}"
    return m.group(1)


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def assert_self_contained(page: str) -> None:
    low = page.lower()
    for bad in ("http://", "https://", 'src="//', "href=\"//", "<script src", "<link", "url(", "@import"):
        assert bad not in low, bad
    for attr in re.findall(r'\bsrc="([^"]*)"', page):
        assert attr.startswith("data:image/png;base64,"), attr[:60]
    for attr in re.findall(r'\bhref="([^"]*)"', page):
        assert attr.startswith("#"), attr


# ------------------------------------------------------------------------------------------- sections
def test_joint_run_has_every_run_section(joint):
    run, page = joint
    ids = section_ids(page)
    assert ids[0] == "summary"
    assert set(RUN_SECTIONS) <= set(ids)
    assert "sweep" not in ids
    assert "Grad-CAM" in section(page, "saliency")


def test_run_without_decoder_has_no_reconstructions(cnn):
    _, page = cnn
    ids = section_ids(page)
    assert "reconstructions" not in ids
    assert {"summary", "curves", "latent", "confusion", "errors", "saliency"} <= set(ids)
    assert "the model has no decoder" in page
    assert "PSNR" not in section(page, "summary")


def test_autoencoder_run_has_no_classification_sections(autoencoder):
    _, page = autoencoder
    ids = section_ids(page)
    assert {"summary", "curves", "reconstructions", "latent"} <= set(ids)
    assert not {"confusion", "errors", "saliency"} & set(ids)
    assert 'data-key="test_accuracy"' not in page  # the head was never trained: its accuracy means nothing


# ------------------------------------------------------------------------------------------- content
@pytest.mark.parametrize("fixture", ["joint", "cnn", "autoencoder"])
def test_embedded_images_decode_and_match_png_files(fixture, request):
    run, page = request.getfixturevalue(fixture)
    pngs = embedded_pngs(page)
    assert len(pngs) == page.count("<img ") and pngs
    for data in pngs:
        im = Image.open(io.BytesIO(data))
        im.load()
        assert im.format == "PNG" and im.width > 100 and im.height > 50
    files = sorted((run / "report").glob("*.png"))
    assert sorted(p.read_bytes() for p in files) == sorted(pngs)
    assert not list((run / "report").glob(".*.tmp"))  # atomic writes leave no temporary files


def test_summary_numbers_match_metrics_json(joint):
    run, page = joint
    m = json.loads((run / "metrics.json").read_text())
    summary = section(page, "summary")
    cards = dict(re.findall(r'data-key="([^"]+)" data-value="([^"]+)"', summary))
    assert float(cards["test_accuracy"]) == m["test_accuracy"]
    assert float(cards["test_recon_mse"]) == m["test_recon_mse"]
    assert float(cards["train_seconds"]) == m["train_seconds"]
    assert math.isclose(float(cards["test_psnr"]), 10 * math.log10(1 / m["test_recon_mse"]))
    assert f"{m['test_accuracy'] * 100:.2f}%" in summary
    assert f"{m['test_recon_mse']:.5f}" in summary
    assert f"{10 * math.log10(1 / m['test_recon_mse']):.2f} dB" in summary
    assert f"{m['train_seconds']:.1f} s" in summary
    for key in ("n_labelled", "n_unlabelled", "n_train", "n_test"):
        assert f"<td>{m[key]}</td>" in summary, key
    assert "1 × 8 × 8" in summary
    precision = json.loads((run / "run.json").read_text())["precision"]  # what the run computed in
    assert precision in ("fp32", "bf16") and f"<tr><th>precision</th><td>{precision}</td></tr>" in summary
    # the confusion matrix section counts what metrics.json counts
    assert f"{sum(map(sum, m['confusion_matrix']))} test images" in section(page, "confusion")


def test_page_is_self_contained(joint, cnn):
    for _, page in (joint, cnn):
        assert_self_contained(page)
        assert "Content-Security-Policy" in page


def test_text_from_files_is_escaped(joint, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(joint[0], run)
    m = json.loads((run / "metrics.json").read_text())
    m["classes"][3] = "<b>three</b>&"
    (run / "metrics.json").write_text(json.dumps(m))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["augment"] = '"><script>alert(1)</script>'
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    page = write_report(run).read_text()
    assert "<b>three</b>" not in page and "&lt;b&gt;three&lt;/b&gt;&amp;" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page
    assert page.count("<script") == 1  # only the page's own image-load check


def test_report_without_dataset_keeps_file_based_sections(joint, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(joint[0], run)
    (run / "report.html").unlink()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"] = f"folder:{tmp_path / 'gone'}"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    page = write_report(run).read_text()
    ids = section_ids(page)
    assert {"summary", "curves", "confusion"} <= set(ids)
    assert not {"reconstructions", "latent", "errors", "saliency"} & set(ids)
    assert "could not be loaded" in section(page, "summary")
    pngs = embedded_pngs(page)
    assert len(pngs) == 3  # curves, confusion, per-class accuracy
    assert sorted(p.read_bytes() for p in (run / "report").glob("*.png")) == sorted(pngs)  # stale ones removed


def test_tsne_latent_and_max_points(joint, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(joint[0], run)
    page = write_report(run, latent="tsne", max_points=120).read_text()
    latent = section(page, "latent")
    assert "t-SNE" in latent and "120 of the 360 test images" in latent


def test_cli_report(joint, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(joint[0], run)
    (run / "report.html").unlink()
    assert cli_main(["report", str(run), "--latent", "pca"]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")
    assert (run / "report.html").is_file()


def test_not_a_run_directory(tmp_path):
    with pytest.raises(AeclassError, match="no such run directory"):
        write_report(tmp_path / "missing")
    with pytest.raises(AeclassError, match="not a run directory"):
        write_report(tmp_path)
    (tmp_path / "metrics.csv").write_text("phase,epoch\n")
    with pytest.raises(AeclassError, match="latent"):
        write_report(tmp_path, latent="umap")


# ------------------------------------------------------------------------------------------- sweeps
SWEEP_ROWS = [("joint", "10", 0, 0.61), ("joint", "10", 1, 0.65), ("joint", "100", 0, 0.88), ("joint", "100", 1, 0.90),
              ("joint", "all", 0, 0.97), ("joint", "all", 1, 0.98), ("supervised", "10", 0, 0.41),
              ("supervised", "10", 1, 0.47), ("supervised", "100", 0, 0.80), ("supervised", "all", 0, 0.96)]


def _write_sweep(d: Path) -> None:
    lines = ["strategy,labels,seed,test_accuracy,test_recon_mse,train_seconds,n_train"]
    for s, lab, seed, acc in SWEEP_ROWS:
        mse = "0.012" if s == "joint" else ""
        lines.append(f"{s},{lab},{seed},{acc},{mse},{3.5 + seed},1437")
    d.mkdir(parents=True, exist_ok=True)
    (d / "results.csv").write_text("\n".join(lines) + "\n")
    (d / "summary.md").write_text("# Sweep <digits>\n| strategy | acc |\n")


def test_sweep_directory(tmp_path):
    d = tmp_path / "sweep"
    _write_sweep(d)
    page = write_report(d).read_text()
    assert section_ids(page) == ["sweep"]
    body = section(page, "sweep")
    assert "63.00 ± 2.00" in body      # joint, 10 labels: mean ± std over two seeds, in %
    assert "44.00 ± 3.00" in body
    assert "96.00" in body             # one seed: no ± part
    assert "&lt;digits&gt;" in body    # summary.md shown, escaped
    pngs = embedded_pngs(page)
    assert len(pngs) == 1 and Image.open(io.BytesIO(pngs[0])).format == "PNG"
    assert (d / "report" / "accuracy_vs_labels.png").read_bytes() == pngs[0]
    assert_self_contained(page)


def test_plot_accuracy_vs_labels_is_reusable(tmp_path):
    rows = [{"strategy": s, "labels": lab, "seed": str(seed), "test_accuracy": str(a)} for s, lab, seed, a in SWEEP_ROWS]
    out = tmp_path / "fig" / "acc.png"
    data = plot_accuracy_vs_labels(rows, out)
    assert out.read_bytes() == data
    assert Image.open(out).size[0] > 300


# ------------------------------------------------------------------------------------------- browser
def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars", f"--user-data-dir={profile}"]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=90)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs headless Chromium at /usr/bin/chromium "
                    "(apt-get install chromium)")
def test_report_renders_in_headless_chromium(joint, tmp_path):
    run, page = joint
    url = (run / "report.html").resolve().as_uri()
    shot = tmp_path / "shot.png"
    r = _chromium([f"--screenshot={shot}", "--window-size=1200,3000", url], tmp_path / "profile1")
    assert shot.is_file(), r.stderr[-2000:]
    im = Image.open(shot).convert("L")
    assert im.size == (1200, 3000)
    lo, hi = im.getextrema()
    assert hi - lo > 100 and len(im.getcolors(256 * 256) or range(999)) > 20  # not blank

    dom = _chromium(["--dump-dom", "--virtual-time-budget=5000", url], tmp_path / "profile2")
    loaded = re.search(r'data-images-loaded="(\d+)"', dom.stdout)
    total = re.search(r'data-images-total="(\d+)"', dom.stdout)
    assert loaded and total, dom.stdout[:500] + dom.stderr[-2000:]
    assert int(loaded.group(1)) == int(total.group(1)) == len(embedded_pngs(page)) > 0
    assert "http://" not in dom.stdout and "https://" not in dom.stdout
