"""Writing a file so that it is never seen half-written: a temporary name in the same folder, fsync, then rename.

Used for files kept under their content's digest (documents, inbound letters) and the 1C export: a reader finds the
whole file under its final name or no file at all, and a failed write leaves no temporary file behind.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(final: Path, data: bytes) -> None:
    """Write `data` to `final` (its folder created when missing): temporary name, fsync, rename, fsync the folder."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(final.parent, os.O_RDONLY)  # the rename itself survives a power cut
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def keep_once(final: Path, data: bytes) -> None:
    """`write_atomically`, unless the file is there already (a content-addressed name: the same bytes)."""
    if not final.exists():
        write_atomically(final, data)
