"""Crash-safe replacement of finished files and folders, shared by every save (models, checkpoints, indexes)."""

from __future__ import annotations

import os
import shutil
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
