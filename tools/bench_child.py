"""A benchmark's helper process: it prints where to find it (a pty path) on its first line and
is ended on the way out, whatever happens in between."""

from __future__ import annotations

import contextlib
import select
import subprocess
from collections.abc import Iterator

from micropen.protocol.errors import MicropenError

__all__ = ["START_TIMEOUT_S", "announced_child"]

START_TIMEOUT_S = 20.0  # a child prints its path within this, or the benchmark fails


@contextlib.contextmanager
def announced_child(args: list[str], env: dict[str, str] | None = None) -> Iterator[str]:
    """Start ``args``; yield the first word of its first line; terminate (then kill) it."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT_S)
        line = proc.stdout.readline().strip() if ready else ""
        if not line:
            raise MicropenError(
                f"{' '.join(args[:6])} printed no device path within {START_TIMEOUT_S:.0f} s "
                f"(exit status {proc.poll()})"
            )
        yield line.split()[0]
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
