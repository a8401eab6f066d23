"""The example C pen (protocol/c/example_pen) for the tests: the kit generated with
``micropen protocol gen-c``, the pen built with the strict flags (and ASan/UBSan where the
toolchain has them), started on a pty and paired with the test's host keystore — as a bench
provisions a pen, and as ``micropen sim serve`` pairs the simulator.

Waits are bounded and fail loudly: this talks to a real process over a real pty.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cbuild
import pytest

from micropen.host.pairing import HostKeys

EXAMPLE = Path(__file__).resolve().parents[2] / "protocol" / "c" / "example_pen"
# The example's link sizes (README.md next to the pen): the kit's link declines datagrams, so
# telemetry goes reliably; with the kit's default of 4 messages waiting for the window it is
# dropped as soon as a busy host acks late (the HIL telemetry test lost 12 % at 500 Hz), with
# the protocol document's 64 for a peer without datagrams it is not.
LINK_SIZES = (
    "-DMP_LINK_WINDOW_MAX=28",
    "-DMP_LINK_BACKLOG=80",
    "-DMP_LINK_DATAGRAM_FALLBACK_BACKLOG=64",
)
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
MODEL = "MP-12 C"


def generate_kit(folder: Path) -> Path:
    """``micropen protocol gen-c folder`` (the command a firmware team runs)."""
    done = subprocess.run(
        [sys.executable, "-m", "micropen.tools.cli", "protocol", "gen-c", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"gen-c exited {done.returncode}: {done.stderr}", pytrace=False)
    return folder


def build_pen(folder: Path) -> Path:
    """The kit generated into ``folder/kit`` and the example pen built from it and
    protocol/c/example_pen; sanitized where the toolchain can."""
    kit = generate_kit(folder / "kit")
    sources = sorted(kit.glob("*.c")) + sorted(EXAMPLE.glob("*.c"))
    return cbuild.build(
        sources,
        folder / "example_pen",
        include=[kit, EXAMPLE],
        sanitize=cbuild.sanitizers_work(),
        extra=[*LINK_SIZES, "-lcrypto"],
    )


@dataclass
class CPen:
    """One running example pen, paired with this test's host keystore."""

    proc: subprocess.Popen[str]
    pty: str
    serial: str
    pen_id: int
    log: Path

    def stop(self) -> int:
        """SIGTERM, and its exit status (the pen exits 0); fails the test if it hangs."""
        self.proc.terminate()
        try:
            code = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_S)
            pytest.fail(f"the C pen did not exit within {STOP_TIMEOUT_S} s of SIGTERM")
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def stderr(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def start_pen(
    program: Path,
    folder: Path,
    *,
    serial: str = "C-000001",
    paired: bool = True,
    args: Sequence[str] = (),
) -> CPen:
    """Start the pen; with ``paired`` it is provisioned with a pairing of this test's host
    keystore ($MICROPEN_HOME), which then holds the key for as long as the pen process lives."""
    pen_id = secrets.randbelow(0xFFFF_FFFF) + 1
    argv = [str(program), "--serial", serial, "--pen-id", str(pen_id), *args]
    keys = HostKeys()
    key = secrets.token_bytes(32)
    if paired:
        pairing = folder / f"pairing-{serial}"
        fd = os.open(pairing, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{keys.settle_host_id()} {key.hex()}\n")
        argv += ["--pairing", str(pairing)]
    log = folder / f"pen-{serial}.log"
    with log.open("w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, **cbuild.SANITIZER_ENV},
        )
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(START_TIMEOUT_S)
    line = proc.stdout.readline() if ready else ""
    try:
        info = json.loads(line)
        pty = str(info["pty"])
    except (ValueError, KeyError):
        proc.kill()
        proc.wait(STOP_TIMEOUT_S)
        pytest.fail(
            f"the C pen announced {line!r} within {START_TIMEOUT_S} s, not its pty; stderr: "
            f"{log.read_text(encoding='utf-8', errors='replace')}",
            pytrace=False,
        )
    assert info["serial"] == serial and info["pen_id"] == pen_id, info
    if paired:
        keys.add(pen_id, key, serial, MODEL, holder_pid=proc.pid)
    return CPen(proc, pty, serial, pen_id, log)
