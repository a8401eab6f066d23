"""The example C pen (protocol/c/example_pen), built from the generated kit, driven directly by
the ordinary host over a pty: status, an exact 500-stroke run, an emergency stop during a run,
what it refuses, its command line. The HIL suite against it is test_c_pen_hil.py.

Real pty, real process: waits are bounded and fail loudly.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _c_pen import EXAMPLE, CPen, build_pen, start_pen

from micropen.hil_tests.capture import capture
from micropen.hil_tests.rawlink import RawLink
from micropen.host import Pen, open_pen
from micropen.host.errors import PenRefused
from micropen.host.pairing import HostKeys
from micropen.protocol.messages import (
    PROTOCOL_VERSION,
    Ack,
    CalBank,
    CalCommit,
    Capability,
    CartridgeState,
    ErrorCode,
    Event,
    EventCode,
    FaultCode,
    FwGetSlot,
    FwSlotId,
    GetStatus,
    Hello,
    OpenSession,
    PenState,
    Run,
    RunMode,
    RunOutcome,
    SetDepth,
    SimGet,
    SimParam,
)
from micropen.protocol.schema import Message, schema_hash

pytestmark = pytest.mark.slow
COMMAND_TIMEOUT_S = 3.0
WAIT_S = 5.0


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pen(tmp_path_factory.mktemp("c-pen"))


@pytest.fixture
def c_pen(program: Path, tmp_path: Path) -> Iterator[CPen]:
    running = start_pen(program, tmp_path)
    try:
        yield running
    finally:
        code = running.stop()
    assert code == 0, f"the C pen exited {code}: {running.stderr()}"
    assert running.stderr() == "", running.stderr()  # nothing from the sanitizers


@pytest.fixture
def pen(c_pen: CPen) -> Iterator[Pen]:
    with open_pen(c_pen.pty, command_timeout=COMMAND_TIMEOUT_S, purpose="conformance") as p:
        yield p


def test_status_through_the_cli(c_pen: CPen) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "micropen.tools.cli", "status", "--pen", c_pen.pty, "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert (status["serial"], status["model"]) == (c_pen.serial, "MP-12 C")
    assert status["capabilities"] == ["telemetry", "link_authentication"]
    assert (status["state"], status["fault"], status["calibrated"]) == ("idle", "none", True)
    assert (status["cartridge_state"], status["watchdog_ms"]) == ("new", 500)
    assert (status["depth_min_um"], status["depth_max_um"], status["soft_cap_um"]) == (
        200,
        2500,
        1500,
    )
    assert (status["rate_min_sps"], status["rate_max_sps"], status["needle_count"]) == (50, 150, 12)
    assert status["simulated"] is False


def test_a_500_stroke_run_delivers_exactly_500(pen: Pen) -> None:
    assert pen.async_pen.authenticated  # paired at start, so the needles may move
    report = pen.run(depth_mm=1.0, rate_sps=110, area="cheeks", strokes=500)
    assert (report.outcome, report.mode, report.target) == (
        RunOutcome.COMPLETED,
        RunMode.STROKES,
        500,
    )
    assert report.strokes == 500
    # strokes are counted from the pen's time x rate: stroke 500 at 110/s falls in ms 4546
    assert report.duration_ms == 4546
    assert (report.depth_um, report.rate_sps, report.area) == (1000, 110, 4)
    status = pen.status()
    assert (status.run_strokes, status.lifetime_strokes, status.cartridge_strokes) == (
        500,
        500,
        500,
    )
    assert status.cartridge_state is CartridgeState.LOCKED  # locked at the first run


def test_emergency_stop_during_a_run(pen: Pen) -> None:
    pen.set_telemetry(100)
    pen.set_depth(1.0, area="cheeks")
    pen.set_rate(110, area="cheeks")
    with capture(pen) as cap:
        run_id = pen.start_run(area="cheeks", seconds=20.0)
        cap.wait_telemetry(lambda s: s.run_strokes >= 20, WAIT_S, "20 strokes")
        pen.emergency_stop()
        report = pen.wait_run_end(run_id, timeout=WAIT_S)
        estop = cap.wait_event(EventCode.EMERGENCY_STOP, WAIT_S, run_id)
        home = cap.wait_event(EventCode.RETRACTED, WAIT_S, run_id)
    assert report.outcome is RunOutcome.EMERGENCY_STOP and report.strokes >= 20
    assert [f.fault for f in cap.faults()] == [FaultCode.EMERGENCY_STOP]
    assert estop.value == report.strokes
    assert home.value <= 50  # needles home within 50 ms of the stop (pen clock)
    status = pen.status()
    assert (status.state, status.fault) == (PenState.FAULT, FaultCode.EMERGENCY_STOP)
    assert status.run_strokes == report.strokes
    with pytest.raises(PenRefused) as refused:  # latched: the pen's own refusal, past the host
        pen.run_coroutine(pen.async_pen.request(lambda c: Run(c, 4, RunMode.STROKES, 10, 0)))
    assert refused.value.code is ErrorCode.FAULT_ACTIVE
    pen.clear_fault()
    assert pen.status().state is PenState.IDLE
    again = pen.run(depth_mm=1.0, rate_sps=110, area="cheeks", strokes=10)
    assert (again.run_id, again.strokes, again.outcome) == (run_id + 1, 10, RunOutcome.COMPLETED)


def test_what_the_minimal_pen_does_not_do_is_unknown_command(pen: Pen) -> None:
    caps = Capability(pen.identity.capabilities)
    assert caps == Capability.TELEMETRY | Capability.LINK_AUTHENTICATION
    unimplemented: list[Callable[[int], Message]] = [
        lambda c: FwGetSlot(c, FwSlotId.PRIMARY),
        lambda c: SimGet(c, SimParam.AMBIENT_DC),
        lambda c: CalCommit(c, 0),
    ]
    for build in unimplemented:
        with pytest.raises(PenRefused) as refused:
            pen.run_coroutine(pen.async_pen.request(build))
        assert refused.value.code is ErrorCode.UNKNOWN_COMMAND
    # the factory calibration reads back; it is not writable here (no CALIBRATION_STORAGE)
    active = pen.cal_read(CalBank.ACTIVE)
    assert (active.valid, active.depth_gain_ppm, active.rate_gain_ppm) == (1, 0, 0)
    assert pen.cal_read(CalBank.STAGING).valid == 0


def test_an_unpaired_host_reads_but_moves_nothing(program: Path, tmp_path: Path) -> None:
    running = start_pen(program, tmp_path, serial="C-UNPAIRED", paired=False)
    try:
        with open_pen(running.pty, command_timeout=COMMAND_TIMEOUT_S, log=False) as p:
            assert not p.async_pen.authenticated
            assert p.status().state is PenState.IDLE  # reading is allowed
            with pytest.raises(PenRefused) as refused:
                p.set_depth(0.5)
            assert refused.value.code is ErrorCode.NOT_AUTHORIZED
            p.emergency_stop()  # stopping is allowed whoever asks
            assert p.status().fault is FaultCode.EMERGENCY_STOP
    finally:
        code = running.stop()
    assert code == 0, running.stderr()


@pytest.mark.parametrize(
    ("args", "state", "error"),
    [
        (["--cartridge-id", "0"], CartridgeState.ABSENT, ErrorCode.NO_CARTRIDGE),
        (["--cartridge-lot", ""], CartridgeState.REFUSED, ErrorCode.CARTRIDGE_UNKNOWN),
        (
            ["--today", "20000", "--cartridge-made", "19000", "--cartridge-expiry", "19999"],
            CartridgeState.REFUSED,
            ErrorCode.CARTRIDGE_EXPIRED,
        ),
        (
            ["--today", "20000", "--cartridge-made", "20001", "--cartridge-expiry", "20400"],
            CartridgeState.REFUSED,
            ErrorCode.CARTRIDGE_UNKNOWN,
        ),
    ],
    ids=["absent", "no_lot", "expired", "made_later"],
)
def test_hazard_4_a_cartridge_it_cannot_trust_never_runs(
    program: Path, tmp_path: Path, args: list[str], state: CartridgeState, error: ErrorCode
) -> None:
    running = start_pen(program, tmp_path, args=args)
    try:
        with open_pen(running.pty, command_timeout=COMMAND_TIMEOUT_S, log=False) as p:
            assert p.cartridge().state is state
            p.set_depth(0.5, area="neck")
            p.set_rate(90, area="neck")
            with pytest.raises(PenRefused) as refused:  # past the host's own check
                p.run_coroutine(p.async_pen.request(lambda c: Run(c, 6, RunMode.STROKES, 5, 0)))
            assert refused.value.code is error
            assert p.status().run_id == 0
    finally:
        code = running.stop()
    assert code == 0, running.stderr()


def test_a_cartridge_retires_at_its_stroke_life(program: Path, tmp_path: Path) -> None:
    """Locked in this bay before a reset with 249,990 of its 250,000 strokes used: a run of 20
    stops at the exact 10th (CARTRIDGE_LIMIT), the cartridge retires, and nothing runs on it."""
    running = start_pen(program, tmp_path, args=["--cartridge-strokes-used", "249990"])
    try:
        with open_pen(running.pty, command_timeout=COMMAND_TIMEOUT_S, log=False) as p:
            info = p.cartridge()
            assert (info.state, info.strokes_used) == (CartridgeState.LOCKED, 249_990)
            with capture(p) as cap:
                p.set_depth(0.5, area="neck")
                p.set_rate(90, area="neck")
                run_id = p.start_run(area="neck", strokes=20)
                report = p.wait_run_end(run_id, timeout=WAIT_S)
                retired = cap.wait_event(EventCode.CARTRIDGE_RETIRED, WAIT_S, run_id)
                cap.wait_event(EventCode.RETRACTED, WAIT_S, run_id)  # at rest again
            assert (report.outcome, report.strokes) == (RunOutcome.CARTRIDGE_LIMIT, 10)
            assert retired.value == info.cartridge_id
            info = p.cartridge()
            assert (info.state, info.strokes_used) == (CartridgeState.EXHAUSTED, 250_000)
            with pytest.raises(PenRefused) as refused:  # past the host's own check
                p.run_coroutine(p.async_pen.request(lambda c: Run(c, 6, RunMode.STROKES, 5, 0)))
            assert (refused.value.code, refused.value.value) == (
                ErrorCode.CARTRIDGE_EXHAUSTED,
                250_000,
            )
    finally:
        code = running.stop()
    assert code == 0, running.stderr()


def test_records_wait_for_a_session_then_come_in_order(c_pen: CPen) -> None:
    """The pen holds its records until a paired host opens a session: the first session gets
    the boot event, then each command's reply before the records it caused."""
    with RawLink(c_pen.pty, keys=HostKeys()) as link:
        link.connect()
        link.request(lambda c: Hello(c, PROTOCOL_VERSION, schema_hash()))  # no session yet
        link.request(lambda c: GetStatus(c))  # in order: anything sent before it is here
        assert link.notifications == []  # held
        link.request(lambda c: OpenSession(c, link.session))
        link.wait_for(lambda: len(link.notifications) >= 1, "the held boot event")
        (booted,) = link.notifications
        assert isinstance(booted, Event) and (booted.code, booted.value) == (EventCode.BOOTED, 0)
        ack = link.request(lambda c: SetDepth(c, 1600, 1))
        assert isinstance(ack, Ack)
        link.wait_for(lambda: len(link.notifications) >= 2, "the soft-cap event")
        assert link.notifications[1].code is EventCode.SOFT_CAP_OVERRIDE  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--cartridge-lot", "L" * 13], "--cartridge-lot"),
        (["--pen-id", "0"], "--pen-id 0"),
        (["--serial"], "needs a value"),
        (["--bogus", "1"], "unknown option --bogus"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(program: Path, args: list[str], says: str) -> None:
    done = subprocess.run([str(program), *args], capture_output=True, text=True, timeout=10)
    assert done.returncode == 2
    assert done.stdout == "" and says in done.stderr and done.stderr.count("\n") == 1


def test_a_pairing_file_others_can_read_is_refused(program: Path, tmp_path: Path) -> None:
    pairing = tmp_path / "pairing"
    pairing.write_text(f"7 {'00' * 32}\n", encoding="ascii")
    pairing.chmod(0o644)
    done = subprocess.run(
        [str(program), "--pairing", str(pairing)], capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 2 and "chmod 600" in done.stderr


def test_the_firmware_part_is_portable() -> None:
    """pen.c/pen.h: C99 with the kit's headers and <stdint.h> <stddef.h> <string.h> only; no
    I/O, allocation, clock or floating point (those live in pen_posix.c)."""
    for name in ("pen.c", "pen.h"):
        text = (EXAMPLE / name).read_text(encoding="ascii")
        includes = set(re.findall(r'#include\s+[<"]([^>"]+)[>"]', text))
        assert includes <= {"stddef.h", "stdint.h", "string.h", "pen.h", "mp_link.h",
                            "mp_messages.h", "mp_port.h", "mp_replycache.h"}, includes  # fmt: skip
        code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        for word in ("float", "double", "malloc", "printf", "time", "clock"):
            assert not re.search(rf"\b{word}\b", code), f"{name} uses {word}"
