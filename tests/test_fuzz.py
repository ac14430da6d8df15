"""Hostile files, fuzzed with hypothesis: IDX headers and lengths, CIFAR-10 pickles, PNG/JPEG headers, zip entries
(traversal, absolute paths, symlinks, duplicates) and decompression bombs. Whatever the bytes, a loader returns a
dataset or raises DataError (never another exception), within a deadline, within a memory bound, and writes
nothing outside the cache. YAML configs never build objects and unknown keys are named.

Bounds (aeclass.data): an IDX file is read no further than its header declares (<= mnist.MAX_IDX_BYTES); a
CIFAR-10 member is at most cifar10.MAX_MEMBER_BYTES; an image file or zip entry at most folder.MAX_FILE_BYTES
(inflated in chunks), and its header may claim at most folder.MAX_PIXELS pixels.
"""
from __future__ import annotations

import gzip
import io
import pickle
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from aeclass.config import build_config  # noqa: E402
from aeclass.data import cifar10, folder, mnist  # noqa: E402
from aeclass.errors import ConfigError, DataError  # noqa: E402

FUZZ = settings(max_examples=60, deadline=5000,  # ms per example, on a loaded 2-core machine
                 suppress_health_check=[HealthCheck.function_scoped_fixture])
MiB = 1 << 20


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("AECLASS_NO_CACHE", raising=False)


def files_under(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


# ---------------------------------------------------------------- IDX (MNIST)

def idx(magic: int, dims: list[int], payload: bytes) -> bytes:
    return struct.pack(f">i{len(dims)}i", magic, *dims) + payload


@FUZZ
@given(magic=st.sampled_from([2049, 2051, 2050, 0, -1, 0x0803, 0x0D03]), dims=st.lists(st.integers(-2**31, 2**31 - 1),
       min_size=0, max_size=4), extra=st.integers(-40, 40), gz=st.booleans(), junk=st.binary(max_size=64))
def test_idx_headers_and_lengths(tmp_path, magic, dims, extra, gz, junk):
    declared = int(np.prod([max(0, d) for d in dims], dtype=object)) if dims else 0
    payload = bytes(max(0, min(declared, 4096) + extra))
    data = idx(magic, dims, payload) + junk
    path = tmp_path / ("f.gz" if gz else "f")
    path.write_bytes(gzip.compress(data) if gz else data)
    tracemalloc.start()
    try:
        raw = mnist.read_idx_bytes(path)
        mnist.parse_idx(raw, path, images=magic == 2051)
    except DataError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 2 * MiB


@FUZZ
@given(data=st.binary(max_size=300), gz=st.booleans())
def test_idx_random_bytes(tmp_path, data, gz):
    path = tmp_path / "f"
    path.write_bytes(gzip.compress(data) if gz else data)
    for images in (True, False):
        try:
            mnist.parse_idx(mnist.read_idx_bytes(path), path, images)
        except DataError:
            pass


def gzip_of_zeros(prefix: bytes, n: int) -> bytes:
    """gzip of `prefix` + n zero bytes, compressed in chunks (so the test itself stays small in memory)."""
    c, out = zlib.compressobj(9, zlib.DEFLATED, 31), [b""]
    out.append(c.compress(prefix))
    for _ in range(n // MiB):
        out.append(c.compress(bytes(MiB)))
    out.append(c.flush())
    return b"".join(out)


def test_a_gz_idx_bomb_costs_its_declared_size_at_most(tmp_path):
    small = tmp_path / "small.gz"  # declares 10 x 28 x 28 images, inflates to 512 MiB
    small.write_bytes(gzip_of_zeros(idx(2051, [10, 28, 28], b""), 512 * MiB))
    huge = tmp_path / "huge.gz"    # declares 2^31 x 28 x 28 images
    huge.write_bytes(gzip_of_zeros(idx(2051, [2**31 - 1, 28, 28], b""), 64 * MiB))
    assert small.stat().st_size < 1 * MiB
    for path, needle in ((small, "holds more than the 7,856 bytes"), (huge, "above the")):
        tracemalloc.start()
        with pytest.raises(DataError, match=needle):
            mnist.read_idx_bytes(path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 4 * MiB, peak


# ---------------------------------------------------------------- CIFAR-10 pickles

def batch_pickle(n=3, protocol=2) -> bytes:
    x = np.random.default_rng(0).integers(0, 256, (n, 3072), dtype=np.uint8)
    return pickle.dumps({b"data": x, b"labels": list(range(n))}, protocol=protocol)


class Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /tmp/aeclass-fuzz-pwned",))


@FUZZ
@given(base=st.sampled_from([batch_pickle(), batch_pickle(protocol=4), pickle.dumps(Evil()),
                             pickle.dumps({b"data": Evil(), b"labels": [1]}), pickle.dumps([1, 2, 3])]),
       edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
       cut=st.one_of(st.none(), st.integers(0, 10_000)))
def test_cifar_pickles(base, edits, cut):
    data = bytearray(base)
    for pos, byte in edits:
        data[pos % len(data)] = byte
    data = bytes(data[:cut] if cut is not None else data)
    try:
        cifar10._batch(cifar10.safe_load(data, "fuzz"), "fuzz")
    except DataError:
        pass
    assert not Path("/tmp/aeclass-fuzz-pwned").exists()


def test_cifar_member_size_is_bounded(tmp_path):
    import tarfile
    arc = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = 100 * MiB
        tar.addfile(info, io.BytesIO(bytes(100 * MiB)))
    tracemalloc.start()
    with pytest.raises(DataError, match="above the"):
        list(cifar10.iter_members(arc))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * MiB


# ---------------------------------------------------------------- PNG / JPEG headers

def encoded(fmt: str, size=(6, 5), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode) \
        .save(buf, fmt)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR (with a valid CRC) claims width x height, followed by a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


SEEDS = [encoded("PNG"), encoded("JPEG"), encoded("PNG", mode="L"), encoded("GIF"), encoded("BMP"), encoded("TIFF")]


@FUZZ
@given(base=st.sampled_from(SEEDS), edits=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 4000)))
def test_image_headers(base, edits, cut):
    data = bytearray(base)
    for pos, byte in edits:
        data[pos % min(len(data), 64)] = byte  # mostly the header
    data = bytes(data[:cut] if cut is not None else data)
    try:
        arr = folder.decode_image(data, "fuzz.png", 3, (8, 8))
        assert arr.shape == (8, 8, 3) and arr.dtype == np.uint8
    except DataError:
        pass


@FUZZ
@given(width=st.integers(1, 2**31 - 1), height=st.integers(1, 2**31 - 1))
def test_an_image_claiming_huge_sizes_is_refused_before_decoding(width, height):
    try:
        folder.decode_image(png_claiming(width, height), "claims.png", 3, (8, 8))
    except DataError as e:
        if width * height > folder.MAX_PIXELS:
            assert "pixel" in str(e)


def test_float_tiffs_decode_to_the_right_range(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for k in range(3):
            a = np.full((4, 4), 0.5 if cls == "a" else 1.0, dtype=np.float32)
            Image.fromarray(a, "F").save(tmp_path / "d" / cls / f"{k}.tif")
    ds = folder.load_folder(tmp_path / "d")
    x = np.concatenate([ds.train_x.numpy(), ds.test_x.numpy()])
    assert ds.train_x.shape[1] == 1 and set(np.unique(x)) == {128, 255}


# ---------------------------------------------------------------- zip entries and bombs

NAMES = st.one_of(
    st.sampled_from(["/abs/x.png", "../up/x.png", "a/../../b/x.png", "C:/win/x.png", "a\\b\\x.png", "cat/x.png",
                     "dog/y.png", "cat/x.png", "train/cat/x.png", "test/cat/z.png", ".hidden/x.png", "__MACOSX/c/x.png",
                     "wrap/cat/x.png", "cat/", "dog/sub/deep/q.png", "x.png", "cat/x.PNG", "\u00e9t\u00e9/x.png"]),
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20).map(lambda s: s + ".png"))


@pytest.mark.filterwarnings("ignore:Duplicate name")
@FUZZ
@given(entries=st.lists(st.tuples(NAMES, st.sampled_from([SEEDS[0], SEEDS[1], b"junk", b""]), st.booleans()),
                        min_size=1, max_size=8))
def test_zip_entries(tmp_path_factory, entries):
    d = tmp_path_factory.mktemp("zip")
    path = d / "data.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, link in entries:
            info = zipfile.ZipInfo(name)
            if link:  # a symlink entry: its data is the link target
                info.external_attr = (0o120777 << 16)
                data = b"/etc/passwd"
            zf.writestr(info, data)
    before = files_under(d)
    try:
        ds = folder.load_folder(path)
        assert all(c and c not in (".", "..") and "/" not in c for c in ds.classes), ds.classes
    except DataError:
        pass
    assert files_under(d) == before  # nothing extracted, nothing written beside it


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_a_zip_with_two_entries_of_one_name_is_refused_naming_it(tmp_path):
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for data in (SEEDS[0], SEEDS[1], SEEDS[0]):
            zf.writestr("cat/x.png", data)
        zf.writestr("dog/y.png", SEEDS[1])
    with pytest.raises(DataError, match=r"two entries named 'cat/x.png'"):
        folder.load_folder(path)


def test_a_zip_entry_whose_name_begins_with_a_nul_byte_is_refused_naming_the_zip(tmp_path):
    """zipfile cuts an entry's name at its first NUL byte: '\\x00.png' reads as '', which the fuzzer found crashing
    the loader with an IndexError."""
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("cat/x.png", SEEDS[0])
        zf.writestr(zipfile.ZipInfo("\x00.png"), SEEDS[1])
    with pytest.raises(DataError, match=r"data.zip has an entry with an empty name"):
        folder.load_folder(path)


def zip_with_lying_size(n: int, claimed: int) -> bytes:
    """A zip whose one entry inflates to n zero bytes but whose central directory claims `claimed`."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("cat/bomb.png")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as f:
            for _ in range(n // MiB):
                f.write(bytes(MiB))
        zf.writestr("dog/ok.png", SEEDS[0])
    data = bytearray(buf.getvalue())
    cd = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, claimed)  # uncompressed size in the central directory
    return bytes(data)


@pytest.mark.parametrize("claimed", [None, 1000])
def test_a_zip_bomb_is_refused_within_its_bound(tmp_path, claimed):
    """A 512 MiB entry of zeros (a ~0.5 MiB zip): refused by its declared size, or, when the directory lies
    about it, zipfile stops at the declared size; either way Python allocates far less than the bomb."""
    n = 512 * MiB
    path = tmp_path / "bomb.zip"
    if claimed is None:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            with zf.open("cat/bomb.png", "w", force_zip64=True) as f:
                for _ in range(n // MiB):
                    f.write(bytes(MiB))
            zf.writestr("dog/ok.png", SEEDS[0])
        path.write_bytes(buf.getvalue())
    else:
        path.write_bytes(zip_with_lying_size(n, claimed))
    assert path.stat().st_size < 2 * MiB
    tracemalloc.start()
    with pytest.raises(DataError):
        folder.load_folder(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * MiB, peak


# ---------------------------------------------------------------- YAML configs

VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                   st.text(max_size=12), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5),
                                                                                            st.integers(), max_size=2))
KEYS = st.sampled_from(["epochs", "labels", "seed", "lr", "batch_size", "augment", "confidence", "strategy", "model",
                        "image_size", "threads", "device", "noise", "ema", "model_kwargs", "strategy_kwargs",
                        "label_smoothing", "warmup_epochs", "pretrain_epochs", "epochz", "Lr", "data"])


@FUZZ
@given(cfg=st.dictionaries(KEYS, VALUES, max_size=5))
def test_yaml_configs_are_checked_values_or_one_line_errors(tmp_path_factory, cfg):
    import yaml
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    try:
        build_config(config_file=str(path))
    except ConfigError as e:
        assert "\n" not in str(e)
        if "epochz" in cfg or "Lr" in cfg:
            pass  # may fail on another key first
    except DataError:
        raise AssertionError("a config is not read as data")


@pytest.mark.parametrize("text", ["epochs: !!python/object/apply:os.system ['echo pwned']\n",
                                  "!!python/object:aeclass.config.TrainConfig {epochs: 3}\n",
                                  "seed: !!python/name:os.system\n"])
def test_yaml_never_builds_objects(tmp_path, text):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(config_file=str(tmp_path / "c.yaml"))


def test_unknown_yaml_keys_are_named(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: 2\nlerning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown option 'lerning_rate'"):
        build_config(config_file=str(tmp_path / "c.yaml"))
