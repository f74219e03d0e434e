"""Files replaced atomically and synced: a reader, a crash or a full disk never leaves half a file.

`replace(path, write)` calls `write(tmp_path)` on a temporary file beside `path` (same folder, so the rename stays
on one filesystem), fsyncs it, renames it over `path` with `os.replace` and fsyncs the folder. When the write
fails (disk full, read-only, a folder in the way) the temporary file is removed, `path` keeps its old content, and
the error is one line naming the file (a `UserError`).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .errors import UserError


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def inside(folder: Path, path: Path) -> Path:
    """path, checked to lie inside folder once '..' and links are resolved (what dlrecipe writes stays in its run
    folder whatever a recipe or a file name says)."""
    resolved, root = Path(path).resolve(), Path(folder).resolve()
    if resolved != root and root not in resolved.parents:
        raise UserError(f"refused to write {path}: it lies outside the run folder {folder}")
    return Path(path)


def replace(path: Path, write: Callable[[Path], object]) -> Path:
    """Write path through write(tmp) atomically and durably; an OSError is a one-line UserError, path intact."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder; expected a file name")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: two writers never share a temp file
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        try:
            _fsync(path.parent)  # the rename itself survives a power cut
        except OSError:
            pass  # some filesystems cannot fsync a folder; the rename is still atomic
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise UserError(f"cannot write {path}: {e.strerror or e}; the files written before it are intact") from None
    return path
