"""`vae` and `vae-joint`: the variational autoencoder's loss, for the variational models (--model vae_mlp,
vae_conv; aeclass/models/vae.py).

`vae` minimises the negative ELBO of every training image, in nats per image:
    reconstruction  -log p(x|z), z drawn from q(z|x): Bernoulli = BCE summed over the pixels (--likelihood
                    bernoulli, the default) or Gaussian = squared error summed over the pixels (gaussian)
  + beta * KL(q(z|x) || N(0, I))   (--beta; 1 is the ELBO, beta > 1 a beta-VAE)
and reports the two terms separately (train_recon, train_kl: nats per image, not the per-pixel MSE of the
other strategies). Its head is not trained: it is the M1 feature extractor of Kingma et al. (2014), whose
mean code a classifier then learns from (`--strategy linear-probe --init VAE_RUN` or `pretrain-finetune
--init VAE_RUN`, which skip their own autoencoder phase).

`vae-joint` is `joint` with the ELBO in place of the reconstruction: CE(labelled) + lambda * (negative ELBO /
pixels), one model, one optimiser. The ELBO is divided by the number of pixel values so that --recon-weight
(lambda) weighs a per-pixel term, as it does in `joint`.

Other strategies that train a decoder accept a variational model too, but their losses have no KL term:
they train it as an autoencoder whose decoder sees a noisy code, not as a VAE.

metrics.json gains test_neg_elbo, test_recon_nats and test_kl: the test set's terms with one draw of z per
image from a fixed seed (the estimate the benchmark compares with Pythae's).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..errors import ConfigError
from ..models.vae import kl_to_prior
from ..options import option
from .base import Phase, Strategy, register_strategy
from .losses import classification, corrupt


@dataclass
class VaeOptions:
    beta: float = option(1.0, "weight of the KL term (1 = the ELBO; > 1 a beta-VAE)", low=0)
    likelihood: str = option("bernoulli", "p(x|z) per pixel: bernoulli (BCE) | gaussian (squared error)",
                             choices=("bernoulli", "gaussian"))


def reconstruction_nats(out: dict, x: torch.Tensor, likelihood: str) -> torch.Tensor:
    """-log p(x|z) per image, summed over the pixels (Bernoulli: BCE with logits; Gaussian: squared error,
    the log-density of a Gaussian of variance 1/2 up to a constant)."""
    if likelihood == "bernoulli":
        per = F.binary_cross_entropy_with_logits(out["recon_logits"].float(), x.float(), reduction="none")
    else:
        per = (out["recon"].float() - x.float()).pow(2)
    return per.flatten(1).sum(1)


def elbo_parts(model, x: torch.Tensor, likelihood: str, noisy: torch.Tensor | None = None, classify: bool = False):
    """The model's outputs on `noisy` (default x) and the per-image reconstruction and KL terms against x."""
    out = model(x if noisy is None else noisy, classify=classify)
    return out, reconstruction_nats(out, x, likelihood), kl_to_prior(out["mu"], out["logvar"])


@register_strategy
class Vae(Strategy):
    name = "vae"
    summary = "negative ELBO = reconstruction + beta * KL (all images); --model vae_mlp | vae_conv"
    Options = VaeOptions
    metric_columns = ("kl",)

    def requires(self, pretrained=False):
        return {"decoder", "variational"}

    def check(self, model, pretrained=False):
        if "variational" not in model.capabilities:
            name = model.spec["name"] if hasattr(model, "spec") else type(model).__name__
            raise ConfigError(f"--strategy {self.name} needs a variational model (--model vae_mlp or vae_conv), "
                              f"not '{name}'")
        super().check(model, pretrained)

    def setup(self, run):
        self._run = run  # final_metrics scores the final model on the run's test set

    def phases(self, model, pretrained=False):
        return [Phase("vae", self.cfg.epochs, self.step, "all", trains=("encoder", "decoder"))]

    def step(self, model, batch):
        noisy = corrupt(batch.x, self.cfg.noise, self.cfg.noise_kind)
        _, recon, kl = elbo_parts(model, batch.x, self.opts.likelihood, noisy)
        recon, kl = recon.mean(), kl.mean()
        return {"loss": recon + self.opts.beta * kl, "recon": recon, "kl": kl}

    def final_metrics(self):
        run = getattr(self, "_run", None)
        if run is None:
            return {}
        return test_elbo(run.final_model(), run.data.test_x, self.opts.likelihood)


@torch.no_grad()
def test_elbo(model, x_uint8: torch.Tensor, likelihood: str, batch_size: int = 1000, seed: int = 0) -> dict:
    """Mean negative ELBO (beta = 1) and its two terms over uint8 images, nats per image, one z per image drawn
    from a generator of its own (the training run's random state is left alone)."""
    from ..data import to_float
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    rec_sum, kl_sum = 0.0, 0.0
    for i in range(0, x_uint8.shape[0], batch_size):
        x = to_float(x_uint8[i:i + batch_size].to(dev))
        mu, logvar = model.encode_stats(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen, device=dev)
        logits = model.decoder.logits(z)
        rec_sum += float(reconstruction_nats({"recon_logits": logits, "recon": torch.sigmoid(logits)}, x, likelihood).sum())
        kl_sum += float(kl_to_prior(mu, logvar).sum())
    model.train(was)
    n = x_uint8.shape[0]
    return {"test_neg_elbo": (rec_sum + kl_sum) / n, "test_recon_nats": rec_sum / n, "test_kl": kl_sum / n}


@register_strategy
class VaeJoint(Vae):
    name = "vae-joint"
    summary = "CE(labelled) + lambda * negative ELBO per pixel (all images), one optimiser; a variational model"

    def requires(self, pretrained=False):
        return {"head", "decoder", "variational"}

    def phases(self, model, pretrained=False):
        return [Phase("vae-joint", self.cfg.epochs, self.step, "all", mix_labelled=True)]

    def step(self, model, batch):
        noisy = corrupt(batch.x, self.cfg.noise, self.cfg.noise_kind)
        out, recon, kl = elbo_parts(model, batch.x, self.opts.likelihood, noisy, classify=True)
        recon, kl = recon.mean(), kl.mean()
        parts = classification(out["logits"], batch.y, self.cfg.label_smoothing)
        per_pixel = (recon + self.opts.beta * kl) / math.prod(batch.x.shape[1:])
        return {"loss": parts["ce"] + self.cfg.recon_weight * per_pixel, "recon": recon, "kl": kl, **parts}
