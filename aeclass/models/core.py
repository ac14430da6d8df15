"""The one model shape every strategy trains: encoder -> code, plus an optional decoder and head.

An autoencoder is encoder + decoder; a classifier is encoder + head; the seeds' hybrid has both, so one
forward pass gives the reconstruction and the class scores from the same code. Strategies decide which
outputs enter the loss and which parts are trained or frozen.
"""
from __future__ import annotations

import torch
from torch import nn


class AEClassifier(nn.Module):
    """encoder(x) -> code; decoder(code) -> reconstruction in [0, 1]; head(code) -> class logits.

    Inputs are float images in [0, 1]. The encoder sees them standardised with the per-channel mean/std
    held in buffers (set from the training data by `set_input_stats`), so checkpoints carry the
    normalisation with the weights; the decoder reconstructs the raw [0, 1] image. A model whose
    `standardizes_input` is False keeps mean 0 / std 1: training never sets them (see vae_mlp).
    """

    standardizes_input = True

    def __init__(self, encoder: nn.Module, code_dim: int, input_shape, decoder: nn.Module | None = None,
                 num_classes: int | None = None, head: nn.Module | None = None):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.code_dim = code_dim
        self.encoder = encoder
        self.decoder = decoder
        if head is None and num_classes:
            head = nn.Linear(code_dim, num_classes)
        self.head = head
        self.num_classes = num_classes
        c = self.input_shape[0]
        self.register_buffer("in_mean", torch.full((1, c, 1, 1), 0.5))
        self.register_buffer("in_std", torch.full((1, c, 1, 1), 0.25))

    @property
    def has_decoder(self) -> bool:
        return self.decoder is not None

    @property
    def has_head(self) -> bool:
        return self.head is not None

    @property
    def capabilities(self) -> set[str]:
        """What strategies may ask of this model (Strategy.requires): 'head' (class scores from the code),
        'decoder' (an image reconstructed from the code alone). Subclasses add their own (LadderNet: 'ladder')."""
        return ({"head"} if self.has_head else set()) | ({"decoder"} if self.has_decoder else set())

    def capability_note(self, capability: str) -> str | None:
        """Why this model lacks `capability`, when there is more to say than that it has none."""
        return None

    @torch.no_grad()
    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.in_mean.copy_(mean.reshape(self.in_mean.shape))
        self.in_std.copy_(std.clamp_min(1e-3).reshape(self.in_std.shape))

    @property
    def needs_data_init(self) -> bool:
        """Whether the encoder sets layers from the training data before training (see data_init_)."""
        return hasattr(self.encoder, "data_init_")

    @torch.no_grad()
    def data_init_(self, x: torch.Tensor) -> None:
        """Let an encoder that sets layers from the data (fastcnn's whitening stem) see `x`, a float sample of
        training images in [0, 1], standardised as the encoder sees its input; others ignore it."""
        if self.needs_data_init:
            self.encoder.data_init_((x - self.in_mean) / self.in_std)

    @torch.no_grad()
    def pca_init_(self, x: torch.Tensor) -> None:
        """Start a dense autoencoder with one linear code layer (mlp_ae without hidden layers) at PCA.

        `x` is a float sample of training images in [0, 1]. The encoder becomes the projection onto the
        top `code_dim` principal components of its (standardised) input and the decoder the matching
        reconstruction, divided by the sigmoid's slope m(1-m) at each pixel's mean m so that the
        sigmoid(logit) output starts near the PCA reconstruction. On MNIST 784-32-784 (benchmarks/ae_variants.py)
        training from this start ends at test MSE 0.00902 against 0.00919 from a random one with a linear code,
        and at 0.00834 against 0.00869 with the fast-ae recipe's PReLU code (which starts linear, slope 1).
        """
        first, last = _only_linear(self.encoder), _only_linear(self.decoder) if self.decoder is not None else None
        if first is None or last is None:
            raise ValueError("PCA initialisation needs a dense autoencoder with a single linear code layer "
                             "(mlp_ae without hidden layers)")
        k = self.code_dim
        flat = x.flatten(1).double()
        std = ((x - self.in_mean) / self.in_std).flatten(1).double()  # what the encoder's Linear sees
        mean_std = std.mean(0)
        centred = std - mean_std
        _, evecs = torch.linalg.eigh(centred.T @ centred / max(1, len(std) - 1))
        top = evecs[:, -k:].flip(1)  # (D, k), by decreasing variance; eigh's order is ascending
        first.weight.copy_(top.T)
        first.bias.copy_(-(top.T @ mean_std))
        # x = in_mean + in_std * standardised, per channel: the reconstruction directions in pixel space.
        scale = self.in_std.expand(1, *self.input_shape).flatten().double()
        m = flat.mean(0).clamp(0.02, 0.98)
        last.weight.copy_(top * (scale / (m * (1 - m)).clamp_min(0.1)).unsqueeze(1))
        last.bias.copy_(torch.log(m / (1 - m)))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder((x - self.in_mean) / self.in_std)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        if self.decoder is None:
            raise RuntimeError("this model has no decoder")
        return self.decoder(code)

    def classify(self, code: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise RuntimeError("this model has no classification head")
        return self.head(code)

    def forward(self, x: torch.Tensor, decode: bool = True, classify: bool = True) -> dict[str, torch.Tensor]:
        code = self.encode(x)
        out = {"code": code}
        if classify and self.head is not None:
            out["logits"] = self.head(code)
        if decode and self.decoder is not None:
            out["recon"] = self.decoder(code)
        return out


def _only_linear(module: nn.Module) -> nn.Linear | None:
    """The module's nn.Linear if it is its only layer with weights (no convolutions, no hidden layers); a
    learned activation slope (PReLU) does not count as a layer."""
    found = [m for m in module.modules() if isinstance(m, nn.Linear)]
    slopes = sum(p.numel() for m in module.modules() if isinstance(m, nn.PReLU) for p in m.parameters())
    if len(found) != 1 or sum(p.numel() for p in module.parameters()) - slopes != sum(p.numel() for p in found[0].parameters()):
        return None
    return found[0]
