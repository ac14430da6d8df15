"""Atomic file writes: a crash never leaves a half-written file behind (checkpoints: aeclass.checkpoint)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes owner-only files


def atomic_write(path: Path, write) -> None:
    """Write `path` through `write(f)` into a temporary file beside it, then rename it into place. A full
    disk or a read-only directory is an AeclassError naming the file; the previous version stays intact."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _write_error(path, e) from None
        raise


def _write_error(path: Path, e: OSError):
    from .errors import AeclassError
    kept = f"; the previous {path.name} is unchanged" if path.exists() else ""
    return AeclassError(f"cannot write {path}: {e.strerror or e}{kept}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


class DirectoryLock:
    """An exclusive lock on a directory (flock on DIR/.lock), held while one process writes its files.

    A second process asking for the same directory fails at once (no waiting) with an AeclassError naming it;
    the kernel drops the lock when the holder exits, also when it is killed, so a crash never leaves a stale
    lock behind. The lock file itself stays: removing it would let a process that opened it just before lock
    an inode nobody else sees.

    `shared=True` takes the lock shared: any number of shared holders (the shards of one sweep) coexist, and
    exclude an exclusive holder (a whole sweep, or --collect). `name` is another lock file in the directory
    (one shard's own lock), `busy` the message when it is held.
    """

    def __init__(self, directory: Path, what: str = "--out", name: str = ".lock", shared: bool = False,
                 busy: str | None = None):
        self.dir, self.what, self._fd = Path(directory), what, None
        self.name, self.shared, self.busy = name, shared, busy

    def __enter__(self) -> "DirectoryLock":
        import fcntl

        from .errors import AeclassError
        path = self.dir / self.name
        self.created = [d for d in (self.dir, *self.dir.parents) if not d.exists()]  # deepest first
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise AeclassError(f"{self.what} {self.dir}: cannot write there ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise AeclassError(self.busy or f"{self.what} {self.dir}: another aeclass process is using this directory "
                               f"(it holds {path}); wait for it to finish or choose another {self.what}") from None
        self._fd = fd
        return self

    def discard(self) -> None:
        """While still holding the lock: remove the lock file and the directories __enter__ created, if
        nothing else was written there (a run that failed before its first file leaves nothing behind)."""
        if not self.created or os.listdir(self.dir) != [self.name]:
            return
        os.unlink(self.dir / self.name)
        for d in self.created:
            try:
                d.rmdir()
            except OSError:  # not empty (another process wrote there meanwhile): stop
                break

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def remove_stale_temporaries(directory: Path, names) -> list[str]:
    """Delete the temporary files atomic_write leaves when a process is killed mid-write (.<name>.*.tmp for
    each of `names`, or every .*.tmp when `names` is None). Only safe while holding the directory's lock."""
    d, removed = Path(directory), []
    if not d.is_dir():
        return removed
    patterns = [".*.tmp"] if names is None else [f".{n}.*.tmp" for n in names]
    for pattern in patterns:
        for p in d.glob(pattern):
            try:
                p.unlink()
                removed.append(p.name)
            except OSError:
                pass
    return removed
