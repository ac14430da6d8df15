"""Sample quality of aeclass's VAEs on MNIST, measured by a fixed aeclass MNIST classifier.

FID needs Inception-v3 weights, which cannot be downloaded on this project's machines, so the judge is an
aeclass classifier trained by a committed command (`aeclass train --preset fast-mnist-long`, >= 99.3 % test
accuracy; it is trained once into benchmarks/results/runs/mnist-judge and reused). For 10,000 decoded prior
samples of each VAE the judge gives p(y|x); reported are
- confidence: the mean top-class probability (high: samples look like some digit),
- class entropy: the entropy of the mean p(y) over the samples, in nats (ln 10 = 2.303: every class equally
  often; low: the VAE draws few digits),
- score: exp(E_x KL(p(y|x) || p(y))), the Inception-score analogue (1 to 10; higher is better),
beside the same figures for the real MNIST test images (the ceiling) and for uniform noise images (a floor).
The VAEs: vae_mlp (784-512-(32)-512-784) and vae_conv (conv 32-64, code 32), each `aeclass train --data mnist
--strategy vae --model MODEL --optimizer adam --lr 1e-3 --schedule constant --batch-size 128 --epochs 10
--augment none` (the vae_vs_pythae recipe). The 2 CPU cores may have been shared with other processes.

    python benchmarks/vae_samples.py          # writes benchmarks/results/vae_samples.{json,md}
    python benchmarks/vae_samples.py --models vae_mlp,vae_conv --threads 1
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from _common import RESULTS, load_average, machine, save_results, shared_datasets

RUNS = RESULTS / "runs"
VAES = {"vae_mlp": {"code_dim": 32, "hidden": [512]}, "vae_conv": {"code_dim": 32, "widths": [32, 64]}}
N = 10000


def train_once(run_dir: Path, preset: str | None = None, **overrides):
    """The run in `run_dir`, trained now unless it finished before (its metrics.json exists)."""
    import json

    import aeclass
    if (run_dir / "metrics.json").is_file():
        return json.loads((run_dir / "metrics.json").read_text())
    import shutil
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = aeclass.build_config(preset=preset, overrides={**overrides, "data_dir": str(shared_datasets()),
                                                          "out": str(run_dir), "report": False})
    return aeclass.train(cfg, log=print, progress=False).metrics


@torch.no_grad()
def judged(judge, x: torch.Tensor) -> dict:
    """Confidence, class entropy and the score of float images x in [0, 1] under the judge."""
    p = torch.cat([torch.softmax(judge(x[i:i + 1000], decode=False)["logits"].float(), 1) for i in range(0, len(x), 1000)])
    marginal = p.mean(0)
    kl = (p * (p.clamp_min(1e-12).log() - marginal.clamp_min(1e-12).log())).sum(1).mean()
    return {"confidence": float(p.max(1).values.mean()),
            "class_entropy": float(-(marginal * marginal.clamp_min(1e-12).log()).sum()),
            "score": math.exp(float(kl)), "class_histogram": [round(float(v), 4) for v in marginal]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default=",".join(VAES), help="comma-separated, of %(default)s")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_start = load_average()
    from aeclass.data import load_dataset
    from aeclass.generate import sample
    from aeclass.inference import load_model
    judge_metrics = train_once(RUNS / "mnist-judge", preset="fast-mnist-long")
    if judge_metrics["test_accuracy"] < 0.993:
        raise SystemExit(f"the judge reached {judge_metrics['test_accuracy']:.4f} < 0.993; not a fair judge")
    judge, _ = load_model(RUNS / "mnist-judge")
    res = {"judge_test_accuracy": judge_metrics["test_accuracy"], "n": N, "machine": machine(), "rows": {},
           "load_average_start_end": [load_start, None],
           "command": " ".join(["python", "benchmarks/vae_samples.py", *sys.argv[1:]])}
    test = load_dataset("mnist", str(shared_datasets())).test_x.float() / 255
    res["rows"]["MNIST test images"] = judged(judge, test)
    res["rows"]["uniform noise"] = judged(judge, torch.rand(N, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    for model, kw in ((m, VAES[m]) for m in args.models.split(",")):
        run = RUNS / f"mnist-{model}-{args.epochs}ep"
        m = train_once(run, data="mnist", strategy="vae", model=model, model_kwargs=kw, optimizer="adam", lr=1e-3,
                       schedule="constant", batch_size=128, epochs=args.epochs, augment="none")
        x, _ = sample(run, N, seed=0)
        res["rows"][f"{model} prior samples"] = {**judged(judge, x), "test_neg_elbo": m.get("test_neg_elbo"),
                                                 "train_seconds": m["train_seconds"]}
        print(model, res["rows"][f"{model} prior samples"])
    res["load_average_start_end"][1] = load = load_average()
    save_results(RESULTS / "vae_samples.json", res)
    lines = ["# VAE sample quality on MNIST, judged by an aeclass classifier", "",
             f"Judge: `aeclass train --preset fast-mnist-long` ({res['judge_test_accuracy']:.2%} test accuracy). "
             f"{N:,} samples each; command: `{res['command']}`. FID is impossible here (no Inception "
             "weights can be downloaded). Other processes shared the 2 cores (1-minute load average "
             f"{load_start:.1f} at the start, {load:.1f} at the end).", "",
             "| images | confidence | class entropy (nats; max 2.303) | score (1-10) | test -ELBO | train s |",
             "|---|---|---|---|---|---|"]
    for name, r in res["rows"].items():
        elbo = f"{r['test_neg_elbo']:.2f}" if r.get("test_neg_elbo") else ""
        secs = f"{r['train_seconds']:.0f}" if r.get("train_seconds") else ""
        lines.append(f"| {name} | {r['confidence']:.3f} | {r['class_entropy']:.3f} | {r['score']:.2f} | {elbo} | {secs} |")
    (RESULTS / "vae_samples.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
