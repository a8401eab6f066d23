"""The simulated firmware does what docs/protocol.md's "Pen rules" and "Answers" say: each
fault's FaultReport.value (answers.FAULT_VALUE), each event's run_id (answers.EVENT_RUN_ID), the
order of replies and records (answers.RECORD_ORDER), the admission stages (ADMISSION_ORDER) and
what a production pen announces. Numbers are the spec's, stated literally; virtual time only.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from test_firmware_harness import Host, Raw

from micropen.protocol import answers, device
from micropen.protocol.messages import (
    Ack,
    Capability,
    ClearFault,
    EmergencyStop,
    ErrorCode,
    Event,
    EventCode,
    FaultCode,
    FaultReport,
    Identity,
    Nak,
    PenState,
    RunMode,
    RunReport,
    SetDepth,
    SetServiceMode,
    SimMountCartridge,
    SimParam,
    SimSet,
    Stop,
)
from micropen.protocol.schema import Message

CHEEKS = 4
U32 = 0xFFFF_FFFF


def test_the_tables_cover_every_event_and_fault() -> None:
    assert set(answers.EVENT_RUN_ID) == set(EventCode)
    assert set(answers.FAULT_VALUE) == set(FaultCode) - {FaultCode.NONE}


def _running(seed: int = 1) -> tuple[Host, int]:
    host = Host(seed=seed)
    host.ready(depth_um=1000, rate_sps=110)
    run_id = host.start(CHEEKS, RunMode.DURATION, 0, 60_000)
    host.run_for(0.4)  # past the 250 ms the rate needs to settle
    return host, run_id


def _fault_report(host: Host, fault: FaultCode, timeout: float = 3.0) -> FaultReport:
    host.wait_for(lambda: any(f.fault is fault for f in host.faults()), timeout, step=0.01)
    return next(f for f in host.faults() if f.fault is fault)


def _check_stall() -> tuple[FaultReport, Host, int]:
    host, run_id = _running()
    host.ack(SimSet, SimParam.STALL, 1)
    report = _fault_report(host, FaultCode.STALL)
    assert report.value > 900  # mA, above the stall threshold
    return report, host, run_id


def _check_battery() -> tuple[FaultReport, Host, int]:
    host, run_id = _running()
    host.ack(SimSet, SimParam.BATTERY_MV, 3250)
    report = _fault_report(host, FaultCode.BATTERY_LOW)
    assert 3000 < report.value < 3300  # mV, measured under load
    return report, host, run_id


def _check_depth() -> tuple[FaultReport, Host, int]:
    host, run_id = _running()
    host.ack(SimSet, SimParam.DEPTH_DRIFT_UM, 300)
    report = _fault_report(host, FaultCode.DEPTH_ERROR)
    assert 1200 < report.value < 1400  # µm measured: 1000 set + 300 drift
    return report, host, run_id


def _check_rate() -> tuple[FaultReport, Host, int]:
    host, run_id = _running()
    host.ack(SimSet, SimParam.SPEED_GAIN_ERROR_PPM, 100_000)  # the motor runs 10 % fast
    report = _fault_report(host, FaultCode.RATE_ERROR)
    assert 11_550 < report.value < 12_500  # 0.01 strokes/s: about 121/s against 110 set
    return report, host, run_id


def _check_watchdog() -> tuple[FaultReport, Host, int]:
    host, run_id = _running()
    host.silent = True
    host.run_for(0.7)
    host.silent = False
    report = _fault_report(host, FaultCode.WATCHDOG)
    assert 500 <= report.value <= 520  # ms of silence; the default watchdog is 500 ms
    return report, host, run_id


def _check_retract() -> tuple[FaultReport, Host, int]:
    host, run_id = _running()
    host.ack(SimSet, SimParam.ACTUATOR_SPEED_PCT, 1)
    host.ack(Stop)
    report = _fault_report(host, FaultCode.RETRACT_SLOW)
    assert 50 <= report.value <= 60  # ms since the stop (limit 50 ms)
    return report, host, run_id


def _check_estop() -> tuple[FaultReport, Host, int]:
    host, run_id = _running()
    host.request(EmergencyStop(host.next_id()))
    report = _fault_report(host, FaultCode.EMERGENCY_STOP)
    run = host.wait_report()
    assert report.value == run.strokes > 0  # strokes completed in the run
    return report, host, run_id


def _check_removed() -> tuple[FaultReport, Host, int]:
    host, run_id = _running()
    cartridge = host.status().cartridge_id
    host.ack(SimSet, SimParam.CARTRIDGE_REMOVE, 1)
    report = _fault_report(host, FaultCode.CARTRIDGE_REMOVED)
    assert report.value & U32 == cartridge  # the id's 32-bit pattern
    return report, host, run_id


def _check_ingress() -> tuple[FaultReport, Host, int]:
    host, run_id = _running()
    host.ack(SimSet, SimParam.FLUID_INGRESS, 1)
    report = _fault_report(host, FaultCode.FLUID_INGRESS)
    assert report.value == 1
    return report, host, run_id


def _check_temperature() -> tuple[FaultReport, Host, int]:
    host = Host(seed=1)
    host.ready()
    host.ack(SimSet, SimParam.OVERHEAT, 1000)
    report = _fault_report(host, FaultCode.OVER_TEMPERATURE, timeout=600.0)
    assert 430 <= report.value < 460  # 0.1 °C, at the 43 °C fault threshold (sampled)
    return report, host, 0


def _check_brownout() -> tuple[FaultReport, Host, int]:
    host = Host(seed=1)
    host.ready()
    host.ack(SimSet, SimParam.BROWNOUT_RESET, 20)
    host.run_for(0.05)
    host.connect()
    host.hello()
    report = _fault_report(host, FaultCode.BROWNOUT)
    assert report.value == 0
    return report, host, 0


def _check_calibration() -> tuple[FaultReport, Host, int]:
    host = Host(seed=1)
    host.ready()
    host.ack(SimSet, SimParam.CALIBRATION_CORRUPT, 1)
    report = _fault_report(host, FaultCode.CALIBRATION_CORRUPT)
    assert report.value == 0
    host.run_for(2.0)  # reported once, not again at every idle tick
    assert [f.fault for f in host.faults()] == [FaultCode.CALIBRATION_CORRUPT]
    status = host.status()  # reported, not latched
    assert (status.state, status.fault, status.calibrated) == (
        PenState.IDLE,
        FaultCode.CALIBRATION_CORRUPT,
        0,
    )
    assert not host.events(EventCode.FAULT_RAISED)
    assert host.ack(ClearFault).value == 0
    return report, host, 0


_FAULT_CHECKS: dict[FaultCode, Callable[[], tuple[FaultReport, Host, int]]] = {
    FaultCode.STALL: _check_stall,
    FaultCode.OVER_TEMPERATURE: _check_temperature,
    FaultCode.BATTERY_LOW: _check_battery,
    FaultCode.FLUID_INGRESS: _check_ingress,
    FaultCode.DEPTH_ERROR: _check_depth,
    FaultCode.WATCHDOG: _check_watchdog,
    FaultCode.CALIBRATION_CORRUPT: _check_calibration,
    FaultCode.CARTRIDGE_REMOVED: _check_removed,
    FaultCode.EMERGENCY_STOP: _check_estop,
    FaultCode.BROWNOUT: _check_brownout,
    FaultCode.RATE_ERROR: _check_rate,
    FaultCode.RETRACT_SLOW: _check_retract,
}


def test_every_documented_fault_value_is_checked() -> None:
    assert set(_FAULT_CHECKS) == set(answers.FAULT_VALUE)


@pytest.mark.parametrize("fault", list(_FAULT_CHECKS), ids=lambda f: f.name)
def test_fault_report_value_means_what_the_table_says(fault: FaultCode) -> None:
    report, host, run_id = _FAULT_CHECKS[fault]()
    assert report.run_id == run_id  # the current (or last) run of this boot
    if fault is not FaultCode.CALIBRATION_CORRUPT:
        assert host.status().state is PenState.FAULT


def _after(host: Host, start: int) -> list[Message]:
    return [m for m in host.inbox[start:] if isinstance(m, Ack | Event | RunReport | FaultReport)]


def _names(messages: list[Message]) -> list[str]:
    out = []
    for m in messages:
        if isinstance(m, Event):
            out.append(f"Event {m.code.name}")
        else:
            out.append(type(m).__name__)
    return out


def _documented(trigger: str) -> list[tuple[str, bool]]:
    """RECORD_ORDER's items for ``trigger`` as (message name, optional): "[…]" is optional,
    "(…)" after the name and a leading "…" (a later moment) are commentary."""
    items = []
    for item in answers.RECORD_ORDER[trigger]:
        text = item.removeprefix("… ")
        optional = text.startswith("[")
        words = text.strip("[]").split("(")[0].split()
        items.append((" ".join(words[:2]) if words[0] == "Event" else words[0], optional))
    return items


def _in_documented_order(seen: list[str], trigger: str) -> None:
    """``seen`` is the table's sequence with only optional items left out."""
    documented = _documented(trigger)
    at = 0
    for name in seen:
        while at < len(documented) and documented[at][0] != name:
            assert documented[at][1], f"{trigger}: {documented[at][0]} missing from {seen}"
            at += 1
        assert at < len(documented), f"{trigger}: {name} out of the documented order {seen}"
        at += 1
    assert all(optional for _, optional in documented[at:]), f"{trigger}: {seen} ends early"


def test_records_follow_the_documented_order() -> None:
    host = Host(seed=1)
    host.ready()
    start = len(host.inbox)
    host.start(CHEEKS, RunMode.DURATION, 0, 60_000)
    host.run_for(0.3)
    _in_documented_order(_names(_after(host, start)), "Run accepted")
    start = len(host.inbox)
    host.ack(Stop)
    host.run_for(0.3)
    _in_documented_order(_names(_after(host, start)), "run ends (Stop, target, cartridge limit)")
    host.start(CHEEKS, RunMode.DURATION, 0, 60_000)
    host.run_for(0.3)
    start = len(host.inbox)
    host.silent = True
    host.run_for(0.7)
    host.silent = False
    host.run_for(0.3)
    _in_documented_order(_names(_after(host, start)), "watchdog")


def test_event_run_ids_follow_the_table() -> None:
    """Run once, then provoke at rest every event that is cheap to provoke: those marked RUN
    carry the last run's id, those marked 0 carry 0."""
    host = Host(seed=1, calibration="nominal")
    host.ready()
    run_id = host.start(CHEEKS, RunMode.STROKES, 20)
    host.wait_report()
    host.run_for(0.2)
    start = len(host.inbox)
    host.ack(SetDepth, 1600, 1)  # SOFT_CAP_OVERRIDE
    host.ack(SetDepth, 1000, 0)
    host.ack(SimSet, SimParam.AMBIENT_DC, 250)  # SIM_PARAMETER_CHANGED
    host.ack(SimMountCartridge, 0xC0FFEE, "LOT-1", 20_000, 20_300)  # REMOVED, MOUNTED
    host.ack(SetServiceMode, 1)
    host.ack(SetServiceMode, 0)  # ENTERED, LEFT
    host.request(EmergencyStop(host.next_id()))  # EMERGENCY_STOP, RETRACTED? (needles home)
    host.run_for(0.2)
    host.ack(ClearFault)  # FAULT_CLEARED
    intruder = Host(host.pen, clock=host.clock, paired=False, link_seed=9)
    intruder.connect()  # UNPAIRED_CONNECT (the paired host was live)
    intruder.hello()
    assert isinstance(intruder.cmd(SetDepth, 500, 0), Nak)  # SECURITY_DENIED, NOT_AUTHORIZED
    host.connect()
    host.send(SetDepth(host.next_id(), 500, 0))  # before Hello: SECURITY_DENIED, NOT_CONNECTED
    host.run_for(0.1)
    host.hello()
    host.run_for(0.3)
    events = [m for m in host.inbox[start:] if isinstance(m, Event)]
    seen = {e.code for e in events}
    expected_seen = {
        EventCode.SOFT_CAP_OVERRIDE,
        EventCode.SIM_PARAMETER_CHANGED,
        EventCode.CARTRIDGE_REMOVED,
        EventCode.CARTRIDGE_MOUNTED,
        EventCode.SERVICE_MODE_ENTERED,
        EventCode.SERVICE_MODE_LEFT,
        EventCode.EMERGENCY_STOP,
        EventCode.FAULT_CLEARED,
        EventCode.UNPAIRED_CONNECT,
        EventCode.SECURITY_DENIED,
    }
    assert expected_seen <= seen, seen
    for event in events:
        rule = answers.EVENT_RUN_ID[event.code]
        if event.code is EventCode.SECURITY_DENIED:
            continue  # mixed rule: checked below
        if rule == answers.RUN:
            assert event.run_id == run_id, event
        else:
            assert rule == answers.ZERO and event.run_id == 0, event
    denied = sorted(e.run_id for e in events if e.code is EventCode.SECURITY_DENIED)
    assert denied == [0, run_id]  # NOT_CONNECTED: 0; NOT_AUTHORIZED: the last run
    booted = host.events(EventCode.BOOTED)
    assert answers.EVENT_RUN_ID[EventCode.BOOTED] == answers.ZERO
    assert [e.run_id for e in booted] == [0]


def test_admission_stages_answer_as_documented() -> None:
    host = Host(seed=1)
    host.ready()
    heartbeat_bad = Raw(bytes([0x08]) + (77).to_bytes(4, "little") + b"\x00")  # too long
    reply = host.request(heartbeat_bad)
    assert isinstance(reply, Nak) and reply.error is ErrorCode.MALFORMED
    assert (reply.cmd_id, reply.value) == (77, 0x08)  # bytes 1–4; the message id
    status_as_command = Identity(
        91, 1, 0, "m", "s", 1, 0, 0, 1, 12, 0, 200, 2500, 1500, 50, 150, 1
    )  # a well-formed reply sent to the pen
    reply = host.request(Raw(status_as_command.encode()))
    assert isinstance(reply, Nak) and reply.error is ErrorCode.UNKNOWN_COMMAND
    assert (reply.cmd_id, reply.value) == (91, 0x40)
    run_bad = Raw(bytes([0x05]) + (92).to_bytes(4, "little") + bytes([12, 5]) + bytes(8))
    reply = host.request(run_bad)  # area 12 and mode 5: the area comes first
    assert isinstance(reply, Nak) and reply.error is ErrorCode.UNKNOWN_AREA, reply
    short = Raw(bytes([0x05, 1, 2]))
    host.send(short)
    host.run_for(0.05)
    nak = [m for m in host.inbox if isinstance(m, Nak) and m.cmd_id == 0]
    assert nak and nak[-1].error is ErrorCode.MALFORMED  # too short for a cmd_id: 0


def test_a_production_pen_announces_these_capabilities() -> None:
    assert int(device.PRODUCTION_CAPABILITIES) == 0x43
    simulator = Host(seed=1).ready().capabilities
    assert simulator & 0x43 == 0x43
    assert simulator & Capability.SIMULATOR
