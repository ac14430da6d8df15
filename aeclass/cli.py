"""The `aeclass` command: train, sweep, evaluate, predict, datasets, export, report.

User errors print one line (`aeclass: error: ...`) and exit with status 2; no traceback.
"""
from __future__ import annotations

import argparse
import json
import sys

from .errors import AeclassError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage dump
        raise AeclassError(f"{self.prog}: {message} (see '{self.prog} --help')")


def _kv(text: str):
    """--model-opt key=value; the value is read as YAML so 64, 0.5, true and [32, 64] work."""
    import yaml
    if "=" not in text:
        raise AeclassError(f"--model-opt: expected KEY=VALUE, got '{text}'")
    k, v = text.split("=", 1)
    try:
        return k.strip(), yaml.safe_load(v)
    except yaml.YAMLError:
        raise AeclassError(f"--model-opt {k}: cannot read value '{v}'") from None


def _bool(text: str) -> bool:
    v = text.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


TRAIN_FLAGS = [  # (flag, type, help); all default to None so that presets and config files show through
    ("--data", str, "digits | mnist | cifar10 | folder:PATH (a directory or .zip of class sub-folders)"),
    ("--data-dir", str, "directory holding mnist/cifar10 files (also $AECLASS_DATA)"),
    ("--image-size", int, "resize images to this square size"),
    ("--channels", int, "1 (greyscale) or 3 (RGB); default: the data's own"),
    ("--model", str, "registered model: hybrid, cnn, conv_ae, mlp_ae, ..."),
    ("--strategy", str, "autoencoder | supervised | pretrain-finetune | linear-probe | joint | semi | ladder (--model ladder)"),
    ("--labels", str, "number of labelled training images (balanced per class, chosen by seed) or 'all'"),
    ("--epochs", int, "epochs of the (final) training phase"),
    ("--pretrain-epochs", int, "epochs of the autoencoder phase (pretrain-finetune, linear-probe)"),
    ("--batch-size", int, "images per step"),
    ("--labelled-batch-size", int, "labelled images added to each step when labels are few (joint)"),
    ("--lr", float, "peak learning rate"),
    ("--optimizer", str, "adam | adamw | sgd"),
    ("--weight-decay", float, "weight decay"),
    ("--momentum", float, "sgd: momentum (default 0.9)"),
    ("--nesterov", _bool, "sgd: Nesterov momentum (true/false)"),
    ("--schedule", str, "constant | cosine | onecycle"),
    ("--warmup-epochs", float, "linear warm-up length (onecycle/cosine)"),
    ("--recon-loss", str, "mse | bce"),
    ("--recon-weight", float, "lambda: weight of the reconstruction loss (joint, semi; ladder: of its denoising costs)"),
    ("--noise", float, "std of Gaussian input noise (denoising autoencoder; ladder: of every layer's noise)"),
    ("--unlabelled-weight", float, "semi: weight of the pseudo-label loss on unlabelled images"),
    ("--confidence", float, "semi: top-class probability needed to use a pseudo-label (e.g. 0.95)"),
    ("--rampup-epochs", float, "semi: epochs over which the unlabelled weight ramps up"),
    ("--dist-align", _bool, "semi: align pseudo-label distribution to balanced classes (true/false)"),
    ("--ema-teacher", _bool, "semi: pseudo-labels from the EMA weights, a mean teacher (true/false; needs --ema)"),
    ("--strong-labelled", _bool, "semi: also train labelled images' strong views on their labels (true/false)"),
    ("--student-epochs", int, "semi: then train fresh weights for N epochs on the confident pseudo-labels of all images"),
    ("--student-rounds", int, "semi student: self-training rounds, each student teaching the next (default 1)"),
    ("--student-smoothing", float, "semi student: label smoothing of its cross-entropy (default 0.1)"),
    ("--student-augment", str, "semi student: its augmentation, as --augment (default: the run's)"),
    ("--teacher", str, "semi student: a finished run (directory or .pt) labels the images for the first student "
                       "instead of this run's own semi phase, which is skipped (e.g. a dense teacher, a CNN student)"),
    ("--ema", float, "decay of a weight moving average used for evaluation and saving (e.g. 0.999; 0 = off)"),
    ("--label-smoothing", float, "label smoothing of the cross-entropy"),
    ("--tta-flip", _bool, "test-time flip: average each image's scores with its mirror image's (photos only)"),
    ("--tta-shift", int, "test-time shifts: also average the scores of copies moved +-N pixels (0 = off)"),
    ("--pca-init", _bool, "dense autoencoder (mlp_ae without hidden layers): start at PCA of the training images"),
    ("--augment", str, "'default', 'none' or e.g. crop=4,flip,rot=10,grey=0.2"),
    ("--seed", int, "random seed (label subset, initialisation, batches, augmentation)"),
    ("--device", str, "auto | cpu | cuda | cuda:N"),
    ("--precision", str, "fp32 | bf16"),
    ("--threads", int, "CPU threads"),
    ("--compile", _bool, "torch.compile the model (true/false; needs a C++ compiler on CPU)"),
    ("--fused-optimizer", _bool, "torch's fused optimiser kernels (true/false): faster steps, different rounding"),
    ("--memory-format", str, "auto | channels_last | contiguous (auto: channels_last for conv models)"),
    ("--out", str, "run directory (default runs/<data>-<strategy>-<labels>-s<seed>-<time>)"),
]


def _add_train(sub):
    p = sub.add_parser("train", help="train a model (no arguments: the demo on the embedded digits)",
                       description="Train with a strategy; options come from --preset, then --config YAML, then flags.")
    from .config import PRESETS
    p.add_argument("--preset", help=" | ".join(PRESETS))
    p.add_argument("--config", help="YAML file of options (keys as the flags, with _ or -)")
    for flag, typ, hlp in TRAIN_FLAGS:
        p.add_argument(flag, type=typ, help=hlp)
    p.add_argument("--model-opt", action="append", type=_kv, default=[], metavar="KEY=VALUE",
                   help="model factory option, e.g. code_dim=64 (repeatable)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or --out) from its last checkpoint")
    p.add_argument("--init", metavar="RUN_OR_CKPT", help="start from another run's weights (skips pre-training)")
    p.add_argument("--no-recon", action="store_true", help="no reconstruction term (= --recon-weight 0; semi, ladder)")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from pathlib import Path

    import yaml

    from .config import build_config
    from .train import train

    flags = {flag.lstrip("-").replace("-", "_"): getattr(args, flag.lstrip("-").replace("-", "_")) for flag, _, _ in TRAIN_FLAGS}
    if args.model_opt:
        flags["model_kwargs"] = dict(args.model_opt)
    if args.no_report:
        flags["report"] = False
    if args.no_recon:
        if flags.get("recon_weight"):
            raise AeclassError("--no-recon contradicts --recon-weight; give one of them")
        flags["recon_weight"] = 0.0
    base = None
    resume = args.resume is not None
    if resume:
        run_dir = Path(args.resume if isinstance(args.resume, str) else (args.out or ""))
        if not str(run_dir) or not (run_dir / "config.yaml").is_file():
            raise AeclassError(f"--resume: no run to continue at '{run_dir}' (expected {run_dir}/config.yaml)")
        base = yaml.safe_load((run_dir / "config.yaml").read_text())
        flags["out"] = str(run_dir)
    preset = args.preset
    # Flags that only say where/how to run (not what to train) keep the no-options default: the demo.
    what = {k: v for k, v in flags.items() if k not in ("report", "out", "threads", "device", "seed", "precision",
                                                      "memory_format", "compile")}
    if not resume and preset is None and args.config is None and all(v is None for v in what.values()):
        preset = "demo"
        print("aeclass train: no options given; running --preset demo (digits, 100 labels, joint)")
    cfg = build_config(preset=preset, config_file=args.config, overrides=flags, base=base)
    log = (lambda *a: None) if args.quiet else print
    result = train(cfg, resume=resume, init=args.init, log=log)
    m = result.metrics
    if m.get("test_accuracy") is not None:
        print(f"test accuracy: {m['test_accuracy']:.4f}")
    if m.get("test_recon_mse") is not None:
        print(f"test reconstruction MSE: {m['test_recon_mse']:.5f}")
    return 0


def _add_sweep(sub):
    from .sweep import DEFAULT_LABELS, DEFAULT_STRATEGIES, SWEEP_DEFAULTS
    p = sub.add_parser("sweep", help="train every strategy x label count x seed; results.csv, summary.md, plot",
                       description="Train every strategy x label count x seed into SWEEP_DIR/runs/, with a "
                                   "LabelSpreading baseline, and write results.csv, summary.md and "
                                   "accuracy_vs_labels.png. Rerunning the same command resumes: finished cells are "
                                   "read back, half-finished ones continue from their checkpoint. Options below "
                                   f"the preset/config: {', '.join(f'{k}={v}' for k, v in SWEEP_DEFAULTS.items())}.")
    p.add_argument("--data", help="digits | mnist | cifar10 | folder:PATH (default: the preset's, else digits)")
    p.add_argument("--data-dir", help="directory holding mnist/cifar10 files")
    p.add_argument("--image-size", type=int, help="folder data: resize images to this square size")
    p.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES), help="comma-separated (default: %(default)s)")
    p.add_argument("--labels", default=",".join(DEFAULT_LABELS), help="comma-separated counts or 'all' (default: %(default)s)")
    p.add_argument("--seeds", default="3", help="number of seeds (0..N-1) or a list such as 0,4,7 (default: %(default)s)")
    p.add_argument("--epochs", type=int, help=f"epochs per run (default {SWEEP_DEFAULTS['epochs']}, or the preset's)")
    p.add_argument("--preset", help="options preset for every run (see aeclass train --help)")
    p.add_argument("--config", help="YAML file of train options for every run")
    p.add_argument("--threads", type=int, help="CPU threads")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", required=True, metavar="SWEEP_DIR", help="sweep directory (rerun to resume)")
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="add the LabelSpreading-on-PCA baseline rows (default: yes)")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.add_argument("--quiet", action="store_true", help="no per-cell lines")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    from .sweep import run_sweep
    log = (lambda *a: None) if args.quiet else print
    result = run_sweep(args.out, data=args.data, strategies=args.strategies, labels=args.labels, seeds=args.seeds,
                       epochs=args.epochs, preset=args.preset, config_file=args.config, data_dir=args.data_dir,
                       baseline=args.baseline, report=not args.no_report, log=log,
                       overrides={"threads": args.threads, "device": args.device, "image_size": args.image_size})
    print((result.sweep_dir / "summary.md").read_text(), end="")
    return 0


def cmd_evaluate(args) -> int:
    from .inference import evaluate_checkpoint
    m = evaluate_checkpoint(args.checkpoint, data=args.data, data_dir=args.data_dir)
    if args.json:
        print(json.dumps(m, indent=2))
    else:
        for k in ("test_accuracy", "test_loss", "test_recon_mse", "n_test"):
            if m.get(k) is not None:
                print(f"{k}: {m[k]:.5g}" if isinstance(m[k], float) else f"{k}: {m[k]}")
    return 0


def cmd_predict(args) -> int:
    from .inference import predict_files
    rows = predict_files(args.checkpoint, args.inputs, top_k=args.top_k)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print("\t".join([r["path"]] + [f"{c}\t{p:.4f}" for c, p in zip(r["classes"], r["probabilities"])]))
    return 0


def cmd_datasets(args) -> int:
    from .data import catalog
    if args.action == "list":
        for s in catalog.list_sources():
            print(f"{s['name']:<12} {s['description']}")
        return 0
    if not args.name:
        raise AeclassError(f"aeclass datasets {args.action}: name a dataset (digits, mnist, cifar10, folder:PATH)")
    fn = catalog.locate if args.action == "locate" else catalog.verify
    report = fn(args.name, data_dir=args.data_dir)
    print(json.dumps(report, indent=2, default=str))
    if args.action == "verify" and not report.get("ok", True):
        return 1
    return 0


def cmd_export(args) -> int:
    from .inference import export
    paths = export(args.checkpoint, args.out, fmt=args.format)
    for p in paths:
        print(p)
    return 0


def cmd_report(args) -> int:
    from .report import write_report
    print(write_report(args.run_dir, **({"latent": args.latent} if args.latent else {})))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    p = _Parser(prog="aeclass", description="Autoencoders + image classification, for few labels.")
    p.add_argument("--version", action="version", version=f"aeclass {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    _add_train(sub)
    _add_sweep(sub)
    e = sub.add_parser("evaluate", help="test metrics of a checkpoint or run directory")
    e.add_argument("checkpoint", help="run directory or .pt checkpoint")
    e.add_argument("--data", help="evaluate on another dataset (same image shape and classes)")
    e.add_argument("--data-dir")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)
    pr = sub.add_parser("predict", help="classify image files or folders")
    pr.add_argument("checkpoint", help="run directory or .pt checkpoint")
    pr.add_argument("inputs", nargs="+", help="image files or directories (searched recursively)")
    pr.add_argument("--top-k", type=int, default=1)
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_predict)
    d = sub.add_parser("datasets", help="list, locate or verify datasets")
    d.add_argument("action", choices=["list", "locate", "verify"])
    d.add_argument("name", nargs="?")
    d.add_argument("--data-dir")
    d.set_defaults(func=cmd_datasets)
    x = sub.add_parser("export", help="export weights as safetensors + JSON, and a torch.export program")
    x.add_argument("checkpoint", help="run directory or .pt checkpoint")
    x.add_argument("--out", required=True, help="output path without extension, e.g. exported/model")
    x.add_argument("--format", choices=["safetensors", "program", "all"], default="all")
    x.set_defaults(func=cmd_export)
    r = sub.add_parser("report", help="write report.html for a run or sweep directory")
    r.add_argument("run_dir")
    r.add_argument("--latent", choices=["pca", "tsne"])
    r.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return 2
        return args.func(args)
    except AeclassError as e:
        print(f"aeclass: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aeclass: interrupted (a training run continues with: aeclass train --resume RUN_DIR)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
