"""Variational autoencoders (Kingma & Welling 2014): the encoder gives a Gaussian q(z|x) = N(mu, diag(exp(logvar))),
the decoder a Bernoulli (or Gaussian) p(x|z) per pixel, the prior p(z) is N(0, I).

`VariationalAEClassifier` keeps the AEClassifier interface: `encode(x)` and the output "code" are the mean mu,
so heads, reports, evaluation, linear probes and `aeclass encode` work unchanged (the mean is the M1 feature of
Kingma et al. 2014). In training mode the decoder sees a reparameterised draw z = mu + sigma * eps (global torch
RNG: checkpoints carry its state, so a resumed run draws the same eps); in eval mode it decodes mu, so test
reconstructions are deterministic. `--strategy vae` trains it on the negative ELBO (aeclass/strategies/vae.py).
"""
from __future__ import annotations

import torch
from torch import nn

from .core import AEClassifier
from .layers import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from .registry import register_model


class GaussianEncoder(nn.Module):
    """A body that outputs 2 * code_dim numbers per image, read as (mu, logvar). `forward` gives mu alone, so
    code that calls `model.encoder(x)` directly (PCA maps, probes) sees the code it expects."""

    def __init__(self, body: nn.Module, code_dim: int):
        super().__init__()
        self.body = body
        self.code_dim = code_dim

    def stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        # logvar clamped: an early step with exp(logvar) overflowing would otherwise end the run in NaNs
        return h[:, :self.code_dim], h[:, self.code_dim:].clamp(-30.0, 20.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stats(x)[0]


class LogitDecoder(nn.Module):
    """A body that outputs pixel logits; `forward` is their sigmoid (an image in [0, 1], as every decoder
    gives), `logits` is what the Bernoulli likelihood needs (BCE with logits: exact and faster than BCE on a
    clamped sigmoid)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(z))


class VariationalAEClassifier(AEClassifier):
    """An AEClassifier whose encoder is a GaussianEncoder and whose decoder is a LogitDecoder."""

    def __init__(self, *args, standardize: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.standardizes_input = bool(standardize)
        if not standardize:  # the encoder sees the raw [0, 1] pixels; a checkpoint's own values still load
            self.in_mean.zero_()
            self.in_std.fill_(1.0)

    @property
    def capabilities(self) -> set[str]:
        return super().capabilities | {"variational"}

    def encode_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x) for float images x in [0, 1]."""
        return self.encoder.stats((x - self.in_mean) / self.in_std)

    def forward(self, x: torch.Tensor, decode: bool = True, classify: bool = True) -> dict[str, torch.Tensor]:
        mu, logvar = self.encode_stats(x)
        out = {"code": mu, "mu": mu, "logvar": logvar}
        if classify and self.head is not None:
            out["logits"] = self.head(mu)
        if decode:
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
            out["recon_logits"] = self.decoder.logits(z)
            out["recon"] = torch.sigmoid(out["recon_logits"])
        return out


def kl_to_prior(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per image, in nats: 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


@register_model
def vae_mlp(input_shape, num_classes=None, code_dim: int = 32, hidden: tuple[int, ...] = (512,),
            standardize: bool = False):
    """A dense VAE: flatten-[hidden]-(mu, logvar)-[hidden]-image; the default is Pythae's MNIST baseline
    784-512-(32)-512-784 with ReLU hidden layers and a sigmoid output. Its encoder sees the raw [0, 1] pixels
    unless `standardize`: standardised pixels cost 1.1 nats of test ELBO on MNIST (10 epochs, 2 seeds each:
    105.81 / 106.1 against 104.52 / 105.00; benchmarks/vae_vs_pythae.py)."""
    hidden = tuple(int(h) for h in hidden)
    enc = GaussianEncoder(MLPEncoder(input_shape, hidden, 2 * code_dim, code_act="none"), code_dim)
    mlp = MLPDecoder(input_shape, hidden, code_dim)  # [..., Linear, Sigmoid, Unflatten]: drop the sigmoid
    dec = LogitDecoder(nn.Sequential(*[m for m in mlp if not isinstance(m, nn.Sigmoid)]))
    return VariationalAEClassifier(enc, code_dim, input_shape, decoder=dec, num_classes=num_classes,
                                   standardize=standardize)


@register_model
def vae_conv(input_shape, num_classes=None, code_dim: int = 32, widths: tuple[int, ...] = (32, 64), bn: bool = True,
             standardize: bool = True):
    """A convolutional VAE: conv_ae's encoder and decoder with a Gaussian dense bottleneck of `code_dim`; its
    encoder sees standardised pixels unless `standardize` is false (the dense VAE's default)."""
    widths = tuple(int(w) for w in widths)
    body = ConvEncoder(input_shape, widths, 2 * code_dim, bn=bn, code_act="none")
    conv = ConvDecoder(body, input_shape[0], widths, code_dim, bn)
    conv.out = conv.out[0]  # the final conv's output are the logits; LogitDecoder applies the sigmoid
    enc = GaussianEncoder(body, code_dim)
    return VariationalAEClassifier(enc, code_dim, input_shape, decoder=LogitDecoder(conv), num_classes=num_classes,
                                   standardize=standardize)
