"""The pen under test: the simulator the suite starts, the session's connection, a known state.

The suite never asks "is this a simulator?" to decide what a test does: a test states what it
needs (``hil_needs`` capabilities, ``hil_destructive``) and the plugin skips it, with the reason,
on a pen that cannot give it. The only simulator-specific code is here: starting one when no
``--pen`` is given, and putting back the simulator parameters a test changed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from micropen.host import Pen, open_pen
from micropen.host.errors import HostError, PenRefused
from micropen.protocol import limits as L
from micropen.protocol.messages import (
    Ack,
    CalBank,
    CalData,
    Capability,
    CartridgeInfo,
    CartridgeState,
    Identity,
    PenState,
    SimMountCartridge,
    SimParam,
    Status,
)

__all__ = ["CartridgeFactory", "HilContext", "SimProcess", "capability_names", "make_ready"]

START_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 3.0
AT_REST_TIMEOUT_S = 2.0
# parameters whose value is an action, not a setting: never "restored" by writing them back
_TRIGGERS = frozenset(
    {SimParam.CARTRIDGE_REMOVE, SimParam.CALIBRATION_CORRUPT, SimParam.DISCONNECT}
)
_LINK_PARAMS = frozenset(
    {
        SimParam.LINK_DROP_PPM,
        SimParam.LINK_CORRUPT_PPM,
        SimParam.LINK_DUPLICATE_PPM,
        SimParam.LINK_DELAY_MS,
        SimParam.DISCONNECT,
    }
)


def capability_names(flags: int) -> list[str]:
    return [c.name or str(c.value) for c in Capability if flags & c]


class SimProcess:
    """``micropen sim serve --pty`` in a child process: the real serial path, the pen paired
    with this user's host keystore (``$MICROPEN_HOME``) as a bench owner pairs a pen."""

    def __init__(self, seed: int, query: str = "", log_path: Path | None = None) -> None:
        self.seed, self.query, self.log_path = seed, query, log_path
        self._proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None
        self.info: dict[str, Any] = {}

    def start(self) -> str:
        """Start the simulator; returns its pty path."""
        args = [sys.executable, "-m", "micropen.tools.cli", "sim", "serve", "--pty", "--json"]
        args += ["--seed", str(self.seed)] + (["--query", self.query] if self.query else [])
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("w", encoding="utf-8")
        self._proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self._log or subprocess.DEVNULL, text=True
        )
        line = self._first_line(self._proc)
        try:
            self.info = json.loads(line)
            return str(self.info["pty"])
        except (ValueError, KeyError):
            self.stop()
            raise RuntimeError(f"the simulator announced {line!r}, not a pty path") from None

    def _first_line(self, proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(START_TIMEOUT_S):
                self.stop()
                raise RuntimeError(f"the simulator printed nothing within {START_TIMEOUT_S} s")
        line = proc.stdout.readline().strip()
        if not line:
            code = proc.wait(5)
            raise RuntimeError(f"the simulator exited ({code}) before announcing its pty")
        return line

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
            if self.log_path is not None and self.log_path.stat().st_size == 0:
                self.log_path.unlink()  # keep a log only when the simulator said something


@dataclass
class CartridgeFactory:
    """Fresh, expired and unknown cartridges for a simulated bay, dated from the cartridge the
    pen was found with (the pen's notion of "today" is not on the wire)."""

    made_day: int
    expiry_day: int
    _ids: Iterator[int] = field(
        default_factory=lambda: itertools.count(random.randrange(0x4000_0000, 0x7000_0000))
    )

    def next_id(self) -> int:
        return next(self._ids)

    def fresh(self) -> tuple[int, str, int, int]:
        return self.next_id(), "HIL-NEW", self.made_day, self.expiry_day

    def expired(self) -> tuple[int, str, int, int]:
        """Made more than the shelf life ago: expired whatever the printed date says."""
        made = max(0, self.made_day - L.CARTRIDGE_SHELF_LIFE_DAYS - 10)
        return self.next_id(), "HIL-OLD", made, self.made_day - 1

    def unknown(self) -> tuple[int, str, int, int]:
        """A tag with no lot: not a cartridge this pen can trust."""
        return self.next_id(), "", self.made_day, self.expiry_day


class HilContext:
    """The session's connection to the pen under test, and what the suite learnt at start.

    Tests that need the port for themselves (the proxy, a raw link) call :meth:`release`; the
    next :meth:`pen` reconnects. Link statistics of every connection are kept for the report.
    """

    def __init__(self, url: str, *, allow_destructive: bool | None, sim: SimProcess | None):
        self.url = url
        self.sim = sim
        self._pen: Pen | None = None
        self.link_stats: list[dict[str, Any]] = []
        pen = self.pen()
        self.identity: Identity = pen.identity
        self.capabilities = Capability(self.identity.capabilities)
        self.simulated = bool(self.capabilities & Capability.SIMULATOR)
        self.allow_destructive = self.simulated if allow_destructive is None else allow_destructive
        self.baseline: dict[SimParam, int] = self._read_baseline(pen)
        # a pen without calibration storage may not answer CalRead at all (the C example does;
        # a minimal one need not): read it only where the tests that use it can run
        stores = self.capabilities & (Capability.CALIBRATION_STORAGE | Capability.SIMULATOR)
        self._calibration = pen.cal_read(CalBank.ACTIVE) if stores else None
        info: CartridgeInfo = pen.cartridge()
        self.initial_cartridge = info
        self.cartridges = CartridgeFactory(info.manufactured_day, info.expiry_day)

    @property
    def calibration(self) -> CalData:
        """The active calibration when the suite started (tests that use it need
        CALIBRATION_STORAGE or SIMULATOR, and are skipped on a pen without)."""
        if self._calibration is None:
            raise RuntimeError("this pen reports no calibration storage; the test needs it")
        return self._calibration

    # -- connection
    def pen(self) -> Pen:
        """The open connection, reopened if a test released or broke it."""
        pen = self._pen
        if pen is not None and not self._healthy(pen):
            self.release()
            pen = None
        if pen is None:
            pen = self._pen = open_pen(
                self.url, command_timeout=COMMAND_TIMEOUT_S, purpose="conformance"
            )
        return pen

    @staticmethod
    def _healthy(pen: Pen) -> bool:
        core = pen.async_pen
        if core.closed:
            return False
        if core.connected:
            return True
        with contextlib.suppress(HostError):
            pen.wait_connected(COMMAND_TIMEOUT_S)
            return True
        return False

    def release(self) -> str:
        """Close the session's connection so a test can open the pen's port itself."""
        pen, self._pen = self._pen, None
        if pen is not None:
            self.link_stats.append(pen.statistics())
            with contextlib.suppress(HostError):
                pen.close()
        return self.url

    def close(self) -> None:
        self.release()

    def has(self, capability: Capability) -> bool:
        return bool(self.capabilities & capability)

    def describe(self) -> dict[str, Any]:
        """The report header: who the pen is."""
        ident = self.identity
        return {
            "url": self.url,
            "model": ident.model,
            "serial": ident.serial,
            "firmware": f"{ident.firmware_major}.{ident.firmware_minor}.{ident.firmware_patch}",
            "hardware_revision": ident.hardware_revision,
            "protocol_version": ident.protocol_version,
            "schema_hash": f"{ident.schema_hash:08x}",
            "capabilities": capability_names(ident.capabilities),
            "boot_id": f"{ident.boot_id:08x}",
            "simulator_started_by_suite": self.sim is not None,
            "destructive_allowed": self.allow_destructive,
        }

    def _read_baseline(self, pen: Pen) -> dict[SimParam, int]:
        if not self.simulated:
            return {}
        baseline = {}
        for param in SimParam:
            if param in _TRIGGERS:
                continue  # actions, not settings (and SimGet(DISCONNECT) may crash a sim)
            if param in _LINK_PARAMS and not self.has(Capability.LINK_FAULT_INJECTION):
                continue
            with contextlib.suppress(PenRefused):
                baseline[param] = pen.sim_get(param)
        for param in _LINK_PARAMS & baseline.keys():
            baseline[param] = 0  # the pen under test gets a clean line
        return baseline


def _wait_at_rest(pen: Pen) -> Status:
    """Status once the pen is IDLE or FAULT (a stop's retraction takes a few ms)."""
    deadline = time.monotonic() + AT_REST_TIMEOUT_S
    status = pen.status()
    while status.state not in (PenState.IDLE, PenState.FAULT):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the pen is still {status.state.name.lower()} {AT_REST_TIMEOUT_S:g} s after "
                "Stop: it did not come to rest"
            )
        status = pen.status()
    return status


def make_ready(ctx: HilContext, pen: Pen) -> Status:
    """Stopped, no fault, retracted, default watchdog, no telemetry, simulator faults off."""
    with contextlib.suppress(HostError):
        pen.stop()
    for param, value in ctx.baseline.items():
        if param in _TRIGGERS:
            continue
        if pen.sim_get(param) != value:
            pen.sim_set(param, value)
    status = _wait_at_rest(pen)
    if status.state is PenState.FAULT:
        pen.clear_fault()
    if ctx.simulated and not status.calibrated:
        restore_calibration(ctx, pen)
    if status.watchdog_ms != L.HEARTBEAT_DEFAULT_MS:
        pen.set_watchdog(L.HEARTBEAT_DEFAULT_MS)
    if status.telemetry_hz:
        pen.set_telemetry(0)
    if status.depth_set_um or status.soft_cap_override:
        pen.set_depth(0.0)
    return pen.status()


def restore_calibration(ctx: HilContext, pen: Pen) -> int:
    """Write back the calibration the pen had at the start, under a newer counter: the pen then
    behaves as before (the counter must only ever grow). Returns the new counter."""
    cal = ctx.calibration
    counter = max(pen.cal_read(CalBank.ACTIVE).counter, pen.cal_read(CalBank.STAGING).counter) + 1
    crc = pen.cal_write(
        depth_gain_ppm=cal.depth_gain_ppm,
        depth_offset_um=cal.depth_offset_um,
        rate_gain_ppm=cal.rate_gain_ppm,
        counter=counter,
        written_at=cal.written_at,
        version=cal.version or 1,
    )
    pen.cal_commit(crc)
    return counter


def ensure_cartridge(ctx: HilContext, pen: Pen) -> CartridgeInfo | None:
    """A cartridge a run may use; a simulated bay gets a fresh one when needed. None when the
    pen has none usable and cannot be given one (a bench operator must mount one)."""
    info = pen.cartridge()
    if info.state in (CartridgeState.NEW, CartridgeState.LOCKED):
        return info
    if not ctx.simulated:
        return None
    mount(pen, *ctx.cartridges.fresh())
    info = pen.cartridge()
    return info if info.state is CartridgeState.NEW else None


def mount(pen: Pen, cartridge_id: int, lot: str, made_day: int, expiry_day: int) -> int:
    """Put a cartridge in a simulated bay (id 0 takes it out); returns the slot state."""
    core = pen.async_pen
    reply = pen.run_coroutine(
        core.request(lambda c: SimMountCartridge(c, cartridge_id, lot, made_day, expiry_day))
    )
    assert isinstance(reply, Ack), reply
    return int(reply.value)


def worker_name() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")
