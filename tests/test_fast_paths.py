"""The engine's fast paths give the same answers as the plain ones: bf16 autocast vs fp32, channels_last
vs contiguous, torch.compile vs eager, and the EMA of the weights."""
import copy
import json
import platform
import shutil
import sys

import pytest
import torch

from aeclass import TrainConfig, train
from aeclass.checkpoint import load_checkpoint
from aeclass.data import load_dataset
from aeclass import device
from aeclass.device import resolve_precision, use_channels_last
from aeclass.engine import EMA
from aeclass.evaluation import shifted, tta_logits
from aeclass.models import create_model
from aeclass.report.run import read_metrics_csv
from conftest import assert_same_weights

QUIET = dict(log=lambda *a: None, progress=False)


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def digits_batch(n=64):
    ds = load_dataset("digits")
    return ds.train_x[:n].float() / 255, ds.train_y[:n]


def cfg(tmp_path, name, **kw):
    base = dict(data="digits", strategy="supervised", model="cnn", epochs=6, batch_size=64, threads=1,
                out=str(tmp_path / name), report=False)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("name", ["hybrid", "resnet"])
def test_bf16_forward_agrees_with_fp32(name, one_thread):
    torch.manual_seed(0)
    model = create_model(name, (1, 8, 8), 10).eval()
    x, _ = digits_batch()
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    for key in ("logits", "recon"):
        err = (low[key].float() - ref[key]).abs().max() / ref[key].abs().max()
        assert err < 0.05, (key, float(err))  # bf16 keeps 8 bits of mantissa: ~1 % per op
    # Predictions mostly agree even for an untrained model (whose logits are close together).
    assert (low["logits"].argmax(1) == ref["logits"].argmax(1)).float().mean() > 0.8


def test_bf16_training_reaches_fp32_accuracy(tmp_path):
    fp32 = train(cfg(tmp_path, "fp32"), **QUIET).metrics["test_accuracy"]
    bf16 = train(cfg(tmp_path, "bf16", precision="bf16"), **QUIET).metrics["test_accuracy"]
    assert fp32 > 0.85
    assert abs(bf16 - fp32) < 0.03, (fp32, bf16)


def test_auto_precision_is_bf16_only_where_the_hardware_has_it(monkeypatch):
    cpu = torch.device("cpu")
    if platform.machine().lower() in ("x86_64", "amd64"):  # the probe is the CPU's own flags
        assert device.native_bf16(cpu) == bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    for native, want in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(device, "native_bf16", lambda d, native=native: native)
        assert resolve_precision(cpu, "auto") == want
        assert (resolve_precision(cpu, "fp32"), resolve_precision(cpu, "bf16")) == ("fp32", "bf16")  # as asked


@pytest.mark.parametrize("major, native", [(7, False), (8, True), (9, True)])
def test_a_cuda_gpu_has_bf16_from_ampere_on(monkeypatch, major, native):
    """Turing and older GPUs emulate bf16 (torch.cuda.is_bf16_supported() still says yes there by default)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: type("Props", (), {"major": major})())
    assert device.native_bf16(torch.device("cuda:0")) is native
    assert resolve_precision(torch.device("cuda:0"), "auto") == ("bf16" if native else "fp32")


@pytest.mark.parametrize("native", [True, False])
def test_an_auto_run_computes_and_records_what_the_hardware_has(tmp_path, monkeypatch, native):
    monkeypatch.setattr(device, "native_bf16", lambda d: native)
    lines = []
    auto = train(cfg(tmp_path, "auto", precision="auto", epochs=2), log=lines.append, progress=False)
    same = train(cfg(tmp_path, "same", precision="bf16" if native else "fp32", epochs=2), **QUIET)
    assert json.loads((auto.run_dir / "run.json").read_text())["precision"] == ("bf16" if native else "fp32")
    assert auto.metrics["test_accuracy"] == same.metrics["test_accuracy"]  # the same arithmetic, the same seed
    a, b = (load_checkpoint(r.run_dir / "checkpoints" / "last.pt")["model_state"] for r in (auto, same))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any("--precision" in line for line in lines)  # auto never warns


@pytest.mark.parametrize("native", [True, False])
def test_bf16_where_it_is_only_emulated_says_so_in_one_line(tmp_path, monkeypatch, native):
    monkeypatch.setattr(device, "native_bf16", lambda d: native)
    lines = []
    r = train(cfg(tmp_path, "bf16", precision="bf16", epochs=1), log=lines.append, progress=False)
    notes = [line for line in lines if line.startswith("note: --precision bf16")]
    assert len(notes) == (0 if native else 1)
    assert all("emulated" in n and "--precision auto" in n for n in notes)
    assert json.loads((r.run_dir / "run.json").read_text())["precision"] == "bf16"  # it asked, it got bf16


def test_a_run_resumed_where_bf16_is_missing_goes_on_in_fp32_and_run_json_says_so(tmp_path, monkeypatch,
                                                                                 interrupt_training):
    monkeypatch.setattr(device, "native_bf16", lambda d: True)
    r = interrupt_training.resume_after_cut(cfg(tmp_path, "moved", precision="auto", epochs=2), 1, before_resume=lambda:
                                            monkeypatch.setattr(device, "native_bf16", lambda d: False))
    info = json.loads((r.run_dir / "run.json").read_text())
    assert info["precision"] == "bf16" and [s["precision"] for s in info["resumed"]] == ["fp32"]
    assert len(read_metrics_csv(r.run_dir / "metrics.csv")) == 2  # both epochs, one in each precision


def test_no_preset_asks_for_emulated_bf16():
    """A preset that named bf16 would run many times slower on a CPU without it; `auto` picks what is fast."""
    from aeclass.presets import PRESETS
    assert {p.get("precision", "fp32") for p in PRESETS.values()} <= {"fp32", "auto"}
    assert any(p.get("precision") == "auto" for p in PRESETS.values())


def test_channels_last_is_used_for_conv_models_only_and_agrees():
    assert use_channels_last(create_model("hybrid", (1, 8, 8), 10), "auto")
    assert not use_channels_last(create_model("mlp_ae", (1, 8, 8), 10), "auto")
    assert not use_channels_last(create_model("hybrid", (1, 8, 8), 10), "contiguous")
    torch.manual_seed(0)
    model = create_model("resnet", (1, 8, 8), 10).eval()
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x, _ = digits_batch()
    with torch.no_grad():
        a, b = model(x), nhwc(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(a["logits"], b["logits"], atol=1e-4)
    assert torch.allclose(a["recon"], b["recon"], atol=1e-5)


def test_channels_last_training_matches_contiguous(tmp_path):
    a = train(cfg(tmp_path, "nchw", memory_format="contiguous", epochs=3), **QUIET)
    b = train(cfg(tmp_path, "nhwc", memory_format="channels_last", epochs=3), **QUIET)
    assert abs(a.metrics["test_accuracy"] - b.metrics["test_accuracy"]) < 0.02
    # Checkpoints hold contiguous tensors whatever the training layout (safetensors export needs them).
    ck = torch.load(b.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert all(v.is_contiguous() for v in ck["model_state"].values())


@pytest.mark.slow
@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                    reason="torch.compile on CPU needs a C++ compiler (none on PATH)")
def test_compiled_model_matches_eager(one_thread):
    torch.manual_seed(0)
    eager = create_model("resnet", (1, 8, 8), 10)
    compiled = copy.deepcopy(eager)
    for part in (compiled.encoder, compiled.decoder, compiled.head):
        part.compile()
    x, y = digits_batch()
    outs = []
    for model in (eager, compiled):
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out["logits"], y) + out["recon"].square().mean()
        loss.backward()
        outs.append((out, {k: p.grad.clone() for k, p in model.named_parameters()}))
    (oe, ge), (oc, gc) = outs
    assert torch.allclose(oe["logits"], oc["logits"], atol=1e-4)
    assert torch.allclose(oe["recon"], oc["recon"], atol=1e-5)
    for k in ge:
        assert torch.allclose(ge[k], gc[k], atol=1e-3, rtol=1e-3), k
    # state_dict keys are untouched by the in-place compile, so checkpoints stay interchangeable.
    assert list(eager.state_dict()) == list(compiled.state_dict())


def test_ema_averages_weights():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.9)
    start = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(8, 3))  # moves the BN running statistics
    ema.update(model)
    d = min(0.9, 2 / 11)  # the warm-up decay of the first update
    w = model.state_dict()
    e = ema.model.state_dict()
    assert torch.allclose(e["0.weight"], d * start["0.weight"] + (1 - d) * w["0.weight"])
    assert torch.allclose(e["1.running_mean"], d * start["1.running_mean"] + (1 - d) * w["1.running_mean"])
    assert int(e["1.num_batches_tracked"]) == int(w["1.num_batches_tracked"])
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_training_with_ema_saves_the_average(tmp_path):
    r = train(cfg(tmp_path, "ema", ema=0.9, epochs=2), **QUIET)
    ck = torch.load(r.run_dir / "checkpoints" / "last.pt", weights_only=True)
    best = torch.load(r.run_dir / "checkpoints" / "best.pt", weights_only=True)
    for k, v in r.model.state_dict().items():  # the returned (and evaluated) model is the average
        assert torch.equal(v, ck["model_state"][k]), k
    assert "train_model_state" not in best  # best.pt is for use, not for resuming
    assert r.metrics["test_accuracy"] > 0.5


def test_shifted_moves_pixels_with_zero_fill():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    down_right = shifted(x, 1, 1)
    assert torch.equal(down_right[0, 0, 1:, 1:], x[0, 0, :3, :3])
    assert down_right[0, 0, 0].abs().sum() == 0 and down_right[0, 0, :, 0].abs().sum() == 0
    assert torch.equal(shifted(down_right, -1, -1)[0, 0, :3, :3], x[0, 0, :3, :3])
    assert torch.equal(shifted(x, 0, 0), x)


def test_tta_logits_average_the_named_views(one_thread):
    torch.manual_seed(0)
    model = create_model("cnn", (1, 8, 8), 10).eval()
    x, _ = digits_batch(16)
    with torch.no_grad():
        scores = lambda v: model(v, decode=False)["logits"].float()  # noqa: E731
        base = scores(x)
        assert torch.equal(tta_logits(model, x, base, flip=False, shift=0), base)
        views = [x, x.flip(3), shifted(x, 2, 2), shifted(x, -2, -2), shifted(x.flip(3), 2, 2), shifted(x.flip(3), -2, -2)]
        want = torch.stack([scores(v) for v in views]).mean(0)
        assert torch.allclose(tta_logits(model, x, base, flip=True, shift=2), want, atol=1e-5)
        want = torch.stack([scores(v) for v in views[:1] + views[2:4]]).mean(0)
        assert torch.allclose(tta_logits(model, x, base, flip=False, shift=2), want, atol=1e-5)


def test_tta_shift_is_recorded_and_validated(tmp_path):
    r = train(cfg(tmp_path, "tta", tta_shift=1), **QUIET)  # digits: shifts keep the class, mirrors do not
    assert r.metrics["eval_seconds"] > 0 and r.metrics["test_accuracy"] > 0.5
    from aeclass.inference import evaluate_checkpoint  # evaluates with the run's own test-time views
    again = evaluate_checkpoint(r.run_dir / "checkpoints" / "last.pt")
    assert again["test_accuracy"] == pytest.approx(r.metrics["test_accuracy"], abs=1e-6)
    from aeclass import build_config
    from aeclass.errors import ConfigError
    with pytest.raises(ConfigError, match="--tta-shift"):
        build_config(overrides={"tta_shift": -1})


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_fused_optimizer_steps_like_the_default_kernels(optimizer, one_thread):
    """--fused-optimizer changes only the kernels: ten steps on the same gradients land on the same weights
    up to float rounding."""
    from aeclass.engine import make_optimizer
    torch.manual_seed(0)
    model = create_model("mlp_ae", (1, 8, 8), None, code_dim=4)
    x, _ = digits_batch()
    runs = []
    for fused in (False, True):
        m = copy.deepcopy(model)
        opt = make_optimizer(list(m.parameters()), TrainConfig(optimizer=optimizer, lr=1e-2, weight_decay=1e-4,
                                                               fused_optimizer=fused))
        assert bool(opt.defaults.get("fused")) == fused
        for _ in range(10):
            opt.zero_grad()
            ((m(x)["recon"] - x) ** 2).mean().backward()
            opt.step()
        runs.append(m.state_dict())
    for k in runs[0]:
        torch.testing.assert_close(runs[0][k], runs[1][k], rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(runs[0][k], model.state_dict()[k]) for k in runs[0])  # it did train


def test_fused_optimizer_trains_and_is_recorded(tmp_path):
    r = train(cfg(tmp_path, "fused", fused_optimizer=True, epochs=3), **QUIET)
    assert r.metrics["test_accuracy"] > 0.8
    assert "fused_optimizer: true" in (r.run_dir / "config.yaml").read_text()


def test_allocator_tuning_is_applied_once_recorded_and_can_be_turned_off(tmp_path, monkeypatch):
    import aeclass.cpu as cpu
    monkeypatch.setattr(cpu, "_applied", None)
    monkeypatch.setenv("AECLASS_MALLOC_TUNING", "0")
    assert cpu.tune_allocator() is None
    monkeypatch.delenv("AECLASS_MALLOC_TUNING")
    applied = cpu.tune_allocator()
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert applied == "glibc mallopt: mmap_threshold 32 MiB, trim_threshold 256 MiB"
    assert cpu.tune_allocator() == applied  # once per process
    r = train(cfg(tmp_path, "alloc", epochs=1), **QUIET)
    assert json.loads((r.run_dir / "run.json").read_text())["allocator"] == applied


def test_test_every_skips_monitoring_passes_but_not_the_result(tmp_path):
    every = train(cfg(tmp_path, "every", epochs=5), **QUIET)
    sparse = train(cfg(tmp_path, "sparse", epochs=5, test_every=2), **QUIET)
    final_only = train(cfg(tmp_path, "final", epochs=5, test_every=0), **QUIET)
    scored = lambda r: [row["epoch"] for row in read_metrics_csv(r.run_dir / "metrics.csv")  # noqa: E731
                        if row["test_accuracy"] is not None]
    assert scored(every) == [1, 2, 3, 4, 5] and scored(sparse) == [2, 4, 5] and scored(final_only) == [5]
    for r in (sparse, final_only):  # monitoring never touches training: same weights, same final metrics
        assert r.metrics["test_accuracy"] == every.metrics["test_accuracy"]
        assert_same_weights(r.model, every.model)
    from aeclass import build_config
    from aeclass.errors import ConfigError
    with pytest.raises(ConfigError, match="--test-every"):
        build_config(overrides={"test_every": -1})
