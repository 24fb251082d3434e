"""Crash-safe replacement of finished files and folders, shared by every save (models, checkpoints, indexes)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def replace_folder(tmp: Path, path: Path) -> None:
    """Move the finished `tmp` (a folder or a file) to `path`, replacing what is there.

    A file is renamed over in one atomic step. An existing folder is first renamed aside (`.{name}.old`) and
    deleted only once the new one is in place: no reader ever sees a half-written folder, and a crash between
    the two renames leaves the old folder whole beside it.
    """
    tmp, path = Path(tmp), Path(path)
    if path.is_dir() and not path.is_symlink():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old)
    else:
        os.replace(tmp, path)


@contextmanager
def staged_folder(path: str | os.PathLike, staging: str | os.PathLike | None = None) -> Iterator[Path]:
    """A clean folder to write a save into; when the block ends without error it replaces `path` whole.

    `staging` (default: `.{name}.tmp` beside `path`) is emptied first, so the leftovers of an interrupted save
    never mix with a new one; on error it is removed and `path` stays as it was.
    """
    path = Path(path)
    tmp = Path(staging) if staging is not None else path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_folder(tmp, path)


@contextmanager
def staged_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file beside `path` to write; renamed over `path` in one step when the block succeeds."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
