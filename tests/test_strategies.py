"""Every strategy end-to-end on digits, the run directory, resume and --init."""
import csv
import json

import pytest
import torch
import yaml

from aeclass import TrainConfig, train
from aeclass.errors import AeclassError, ConfigError
from aeclass.inference import load_model
from conftest import assert_same_weights

QUIET = dict(log=lambda *a: None, progress=False)

EXPECT = {  # strategy -> (phases, has accuracy, has recon)
    "autoencoder": (["autoencoder"], False, True),
    "supervised": (["supervised"], True, True),
    "pretrain-finetune": (["pretrain", "finetune"], True, True),
    "linear-probe": (["pretrain", "probe"], True, True),
    "joint": (["joint"], True, True),
}


def tiny(tmp_path, **kw):
    base = dict(data="digits", labels=50, epochs=2, batch_size=64, out=str(tmp_path / "run"), report=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("strategy", list(EXPECT))
def test_strategy_end_to_end(tmp_path, strategy):
    r = train(tiny(tmp_path, strategy=strategy, pretrain_epochs=1), **QUIET)
    phases, has_acc, has_recon = EXPECT[strategy]
    m = json.loads((r.run_dir / "metrics.json").read_text())
    assert m == json.loads(json.dumps(r.metrics))
    if strategy != "autoencoder":
        assert 0.2 < m["test_accuracy"] <= 1.0  # 10 classes: chance is 0.1
        assert len(m["confusion_matrix"]) == 10 and sum(map(sum, m["confusion_matrix"])) == m["n_test"]
    else:
        assert m["test_accuracy"] is None  # an untrained head's accuracy is not reported
    if strategy == "supervised":
        assert m["test_recon_mse"] is None  # the decoder never trained: its error is not reported
    else:
        assert m["test_recon_mse"] is not None and 0 < m["test_recon_mse"] < 0.2
    assert m["train_seconds"] > 0 and m["n_labelled"] == 50 and m["n_unlabelled"] == m["n_train"] - 50
    rows = list(csv.DictReader(open(r.run_dir / "metrics.csv")))
    assert [r_["phase"] for r_ in rows] == [p for p in phases for _ in range(2 if p not in ("pretrain",) else 1)]
    info = json.loads((r.run_dir / "run.json").read_text())
    assert info["seed"] == 0 and "torch" in info["versions"] and info["n_labelled"] == 50
    assert yaml.safe_load((r.run_dir / "config.yaml").read_text())["strategy"] == strategy
    assert (r.run_dir / "checkpoints" / "last.pt").is_file() and (r.run_dir / "checkpoints" / "best.pt").is_file()


def test_linear_probe_freezes_the_encoder(tmp_path):
    r = train(tiny(tmp_path, strategy="linear-probe", pretrain_epochs=1, epochs=1), **QUIET)
    ck = torch.load(r.run_dir / "checkpoints" / "last.pt", weights_only=True)
    history = ck["progress"]["history"]
    assert [h["phase"] for h in history] == ["pretrain", "probe"]
    # Re-run only the pretrain phase with the same seed: the encoder must be identical after the probe.
    r2 = train(tiny(tmp_path, strategy="autoencoder", epochs=1, out=str(tmp_path / "ae")), **QUIET)
    enc1 = {k: v for k, v in r.model.state_dict().items() if k.startswith("encoder.")}
    enc2 = {k: v for k, v in r2.model.state_dict().items() if k.startswith("encoder.")}
    for k in enc1:
        assert torch.equal(enc1[k], enc2[k]), k


@pytest.mark.slow
def test_same_seed_same_result_and_resume_continues_exactly(tmp_path):
    full = train(tiny(tmp_path, epochs=4, out=str(tmp_path / "full")), **QUIET)
    again = train(tiny(tmp_path, epochs=4, out=str(tmp_path / "again")), **QUIET)
    assert full.metrics["test_accuracy"] == again.metrics["test_accuracy"]
    # Stop after 2 epochs, then resume to 4: the same weights as the uninterrupted run.
    # Extending a finished 2-epoch run to 4 epochs is not the same schedule (cosine depends on the total),
    # so compare with a constant schedule instead.
    a = train(tiny(tmp_path, epochs=4, schedule="constant", out=str(tmp_path / "c_full")), **QUIET)
    train(tiny(tmp_path, epochs=2, schedule="constant", out=str(tmp_path / "c_part")), **QUIET)
    b = train(tiny(tmp_path, epochs=4, schedule="constant", out=str(tmp_path / "c_part")), resume=True, **QUIET)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    rows = list(csv.DictReader(open(tmp_path / "c_part" / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]


def test_resume_mid_run_after_interruption(tmp_path, interrupt_training):
    """Kill a run after its 2nd epoch (simulated), resume: same weights as an uninterrupted run."""
    ref = train(tiny(tmp_path, epochs=3, out=str(tmp_path / "ref")), **QUIET)
    resumed = interrupt_training.resume_after_cut(tiny(tmp_path, epochs=3, out=str(tmp_path / "cut")), 2)
    assert_same_weights(ref.model, resumed.model)
    assert resumed.metrics["test_accuracy"] == ref.metrics["test_accuracy"]


def test_init_from_a_pretrained_autoencoder(tmp_path):
    ae = train(tiny(tmp_path, strategy="autoencoder", epochs=1, out=str(tmp_path / "ae")), **QUIET)
    r = train(tiny(tmp_path, strategy="linear-probe", epochs=1, out=str(tmp_path / "probe")), init=str(ae.run_dir), **QUIET)
    assert [p["name"] for p in json.loads((r.run_dir / "run.json").read_text())["phases"]] == ["probe"]
    for k, v in ae.model.state_dict().items():
        if k.startswith("encoder."):
            assert torch.equal(v, r.model.state_dict()[k]), k
    with pytest.raises(ConfigError, match="do not fit|does not match"):
        train(tiny(tmp_path, strategy="linear-probe", model="cnn", out=str(tmp_path / "bad")), init=str(ae.run_dir), **QUIET)


def test_out_dir_is_never_overwritten(tmp_path):
    train(tiny(tmp_path, epochs=1), **QUIET)
    with pytest.raises(AeclassError, match="already holds a run"):
        train(tiny(tmp_path, epochs=1), **QUIET)
    with pytest.raises(AeclassError, match="no checkpoint"):
        train(tiny(tmp_path, epochs=1, out=str(tmp_path / "nothing")), resume=True, **QUIET)


def test_nonfinite_loss_stops_the_run(tmp_path):
    with pytest.raises(AeclassError, match="diverged"):
        train(tiny(tmp_path, lr=1e12, optimizer="sgd", schedule="constant", epochs=3), **QUIET)


def test_checkpoint_rebuilds_the_model(tmp_path):
    r = train(tiny(tmp_path, epochs=1), **QUIET)
    model, ck = load_model(r.run_dir)
    for k, v in r.model.state_dict().items():  # the saved weights are exactly the trained ones
        assert torch.equal(v, model.state_dict()[k]), k
    x = torch.rand(2, 1, 8, 8)
    r.model.eval()
    with torch.no_grad():  # the trained model runs channels_last, the rebuilt one contiguous: rounding differs
        assert torch.allclose(model(x)["logits"], r.model(x)["logits"], atol=1e-5)
    assert ck["classes"] == [str(i) for i in range(10)]


def test_strategy_needing_a_decoder_rejects_cnn(tmp_path):
    with pytest.raises(ConfigError, match="needs a model with a decoder"):
        train(tiny(tmp_path, strategy="joint", model="cnn"), **QUIET)


@pytest.mark.slow
def test_bf16_autocast_trains(tmp_path):
    r = train(tiny(tmp_path, precision="bf16", epochs=2), **QUIET)
    assert r.metrics["test_accuracy"] > 0.2


def test_builtin_data_can_be_resized_and_given_channels(tmp_path):
    """--image-size / --channels apply to built-in sources too (e.g. digits as 16x16 RGB)."""
    r = train(tiny(tmp_path, strategy="supervised", model="cnn", epochs=1, image_size=16, channels=3), **QUIET)
    assert r.model.input_shape == (3, 16, 16)
    info = json.loads((r.run_dir / "run.json").read_text())
    assert info["data"]["image_shape"] == [3, 16, 16] and "(1, 8, 8) -> (3, 16, 16)" in info["data"]["resize"]
    with pytest.raises(AeclassError, match="channels"):
        train(tiny(tmp_path, channels=2, out=str(tmp_path / "bad")), **QUIET)
