"""The Ladder network (Rasmus, Valpola, Honkala, Berglund & Raiko, "Semi-Supervised Learning with Ladder
Networks", NeurIPS 2015): a denoising autoencoder whose decoder has a lateral connection to every encoder
layer and a reconstruction (denoising) cost at every layer, trained together with the classifier.

Three passes share the encoder's weights:
- corrupted encoder: Gaussian noise is added to the input and to every batch-normalised pre-activation;
  its class scores carry the supervised cross-entropy (the noise regularises it);
- clean encoder: the same layers without noise; its normalised pre-activations z_l are the targets;
- decoder: from the top down, u_l = BN(V_l zhat_{l+1}) and zhat_l = g(z~_l, u_l), a per-unit "vanilla"
  combinator of the noisy lateral z~_l and the top-down signal u_l; the cost is
  sum_l costs[l] * mean((zhat_l normalised by the clean batch statistics - z_l)^2).

The paper's MNIST network is 784-1000-500-250-250-250-10 with costs (1000, 10, 0.1, 0.1, 0.1, 0.1, 0.1) and
noise 0.3, our defaults; it reports 1.06 % (+-0.37) test error with 100 labels. Two details decided whether
it learned at all (a throwaway prototype on MNIST-100 draw 1): labelled and unlabelled rows are batch-normalised
with separate statistics, and the gradient flows through the clean targets as well. With one set of
statistics for the cycled 100 labelled images and the unlabelled ones together (and detached targets) the test
error rose to 87 % within 6 epochs; with separate statistics but detached targets it was 4.8 % after 5 epochs
and 7.7 % after 15; with both as in the paper, 2.6 % after 8 epochs and 1.6 % after 20.

The model keeps the `AEClassifier` interface: `encode` is the clean encoder up to the last hidden layer
(the code), `classify` its top layer, and `model(x)["recon"]` the decoder's estimate of the image from the
clean pass. With lateral connections that estimate is not a bottleneck reconstruction, so its MSE is not
comparable with an autoencoder's. Inputs are raw [0, 1] pixels, as in the paper (no standardisation).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .core import AEClassifier

EPS = 1e-10  # the paper's BN epsilon; pre-activations of a 100-image batch never have zero variance


def moments(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-unit batch mean and (biased) variance in fp32. Two passes over the rows, written out: torch.var
    along dim 0 took 330 us on a 100x1000 batch on this CPU, this 60-100 us (bf16 or fp32 input)."""
    zf = z.float()
    m = zf.mean(0)
    return m, (zf - m).square().mean(0)


def standardise(z: torch.Tensor) -> torch.Tensor:
    m, v = moments(z)
    return (z - m) / torch.sqrt(v + EPS)


class LadderLayer(nn.Module):
    """Linear map (no bias) -> batch normalisation without affine parameters -> + beta (and * gamma on
    the top layer). Running statistics are used in eval mode; a training-mode pass that is not corrupted
    updates them."""

    def __init__(self, d_in: int, d_out: int, top: bool = False):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out, bias=False)
        nn.init.normal_(self.linear.weight, std=1 / math.sqrt(d_in))
        self.beta = nn.Parameter(torch.zeros(d_out))
        self.gamma = nn.Parameter(torch.ones(d_out)) if top else None
        self.register_buffer("running_mean", torch.zeros(d_out))
        self.register_buffer("running_var", torch.ones(d_out))
        self.register_buffer("tracked", torch.zeros((), dtype=torch.long))

    def normalise(self, z_pre: torch.Tensor, groups: tuple[int, ...], track: bool):
        """Normalise each row group (e.g. labelled, unlabelled) by its own batch statistics in training,
        by the running ones in eval. Returns z and the last group's (mean, var), which the decoder uses."""
        if not self.training:
            m, v = self.running_mean, self.running_var
            return (z_pre - m) / torch.sqrt(v + EPS), (m, v)
        parts, stats = [], None
        for part in z_pre.split(list(groups)):
            m, v = moments(part)
            parts.append((part - m) / torch.sqrt(v + EPS))
            stats = (m, v)
        if track:  # the clean pass of the last group (the unlabelled images) feeds the running statistics
            with torch.no_grad():
                # A cumulative average over the first 100 batches, then an exponential one (momentum 0.01),
                # so the statistics are usable from the first steps and average a hundred batches later.
                self.tracked += 1
                w = (1.0 / self.tracked).clamp_min(0.01)  # a tensor: no host sync, no graph break when compiled
                self.running_mean.lerp_(stats[0].float(), w)
                self.running_var.lerp_(stats[1].float(), w)
        return torch.cat(parts) if len(parts) > 1 else parts[0], stats

    def activate(self, z: torch.Tensor) -> torch.Tensor:
        if self.gamma is not None:
            return self.gamma * (z + self.beta)  # class scores; softmax lives in the loss
        return torch.relu(z + self.beta)


class LadderEncoder(nn.Module):
    def __init__(self, sizes: list[int]):
        super().__init__()
        self.layers = nn.ModuleList(LadderLayer(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # the clean encoder, one row group
        h = x.flatten(1)
        for layer in self.layers:
            z, _ = layer.normalise(layer.linear(h), (h.shape[0],), track=self.training)
            h = layer.activate(z)
        return h


class Combinator(nn.Module):
    """The paper's "vanilla" denoising function, per unit: zhat = (z~ - mu(u)) * v(u) + mu(u) with
    mu(u) = a1 sigmoid(a2 u + a3) + a4 u + a5 and v(u) likewise (a6..a10); a2 = a7 = 1, the rest 0 at start."""

    def __init__(self, d: int):
        super().__init__()
        a = torch.zeros(10, d)
        a[1] = a[6] = 1.0
        self.a = nn.Parameter(a)

    def forward(self, z_noisy: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        a = self.a
        mu = a[0] * torch.sigmoid(a[1] * u + a[2]) + a[3] * u + a[4]
        v = a[5] * torch.sigmoid(a[6] * u + a[7]) + a[8] * u + a[9]
        return (z_noisy - mu) * v + mu


class LadderDecoder(nn.Module):
    def __init__(self, sizes: list[int]):
        super().__init__()
        # V_l maps layer l+1 down to layer l; one combinator per layer, the input (layer 0) included.
        self.down = nn.ModuleList(nn.Linear(b, a, bias=False) for a, b in zip(sizes[:-1], sizes[1:]))
        self.combine = nn.ModuleList(Combinator(d) for d in sizes)

    def forward(self, z_noisy: list[torch.Tensor], top: torch.Tensor) -> list[torch.Tensor]:
        """Denoised estimates zhat_0..zhat_L from the noisy laterals z~_0..z~_L and the top layer's
        (noisy) class probabilities."""
        out = [None] * len(z_noisy)
        zhat = None
        for i in range(len(z_noisy) - 1, -1, -1):
            u = top if zhat is None else self.down[i](zhat)
            u = standardise(u)
            zhat = self.combine[i](z_noisy[i], u)
            out[i] = zhat
        return out


class LadderNet(AEClassifier):
    """The Ladder network as an `AEClassifier`: encoder = hidden layers, head = top layer, decoder = the
    lateral decoder. `ladder_losses` is what the `ladder` strategy trains."""

    def __init__(self, input_shape, num_classes: int, hidden: tuple[int, ...], costs: tuple[float, ...]):
        dims = [math.prod(input_shape), *hidden, num_classes]
        if len(costs) != len(dims):
            raise ValueError(f"ladder: costs needs one weight per layer, input and classes included "
                             f"({len(dims)} for hidden={list(hidden)}), got {len(costs)}")
        super().__init__(LadderEncoder(dims[:-1]), dims[-2], input_shape, decoder=LadderDecoder(dims),
                         num_classes=num_classes, head=LadderLayer(dims[-2], num_classes, top=True))
        self.costs = tuple(float(c) for c in costs)

    @property
    def capabilities(self) -> set[str]:
        # Its decoder needs the lateral connections of a whole encoder pass: it cannot decode a code alone,
        # so strategies that ask for a 'decoder' (joint, semi's reconstruction) refuse it; `ladder` asks for this.
        return {"head", "ladder"}

    def capability_note(self, capability: str) -> str | None:
        if capability == "decoder":
            return ("has a decoder that needs the lateral connections of --strategy ladder; it cannot reconstruct "
                    "from the code alone (use --strategy ladder, or semi with --no-recon)")
        return None

    def _layers(self) -> list[LadderLayer]:
        return [*self.encoder.layers, self.head]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def classify(self, code: torch.Tensor) -> torch.Tensor:
        z, _ = self.head.normalise(self.head.linear(code), (code.shape[0],), track=self.training)
        return self.head.activate(z)

    def _pass(self, x: torch.Tensor, noise: float, groups: tuple[int, ...], track: bool = False):
        """One encoder pass: class scores, the (noisy) normalised pre-activations z_0..z_L with z_0 the
        input, and each layer's statistics of the last row group."""
        h = x.flatten(1)
        if noise:
            h = h + noise * torch.randn_like(h)
        zs, stats = [h], [None]
        for layer in self._layers():
            z, st = layer.normalise(layer.linear(h), groups, track)
            if noise:
                z = z + noise * torch.randn_like(z)
            zs.append(z)
            stats.append(st)
            h = layer.activate(z)
        return h, zs, stats

    def forward(self, x: torch.Tensor, decode: bool = True, classify: bool = True) -> dict[str, torch.Tensor]:
        logits, zs, _ = self._pass(x, 0.0, (x.shape[0],), track=self.training)
        out = {"code": self.encoder.layers[-1].activate(zs[-2])}  # the last hidden layer's output, as encode() gives
        if classify:
            out["logits"] = logits
        if decode:
            out["recon"] = self.decoder(zs, logits.softmax(1))[0].reshape(x.shape).clamp(0, 1)
        return out

    def ladder_losses(self, x: torch.Tensor, n_labelled: int, noise: float, denoise: bool = True) -> dict:
        """The corrupted pass's class scores (for the cross-entropy of the first `n_labelled` rows) and the
        per-layer denoising costs of the other rows (all rows when every row is labelled); with
        `denoise=False` no costs (an empty list) and no decoder pass."""
        n = x.shape[0]
        groups = (n_labelled, n - n_labelled) if 0 < n_labelled < n else (n,)
        logits, z_noisy, _ = self._pass(x, noise, groups)
        with torch.set_grad_enabled(denoise and torch.is_grad_enabled()):  # the clean pass, targets of the costs
            _, z_clean, clean_stats = self._pass(x, 0.0, groups, track=True)
        if not denoise:  # it still ran: eval mode's running statistics come from the clean pass
            return {"logits": logits, "layer_costs": []}
        k = groups[-1]  # the denoising costs use the last group, whose clean statistics normalise zhat
        zhat = self.decoder([z[n - k:] for z in z_noisy], logits[n - k:].float().softmax(1))
        costs = []
        for i, (est, target) in enumerate(zip(zhat, z_clean)):
            if i > 0:
                m, v = clean_stats[i]
                est = (est - m) / torch.sqrt(v + EPS)
            costs.append(((est.float() - target[n - k:].float()) ** 2).mean())
        return {"logits": logits, "layer_costs": costs}
