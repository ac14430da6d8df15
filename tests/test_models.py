"""Every registered model: forward shapes, backward, and a tiny overfit."""
import copy

import pytest
import torch

from aeclass.errors import ConfigError
from aeclass.models import create_model, list_models
from aeclass.models.registry import register_model

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_shapes(name, shape):
    m = create_model(name, shape, num_classes=7)
    out = m(torch.rand(3, *shape))
    assert out["logits"].shape == (3, 7)
    assert out["code"].shape == (3, m.code_dim)
    if m.has_decoder:
        assert out["recon"].shape == (3, *shape)
        assert float(out["recon"].min()) >= 0 and float(out["recon"].max()) <= 1  # sigmoid output


@pytest.mark.parametrize("name", list_models())
def test_backward_reaches_every_used_parameter(name):
    m = create_model(name, (1, 8, 8), num_classes=4)
    out = m(torch.rand(4, 1, 8, 8))
    loss = out["logits"].pow(2).mean() + (out["recon"].mean() if "recon" in out else 0)
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None and p.requires_grad]  # (fastcnn's stem is frozen)
    assert not missing, missing


@pytest.mark.parametrize("name", list_models())
def test_tiny_overfit(name):
    torch.manual_seed(0)
    m = create_model(name, (1, 8, 8), num_classes=4)
    x = torch.rand(16, 1, 8, 8)
    y = torch.arange(16) % 4
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(150):
        out = m(x)
        loss = torch.nn.functional.cross_entropy(out["logits"], y)
        if "recon" in out:
            loss = loss + torch.nn.functional.mse_loss(out["recon"], x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        out = m(x)
    assert (out["logits"].argmax(1) == y).float().mean() == 1.0
    if "recon" in out:
        assert torch.nn.functional.mse_loss(out["recon"], x) < 0.07  # random pixels: var(U(0,1)) = 0.083


def test_without_classes_there_is_no_head():
    m = create_model("mlp_ae", (1, 28, 28))
    assert not m.has_head and "logits" not in m(torch.rand(2, 1, 28, 28))


def test_seed_cnn_matches_the_keras_network():
    # conv32-pool-conv64-pool-conv128-pool-dense128-dense10 with 'valid' convs: Keras counts 160,202 weights.
    m = create_model("cnn", (3, 32, 32), num_classes=10, padding="valid")
    assert sum(p.numel() for p in m.parameters()) == 160_202


def test_seed_ae_is_784_32_784():
    m = create_model("mlp_ae", (1, 28, 28), num_classes=None, code_dim=32)
    assert sum(p.numel() for p in m.parameters()) == 784 * 32 + 32 + 32 * 784 + 784


def test_unknown_model_and_option_are_config_errors():
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        create_model("nope", (1, 8, 8))
    with pytest.raises(ConfigError, match="bad model option"):
        create_model("cnn", (1, 8, 8), 10, not_an_option=3)
    with pytest.raises(ConfigError, match="too small"):
        create_model("cnn", (1, 8, 8), 10, padding="valid")


def test_registering_twice_warns():
    def mlp_ae(input_shape, num_classes=None):  # same name as a registered model
        raise AssertionError
    from aeclass.models import registry
    original = registry._MODELS["mlp_ae"]
    try:
        with pytest.warns(UserWarning, match="registered twice"):
            register_model(mlp_ae)
    finally:
        registry._MODELS["mlp_ae"] = original


def test_pca_init_starts_a_dense_autoencoder_near_pca():
    from aeclass.data import load_dataset
    ds = load_dataset("digits")
    x = ds.train_x.float() / 255
    model = create_model("mlp_ae", (1, 8, 8), code_dim=8, code_act="none")
    model.set_input_stats(x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)))
    with torch.no_grad():
        random_mse = float(((model(x)["recon"] - x) ** 2).mean())
        model.pca_init_(x)
        pca_mse = float(((model(x)["recon"] - x) ** 2).mean())
    mean_image_mse = float(((x - x.mean(0)) ** 2).mean())
    # Before any training the PCA start already reconstructs better than the mean image does;
    # a random start does worse than it.
    assert pca_mse < 0.7 * mean_image_mse < random_mse
    w = model.encoder[1].weight  # rows: orthonormal principal directions (in the standardised input space)
    assert torch.allclose(w @ w.T, torch.eye(8), atol=1e-4)


def test_pca_init_needs_a_single_linear_code_layer(tmp_path):
    from aeclass import TrainConfig, train
    with pytest.raises(ConfigError, match="--pca-init"):
        train(TrainConfig(data="digits", strategy="autoencoder", model="conv_ae", pca_init=True, epochs=1,
                          out=str(tmp_path / "run"), report=False), log=lambda *a: None, progress=False)
    assert not (tmp_path / "run").exists()  # nothing half-written
    r = train(TrainConfig(data="digits", strategy="autoencoder", model="mlp_ae", model_kwargs={"code_dim": 8},
                          pca_init=True, epochs=2, out=str(tmp_path / "ok"), report=False), log=lambda *a: None, progress=False)
    assert r.metrics["test_recon_mse"] < 0.05


def test_prelu_code_starts_linear_and_learns_its_slopes(tmp_path):
    """The fast-ae code: a PReLU started at slope 1 is exactly the linear code at the PCA start; training
    then bends it (the slopes move), which is what lowers the 784-32-784 MSE (benchmarks/ae_variants.py)."""
    from aeclass import TrainConfig, train
    from aeclass.data import load_dataset
    from aeclass.models.layers import activation
    x = load_dataset("digits").train_x.float() / 255
    models = {act: create_model("mlp_ae", (1, 8, 8), code_dim=8, code_act=act) for act in ("none", "prelu")}
    with torch.no_grad():
        for m in models.values():
            m.set_input_stats(x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)))
            m.pca_init_(x)
        assert torch.equal(models["none"](x)["recon"], models["prelu"](x)["recon"])
    r = train(TrainConfig(data="digits", strategy="autoencoder", model="mlp_ae", model_kwargs={"code_dim": 8, "code_act": "prelu"},
                          pca_init=True, epochs=3, out=str(tmp_path / "run"), report=False), log=lambda *a: None, progress=False)
    slopes = r.model.encoder[2].weight
    assert slopes.shape == (8,) and not torch.allclose(slopes, torch.ones(8))
    assert r.metrics["test_recon_mse"] < 0.05
    with pytest.raises(ValueError, match="width"):
        activation("prelu")
    with pytest.raises(ConfigError, match="prelu"):
        activation("swish")


@pytest.mark.parametrize("bn,padding,shape", [(False, "valid", (3, 32, 32)), (True, "same", (1, 28, 28))])
def test_conv_encoder_pools_before_the_relu_with_the_same_outputs_and_gradients(bn, padding, shape):
    """The encoder runs conv -> (BN) -> pool -> ReLU, which is conv -> (BN) -> ReLU -> pool exactly (max and
    ReLU commute), including odd sizes pooled in ceil mode, and keeps the weights' state_dict keys."""
    from aeclass.models.layers import ConvEncoder
    torch.manual_seed(0)
    enc = ConvEncoder(shape, (8, 16, 32), 10, bn=bn, padding=padding)
    ref = copy.deepcopy(enc)
    mods, order = list(ref.features), []
    for m in mods:  # move every ReLU back in front of the pool that precedes it
        if isinstance(m, torch.nn.ReLU) and order and isinstance(order[-1], torch.nn.MaxPool2d):
            order.insert(len(order) - 1, m)
        else:
            order.append(m)
    ref.features = torch.nn.Sequential(*order)
    names = [type(m).__name__ for m in enc.features]
    assert names.count("MaxPool2d") == 3 and all(names[i + 1] == "ReLU" for i, n in enumerate(names) if n == "MaxPool2d")
    ref_names = [type(m).__name__ for m in ref.features]
    assert all(ref_names[i - 1] == "ReLU" for i, n in enumerate(ref_names) if n == "MaxPool2d")
    assert [k for k in enc.state_dict()] == [k for k in ref.state_dict()]
    x = torch.randn(4, *shape)
    outs = []
    for m in (enc, ref):
        m.train()
        y = m(x)
        y.square().sum().backward()
        outs.append((y.detach(), [p.grad.clone() for p in m.parameters()]))
    assert torch.equal(outs[0][0], outs[1][0])
    for a, b in zip(outs[0][1], outs[1][1]):
        assert torch.equal(a, b)
