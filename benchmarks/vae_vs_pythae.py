"""aeclass's VAE against Pythae's on MNIST: the same network, likelihood, optimiser, batch and epochs.

Network: dense 784-512-(32)-512-784, ReLU hidden layers, a Gaussian code of 32 (mu and log-variance from the
512-wide layer), sigmoid output; Bernoulli likelihood (BCE summed over the 784 pixels of the [0, 1] grey
images, not binarised), KL to N(0, I), beta 1; Adam lr 1e-3 constant, batch 128, 10 epochs, fp32.
- aeclass: `aeclass train --data mnist --strategy vae --model vae_mlp --model-opt code_dim=32 --model-opt
  hidden=[512] --optimizer adam --lr 1e-3 --schedule constant --batch-size 128 --epochs 10 --augment none`
  (through aeclass.train; images/s from its train_seconds, which exclude the per-epoch test pass);
  `aeclass-bf16` adds --precision bf16 (autocast; the loss in fp32).
- pythae: pythae.models.VAE with the same encoder and decoder, reconstruction_loss="bce", its TrainingPipeline
  (BaseTrainerConfig: Adam, lr 1e-3, batch 128, 10 epochs, no evaluation set); images/s from the pipeline's
  wall time.
Both are scored by the same function: the test set's mean negative ELBO in nats per image (reconstruction +
KL), one z drawn per test image from a fixed seed. The two take turns (--repeats rounds, the order swapped
every round); the best images/s and the last test ELBO of each are reported, all runs kept in the JSON.
The machine's 2 CPU cores may have been shared with other processes while this ran.

    python benchmarks/vae_vs_pythae.py              # ~4 minutes on 2 cores: benchmarks/results/vae_vs_pythae.{json,md}
    python benchmarks/vae_vs_pythae.py --impls aeclass-bf16,pythae   # add aeclass with bf16 autocast
    python benchmarks/vae_vs_pythae.py --epochs 1 --repeats 1
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time

import torch
from torch import nn
from torch.nn import functional as F
from _common import RESULTS, load_results, machine, save_results, shared_datasets

EPOCHS, BATCH, LR, LATENT, HIDDEN = 10, 128, 1e-3, 32, 512
# name -> aeclass's --precision (and -fused: --fused-optimizer, torch's fused Adam kernel)
IMPLS = {"aeclass": "fp32", "aeclass-bf16": "bf16", "aeclass-bf16-fused": "bf16", "pythae": None}


@torch.no_grad()
def neg_elbo(encode, decode, x: torch.Tensor, seed: int = 0) -> dict:
    """Mean -ELBO (nats/image) over float images x in [0, 1]: encode(x) -> (mu, logvar), decode(z) -> p in (0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    rec, kl = 0.0, 0.0
    for i in range(0, x.shape[0], 1000):
        xb = x[i:i + 1000]
        mu, logvar = encode(xb)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
        p = decode(z).reshape(xb.shape)
        rec += float(F.binary_cross_entropy(p, xb, reduction="sum"))
        kl += float(0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum())
    n = x.shape[0]
    return {"test_neg_elbo": (rec + kl) / n, "test_recon_nats": rec / n, "test_kl": kl / n}


def run_aeclass(epochs: int, ds, precision: str = "fp32", seed: int = 0, fused: bool = False) -> dict:
    import aeclass
    with tempfile.TemporaryDirectory() as tmp:
        cfg = aeclass.TrainConfig(data="mnist", data_dir=str(shared_datasets()), strategy="vae", model="vae_mlp",
                                  model_kwargs={"code_dim": LATENT, "hidden": [HIDDEN]}, optimizer="adam", lr=LR,
                                  schedule="constant", batch_size=BATCH, epochs=epochs, augment="none", out=tmp,
                                  report=False, precision=precision, seed=seed, fused_optimizer=fused)
        r = aeclass.train(cfg, dataset=ds, log=lambda *a: None, progress=False)
    model = r.model.eval()
    steps = ds.train_x.shape[0] // BATCH  # aeclass drops the ragged last batch
    return {"seconds": r.metrics["train_seconds"], "images": steps * BATCH * epochs,
            **neg_elbo(model.encode_stats, model.decode, ds.test_x.float() / 255)}


def run_pythae(epochs: int, ds) -> dict:
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig
    logging.getLogger("pythae").setLevel(logging.ERROR)

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(784, HIDDEN), nn.ReLU())
            self.mu, self.logvar = nn.Linear(HIDDEN, LATENT), nn.Linear(HIDDEN, LATENT)

        def forward(self, x):
            h = self.body(x.reshape(x.shape[0], -1))
            return ModelOutput(embedding=self.mu(h), log_covariance=self.logvar(h))

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 784), nn.Sigmoid())

        def forward(self, z):
            return ModelOutput(reconstruction=self.body(z).reshape(z.shape[0], 1, 28, 28))

    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce"),
                encoder=Encoder(), decoder=Decoder())
    x = ds.train_x.float() / 255
    with tempfile.TemporaryDirectory() as tmp:
        tcfg = BaseTrainerConfig(output_dir=tmp, num_epochs=epochs, learning_rate=LR, optimizer_cls="Adam",
                                 per_device_train_batch_size=BATCH, per_device_eval_batch_size=1000, no_cuda=True)
        t = time.perf_counter()
        TrainingPipeline(training_config=tcfg, model=model)(train_data=x, eval_data=None)
        seconds = time.perf_counter() - t
    model.eval()

    def encode(xb):
        out = model.encoder(xb)
        return out.embedding, out.log_covariance
    return {"seconds": seconds, "images": x.shape[0] * epochs,
            **neg_elbo(encode, lambda z: model.decoder(z).reconstruction, ds.test_x.float() / 255)}


def markdown(res: dict) -> str:
    lines = ["# VAE on MNIST: aeclass against Pythae", "",
             f"Dense 784-{HIDDEN}-({LATENT})-{HIDDEN}-784, Bernoulli, Adam {LR:g}, batch {BATCH}, {res['epochs']} epochs, "
             f"fp32 unless the name says bf16, {res['machine']['cpu_threads']} CPU thread(s). Commands: "
             + ", ".join(f"`{c}`" for c in res.get("commands", ["python benchmarks/vae_vs_pythae.py"])) + ". "
             "Test -ELBO: nats per image, one z per test image (fixed seed), both scored by the same function. "
             f"Round r seeds both implementations with r. Load average at the start: {res.get('load_at_start', 'not recorded')} "
             "(above 0: other processes shared the 2 cores, and the speeds are low); the implementations took turns.", "",
             "| implementation | test -ELBO (last) | recon | KL | -ELBO mean ± sd over runs | runs | train seconds (best) | "
             "images/s (best) |", "|---|---|---|---|---|---|---|---|"]
    for name in [n for n in IMPLS if res["runs"].get(n)]:
        runs = res["runs"][name]
        best = min(runs, key=lambda r: r["seconds"])
        last = runs[-1]
        e = torch.tensor([r["test_neg_elbo"] for r in runs], dtype=torch.float64)
        sd = f"{float(e.std()):.2f}" if len(runs) > 1 else "-"
        lines.append(f"| {name} | {last['test_neg_elbo']:.2f} | {last['test_recon_nats']:.2f} | {last['test_kl']:.2f} | "
                     f"{float(e.mean()):.2f} ± {sd} | {len(runs)} | {best['seconds']:.1f} | {best['images'] / best['seconds']:,.0f} |")
    lines.append("")
    p = min(res["runs"]["pythae"], key=lambda r: r["seconds"])
    for name in [n for n in IMPLS if n != "pythae" and res["runs"].get(n)]:
        a = min(res["runs"][name], key=lambda r: r["seconds"])
        speed = (a["images"] / a["seconds"]) / (p["images"] / p["seconds"])
        mean = lambda n: sum(r["test_neg_elbo"] for r in res["runs"][n]) / len(res["runs"][n])  # noqa: E731
        better = mean("pythae") - mean(name)
        lines.append(f"- {name}: {speed:.2f}x Pythae's images per second; mean test -ELBO {better:+.2f} nats against "
                     "Pythae's (positive: better).")
    lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="", help="results file suffix, e.g. seeds: vae_vs_pythae-seeds.{json,md}")
    ap.add_argument("--impls", default="aeclass,pythae", help=f"comma-separated, of {', '.join(IMPLS)}; the others' "
                    "runs already in the JSON are kept")
    args = ap.parse_args()
    impls = args.impls.split(",")
    torch.set_num_threads(args.threads)
    from aeclass.data import load_dataset
    ds = load_dataset("mnist", str(shared_datasets()))
    suffix = ("" if args.epochs == EPOCHS else f"-{args.epochs}ep") + (f"-{args.tag}" if args.tag else "")
    res = load_results(RESULTS / f"vae_vs_pythae{suffix}.json") or {"epochs": args.epochs, "runs": {}}
    res["machine"] = machine()
    res["load_at_start"] = round(__import__("os").getloadavg()[0], 1)
    res.setdefault("commands", []).append(" ".join(["python", "benchmarks/vae_vs_pythae.py", *sys.argv[1:]]))
    res["runs"].update({n: [] for n in impls})
    for r in range(args.repeats):
        for name in (impls if r % 2 == 0 else impls[::-1]):
            torch.manual_seed(r)
            out = run_pythae(args.epochs, ds) if name == "pythae" else run_aeclass(args.epochs, ds, IMPLS[name], seed=r,
                                                                                fused=name.endswith("-fused"))
            res["runs"][name].append(out)
            print(name, {k: round(v, 3) for k, v in out.items()})
    save_results(RESULTS / f"vae_vs_pythae{suffix}.json", res)
    (RESULTS / f"vae_vs_pythae{suffix}.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
