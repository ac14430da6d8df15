"""Finding canonical dataset files locally, checksumming them, and fetching them when missing.

Downloads are written to a temporary file in the destination directory and renamed into place only after the
checksum matched, so an interrupted or corrupt download never leaves a file that a later run would trust.
Mirrors are tried in order; the network call goes through the module-level `_urlopen` so tests can replace
it and never touch the network.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..errors import DataError

TIMEOUT_S = 30
CHUNK = 1 << 20
USER_AGENT = "aeclass-dataset-fetcher/0.1"
HINT = "put the files in a directory and pass --data-dir DIR or set AECLASS_DATA=DIR"

_urlopen = urllib.request.urlopen  # replaced in tests


def candidates(dirs: Iterable[os.PathLike | str], names: Sequence[str], subdirs: Sequence[str] = ("",)) -> list[Path]:
    """Every path searched, in order: for each dir, each subdir, each name."""
    return [Path(d) / sub / name for d in dirs for sub in subdirs for name in names]


def find_file(dirs: Iterable[os.PathLike | str], names: Sequence[str], subdirs: Sequence[str] = ("",)) -> Path | None:
    """The first existing regular file among `candidates(dirs, names, subdirs)`, or None."""
    return next((p for p in candidates(dirs, names, subdirs) if p.is_file()), None)


def find_dir(dirs: Iterable[os.PathLike | str], names: Sequence[str], subdirs: Sequence[str] = ("",)) -> Path | None:
    """The first existing directory among `candidates(dirs, names, subdirs)`, or None."""
    return next((p for p in candidates(dirs, names, subdirs) if p.is_dir()), None)


def search_dirs(dirs: Iterable[os.PathLike | str], subdirs: Sequence[str] = ("",)) -> list[str]:
    """Every directory searched, in order, without duplicates."""
    return list(dict.fromkeys(str(Path(d) / sub) if sub else str(Path(d)) for d in dirs for sub in subdirs))


def searched(dirs: Iterable[os.PathLike | str], subdirs: Sequence[str] = ("",)) -> str:
    """'/a, /a/mnist, /b' — the directories searched, for error messages."""
    return ", ".join(search_dirs(dirs, subdirs)) or "(no directories)"


def md5_of(source: os.PathLike | str | bytes | bytearray | memoryview) -> str:
    """Hex MD5 of a file (streamed, so a large archive is not read into memory) or of bytes."""
    h = hashlib.md5(usedforsecurity=False)
    if isinstance(source, (bytes, bytearray, memoryview)):
        h.update(source)
        return h.hexdigest()
    with open(source, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download(urls: Sequence[str], dest: os.PathLike | str, md5: str | None = None,
             digest: Callable[[Path], str] = md5_of) -> Path:
    """Fetch the first mirror in `urls` that works into `dest` and return `dest`.

    `digest(path)` computes the checksum compared with `md5` (by default the file's MD5; MNIST passes one
    that hashes the decompressed content). A mirror that fails or serves a wrong checksum is skipped; if all
    fail, DataError says why for each, in one line. The file appears at `dest` only once verified.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create download directory {dest.parent}: {e.strerror or e}") from e
    reasons = []
    for url in urls:
        tmp = None
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
            tmp = Path(tmp_name)
            with os.fdopen(fd, "wb") as out:
                request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
                with _urlopen(request, timeout=TIMEOUT_S) as response:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
            if md5 is not None and (actual := digest(tmp)) != md5:
                raise DataError(f"checksum mismatch (md5 {actual}, expected {md5})")
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a dataset file is not
            os.replace(tmp, dest)
            return dest
        except (OSError, ValueError, DataError, http.client.HTTPException) as e:  # URLError is an OSError
            reasons.append(f"{urllib.parse.urlsplit(url).netloc or url}: {_reason(e)}")
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
    raise DataError("; ".join(reasons) or "no download URL")


def _reason(e: BaseException) -> str:
    """A short human reason for a failed fetch, without a traceback."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    if isinstance(e, DataError):
        return str(e)
    return f"{type(e).__name__}: {e}"


def fetch_or_fail(what: str, urls: Sequence[str], dest: Path, dirs: Sequence[Path], subdirs: Sequence[str],
                  allow: bool, md5: str | None = None, digest: Callable[[Path], str] = md5_of) -> Path:
    """Download a missing file, or raise the one-line "not found ... how to point at a local copy" error."""
    where = searched(dirs, subdirs)
    if not allow:
        raise DataError(f"{what} not found in {where} (download disabled); {HINT}")
    try:
        return download(urls, dest, md5=md5, digest=digest)
    except DataError as e:
        raise DataError(f"{what} not found in {where} and download failed ({e}; no network?); {HINT}") from e


def read_at_most(f, n: int, chunk: int = 1 << 20) -> bytes:
    """Up to `n` bytes of `f`, read in chunks: a single read(n) would allocate n bytes up front, whatever the
    file holds."""
    parts = []
    while n > 0 and (part := f.read(min(n, chunk))):
        parts.append(part)
        n -= len(part)
    return b"".join(parts)
