"""Build C sources with the system compiler, as CI and a firmware team would.

Every C test compiles with ``-std=c99 -Wall -Wextra -Werror`` (a warning is a failure) and,
where the toolchain has them, runs under ``-fsanitize=address,undefined`` with UBSan made fatal,
so an out-of-bounds write or an overflow fails the test instead of passing by luck.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

STRICT = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer")
# the sanitizers' runtime must not depend on the test machine's defaults
SANITIZER_ENV = {
    "ASAN_OPTIONS": "abort_on_error=0:detect_leaks=1:halt_on_error=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}


def compiler() -> str:
    """The system C compiler (``$CC``, else ``cc``); skips the test, with the reason, if none."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler: {cc!r} not found (install gcc or set CC)")
    return cc


@functools.cache
def sanitizers_work() -> bool:
    """Whether this toolchain links and runs an ASan/UBSan program (some containers cannot)."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        return False
    probe = Path(os.environ.get("TMPDIR", "/tmp")) / f"micropen-asan-probe-{os.getpid()}"
    source = probe.with_suffix(".c")
    source.write_text("int main(void) { return 0; }\n", encoding="ascii")
    try:
        built = subprocess.run(
            [cc, *SANITIZE, str(source), "-o", str(probe)], capture_output=True, check=False
        )
        if built.returncode != 0:
            return False
        env = {**os.environ, **SANITIZER_ENV}
        return subprocess.run([str(probe)], env=env, check=False).returncode == 0
    finally:
        source.unlink(missing_ok=True)
        probe.unlink(missing_ok=True)


def build(
    sources: Sequence[Path],
    out: Path,
    *,
    include: Sequence[Path] = (),
    sanitize: bool = False,
    shared: bool = False,
    extra: Sequence[str] = (),
) -> Path:
    """Compile ``sources`` into ``out`` (an executable, or a shared library for ctypes);
    a compiler diagnostic fails the test with the compiler's own text."""
    cc = compiler()
    flags = [*STRICT, "-O1", "-g"]
    if sanitize:
        flags += SANITIZE
    if shared:
        flags += ["-shared", "-fPIC"]
    args = [cc, *flags, *(f"-I{p}" for p in include), *map(str, sources), "-o", str(out), *extra]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(args)}\n{result.stderr}", pytrace=False)
    return out


def run(program: Path, *args: str, stdin: bytes = b"", timeout: float = 60.0) -> bytes:
    """Run a built program (under the sanitizers' settings); a non-zero exit fails the test
    with what it printed."""
    env = {**os.environ, **SANITIZER_ENV}
    result = subprocess.run(
        [str(program), *args], input=stdin, capture_output=True, env=env, timeout=timeout
    )
    if result.returncode != 0:
        pytest.fail(
            f"{program.name} exited {result.returncode}\n{result.stderr.decode(errors='replace')}",
            pytrace=False,
        )
    return result.stdout
