"""Model `fastcnn` (aeclass/models/fastcnn.py) and the engine options its recipe uses: per-parameter
learning-rate scales, Nesterov momentum, layers set from the data."""
import pytest
import torch

from aeclass import TrainConfig, build_config, train
from aeclass.engine import make_optimizer, param_groups
from aeclass.errors import ConfigError
from aeclass.models import create_model
from aeclass.models.fastcnn import BN_BIAS_LR_SCALE
from conftest import assert_same_weights

QUIET = dict(log=lambda *a: None, progress=False)


def tiny(tmp_path, **kw):
    base = dict(data="digits", strategy="supervised", model="fastcnn", model_kwargs={"widths": [8, 16, 16], "temperature": 1.0},
                optimizer="sgd", lr=0.2, momentum=0.85, nesterov=True, weight_decay=1e-3, label_smoothing=0.2,
                epochs=2, batch_size=64, out=str(tmp_path / "run"), report=False)
    base.update(kw)
    return TrainConfig(**base)


def test_data_init_whitens_the_patches():
    """After data_init_ the stem's first half of filters maps 2x2 patches to decorrelated unit-variance
    components (the eigenvalue floor eps only shrinks the tiny ones); the second half is their negative."""
    torch.manual_seed(0)
    m = create_model("fastcnn", (3, 32, 32), num_classes=10)
    # correlated channels, smooth in space: far from white
    x = torch.nn.functional.avg_pool2d(torch.randn(200, 1, 34, 34), 3, 1).repeat(1, 3, 1, 1)
    x = x + 0.3 * torch.randn_like(x)
    m.encoder.data_init_(x)
    out = torch.nn.functional.conv2d(x, m.encoder.whiten.weight)  # without the bias
    half = out.shape[1] // 2
    flat = out[:, :half].permute(1, 0, 2, 3).reshape(half, -1)
    cov = flat @ flat.T / flat.shape[1]
    assert torch.allclose(cov, torch.eye(half), atol=0.02)
    assert torch.equal(m.encoder.whiten.weight[half:], -m.encoder.whiten.weight[:half])


def test_batchnorm_biases_get_the_lr_scale_and_a_matching_weight_decay():
    m = create_model("fastcnn", (3, 32, 32), num_classes=10)
    trainable = [p for p in m.parameters() if p.requires_grad]
    groups = param_groups(trainable, 0.01)
    scaled = [g for g in groups if g["lr_scale"] == BN_BIAS_LR_SCALE]
    assert len(groups) == 2 and len(scaled) == 1
    assert len(scaled[0]["params"]) == 6  # one bias per BatchNorm, two per group
    assert scaled[0]["weight_decay"] == pytest.approx(0.01 / BN_BIAS_LR_SCALE)
    assert not any(p is m.encoder.whiten.weight for g in groups for p in g["params"])


def test_the_engine_scales_each_groups_learning_rate(tmp_path):
    r = train(tiny(tmp_path, epochs=1, schedule="constant"), **QUIET)
    ckpt = torch.load(r.run_dir / "checkpoints" / "last.pt", weights_only=True)
    lrs = sorted((g["lr_scale"], g["lr"]) for g in ckpt["optimizer_state"]["param_groups"])
    assert lrs == [(1.0, pytest.approx(0.2)), (BN_BIAS_LR_SCALE, pytest.approx(0.2 * BN_BIAS_LR_SCALE))]
    assert all(g["nesterov"] for g in ckpt["optimizer_state"]["param_groups"])


def test_batchnorm_scales_stay_one_and_the_rest_trains(tmp_path):
    r = train(tiny(tmp_path), **QUIET)
    norms = [m for m in r.model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(bn.weight, torch.ones_like(bn.weight)) for bn in norms)
    assert all(bn.bias.abs().sum() > 0 for bn in norms)
    assert r.metrics["test_accuracy"] > 0.8  # digits, 2 epochs


def test_frozen_stem_is_not_trained(tmp_path):
    """The stem is set by data_init_ before training and left alone by the optimiser."""
    cfg = tiny(tmp_path, epochs=1)
    first = train(cfg, **QUIET).model.encoder.whiten.weight.clone()
    longer = train(tiny(tmp_path, epochs=3, out=str(tmp_path / "longer")), **QUIET).model.encoder.whiten.weight
    assert torch.equal(first, longer)  # same seed, same data sample: the same filters, untouched by training


def test_fastcnn_resumes_exactly(tmp_path, interrupt_training):
    ref = train(tiny(tmp_path, epochs=3, out=str(tmp_path / "ref")), **QUIET)
    resumed = interrupt_training.resume_after_cut(tiny(tmp_path, epochs=3, out=str(tmp_path / "cut")), 2)
    assert_same_weights(ref.model, resumed.model)


def test_nesterov_and_momentum_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="--nesterov needs a --momentum"):
        build_config(overrides=dict(optimizer="sgd", nesterov=True, momentum=0.0))
    with pytest.raises(ConfigError, match="--momentum"):
        build_config(overrides=dict(momentum=1.5))
    with pytest.raises(ConfigError, match="--nesterov: expected true or false"):
        build_config(overrides=dict(nesterov="yes"))
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(2))], tiny(tmp_path))
    assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.85


def test_fastcnn_checkpoint_and_exports_give_the_trained_models_scores(tmp_path):
    """The data-set stem and the frozen BatchNorm scales are ordinary weights: a checkpoint, the safetensors
    export and the torch.export program all reproduce the trained model's scores."""
    from aeclass.inference import export, load_exported, load_model
    r = train(tiny(tmp_path, epochs=1), **QUIET)
    paths = export(r.run_dir, tmp_path / "m")
    model, _ = load_model(r.run_dir)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        ref = r.model.eval()(x)["logits"]
        assert torch.allclose(model(x)["logits"], ref, atol=1e-6)
        assert torch.allclose(load_exported(tmp_path / "m.safetensors")(x)["logits"], ref, atol=1e-6)
        program = torch.export.load(str(tmp_path / "m.pt2")).module()
        assert torch.allclose(program(x)[0], ref, atol=1e-5)
    assert {p.suffix for p in paths} >= {".safetensors", ".pt2"}


def test_fresh_weights_for_a_student_keep_the_stem_set_from_the_data(tmp_path):
    """Self-training students start from fresh weights (restart_weights); fastcnn's stem is not learned but
    set from the data, so it must survive, while the convolutions are drawn again."""
    from aeclass.data import load_dataset
    from aeclass.engine import restart_weights
    from aeclass.train import build_model
    cfg = tiny(tmp_path)
    model = train(cfg, **QUIET).model
    stem, conv = model.encoder.whiten.weight.clone(), model.encoder.groups[0][0].weight.clone()
    restart_weights(model, lambda: build_model(cfg, load_dataset("digits")), cfg.seed)
    assert torch.equal(model.encoder.whiten.weight, stem)
    assert not torch.equal(model.encoder.groups[0][0].weight, conv)
