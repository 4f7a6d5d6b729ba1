"""Crash-safe file writes and JSON Lines helpers for run directories.

Every file a run directory holds is either written atomically (a temporary file in the same
directory, flushed and fsync'ed, then `os.replace`d over the target, so a reader or a `kill -9`
sees the old file or the new one, never half of one) or appended line by line (training curves),
in which case a torn last line is dropped when read.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import: os.umask can only be read by setting it


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` never holds a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual mode
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any, sort_keys: bool = True) -> None:
    """Write `obj` as indented JSON atomically (keys sorted unless their order matters)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def dumps_line(record: dict[str, Any]) -> str:
    """One compact JSON line (no trailing newline)."""
    return json.dumps(record, separators=(",", ":"))


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write `rows` as JSON Lines, atomically."""
    atomic_write_text(path, "".join(dumps_line(row) + "\n" for row in rows))


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line to `path` and flush it to the OS."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(dumps_line(row) + "\n")
        handle.flush()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read JSON Lines; a torn (unterminated) last line, left by a crash mid-append, is dropped."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    complete = lines[:-1]  # whatever follows the last newline is torn or empty
    return [json.loads(line) for line in complete if line.strip()]


def truncate_jsonl(path: Path, n_lines: int) -> None:
    """Keep only the first `n_lines` complete lines of a JSON Lines file (atomically)."""
    path = Path(path)
    if not path.exists():
        return
    write_jsonl(path, read_jsonl(path)[:n_lines])


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on the file `path` (created if missing) for the block:
    another process asking for it waits until this one leaves (POSIX `flock`; released by the
    kernel if the holder dies). On a shared filesystem the exclusion holds across machines only
    if the filesystem implements flock across its clients (NFSv4 does; NFS with local_lock or a
    Lustre mount without -o flock do not). Where there is no flock (Windows) or the filesystem
    refuses it, the block runs without a lock, with a warning in the second case."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            warnings.warn(
                f"{path}: this filesystem does not support file locks ({err.strerror}); "
                "continuing without one",
                stacklevel=3,
            )
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
