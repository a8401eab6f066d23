"""Service mode (sim/service.py and the firmware's SetServiceMode handling), value by value.

Written to kill the mutants of sim/service.py and of ``Firmware._on_set_service_mode``,
``_in_service`` and ``_leave_service`` that tests/sim/test_service_mode.py,
test_safety_controls.py and test_safety_hazards.py let survive (docs/safety.md). The spec's
numbers are stated literally: area 9 is the bench fixture (the whole envelope: 2.50 mm, the
pen's maximum depth, and 150 strokes/s, speed level 6), 4 the cheeks; SetServiceMode is
acknowledged with the mode now in force (1 on, 0 off); SERVICE_MODE_ENTERED carries value 0;
a refusal for the mode (SERVICE_MODE_REQUIRED 42, SERVICE_MODE_ACTIVE 43) carries the area as
its value and 0 as its limit. Link epochs are 1–255.

``ServiceMode.held_by`` is tested on its own as well: the firmware keeps its last named session
across link epochs and leaves service mode on another session's OpenSession or an unnamed
holder's new epoch, so some wrong answers of ``held_by`` cannot be reached through the wire
today; the class's rule (the same named session, or for an unnamed one the same epoch) is
held here directly.
"""

from __future__ import annotations

import pytest
from test_firmware_harness import Host

from micropen.protocol import limits as L
from micropen.protocol.messages import (
    ErrorCode,
    EventCode,
    PenState,
    Run,
    RunMode,
    RunOutcome,
    SetServiceMode,
)
from micropen.sim.cartridge import Refusal
from micropen.sim.service import ServiceMode, check_area

BENCH_FIXTURE = 9
CHEEKS = 4
SESSION = 0x5E55_1000  # the harness's host session


# ---------------------------------------------------------------------- sim/service.py
def test_a_named_session_holds_service_mode_across_epochs_and_no_other_session_does() -> None:
    mode = ServiceMode()
    assert mode.held_by(SESSION, 59) is False  # nobody holds it at power-on
    mode.enter(SESSION, 59)
    assert mode.held_by(SESSION, 59) is True
    assert mode.held_by(SESSION, 60) is True  # the same session after a reconnect
    assert mode.held_by(SESSION, 58) is True
    assert mode.held_by(SESSION - 1, 59) is False
    assert mode.held_by(SESSION + 1, 59) is False
    assert mode.held_by(None, 59) is False
    assert mode.leave() is True
    assert (mode.session, mode.epoch, mode.held) == (None, None, False)
    assert mode.held_by(SESSION, 59) is False
    assert mode.leave() is False  # it was off already


def test_an_unnamed_holder_holds_it_for_its_link_epoch_only() -> None:
    mode = ServiceMode(session=None, epoch=59)
    assert mode.held_by(None, 59) is True
    assert mode.held_by(None, 58) is False
    assert mode.held_by(None, 60) is False
    assert mode.held_by(None, 1) is False
    assert mode.held_by(None, 255) is False


def test_check_area_keeps_the_fixture_and_the_treatment_areas_apart() -> None:
    for area in L.Area:
        if area is L.Area.BENCH_FIXTURE:
            assert check_area(area, in_service=True) is None
            assert check_area(area, in_service=False) == Refusal(
                ErrorCode.SERVICE_MODE_REQUIRED, 9, 0
            )
        else:
            assert check_area(area, in_service=False) is None
            assert check_area(area, in_service=True) == Refusal(
                ErrorCode.SERVICE_MODE_ACTIVE, int(area), 0
            )


# ---------------------------------------------------------------------- the firmware
def _in_service(host: Host) -> None:
    host.ready(depth_um=2500, rate_sps=150)  # 2.50 mm with the override, speed level 6
    assert host.ack(SetServiceMode, 1).value == 1


def test_set_service_mode_is_acknowledged_with_the_mode_in_force() -> None:
    host = Host(seed=1)
    _in_service(host)
    assert host.ack(SetServiceMode, 1).value == 1  # again: still on, idempotent
    (entered,) = host.events(EventCode.SERVICE_MODE_ENTERED)  # once, not per request
    assert entered.value == 0
    assert host.ack(SetServiceMode, 0).value == 0
    assert host.ack(SetServiceMode, 0).value == 0  # off already: still off
    assert host.status().service_mode == 0


def test_a_treatment_run_in_service_mode_is_refused_with_the_area_and_limit_0() -> None:
    host = Host(seed=1)
    _in_service(host)
    reply = host.nak(Run, CHEEKS, RunMode.STROKES, 10, 0)
    assert (reply.error, reply.value, reply.limit) == (ErrorCode.SERVICE_MODE_ACTIVE, 4, 0)
    assert int(ErrorCode.SERVICE_MODE_ACTIVE) == 43


def test_a_host_without_a_session_holds_service_mode_on_its_link_epoch() -> None:
    host = Host(seed=1, session=None)
    _in_service(host)
    assert host.status().service_mode == 1
    host.start(BENCH_FIXTURE, RunMode.STROKES, strokes=20)
    firmware = host.pen.firmware  # no session: no reports reach this host, so read the pen
    host.wait_for(lambda: firmware.run is not None and firmware.run.end_t is not None, 5.0)
    assert firmware.run is not None and firmware.run.outcome is RunOutcome.COMPLETED
    assert host.status().service_mode == 1


def test_leaving_after_a_finished_fixture_run_does_not_stop_it_again() -> None:
    host = Host(seed=1)
    _in_service(host)
    host.start(BENCH_FIXTURE, RunMode.STROKES, strokes=20)
    report = host.wait_report()
    assert (report.outcome, report.strokes) == (RunOutcome.COMPLETED, 20)
    firmware = host.pen.firmware
    host.wait_for(lambda: firmware.state is PenState.IDLE, 1.0)  # needles home
    assert host.ack(SetServiceMode, 0).value == 0
    host.run_for(0.2)
    assert firmware.state is PenState.IDLE
    assert firmware.run is not None and firmware.run.outcome is RunOutcome.COMPLETED
    assert len(host.reports()) == 1
    (stopped,) = host.events(EventCode.STOPPED)
    assert stopped.value == RunOutcome.COMPLETED
    assert len(host.events(EventCode.SERVICE_MODE_LEFT)) == 1


@pytest.mark.parametrize("enabled", [0, 1])
def test_set_service_mode_replies_carry_the_commands_id(enabled: int) -> None:
    host = Host(seed=1)
    host.ready()
    reply = host.ack(SetServiceMode, enabled)
    assert (reply.cmd_id, reply.value) == (host._cmd_id, enabled)
