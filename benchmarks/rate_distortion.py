"""Rate-distortion: autoencoders beside PCA at the same code size and JPEG at the same bytes per image.

For each code size k (--sizes):
- PCA: the top k principal components of the training images (scikit-learn), k float32 numbers per image;
- dense AE: `aeclass train --preset fast-ae --model-opt code_dim=k --epochs E` (mlp_ae 784-k-784, PReLU code,
  PCA start; on CIFAR-10 the same recipe with `--data folder:cifar10-jpeg.zip`, 3072-k-3072), its codes written
  by `aeclass encode` as float32 (4k bytes) and int8 (k bytes);
- conv AE: `aeclass train --data D --strategy autoencoder --model conv_ae --model-opt code_dim=k --epochs E
  --augment none --lr 2e-3 --batch-size 128`, codes as int8 (k bytes) and float16 (2k bytes);
- JPEG (Pillow, 4:2:0 for colour) at qualities 5-95, bytes per image as the whole file and as its entropy-coded
  part alone (the file after its start-of-scan header: the tables are the same in every file, so a store of many
  images could share them).
Distortion: the test images' mean squared error on [0, 1] pixels and PSNR = 10 log10(1 / MSE). int8 codes also
need their per-dimension range once per file (8k bytes, shared by all images: not counted per image).
The 2 CPU cores may have been shared with other processes while this ran.

    python benchmarks/rate_distortion.py                          # MNIST: benchmarks/results/rate_distortion-mnist.*
    python benchmarks/rate_distortion.py --data cifar --sizes 16,64,256 --conv-sizes 64,256 --epochs 3 \
        --dense-epochs 5 --threads 1                              # CIFAR-10 (JPEG q75 variant): rate_distortion-cifar.*
Finished runs under benchmarks/results/runs/rate-DATA/ are reused and interrupted ones resumed.
"""
from __future__ import annotations

import argparse
import io
import math
import sys

import numpy as np
import torch
from _common import RESULTS, cifar_zip, load_average, machine, save_results, shared_datasets, trained

JPEG_QUALITIES = (5, 10, 20, 30, 50, 75, 90, 95)
N_JPEG = 2000  # test images JPEG-coded (Pillow, one at a time)


def psnr(mse: float) -> float:
    return 10 * math.log10(1 / mse) if mse > 0 else float("inf")


def pca_rows(train: np.ndarray, test: np.ndarray, sizes) -> list[dict]:
    from sklearn.decomposition import PCA
    rows = []
    for k in sizes:
        p = PCA(k, svd_solver="randomized", random_state=0).fit(train)
        rec = np.clip(p.inverse_transform(p.transform(test)), 0, 1)
        mse = float(((rec - test) ** 2).mean())
        rows.append({"method": "PCA", "code": f"{k} x float32", "bytes": 4 * k, "mse": mse, "psnr": psnr(mse)})
    return rows


def jpeg_rows(test_u8: np.ndarray) -> list[dict]:
    from PIL import Image
    rows = []
    for q in JPEG_QUALITIES:
        total, scan, sq = 0, 0, 0.0
        for img in test_u8[:N_JPEG]:
            arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="JPEG", quality=q)
            data = buf.getvalue()
            total += len(data)
            scan += len(data) - data.index(b"\xff\xda")  # from the start-of-scan marker to the end
            back = np.asarray(Image.open(io.BytesIO(data))).astype(np.float32) / 255
            sq += float(((back - arr.astype(np.float32) / 255) ** 2).mean())
        n = min(N_JPEG, len(test_u8))
        mse = sq / n
        rows.append({"method": "JPEG", "code": f"quality {q}", "bytes": total / n, "bytes_scan_only": scan / n,
                     "mse": mse, "psnr": psnr(mse)})
    return rows


def ae_rows(name: str, run_dir, dtypes, data: str) -> list[dict]:
    import tempfile

    from aeclass.codes import encode
    rows = []
    for dtype in dtypes:
        with tempfile.TemporaryDirectory() as tmp:
            m = encode(run_dir, f"{tmp}/codes.npz", data=data, split="test", dtype=dtype, data_dir=str(shared_datasets()))
        rows.append({"method": name, "code": f"{m['code_dim']} x {dtype}", "bytes": m["bytes_per_image"],
                     "mse": m["recon_mse"], "psnr": m["psnr_db"]})
    return rows


def plot(rows: list[dict], path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    # one line per method and storage type (a code's float32 and int8 points are the same code, not a curve)
    series = {}
    for r in rows:
        kind = r["code"].split(" x ")[-1] if r["method"].endswith("AE") else ""
        series.setdefault((r["method"], kind), []).append((r["bytes"], r["psnr"]))
    marks = {"PCA": "s-", "dense AE": "o-", "conv AE": "^-", "JPEG": "x-"}
    for (method, kind), pts in series.items():
        ax.plot(*zip(*sorted(pts)), marks[method] if kind != "int8" else marks[method][0] + "--",
                label=f"{method}, {kind}" if kind else method)
    scan = sorted((r["bytes_scan_only"], r["psnr"]) for r in rows if r["method"] == "JPEG")
    ax.plot(*zip(*scan), "x:", color="grey", label="JPEG, entropy-coded part only")
    ax.set_xscale("log")
    ax.set_xlabel("bytes per image")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["mnist", "cifar"], default="mnist")
    ap.add_argument("--sizes", default="8,16,32,64")
    ap.add_argument("--conv-sizes", help="code sizes of the conv AEs (default: --sizes; they take longest)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--dense-epochs", type=int, help="epochs of the dense AEs (default: --epochs; they are cheap)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_start = load_average()
    sizes = [int(s) for s in args.sizes.split(",")]
    conv_sizes = [int(s) for s in (args.conv_sizes or args.sizes).split(",")]
    if not set(conv_sizes) <= set(sizes):
        raise SystemExit("--conv-sizes must be among --sizes")
    from aeclass.data import load_dataset
    data = "mnist" if args.data == "mnist" else f"folder:{cifar_zip()}"
    ds = load_dataset(data, str(shared_datasets()))
    train = ds.train_x.flatten(1).numpy().astype(np.float32) / 255
    test = ds.test_x.flatten(1).numpy().astype(np.float32) / 255
    rows = pca_rows(train, test, sizes) + jpeg_rows(ds.test_x.numpy())
    runs = RESULTS / "runs" / f"rate-{args.data}"
    dense_epochs = args.dense_epochs or args.epochs
    for k in sizes:
        trained("fast-ae", {"data": data, "model_kwargs": {"code_dim": k, "code_act": "prelu"}, "epochs": dense_epochs},
                runs / f"dense-{k}")
        rows += ae_rows("dense AE", runs / f"dense-{k}", ("float32", "int8"), data)
        if k not in conv_sizes:
            continue
        trained(None, {"data": data, "strategy": "autoencoder", "model": "conv_ae", "model_kwargs": {"code_dim": k},
                          "epochs": args.epochs, "augment": "none", "lr": 2e-3, "batch_size": 128}, runs / f"conv-{k}")
        rows += ae_rows("conv AE", runs / f"conv-{k}", ("float16", "int8"), data)
        print(k, rows[-1])
    out = RESULTS / f"rate_distortion-{args.data}"
    command = " ".join(["python", "benchmarks/rate_distortion.py", *sys.argv[1:]])
    load = [load_start, load_average()]
    save_results(out.with_suffix(".json"), {"command": command, "data": args.data, "epochs": args.epochs,
                                            "dense_epochs": dense_epochs, "load_average_start_end": load,
                                            "machine": machine(), "rows": rows})
    name = "CIFAR-10 (JPEG q75 variant)" if args.data == "cifar" else args.data
    plot(rows, out.with_suffix(".png"), f"{name}: rate-distortion on the test set")
    lines = [f"# Rate-distortion on {name}", "",
             f"Command: `{command}` (conv AEs trained {args.epochs} epochs, dense AEs {dense_epochs}; JPEG on the "
             f"first {N_JPEG} test images). Other processes shared the 2 cores (1-minute load average "
             f"{load[0]:.1f} at the start, {load[1]:.1f} at the end). Plot: rate_distortion-{args.data}.png.", "",
             "| method | code | bytes/image | (JPEG: entropy-coded bytes) | test MSE | PSNR dB |", "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["method"], r["bytes"])):
        scan = f"{r['bytes_scan_only']:.0f}" if "bytes_scan_only" in r else ""
        lines.append(f"| {r['method']} | {r['code']} | {r['bytes']:.0f} | {scan} | {r['mse']:.5f} | {r['psnr']:.2f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
