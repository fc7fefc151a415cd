"""File helpers shared by ``file_age``, ``backup_age`` and ``log_errors``."""

from __future__ import annotations

import glob
import os
from pathlib import Path


def newest_match(
    directory: Path, pattern: str, min_size: int
) -> tuple[Path, os.stat_result] | None:
    """The most recently modified regular file under ``directory`` matching ``pattern``."""
    newest: tuple[Path, os.stat_result] | None = None
    for name in glob.iglob(pattern, root_dir=directory, recursive=True):
        path = directory / name
        try:
            stat = path.stat()
        except OSError:
            continue  # removed while we looked
        if not path.is_file() or stat.st_size < min_size:
            continue
        if newest is None or stat.st_mtime > newest[1].st_mtime:
            newest = (path, stat)
    return newest
