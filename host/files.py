"""Writing a file whole or not at all: what the keystore and the signed-image writer share.

A fresh temporary file of our own beside the target (``mkstemp``: O_EXCL, never a name someone
could have planted a symlink on), written completely, flushed to disk, given its mode, then
renamed over the target. A crash leaves the old file or the new one, never half of one; a
failure removes the temporary file and raises the OSError for the caller to name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
