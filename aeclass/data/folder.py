"""A user's own images: a directory or .zip of class sub-folders, possibly already split into train/ and test/.

Layout: ``ROOT/<class>/**/<image>`` or ``ROOT/{train,test}/<class>/**/<image>``; a lone wrapper folder (as
zips often have) is looked into. Without train/ and test/ each class is split 80/20, reproducibly by `seed`.
Unlabelled images go in a folder named ``unlabelled`` (or ``unlabeled``) beside the class folders (in train/
when there is a train/ and test/ split): they are training images with label -1, never test images. Other
ways to give unlabelled images (``--unlabelled PATH``, ``--labels-csv``) are in aeclass/data/unlabelled.py.
Images are ``.jpg .jpeg .png .bmp .gif .webp .tif .tiff`` in any case; hidden files and ``__MACOSX`` are
skipped. Class names are the sorted folder names.

Every image is brought to one shape so that a batch is one tensor:
- channels (default): 1 when every image is greyscale (L, 1, I;16, F, ...), else 3. Alpha (RGBA, LA, palette with
  transparency) is composited over black; 16-bit greys are scaled by 1/257; float (F) greys in [0, 1] by 255
  (larger ones are read as 0..255); CMYK/YCbCr become RGB.
- bounds: an image file (or zip entry, inflated in chunks) of at most 64 MiB, whose header claims at most
  64 Mpx; a zip with absolute or '..' entry names is refused.
- size (default): the most common (H, W). Other images are resized to it with bilinear filtering, **ignoring
  their aspect ratio** (no crop, no padding); ``info["resize"]`` says how many were.
- EXIF orientation is not applied; animated images contribute their first frame.

Decoding tens of thousands of files costs seconds, so the decoded array is cached in ``cache_dir()/folders/``,
keyed by path, size and mtime (of every image, for a directory) and the requested shape, not the seed (the
split comes after). ``AECLASS_NO_CACHE=1`` bypasses it.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import warnings
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from .base import ImageDataset
from .download import read_at_most

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
TEST_FRACTION = 0.2
# Bounds on one image file, so that a hostile file costs bounded memory before it is refused: its encoded
# bytes (a zip entry is inflated in chunks up to this), and the pixels its header claims, checked before
# decoding (64 Mpx: 8192 x 8192; an RGB image that size decodes to 192 MiB).
MAX_FILE_BYTES = 64 << 20
MAX_PIXELS = 1 << 26
HIDDEN = re.compile(r"\.|__MACOSX$")  # hidden files and folders, macOS zip metadata
EXPECTED = "expected class sub-folders (ROOT/<class>/<image>) or train/ and test/ folders of them"
UNLABELLED_DIRS = {"unlabelled", "unlabeled"}  # a folder of images without a class, beside the class folders
UNLABELLED_SPLIT = "unlabelled"  # the split of those entries in scan()'s (split, class, name) tuples; class ""


class _Dir:
    """Image files of a directory tree as sorted relative POSIX paths; `fingerprint` changes when any does."""

    def __init__(self, root: Path):
        self.root, seen, todo, files = root, set(), [(root, "")], []
        while todo:
            path, prefix = todo.pop()
            try:
                if (key := (path.stat().st_dev, path.stat().st_ino)) in seen:  # symlink loop
                    continue
                seen.add(key)
                for e in (e for e in os.scandir(path) if not HIDDEN.match(e.name)):
                    if e.is_dir():
                        todo.append((Path(e.path), prefix + e.name + "/"))
                    elif e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS:
                        files.append((prefix + e.name, e.stat().st_size, e.stat().st_mtime_ns))
            except OSError as e:
                raise DataError(f"folder: cannot list {path}: {e.strerror or e}") from e
        files.sort()
        self.names = [f[0] for f in files]
        self.fingerprint = ("dir", str(root), hashlib.sha1(repr(files).encode()).hexdigest())

    def read(self, name: str) -> bytes:
        path = self.root / name
        with open(path, "rb") as f:
            data = read_at_most(f, MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise DataError(f"folder: {path} is larger than {MAX_FILE_BYTES >> 20} MiB, the limit of an image file")
        return data

    def label(self, name: str) -> str:
        return str(self.root / name)

    close = staticmethod(lambda: None)


class _Zip:
    """Files of a zip archive, read in place (never extracted)."""

    def __init__(self, path: Path):
        try:
            self.path, self.zf, st = path, zipfile.ZipFile(path), path.stat()
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"folder: {path} is not a readable zip file ({e}); {EXPECTED}") from e
        self.infos = {}
        for i in self.zf.infolist():
            name = i.filename.replace("\\", "/")
            if not name:  # zipfile cuts a name at its first NUL byte, so a name that began with one is empty
                self.zf.close()
                raise DataError(f"folder: {path} has an entry with an empty name (or one that begins with a NUL "
                                "byte); entries must be relative paths inside the archive")
            # Nothing is extracted, but an absolute or climbing entry name would still become a class (""
            # or ".."): such an archive is refused rather than guessed at.
            if name.startswith("/") or re.match(r"[A-Za-z]:", name) or ".." in name.split("/"):
                self.zf.close()
                raise DataError(f"folder: {path} has an entry with an absolute or '..' path ({name[:100]!r}); "
                                "entries must be relative paths inside the archive")
            if not i.is_dir():
                if name in self.infos:  # appended archives repeat names; which copy is the image is a guess
                    self.zf.close()
                    raise DataError(f"folder: {path} has two entries named {name[:100]!r}; entry names must be "
                                    "unique (rebuild the zip rather than appending to it)")
                self.infos[name] = i
        self.names, self.fingerprint = sorted(self.infos), ("zip", str(path), st.st_size, st.st_mtime_ns)

    def read(self, name: str) -> bytes:
        """The entry, inflated in chunks and never beyond MAX_FILE_BYTES: the declared size is checked first,
        and zipfile stops at the declared size (a CRC error follows when the data were longer), so a bomb
        costs at most that bound in memory."""
        info = self.infos[name]
        if info.file_size > MAX_FILE_BYTES:
            raise DataError(f"folder: {self.label(name)} inflates to {info.file_size:,} bytes, above the "
                            f"{MAX_FILE_BYTES >> 20} MiB limit of an image file (a zip bomb?)")
        with self.zf.open(info) as f:  # small reads: zipfile inflates as much as each read asks for
            return read_at_most(f, info.file_size + 1)

    def label(self, name: str) -> str:
        return f"{self.path}:{name}"

    def close(self):
        self.zf.close()


def _open(path: os.PathLike | str):
    path = Path(path).expanduser().resolve()
    if path.exists():
        return _Dir(path) if path.is_dir() else _Zip(path)
    raise DataError(f"folder: {path} does not exist; expected a directory or .zip of class sub-folders")


def scan(src) -> tuple[list[tuple[str, str, str]], dict]:
    """Sorted (split, class, file) for every image — split is 'train', 'test' or '' (to be split) — and info."""
    images = [n for n in src.names if os.path.splitext(n)[1].lower() in IMAGE_EXTS
              and not any(HIDDEN.match(p) for p in n.split("/"))]
    prefix = ""
    tops = {n.split("/", 1)[0] for n in images if "/" in n}
    if len(tops) == 1 and all(n.count("/") >= 2 for n in images):  # one wrapper folder around it all
        prefix = tops.pop() + "/"
    parts = [n[len(prefix):].split("/") for n in images]
    top = {p[0].lower(): p[0] for p in parts if len(p) > 1}
    has_split = "train" in top and "test" in top
    entries, skipped = [], 0
    for name, p in zip(images, parts):
        if has_split and p[0] == top["train"] and len(p) >= 3 and p[1].lower() in UNLABELLED_DIRS:
            entries.append((UNLABELLED_SPLIT, "", name))
        elif has_split and p[0] in (top["train"], top["test"]) and len(p) >= 3 and p[1].lower() not in UNLABELLED_DIRS:
            entries.append((p[0].lower(), p[1], name))
        elif not has_split and len(p) >= 2:
            entries.append((UNLABELLED_SPLIT, "", name) if p[0].lower() in UNLABELLED_DIRS else ("", p[0], name))
        else:
            skipped += 1
    where = src.label(prefix.rstrip("/")) if prefix else src.label("").rstrip("/:")
    if not entries:
        raise DataError(f"folder: no images ({' '.join(sorted(IMAGE_EXTS))}) in class folders under {where}; {EXPECTED}")
    entries.sort()
    for split in ("train", "test") if has_split else ():
        if not any(s == split for s, _, _ in entries):
            raise DataError(f"folder: {where}/{top[split]} has no images in class folders; {EXPECTED}")
    if not any(s != UNLABELLED_SPLIT for s, _, _ in entries):
        raise DataError(f"folder: {where} has unlabelled images only; {EXPECTED}, beside the unlabelled/ folder")
    train_classes = {c for s, c, _ in entries if s not in ("test", UNLABELLED_SPLIT)}
    if extra := sorted({c for s, c, _ in entries if s == "test"} - train_classes):
        raise DataError(f"folder: {where}: test classes {', '.join(extra)} have no train/ folder; "
                        "test classes must be a subset of the train classes")
    if len(train_classes) < 2:
        raise DataError(f"folder: {where} has only class '{''.join(train_classes)}'; {EXPECTED}, at least two classes")
    info = {"layout": "train/ and test/ folders" if has_split else "class folders", "root": prefix.rstrip("/") or ".",
            **({"skipped": f"{skipped} images outside class folders ignored"} if skipped else {})}
    return entries, info


def split_entries(entries, seed: int, info: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(labels with -1 for unlabelled, train indices, test indices, classes) of scan()'s entries. The test set
    is the test/ folder, or a stratified 80/20 split of the labelled images by `seed`; unlabelled images are
    always training images."""
    classes = sorted({c for s, c, _ in entries if s != UNLABELLED_SPLIT})
    splits = np.array([s for s, _, _ in entries])
    unl = splits == UNLABELLED_SPLIT
    y = np.full(len(entries), -1, dtype=np.int64)
    y[~unl] = np.searchsorted(np.array(classes), [c for s, c, _ in entries if s != UNLABELLED_SPLIT])
    if info["layout"] == "class folders":
        lab = np.flatnonzero(~unl)
        tr, te = split_indices(y[lab], seed)
        tr, te = np.sort(np.concatenate([lab[tr], np.flatnonzero(unl)])), lab[te]
        info["split"] = f"stratified {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} per class of the labelled images, seed {seed}"
    else:
        tr, te = np.flatnonzero((splits == "train") | unl), np.flatnonzero(splits == "test")
        info["split"] = "train/ and test/ folders as given"
    info["unlabelled"] = int(unl.sum())
    return y, tr, te, classes


def _to_array(data: bytes, label: str, mode: str | None = None, size: tuple[int, int] | None = None):
    """Header only: (mode, (H, W)). With mode and size also the image as uint8 (H, W) or (H, W, 3), resized?"""
    try:
        with warnings.catch_warnings():  # a bomb is refused below at a lower bound; a corrupt tag fails the decode
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
        with im:
            if im.width * im.height > MAX_PIXELS:
                raise DataError(f"folder: image {label} claims {im.width} x {im.height} pixels, above the "
                                f"{MAX_PIXELS:,}-pixel limit; refused before decoding")
            head = im.mode, (im.height, im.width)
            if mode is None:
                return head
            if im.format == "JPEG":  # let libjpeg decode at 1/2, 1/4, 1/8 scale when shrinking
                im.draft(mode, (size[1], size[0]))
            im = _convert(im, mode)
            if resized := im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            return head, np.asarray(im), resized
    except DataError:
        raise
    except Exception as e:  # Pillow raises many types for bad files; all mean "cannot decode this"
        raise DataError(f"folder: cannot decode image {label} ({type(e).__name__}: {e})") from e


def _convert(im: Image.Image, mode: str) -> Image.Image:
    """`im` as 'L' or 'RGB', compositing alpha over black and scaling 16-bit greys to 8 bits."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode.startswith("I") or im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I"):
            a = a / 257.0
        else:  # float images usually hold intensities in [0, 1]; one with larger values is taken as 0..255
            a = np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0)
            a = a * 255.0 if a.size and a.max() <= 1.0 else a
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    if im.mode in ALPHA_MODES:
        im = Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), im.convert("RGBA"))
    return im if im.mode == mode else im.convert(mode)


def _read(src, name: str) -> bytes:
    try:
        return src.read(name)
    except (OSError, zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError, zlib.error) as e:
        raise DataError(f"folder: cannot read {src.label(name)} ({e})") from e


def _default_shape(heads, size, channels) -> tuple[tuple[int, int], int]:
    """Fill in what the user left unset: the most common (H, W); 1 channel only if every image is grey."""
    if channels is None:
        channels = 1 if all(m in GREY_MODES for m, _ in heads) else 3
    if size is None:
        counts = Counter(s for _, s in heads)
        size = max(counts, key=lambda s: (counts[s], s[0] * s[1], s))
    return size, channels


def _decode_pass(src, names, size, channels):
    """One decode of every image into (N, H, W, C), plus every image's header and the number resized."""
    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(names), size[0], size[1], channels), dtype=np.uint8)
    heads, n_resized = [], 0
    for k, name in enumerate(names):
        head, arr, resized = _to_array(_read(src, name), src.label(name), mode, size)
        out[k], n_resized = arr.reshape(out.shape[1:]), n_resized + resized
        heads.append(head)
    return out, heads, n_resized


def _guess_shape(src, names: list[str], size, channels) -> tuple[tuple[int, int], int]:
    """The default shape (_default_shape) judged from the headers of a sample of at most about 256 files."""
    sample = names[:: max(1, len(names) // 256)]
    return _default_shape([_to_array(_read(src, n), src.label(n)) for n in sample], size, channels)


def peek_channels(path: os.PathLike | str) -> int:
    """The channel count load_folder chooses by default (1 when the images are greyscale, else 3), judged from
    the sample of headers decode_all guesses from: a look at a few hundred files, not a decode of them all."""
    src = _open(path)
    try:
        return _guess_shape(src, [n for _, _, n in scan(src)[0]], None, None)[1]
    finally:
        getattr(src, "close", lambda: None)()


def decode_all(src, names: list[str], size: tuple[int, int] | None, channels: int | None) -> tuple[np.ndarray, dict]:
    """uint8 (N, C, H, W) for `names`, opening each file once in the usual case.

    Opening an image costs as much as decoding a small one, so rather than a header pass and a decode pass, the
    default shape is guessed from a sample of headers and everything is decoded again only if that was wrong.
    """
    guess = (size, channels) if size is not None and channels is not None else _guess_shape(src, names, size, channels)
    out, heads, n_resized = _decode_pass(src, names, *guess)
    final = _default_shape(heads, size, channels)
    if final != guess:
        out, heads, n_resized = _decode_pass(src, names, *final)
    meta = {"size": list(final[0]), "channels": final[1], "resized": n_resized}
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2)), meta


def _cache_path(src, size, channels) -> Path | None:
    """<what>-<version>.npz: `what` is the path and requested shape, `version` its size/mtime stamp."""
    if os.environ.get("AECLASS_NO_CACHE", "") not in ("", "0"):
        return None
    from . import cache_dir

    kind, path, *stamp = src.fingerprint
    what, version = (hashlib.sha1(json.dumps(k).encode()).hexdigest()[:20]
                     for k in ([kind, path, size, channels], stamp))
    return cache_dir() / "folders" / f"{what}-{version}.npz"


def _cache_load(path: Path | None, names: list[str]):
    try:
        with np.load(path, allow_pickle=False) as f:
            return (f["x"], json.loads(str(f["meta"]))) if f["names"].tolist() == names else None
    except Exception:  # no cache, or a damaged or foreign entry: decode again
        return None


def _cache_save(path: Path | None, names: list[str], x: np.ndarray, meta: dict) -> None:
    """Write atomically, then drop entries for older versions of the same source and shape."""
    if path is None:
        return
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, x=x, names=np.array(names), meta=np.array(json.dumps(meta)))
        os.replace(tmp, path)
        for old in set(path.parent.glob(path.name.split("-")[0] + "-*.npz")) - {path}:
            old.unlink()
    except OSError:  # a read-only or full cache only costs speed next time
        tmp.unlink(missing_ok=True)


def split_indices(labels: np.ndarray, seed: int, test_fraction: float = TEST_FRACTION):
    """Stratified (train, test) index arrays: per class, round(fraction * n) (at least 1 if n >= 2) to test."""
    rng, test = np.random.default_rng(seed), []
    for idx in (np.flatnonzero(labels == c) for c in np.unique(labels)):
        test.append(rng.permutation(idx)[:max(1, round(len(idx) * test_fraction)) if len(idx) >= 2 else 0])
    test = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(labels)), test), test


def load_folder(path: os.PathLike | str, image_size: int | tuple[int, int] | None = None,
                channels: int | None = None, seed: int = 0, labels_csv: str | None = None) -> ImageDataset:
    """Images of class sub-folders as uint8 (N, C, H, W); see the module docstring for the rules. With
    `labels_csv` the folder is any tree of images and the CSV's rows (file,label) say which are labelled."""
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    size = None if size is None else tuple(int(v) for v in size)
    if channels not in (None, 1, 3) or (size is not None and (len(size) != 2 or min(size) < 1)):
        raise DataError(f"folder: need channels 1 or 3 and a positive image size, got {channels} and {image_size}")
    src = _open(path)
    try:
        if labels_csv:
            from .unlabelled import scan_with_csv
            entries, info = scan_with_csv(src, labels_csv)
        else:
            entries, info = scan(src)
        names = [n for _, _, n in entries]
        cache = _cache_path(src, size, channels)
        x, meta = _cache_load(cache, names) or (None, None)
        if x is None:
            x, meta = decode_all(src, names, size, channels)
            _cache_save(cache, names, x, meta)
    finally:
        src.close()
    y, tr, te, classes = split_entries(entries, seed, info)
    h, w = meta["size"]
    info.update(source=str(Path(path).expanduser().resolve()), image_size=[h, w], channels=meta["channels"],
                resize=f"{meta['resized']} of {len(names)} images resized to {h}x{w} (bilinear, aspect ratio ignored)",
                modes=f"converted to {'L' if meta['channels'] == 1 else 'RGB'}; alpha composited over black")
    return ImageDataset(
        name=f"folder:{Path(path).name}",
        train_x=torch.from_numpy(x[tr]), train_y=torch.from_numpy(y[tr]),
        test_x=torch.from_numpy(x[te]), test_y=torch.from_numpy(y[te]),
        classes=classes, info=info,
    )


def decode_image(data: bytes, label: str, channels: int, size: tuple[int, int]) -> np.ndarray:
    """One encoded image -> uint8 (H, W) or (H, W, 3), converted and resized exactly as load_folder does
    (used by `aeclass predict`, so user images reach the model the way training images did)."""
    try:
        _, arr, _ = _to_array(data, label, "L" if channels == 1 else "RGB", tuple(size))
    except DataError as e:
        raise DataError(str(e).removeprefix("folder: ")) from None
    return arr
