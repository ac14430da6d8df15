"""The `aeclass` command: train, sweep, evaluate, predict, datasets, export, report, sample, interpolate, encode, decode.

User errors print one line (`aeclass: error: ...`) and exit with status 2; no traceback. Ctrl-C exits 130 and
SIGTERM 143, each with one line; an interrupted training run resumes with --resume.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from . import distributed
from .errors import AeclassError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage dump
        # one prefix ("aeclass: error: ..."), the subcommand named once: "train: unrecognized arguments: ..."
        sub = self.prog.removeprefix("aeclass").strip()
        raise AeclassError(f"{sub + ': ' if sub else ''}{message} (see '{self.prog} --help')")


def _kv(text: str):
    """--model-opt / --strategy-opt key=value; the value is read as YAML so 64, 0.5, true and [32, 64] work."""
    import yaml
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    k, v = text.split("=", 1)
    try:
        return k.strip().replace("-", "_"), yaml.safe_load(v)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"{k}: cannot read value '{v}'") from None


def _add_train(sub):
    from dataclasses import fields

    from .config import PRESETS, TrainConfig
    from .options import GROUPS, add_flags
    from .strategies import get_strategy, list_strategies
    lines = "\n".join(f"  {n:<18} {get_strategy(n).summary}" for n in list_strategies())
    p = sub.add_parser("train", help="train a model (no arguments: the demo on the embedded digits)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train with a strategy; options come from --preset, then --config YAML, then "
                                   f"flags.\n\nstrategies:\n{lines}")
    groups = {g: p.add_argument_group(f"{g} options") for g in GROUPS + ("evaluation",)}
    run = groups["run"]
    run.add_argument("--preset", help=" | ".join(PRESETS))
    run.add_argument("--config", help="YAML file of options (keys as the flags, with _ or -)")
    seen: set = set()
    add_flags(p, groups, [f for f in fields(TrainConfig) if f.name not in ("model_kwargs", "strategy_kwargs")], seen)
    owners: dict[str, list] = {}  # each strategy's own options as flat flags (also: --strategy-opt KEY=VALUE);
    for name in list_strategies():  # one flag for an option two strategies share, naming both
        for f in fields(get_strategy(name).Options):
            owners.setdefault(f.name, [f]).append(name)
    for f, *names in owners.values():
        add_flags(p, groups, [f], seen, owner=", ".join(names))
    groups["model"].add_argument("--model-opt", action="append", type=_kv, default=[], metavar="KEY=VALUE",
                                 help="model factory option, e.g. code_dim=64 (repeatable)")
    groups["strategy"].add_argument("--strategy-opt", action="append", type=_kv, default=[], metavar="KEY=VALUE",
                                    help="strategy option, e.g. confidence=0.9 (repeatable; the same as its flag)")
    groups["strategy"].add_argument("--no-recon", action="store_true",
                                    help="no reconstruction term (= --recon-weight 0; semi, ladder)")
    run.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                     help="continue the run in RUN_DIR (or --out) from its last checkpoint")
    run.add_argument("--init", metavar="RUN_OR_CKPT", help="start from another run's weights (skips pre-training)")
    run.add_argument("--print-config", action="store_true", help="print the resolved config as YAML; train nothing")
    run.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.set_defaults(func=cmd_train)


def _train_flags(args) -> dict:
    """The flags given (None = not given), as config keys."""
    from dataclasses import fields

    from .config import TrainConfig
    from .strategies import get_strategy, list_strategies
    names = {f.name for f in fields(TrainConfig)} - {"model_kwargs", "strategy_kwargs"}
    names |= {f.name for s in list_strategies() for f in fields(get_strategy(s).Options)}
    flags = {k: getattr(args, k) for k in names if hasattr(args, k)}
    if args.model_opt:
        flags["model_kwargs"] = dict(args.model_opt)
    if args.strategy_opt:
        flags["strategy_kwargs"] = dict(args.strategy_opt)
    if args.no_recon:
        if flags.get("recon_weight"):
            raise AeclassError("--no-recon contradicts --recon-weight; give one of them")
        flags["recon_weight"] = 0.0
    return flags


def cmd_train(args) -> int:
    from dataclasses import fields
    from pathlib import Path

    import yaml

    from .config import FIELDS, build_config
    flags = _train_flags(args)
    base = None
    resume = args.resume is not None
    if resume:
        run_dir = Path(args.resume if isinstance(args.resume, str) else (args.out or ""))
        if not str(run_dir) or not (run_dir / "config.yaml").is_file():
            raise AeclassError(f"--resume: no run to continue at '{run_dir}' (expected {run_dir}/config.yaml)")
        try:
            base = yaml.safe_load((run_dir / "config.yaml").read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            why = (str(e).splitlines() or [""])[0]
            raise AeclassError(f"{run_dir / 'config.yaml'}: cannot read ({type(e).__name__}: {why})") from None
        if not isinstance(base, dict):
            raise AeclassError(f"{run_dir / 'config.yaml'}: not a saved aeclass config")
        flags["out"] = str(run_dir)
    preset = args.preset
    # Options that only say where or how to run (the speed and run groups) keep the no-options default: the demo.
    what = {k: v for k, v in flags.items() if k not in FIELDS or FIELDS[k].metadata.get("group") not in ("speed", "run")}
    if not resume and preset is None and args.config is None and all(v is None for v in what.values()):
        preset = "demo"
        if not args.print_config:
            print("aeclass train: no data, model or strategy options given; running --preset demo "
                  "(digits, 100 labels, joint)")
    if resume:
        _saved_config(run_dir, base)  # a broken saved config is named as such, before any flag is applied
    cfg = build_config(preset=preset, config_file=args.config, overrides=flags, base=base)
    if resume:
        _refuse_changes(run_dir, base, cfg)
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    from .train import train
    log = (lambda *a: None) if args.quiet else print
    result = train(cfg, resume=resume, init=args.init, log=log)
    m = result.metrics
    if m.get("test_accuracy") is not None:
        print(f"test accuracy: {m['test_accuracy']:.4f}")
    if m.get("test_recon_mse") is not None:
        print(f"test reconstruction MSE: {m['test_recon_mse']:.5f}")
    if cfg.report and distributed.is_main():
        _write_report(result.run_dir, log)
    return 0


def _saved_config(run_dir, base: dict):
    from .config import build_config
    from .errors import ConfigError
    try:
        return build_config(base=base)
    except ConfigError as e:
        raise ConfigError(f"{run_dir / 'config.yaml'}: {e}") from None


def _refuse_changes(run_dir, base: dict, cfg) -> None:
    """A resumed run keeps the options it started with: a run resumed with another --epochs, --lr or --labels
    would report figures of a run that never happened. Only where and how it runs (RUNTIME_KEYS) may change."""
    from .config import FIELDS, RUNTIME_KEYS
    from .errors import ConfigError
    where = run_dir / "config.yaml"
    saved, want = _saved_config(run_dir, base).to_dict(), cfg.to_dict()
    for k in [k for k in saved if k not in RUNTIME_KEYS] + [k for k in want if k not in saved]:
        if saved.get(k) != want.get(k):
            flag = "--model-opt" if k == "model_kwargs" else FIELDS[k].metadata.get("flag") if k in FIELDS else None
            flag = flag or "--" + k.replace("_", "-")
            raise ConfigError(f"--resume {run_dir}: {flag} {want.get(k)!r} differs from the run's {saved.get(k)!r} "
                              f"({where}); a resumed run keeps its options (only {', '.join(sorted(RUNTIME_KEYS))} "
                              "may change): start a new run with another --out")


def _write_report(run_dir, log) -> None:
    """report.html for a finished run or sweep; a report that cannot be written is said, not fatal."""
    try:
        from .report import write_report
    except ImportError:
        return
    try:
        log(f"report: {write_report(run_dir)}")
    except AeclassError as e:
        log(f"report skipped: {e}")


def _add_sweep(sub):
    from .sweep_plans import DEFAULT, PHOTOS

    def plan(p):
        return f"{','.join(p.strategies)} at {','.join(p.labels)} labels, {p.seeds} seed{'s' * (p.seeds > 1)}"
    p = sub.add_parser("sweep", help="train every strategy x label count x seed; results.csv, summary.md, plot",
                       description="Train every strategy x label count x seed into SWEEP_DIR/runs/, with a "
                                   "LabelSpreading baseline, and write results.csv, summary.md (with the strategy to "
                                   "use at each label count) and accuracy_vs_labels.png. Rerunning the same command "
                                   "resumes: finished cells are read back, half-finished ones continue from their "
                                   "checkpoint. On a cluster, one job per --shard I/N, then one --collect. What is "
                                   "not given comes from the plan for the data (aeclass/sweep_plans.py, "
                                   f"docs/sweeps.md): grey images {plan(DEFAULT)}, options below the preset/config "
                                   f"{', '.join(f'{k}={v}' for k, v in DEFAULT.options.items())}; colour photos "
                                   f"{plan(PHOTOS)} (not semi at all), supervised with the fastcnn-cifar preset and "
                                   "semi with the cifar-4000 recipe in 4 epochs, the test set scored once per run.")
    p.add_argument("--data", help="digits | mnist | cifar10 | folder:PATH (default: the preset's, else digits)")
    p.add_argument("--data-dir", help="directory holding mnist/cifar10 files")
    p.add_argument("--image-size", type=int, help="folder data: resize images to this square size")
    p.add_argument("--val", help="hold out N labelled images (or a fraction) per cell to validate on; the "
                                 "summary then ranks the strategies by validation accuracy")
    p.add_argument("--unlabelled", help="a directory or .zip of unlabelled images added to every cell")
    p.add_argument("--strategies", help="comma-separated (default: the plan's)")
    p.add_argument("--labels", help="comma-separated counts or 'all' (default: the plan's)")
    p.add_argument("--seeds", help="number of seeds (0..N-1) or a list such as 0,4,7 (default: the plan's)")
    p.add_argument("--epochs", type=int, help="epochs per run (default: the preset's, else the plan's)")
    p.add_argument("--preset", help="options preset for every run (see aeclass train --help)")
    p.add_argument("--config", help="YAML file of train options for every run")
    p.add_argument("--threads", type=int, help="CPU threads")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--test-every", type=int, metavar="N", help="score the test set after every Nth epoch of each run, "
                   "for its learning curves; 0 = only after the last (default: the plan's: grey images 1, photos 0)")
    p.add_argument("--out", metavar="SWEEP_DIR", help="sweep directory (rerun to resume); required, except with --collect")
    p.add_argument("--shard", metavar="I/N", help="run only shard I of N (0 <= I < N): cell k of the grid when "
                                                  "k %% N == I, into the same SWEEP_DIR; then --collect merges them")
    p.add_argument("--collect", nargs="+", metavar="DIR", help="merge the finished cells of --shard runs in these "
                   "sweep directories into results.csv, summary.md, plot and report (into --out, default the first "
                   "DIR; the grid is the shards'); trains nothing")
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="add the LabelSpreading-on-PCA baseline rows (default: yes)")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.add_argument("--quiet", action="store_true", help="no per-cell lines")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    from .sweep import collect_sweep, parse_shard, run_sweep
    log = (lambda *a: None) if args.quiet else print
    if args.collect:
        if args.shard is not None:
            raise AeclassError("sweep: --shard and --collect: a shard trains its cells, --collect only merges "
                               "finished ones; give one of them")
        result = collect_sweep(args.collect, out=args.out, report=not args.no_report, log=log)
        print((result.sweep_dir / "summary.md").read_text(), end="")
        return 0
    if not args.out:
        raise AeclassError("sweep: the following arguments are required: --out (see 'aeclass sweep --help')")
    shard = parse_shard(args.shard)  # before the data are loaded: a bad --shard is a one-line error at once
    result = run_sweep(args.out, data=args.data, strategies=args.strategies, labels=args.labels, seeds=args.seeds,
                       epochs=args.epochs, preset=args.preset, config_file=args.config, data_dir=args.data_dir,
                       baseline=args.baseline, report=not args.no_report, shard=shard, log=log,
                       overrides={"threads": args.threads, "device": args.device, "image_size": args.image_size,
                                  "val": args.val, "unlabelled": args.unlabelled, "test_every": args.test_every})
    if shard is not None:  # said even with --quiet: the only output of a shard
        i, n = shard
        print(f"aeclass sweep --shard {i}/{n}: {len(result.rows)} cells in {result.part}; once all {n} shards have "
              f"finished: aeclass sweep --collect {result.sweep_dir} (shards on separate disks: --collect DIR [DIR ...])")
        return 0
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
    rows = predict_files(args.checkpoint, args.inputs, top_k=args.top_k, skip_errors=args.skip_errors,
                         warn=lambda m: print(f"aeclass: {m}", file=sys.stderr))
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
    if args.action == "locate" and report.get("missing"):  # not found: say so with the exit status too
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


def cmd_sample(args) -> int:
    from .generate import grid, sample, save_png
    images, source = sample(args.run, args.n, args.klass, args.seed)
    print(f"{save_png(grid(images, args.cols or max(1, round(args.n ** 0.5))), args.out)}: {args.n} samples from {source}")
    return 0


def cmd_interpolate(args) -> int:
    from .generate import grid, interpolate, save_png
    print(save_png(grid(interpolate(args.run, args.image_a, args.image_b, args.steps), args.steps), args.out))
    return 0


def cmd_encode(args) -> int:
    from .codes import encode
    print(json.dumps(encode(args.run, args.out, args.data, args.split, args.dtype, args.data_dir), indent=2))
    return 0


def cmd_decode(args) -> int:
    from .codes import decode
    print(json.dumps(decode(args.run, args.codes, args.out), indent=2))
    return 0


def _add_generation(sub):
    """sample, interpolate, encode, decode (aeclass/generate.py, aeclass/codes.py; docs/generation.md)."""
    s = sub.add_parser("sample", help="decode codes drawn from the prior (a VAE) or the training codes' Gaussian")
    s.add_argument("run", help="run directory or .pt checkpoint of a model with a decoder")
    s.add_argument("--n", type=int, default=64, help="number of samples (default: %(default)s)")
    s.add_argument("--class", dest="klass", metavar="K", help="a class name or index: codes of the images the head assigns to it")
    s.add_argument("--cols", type=int, help="grid columns (default: about sqrt(n))")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="PNG file of the grid")
    s.set_defaults(func=cmd_sample)
    i = sub.add_parser("interpolate", help="decode the straight line between two images' codes")
    i.add_argument("run")
    i.add_argument("image_a")
    i.add_argument("image_b")
    i.add_argument("--steps", type=int, default=8, help="images in the strip, both ends included (default: %(default)s)")
    i.add_argument("--out", required=True, help="PNG file of the strip")
    i.set_defaults(func=cmd_interpolate)
    e = sub.add_parser("encode", help="write the codes of a dataset or image files (.npz or .csv), with MSE / PSNR")
    e.add_argument("run")
    e.add_argument("--data", help="a dataset (digits, mnist, cifar10, folder:PATH) or image files' folder (default: the run's)")
    e.add_argument("--data-dir")
    e.add_argument("--split", default="test", choices=["test", "train", "all"], help="dataset split (default: %(default)s)")
    e.add_argument("--dtype", default="float32", choices=["float32", "float16", "int8"], help="how codes are stored")
    e.add_argument("--out", required=True, help="codes.npz or codes.csv")
    e.set_defaults(func=cmd_encode)
    d = sub.add_parser("decode", help="turn a codes file back into PNG images")
    d.add_argument("run")
    d.add_argument("codes", help="a .npz or .csv written by aeclass encode")
    d.add_argument("--out", required=True, help="directory for the PNGs")
    d.set_defaults(func=cmd_decode)


MODEL_HELP = "run directory, .pt checkpoint, or an export: OUT.safetensors or OUT.onnx (with OUT.json beside it)"


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__
    p = _Parser(prog="aeclass", description="Autoencoders + image classification, for few labels.")
    p.add_argument("--version", action="version", version=f"aeclass {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    _add_train(sub)
    _add_sweep(sub)
    e = sub.add_parser("evaluate", help="test metrics of a checkpoint or run directory")
    e.add_argument("checkpoint", help=MODEL_HELP)
    e.add_argument("--data", help="evaluate on another dataset (same image shape and classes)")
    e.add_argument("--data-dir")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)
    pr = sub.add_parser("predict", help="classify image files or folders")
    pr.add_argument("checkpoint", help=MODEL_HELP)
    pr.add_argument("inputs", nargs="+", help="image files or directories (searched recursively)")
    pr.add_argument("--top-k", type=int, default=1)
    pr.add_argument("--skip-errors", action="store_true",
                    help="report unreadable files on stderr and go on (default: stop at the first, naming it)")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_predict)
    d = sub.add_parser("datasets", help="list, locate or verify datasets")
    d.add_argument("action", choices=["list", "locate", "verify"])
    d.add_argument("name", nargs="?")
    d.add_argument("--data-dir")
    d.set_defaults(func=cmd_datasets)
    x = sub.add_parser("export", help="export as safetensors + JSON, a torch.export program and ONNX")
    x.add_argument("checkpoint", help="run directory or .pt checkpoint")
    x.add_argument("--out", required=True, help="output path without extension, e.g. exported/model")
    x.add_argument("--format", choices=["safetensors", "program", "onnx", "all"], default="all",
                   help="all: safetensors, program, and onnx when the onnx extra is installed (default: all)")
    x.set_defaults(func=cmd_export)
    r = sub.add_parser("report", help="write report.html for a run or sweep directory")
    r.add_argument("run_dir")
    r.add_argument("--latent", choices=["pca", "tsne"])
    r.set_defaults(func=cmd_report)
    _add_generation(sub)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, `kill`, a container stopping), handled as Ctrl-C is: the same unwinding, so a
    half-written temporary file is removed and the run resumes from its last checkpoint."""


def _on_sigterm(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading
    argv = sys.argv[1:] if argv is None else argv
    previous = None
    if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return 2
        if distributed.launched() and args.command != "train":  # N copies would all write the same files
            raise AeclassError(f"aeclass {args.command} runs in one process; under torchrun only 'aeclass train' is "
                               "distributed (spread a sweep with aeclass sweep --shard i/n instead)")
        return args.func(args)
    except AeclassError as e:
        rank = "" if distributed.is_main() else f" [rank {os.environ.get('RANK')}]"
        print(f"aeclass: error{rank}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        what, code = ("terminated (SIGTERM)", 128 + signal.SIGTERM) if isinstance(e, Terminated) else ("interrupted", 130)
        print(f"aeclass: {what} (a training run continues with: aeclass train --resume RUN_DIR)", file=sys.stderr)
        return code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
