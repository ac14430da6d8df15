"""File-based loaders on tiny synthetic files: formats, corruption, checksums, downloads (mocked), folders, catalog.

No test touches the network: `download._urlopen` is replaced for every test. The `realdata` tests load the real
MNIST and CIFAR-10 (JPEG zip) from ../shared/datasets or $AECLASS_DATA and skip when those are absent.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import struct
import tarfile
import urllib.error
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aeclass.data import catalog, cifar10, download, folder, load_dataset
from aeclass.data.cifar10 import load_cifar10
from aeclass.data.folder import load_folder
from aeclass.data.mnist import load_mnist
from aeclass.errors import DataError


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """A private cache dir, no $AECLASS_DATA, and a network that always fails."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("AECLASS_DATA", raising=False)
    monkeypatch.delenv("AECLASS_NO_CACHE", raising=False)

    def offline(request, timeout=None):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(download, "_urlopen", offline)


def serve(monkeypatch, pages: dict[str, bytes]):
    """Fake network: URLs in `pages` answer with their bytes, others with HTTP 404."""
    def urlopen(request, timeout=None):
        url = request.full_url
        if url not in pages:
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)
        return io.BytesIO(pages[url])

    monkeypatch.setattr(download, "_urlopen", urlopen)


# ---------------------------------------------------------------- MNIST

def idx_bytes(arr: np.ndarray) -> bytes:
    magic = 2051 if arr.ndim == 3 else 2049
    return struct.pack(f">i{arr.ndim}i", magic, *arr.shape) + arr.astype(np.uint8).tobytes()


def mnist_arrays(n_train=20, n_test=10, size=5):
    rng = np.random.default_rng(0)
    return {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size)),
            "train-labels-idx1-ubyte": np.arange(n_train) % 10,
            "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size)),
            "t10k-labels-idx1-ubyte": np.arange(n_test) % 10}


def make_mnist(d: Path, gz=True) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    arrays = mnist_arrays()
    for name, arr in arrays.items():
        data = idx_bytes(arr)
        (d / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return arrays


@pytest.mark.parametrize("gz,sub", [(True, ""), (False, "mnist"), (True, "MNIST/raw")])
def test_mnist_reads_gz_or_raw_idx(tmp_path, gz, sub):
    arrays = make_mnist(tmp_path / sub, gz=gz)
    ds = load_mnist([tmp_path / "empty", tmp_path], download=False, verify=False)
    assert ds.train_x.shape == (20, 1, 5, 5) and ds.test_x.shape == (10, 1, 5, 5)
    assert np.array_equal(ds.train_x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert ds.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert ds.classes == [str(i) for i in range(10)]


def test_mnist_checksum_mismatch_is_reported(tmp_path):
    make_mnist(tmp_path)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz decompresses to md5 .* expected 6bbc9ace"):
        load_mnist([tmp_path], download=False, verify=True)


@pytest.mark.parametrize("corrupt,message", [
    (lambda b: struct.pack(">i", 1234) + b[4:], "not an IDX images file .*magic number 1234, expected 2051"),
    (lambda b: b[:-7], "header .* implies .*truncated"),
    (lambda b: b[:10], "truncated"),
])
def test_mnist_corrupt_idx(tmp_path, corrupt, message):
    make_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(DataError, match=message) as err:
        load_mnist([tmp_path], download=False, verify=False)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_mnist_bad_gzip(tmp_path):
    make_mnist(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(DataError, match=re.escape(f"{path} is not a valid gzip file")):
        load_mnist([tmp_path], download=False, verify=False)


def test_mnist_offline_error_says_how_to_fix(tmp_path):
    with pytest.raises(DataError) as err:
        load_mnist([tmp_path / "a", tmp_path / "b"], download=True)
    msg = str(err.value)
    assert msg.startswith("mnist: train-images-idx3-ubyte(.gz) not found in ")
    assert str(tmp_path / "a") in msg and str(tmp_path / "b" / "mnist") in msg and "download failed" in msg
    assert "--data-dir DIR" in msg and "AECLASS_DATA=DIR" in msg and "\n" not in msg
    assert not list((tmp_path / "xdg").rglob("*idx*")), "no partial download may be left behind"
    with pytest.raises(DataError, match="download disabled"):
        load_mnist([tmp_path], download=False)


def test_mnist_download_tries_mirrors(tmp_path, monkeypatch):
    arrays = mnist_arrays()
    second = "http://yann.lecun.com/exdb/mnist/"
    serve(monkeypatch, {second + n + ".gz": gzip.compress(idx_bytes(a)) for n, a in arrays.items()})
    ds = load_mnist([tmp_path], download=True, verify=False)
    assert ds.train_x.shape == (20, 1, 5, 5)
    assert sorted(p.name for p in (tmp_path / "xdg" / "aeclass" / "mnist").iterdir()) == sorted(n + ".gz" for n in arrays)


# ---------------------------------------------------------------- download

def test_md5_and_find_file(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.gz").write_bytes(b"abc")
    assert download.md5_of(b"abc") == download.md5_of(tmp_path / "b" / "x.gz") == "900150983cd24fb0d6963f7d28e17f72"
    assert download.find_file([tmp_path / "a", tmp_path], ["x", "x.gz"], ["", "b"]) == tmp_path / "b" / "x.gz"
    assert download.find_file([tmp_path], ["y"], ["", "b"]) is None


def test_download_verifies_and_renames_atomically(tmp_path, monkeypatch):
    serve(monkeypatch, {"https://good/f": b"payload"})
    dest = tmp_path / "d" / "f"
    out = download.download(["https://bad/f", "https://good/f"], dest, md5=download.md5_of(b"payload"))
    assert out == dest and dest.read_bytes() == b"payload"
    assert os.listdir(dest.parent) == ["f"], "the temporary file must be renamed, not left"


def test_download_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch):
    serve(monkeypatch, {"https://m1/f": b"evil", "https://m2/f": b"evil"})
    with pytest.raises(DataError, match=r"m1: checksum mismatch .*; m2: checksum mismatch"):
        download.download(["https://m1/f", "https://m2/f"], tmp_path / "f", md5="0" * 32)
    assert os.listdir(tmp_path) == []


def test_interrupted_download_leaves_nothing(tmp_path, monkeypatch):
    class Broken(io.BytesIO):
        def read(self, n=-1):
            if self.tell():
                raise ConnectionResetError("connection reset")
            return super().read(4)

    monkeypatch.setattr(download, "_urlopen", lambda request, timeout=None: Broken(b"12345678"))
    with pytest.raises(DataError, match="connection reset"):
        download.download(["https://m/f"], tmp_path / "f")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- CIFAR-10

def cifar_members(n=4) -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    out = {}
    for i, name in enumerate(cifar10.TRAIN + ["test_batch"]):
        batch = {b"batch_label": name.encode(), b"labels": [(i + k) % 10 for k in range(n)],
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}
        out[name] = pickle.dumps(batch, protocol=2)
    out["batches.meta"] = pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)],
                                        b"num_vis": 3072}, protocol=2)
    return out


def make_cifar_tar(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_cifar10_from_tar_and_from_dir(tmp_path):
    members = cifar_members()
    make_cifar_tar(tmp_path / "t" / "cifar10" / cifar10.ARCHIVE, members)
    ds = load_cifar10([tmp_path / "t"], download=False, verify=False)
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
    assert ds.classes == [f"c{i}" for i in range(10)] and ds.train_y[:4].tolist() == [0, 1, 2, 3]
    folder_ = tmp_path / "d" / cifar10.FOLDER
    folder_.mkdir(parents=True)
    for name, data in members.items():
        (folder_ / name).write_bytes(data)
    ds2 = load_cifar10([tmp_path / "d"], download=False, verify=False)
    assert (ds2.train_x == ds.train_x).all() and (ds2.test_y == ds.test_y).all()
    with pytest.raises(DataError, match=r"data_batch_1 has md5 .*expected c99cafc1"):
        load_cifar10([tmp_path / "d"], download=False, verify=True)


def test_cifar10_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    members = cifar_members()
    members["data_batch_2"] = pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2)
    make_cifar_tar(tmp_path / cifar10.ARCHIVE, members)
    with pytest.raises(DataError, match=r"data_batch_2 refuses to unpickle (posix|os)\.system"):
        load_cifar10([tmp_path], download=False, verify=False)
    assert not marker.exists()


def test_cifar10_truncated_or_incomplete_archive(tmp_path):
    path = make_cifar_tar(tmp_path / cifar10.ARCHIVE, cifar_members())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=re.escape(f"cifar10: {path} is not a readable tar.gz") + ".*truncated"):
        load_cifar10([tmp_path], download=False, verify=False)
    members = cifar_members()
    del members["test_batch"]
    make_cifar_tar(path, members)
    with pytest.raises(DataError, match="lacks cifar-10-batches-py/test_batch"):
        load_cifar10([tmp_path], download=False, verify=False)


def test_cifar10_offline(tmp_path):
    with pytest.raises(DataError, match=r"cifar10: cifar-10-python.tar.gz .*not found in .*download failed"
                                        r".*--data-dir DIR or set AECLASS_DATA=DIR"):
        load_cifar10([tmp_path], download=True)


# ---------------------------------------------------------------- folders

def image_bytes(mode: str, size=(8, 8), value=0, fmt="PNG") -> bytes:
    """An image whose pixels encode `value`, so that tests can tell images apart after loading."""
    h, w = size
    base = (np.arange(h * w).reshape(h, w) + value * 7) % 256
    if mode == "P":
        im = Image.fromarray(base.astype(np.uint8), "L").convert("P")
        im.info["transparency"] = 0
    elif mode in ("L", "1"):
        im = Image.fromarray(base.astype(np.uint8), "L").convert(mode)
    elif mode == "I;16":
        im = Image.fromarray((base * 257).astype(np.uint16))
    else:
        planes = [base, 255 - base, np.full_like(base, value % 256), np.full_like(base, 200)]
        im = Image.fromarray(np.stack(planes[: len(mode)], -1).astype(np.uint8), mode)
    buf = io.BytesIO()
    im.save(buf, fmt, **({"transparency": 0} if mode == "P" else {}))
    return buf.getvalue()


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def class_files(prefix="", n=10, modes=("RGB",), size=(8, 8), classes=("cat", "dog", "emu")) -> dict[str, bytes]:
    return {f"{prefix}{c}/{i:03d}.png": image_bytes(modes[i % len(modes)], size, value=10 * j + i)
            for j, c in enumerate(classes) for i in range(n)}


def test_folder_zip_mixed_modes_and_sizes(tmp_path):
    files = class_files(n=10, modes=("L", "RGB", "RGBA", "P"))
    files["cat/big.PNG"] = image_bytes("RGB", (20, 12))
    files["dog/small.jpg"] = image_bytes("RGB", (4, 6), fmt="JPEG")
    files["__MACOSX/cat/._000.png"] = b"junk"
    files["cat/.hidden.png"] = b"junk"
    files["notes.txt"] = b"not an image"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. Pillow's palette-transparency warning
        ds = load_folder(make_zip(tmp_path / "pets.zip", files))
    assert ds.image_shape == (3, 8, 8) and ds.classes == ["cat", "dog", "emu"]
    assert len(ds.train_y) + len(ds.test_y) == 32
    assert ds.info["resize"].startswith("2 of 32 images resized to 8x8")
    assert "stratified" in ds.info["split"] and "seed 0" in ds.info["split"]
    assert ds.test_y.bincount().tolist() == [2, 2, 2]  # round(0.2 * 11), round(0.2 * 11), round(0.2 * 10)


def test_folder_split_is_stratified_and_seeded(tmp_path):
    root = tmp_path / "imgs"
    for name, data in class_files(n=20, classes=("a", "b")).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    first, again, other = (load_folder(root, seed=s) for s in (0, 0, 1))
    assert first.test_y.bincount().tolist() == [4, 4] and first.train_y.bincount().tolist() == [16, 16]
    assert (first.test_x == again.test_x).all()
    assert not (first.test_x == other.test_x).all()
    assert first.info["layout"] == "class folders" and "seed 1" in other.info["split"]


def test_folder_train_test_layout_in_wrapper_folder(tmp_path):
    files = {**class_files("data/train/", n=5), **class_files("data/test/", n=2, classes=("cat", "dog"))}
    ds = load_folder(make_zip(tmp_path / "d.zip", files), image_size=6, channels=1)
    assert ds.image_shape == (1, 6, 6) and ds.classes == ["cat", "dog", "emu"]
    assert len(ds.train_y) == 15 and ds.test_y.tolist() == [0, 0, 1, 1]
    assert ds.info["split"] == "train/ and test/ folders as given" and ds.info["root"] == "data"
    bad = {**class_files("train/", n=3), **class_files("test/", n=1, classes=("cat", "yak"))}
    with pytest.raises(DataError, match="test classes yak have no train/ folder"):
        load_folder(make_zip(tmp_path / "bad.zip", bad))


def test_folder_all_grey_gives_one_channel(tmp_path):
    ds = load_folder(make_zip(tmp_path / "g.zip", class_files(n=5, modes=("L", "1", "I;16"))))
    assert ds.image_shape == (1, 8, 8)
    x = np.concatenate([ds.train_x.numpy(), ds.test_x.numpy()])
    assert x.max() > 200  # 16-bit greys are scaled down, not clipped to 255 or divided to nothing


def test_folder_corrupt_image_is_named(tmp_path):
    files = class_files(n=3)
    files["dog/001.png"] = files["dog/001.png"][:40]
    path = make_zip(tmp_path / "c.zip", files)
    with pytest.raises(DataError, match=re.escape(f"cannot decode image {path}:dog/001.png")):
        load_folder(path)


@pytest.mark.parametrize("files,message", [
    ({}, "no images .* in class folders under .*expected class sub-folders"),
    ({"a.png": image_bytes("L"), "b.txt": b"x"}, "no images"),
    (class_files(n=2, classes=("only",)), "has only class 'only'"),
])
def test_folder_without_classes(tmp_path, files, message):
    with pytest.raises(DataError, match=message):
        load_folder(make_zip(tmp_path / "e.zip", files))


def test_folder_bad_paths(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_folder(tmp_path / "nope")
    (tmp_path / "x.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable zip file"):
        load_folder(tmp_path / "x.zip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="expected class sub-folders"):
        load_folder(tmp_path / "empty")


def test_folder_cache(tmp_path, monkeypatch):
    path = make_zip(tmp_path / "c.zip", class_files(n=5))
    load_folder(path)
    cache = tmp_path / "xdg" / "aeclass" / "folders"
    old = list(cache.glob("*.npz"))
    assert len(old) == 1
    make_zip(path, class_files(n=6))  # a changed source gets a new entry that replaces the old one
    first = load_folder(path)
    new = list(cache.glob("*.npz"))
    assert len(first.train_y) == 15 and len(new) == 1 and new != old
    monkeypatch.setattr(folder, "decode_all", lambda *a: pytest.fail("cache not used"))
    second = load_folder(path, seed=3)  # the seed only changes the split, not the cache key
    assert second.info["image_size"] == first.info["image_size"] and len(second.train_y) == len(first.train_y)
    monkeypatch.setenv("AECLASS_NO_CACHE", "1")
    with pytest.raises(pytest.fail.Exception):
        load_folder(path)


def test_load_dataset_dispatches_to_folder(tmp_path):
    ds = load_dataset(f"folder:{make_zip(tmp_path / 'p.zip', class_files(n=5))}", image_size=4)
    assert ds.image_shape == (3, 4, 4) and ds.name == "folder:p.zip"


# ---------------------------------------------------------------- catalog

def test_catalog(tmp_path):
    assert [s["name"] for s in catalog.list_sources()] == ["digits", "mnist", "cifar10", "folder:PATH"]
    make_mnist(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    found = catalog.locate("mnist", tmp_path)
    assert set(found["found"]) == {"train-images", "train-labels", "test-images"}
    assert found["missing"] == ["t10k-labels-idx1-ubyte(.gz)"] and "AECLASS_DATA" in found["hint"]
    report = catalog.verify("mnist", tmp_path)
    assert report["ok"] is False and report["files"]["t10k-labels-idx1-ubyte"]["error"] == "not found"
    row = report["files"]["train-images-idx3-ubyte"]
    assert row["expected_md5"] == "6bbc9ace898e44ae57da46a324031adb" and row["actual_md5"] and not row["ok"]
    with pytest.raises(DataError, match="unknown dataset"):
        catalog.locate("imagenet")


def test_catalog_checks_folders_and_cifar(tmp_path):
    files = class_files(n=5)
    files["emu/004.png"] = b"\x89PNG broken"
    report = catalog.verify(f"folder:{make_zip(tmp_path / 'f.zip', files)}")
    assert report["ok"] is False and report["n_errors"] == 1 and "emu/004.png" in report["errors"][0]
    assert report["counts"]["test"] == {"cat": 1, "dog": 1, "emu": 1} and report["images"] == 15
    make_cifar_tar(tmp_path / cifar10.ARCHIVE, cifar_members())
    report = catalog.verify("cifar10", tmp_path)
    assert report["ok"] is False and set(report["files"]) == set(cifar10.MEMBERS)
    assert all(row["actual_md5"] and not row["ok"] for row in report["files"].values())


# ---------------------------------------------------------------- real data

@pytest.mark.realdata
def test_real_mnist(shared_datasets):
    if not (shared_datasets / "mnist").is_dir():
        pytest.skip(f"MNIST not found in {shared_datasets}/mnist: set AECLASS_DATA")
    ds = load_mnist([shared_datasets], download=False)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.num_classes == 10 and set(ds.train_y.unique().tolist()) == set(range(10))
    assert catalog.verify("mnist", shared_datasets)["ok"]


@pytest.mark.slow
@pytest.mark.realdata
def test_real_cifar10_jpeg_zip(shared_datasets, monkeypatch):
    path = shared_datasets / "cifar10-jpeg" / "cifar10-jpeg.zip"
    if not path.is_file():
        pytest.skip(f"{path} not found: set AECLASS_DATA")
    monkeypatch.setenv("AECLASS_NO_CACHE", "1")  # the cache (190 MB) is tested on small data above
    ds = load_folder(path)
    assert ds.train_x.shape == (50000, 3, 32, 32) and ds.test_x.shape == (10000, 3, 32, 32)
    assert ds.classes[:3] == ["airplane", "automobile", "bird"] and ds.num_classes == 10
    assert ds.train_y.bincount().tolist() == [5000] * 10 and ds.test_y.bincount().tolist() == [1000] * 10
    report = catalog.verify(f"folder:{path}")
    assert report["ok"] and report["images"] == 60000
