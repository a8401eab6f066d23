"""The simulated firmware through bytes only: a host Link in the test, virtual time."""

from __future__ import annotations

import struct

import pytest
from test_firmware_harness import Host, Raw

from micropen.protocol import limits as L
from micropen.protocol.errors import LocalProtocolError
from micropen.protocol.messages import (
    COMMANDS,
    FW_CHUNK_BYTES,
    PROTOCOL_VERSION,
    Ack,
    CalBank,
    CalCommit,
    CalData,
    CalRead,
    CalWrite,
    Capability,
    CartridgeInfo,
    CartridgeState,
    ClearFault,
    EmergencyStop,
    ErrorCode,
    Event,
    EventCode,
    FaultCode,
    FwBegin,
    FwChunk,
    FwFinish,
    FwGetSlot,
    FwSlotId,
    FwTestBoot,
    GetCartridge,
    GetPairing,
    GetStatus,
    Hello,
    Identity,
    Nak,
    OpenSession,
    PairConfirm,
    PairRequest,
    PenState,
    Run,
    RunMode,
    RunOutcome,
    SetDepth,
    SetRate,
    SetServiceMode,
    SetTelemetry,
    SetTelemetryBatch,
    SetWatchdog,
    SimGet,
    SimMountCartridge,
    SimParam,
    SimParamValue,
    SimSet,
    Status,
    Stop,
    Unpair,
    calibration_crc,
)
from micropen.protocol.schema import Kind, Message, schema_hash
from micropen.sim.pen import SimConfig, SimulatedPen

CHEEKS = int(L.Area.CHEEKS)


def _i32(value: int) -> int:
    return struct.unpack("<i", struct.pack("<I", value))[0]


# ------------------------------------------------------------------------------ handshake
def test_hello_answers_identity_with_limits_capabilities_and_boot_id() -> None:
    host = Host(seed=7)
    host.connect()
    identity = host.hello()
    assert identity.serial == "SIM-000007"
    assert identity.needle_count == 12
    assert (identity.depth_min_um, identity.depth_max_um) == (L.DEPTH_MIN_UM, L.DEPTH_MAX_UM)
    assert identity.soft_cap_um == L.DEPTH_SOFT_CAP_UM
    assert (identity.rate_min_sps, identity.rate_max_sps) == (L.RATE_MIN_SPS, L.RATE_MAX_SPS)
    caps = Capability(identity.capabilities)
    for flag in Capability:
        assert flag in caps
    assert identity.boot_id == host.pen.boot_id
    assert identity.schema_hash == schema_hash()


def test_hello_with_another_schema_is_refused_naming_both_hashes() -> None:
    host = Host(seed=1)
    host.connect()
    other = schema_hash() ^ 0x8000_0001
    reply = host.cmd(Hello, PROTOCOL_VERSION, other)
    assert isinstance(reply, Nak) and reply.error is ErrorCode.SCHEMA_MISMATCH
    assert (reply.value, reply.limit) == (_i32(other), _i32(schema_hash()))
    assert isinstance(host.nak(GetStatus), Nak)  # still not handshaken


def test_hello_with_another_protocol_version_is_refused() -> None:
    host = Host(seed=1)
    host.connect()
    reply = host.cmd(Hello, PROTOCOL_VERSION + 1, schema_hash())
    assert isinstance(reply, Nak) and reply.error is ErrorCode.SCHEMA_MISMATCH
    assert (reply.value, reply.limit) == (PROTOCOL_VERSION + 1, PROTOCOL_VERSION)


def test_same_seed_same_unit_other_seed_other_unit() -> None:
    a, b, c = (SimulatedPen(SimConfig(seed=s)) for s in (3, 3, 4))
    assert a.identity.replace(boot_id=0) == b.identity.replace(boot_id=0)
    assert a.identity.boot_id != b.identity.boot_id  # two power-ons of the unit, two boots
    assert a.unit_errors == b.unit_errors
    assert a.cartridge == b.cartridge
    assert a.identity.serial != c.identity.serial and a.unit_errors != c.unit_errors


# ------------------------------------------------------------------------------ every command
def _valid_command(cls: type, cmd_id: int) -> object:
    examples = {
        Hello: (PROTOCOL_VERSION, schema_hash()),
        SetDepth: (500, 0),
        SetRate: (90,),
        Run: (CHEEKS, RunMode.STROKES, 10, 0),
        SetWatchdog: (500,),
        SetTelemetry: (0,),
        SetTelemetryBatch: (8, 100),
        CalRead: (CalBank.ACTIVE,),
        CalWrite: (1, 0, 0, 0, 0, 9, calibration_crc(1, 0, 0, 0, 0, 9)),
        CalCommit: (calibration_crc(1, 0, 0, 0, 0, 9),),
        SimSet: (SimParam.AMBIENT_DC, 250),
        SimGet: (SimParam.AMBIENT_DC,),
        SimMountCartridge: (0, "", 0, 0),
        OpenSession: (77,),
        FwBegin: (1000, bytes(32), 1),
        FwChunk: (0, 1, bytes(FW_CHUNK_BYTES)),
        FwGetSlot: (FwSlotId.PRIMARY,),
        PairRequest: (7, bytes(32), "test"),
        PairConfirm: (7, bytes(16)),
        GetPairing: (0,),
        Unpair: (7,),
        SetServiceMode: (1,),
    }
    return cls(cmd_id, *examples.get(cls, ()))


@pytest.mark.parametrize("cls", COMMANDS, ids=lambda c: c.__name__)
def test_every_command_gets_its_declared_reply_or_a_nak(cls: type) -> None:
    host = Host(seed=2)
    host.ready()
    reply = host.request(_valid_command(cls, host.next_id()))  # type: ignore[arg-type]
    assert isinstance(reply, cls.REPLY | Nak)
    # commit needs a prior write, chunks/finish/test-boot a begun upload; the rest stand alone
    # pairing needs the pen's button pressed first
    if cls not in (CalCommit, FwChunk, FwFinish, FwTestBoot, PairRequest, PairConfirm):
        assert isinstance(reply, cls.REPLY), reply


def test_valid_crc_invalid_content_is_nakked_malformed_with_its_cmd_id() -> None:
    host = Host(seed=1)
    host.ready()
    body = struct.pack("<IHBB", 4242, 1000, 0, 0)  # SetDepth with a byte too many
    reply = host.request(Raw(bytes((SetDepth.ID,)) + body))
    assert isinstance(reply, Nak) and reply.cmd_id == 4242
    assert (reply.error, reply.value) == (ErrorCode.MALFORMED, SetDepth.ID)


_STROKES_LIMIT = (ErrorCode.STROKES_OUT_OF_RANGE, 1_000_001, 1_000_000)
_DURATION_LIMIT = (ErrorCode.DURATION_OUT_OF_RANGE, 1_800_001, 1_800_000)
_BIG_STROKES = (ErrorCode.STROKES_OUT_OF_RANGE, -1, 1_000_000)


@pytest.mark.parametrize(
    ("cls", "layout", "values", "expected"),
    [
        (SetDepth, "<IHB", (4242, 9999, 0), (ErrorCode.DEPTH_OUT_OF_RANGE, 9999, 2500)),
        (SetRate, "<IB", (4242, 49), (ErrorCode.RATE_OUT_OF_RANGE, 49, 50)),
        (SetRate, "<IB", (4242, 151), (ErrorCode.RATE_OUT_OF_RANGE, 151, 150)),
        (Run, "<IBBII", (4242, 10, 0, 10, 0), (ErrorCode.UNKNOWN_AREA, 10, 9)),
        (Run, "<IBBII", (4242, 0, 0, 10, 0), (ErrorCode.UNKNOWN_AREA, 0, 1)),
        (Run, "<IBBII", (4242, 2, 0, 1_000_001, 0), _STROKES_LIMIT),
        (Run, "<IBBII", (4242, 2, 1, 0, 1_800_001), _DURATION_LIMIT),
        (SetWatchdog, "<IH", (4242, 99), (ErrorCode.WATCHDOG_OUT_OF_RANGE, 99, 100)),
        (SetWatchdog, "<IH", (4242, 2001), (ErrorCode.WATCHDOG_OUT_OF_RANGE, 2001, 2000)),
        (SetTelemetry, "<IH", (4242, 1001), (ErrorCode.TELEMETRY_OUT_OF_RANGE, 1001, 1000)),
        (SetTelemetryBatch, "<IBB", (4242, 9, 50), (ErrorCode.TELEMETRY_OUT_OF_RANGE, 9, 8)),
        (SetTelemetryBatch, "<IBB", (4242, 8, 0), (ErrorCode.TELEMETRY_OUT_OF_RANGE, 0, 1)),
        (SetTelemetryBatch, "<IBB", (4242, 8, 101), (ErrorCode.TELEMETRY_OUT_OF_RANGE, 101, 100)),
        # several fields out of range: the first in declared order is the one answered
        (Run, "<IBBII", (4242, 10, 0, 2_000_000, 0), (ErrorCode.UNKNOWN_AREA, 10, 9)),
        # a u32 beyond i32 travels in Nak.value as its bit pattern
        (Run, "<IBBII", (4242, 2, 0, 0xFFFF_FFFF, 0), _BIG_STROKES),
        # an enum declares no typed code: MALFORMED, naming the message
        (Run, "<IBBII", (4242, 2, 7, 10, 0), (ErrorCode.MALFORMED, Run.ID, 0)),
    ],
)
def test_a_field_out_of_its_wire_range_is_refused_with_its_typed_code(
    cls: type[Message], layout: str, values: tuple[int, ...], expected: tuple[int, int, int]
) -> None:
    """docs/protocol.md: an out-of-range field is answered with its typed code, the value and
    the bound it broke (spec numbers stated literally), not as a malformed message."""
    host = Host(seed=1)
    host.ready()
    reply = host.request(Raw(bytes((cls.ID,)) + struct.pack(layout, *values)))
    assert isinstance(reply, Nak) and reply.cmd_id == 4242
    assert (reply.error, reply.value, reply.limit) == expected


def test_unknown_message_id_is_unknown_command() -> None:
    host = Host(seed=1)
    host.ready()
    reply = host.request(Raw(bytes((0x3A,)) + struct.pack("<I", 77)))
    assert isinstance(reply, Nak) and reply.error is ErrorCode.UNKNOWN_COMMAND
    assert reply.cmd_id == 77


def test_pen_to_host_message_sent_to_the_pen_is_unknown_command() -> None:
    host = Host(seed=1)
    host.ready()
    reply = host.request(Ack(55, 0))  # type: ignore[arg-type]
    assert isinstance(reply, Nak) and reply.error is ErrorCode.UNKNOWN_COMMAND
    assert reply.cmd_id == 55


# ------------------------------------------------------------------------------ status
def test_status_fills_every_field_after_a_run() -> None:
    host = Host(seed=5)
    host.ready(depth_um=1200, rate_sps=90)
    host.ack(SetTelemetry, 20)
    host.ack(SetWatchdog, 800)
    run_id = host.start(CHEEKS, RunMode.STROKES, strokes=250)
    report = host.wait_report()
    host.run_for(0.1)
    status = host.status()
    pen = host.pen
    cart = pen.cartridge
    assert cart is not None
    expected = {
        "state": PenState.IDLE,
        "fault": FaultCode.NONE,
        "depth_set_um": 1200,
        "rate_set_sps": 90,
        "soft_cap_override": 0,
        "watchdog_ms": 800,
        "telemetry_hz": 20,
        "run_id": run_id,
        "run_area": CHEEKS,
        "run_mode": RunMode.STROKES,
        "run_target": 250,
        "run_strokes": 250,
        "run_outcome": RunOutcome.COMPLETED,
        "lifetime_strokes": 250,
        "cartridge_id": cart.cartridge_id,
        "cartridge_state": CartridgeState.LOCKED,
        "cartridge_strokes": 250,
        "calibrated": 1,
        "boot_id": pen.boot_id,
    }
    for name, value in expected.items():
        assert getattr(status, name) == value, name
    assert report.strokes == 250
    assert 3700 < status.battery_mv < 4200
    assert 240 < status.temperature_dc < 300
    assert abs(status.uptime_ms - host.now * 1000) < 20


# ------------------------------------------------------------------------------ runs
@pytest.mark.parametrize("strokes", [1, 2, 7, 110, 1000, 12_345])
def test_stroke_run_ends_at_exactly_n(strokes: int) -> None:
    host = Host(seed=strokes)
    host.ready()
    host.ack(SetTelemetry, 100)
    host.start(CHEEKS, RunMode.STROKES, strokes=strokes)
    report = host.wait_report(timeout=200.0, step=0.05)
    assert report.outcome is RunOutcome.COMPLETED
    assert report.strokes == strokes
    assert host.pen.physics.phase == strokes
    assert host.pen.physics.omega == 0.0  # braked at the last stroke
    counted = [t.run_strokes for t in host.telemetry()]
    assert counted and max(counted) <= strokes
    host.run_for(0.2)
    assert host.status().run_strokes == strokes
    assert host.pen.nvm.lifetime_strokes == strokes


def test_duration_run_lasts_exactly_its_duration() -> None:
    host = Host(seed=3)
    host.ready(rate_sps=70)
    host.start(CHEEKS, RunMode.DURATION, duration_ms=1500)
    report = host.wait_report()
    assert report.outcome is RunOutcome.COMPLETED and report.duration_ms == 1500
    run = host.pen.run
    assert run is not None and run.end_t is not None
    assert run.end_t - run.start_t == pytest.approx(1.5, abs=1e-9)
    errors = host.pen.unit_errors
    true_rate = 70 * (1 + errors.speed_gain_ppm / 1e6)
    assert abs(report.strokes - true_rate * 1.5) < 3  # minus the 30 ms spin-up lag


def test_stop_ends_the_run_and_reports_the_strokes_delivered() -> None:
    host = Host(seed=3)
    host.ready()
    host.start(CHEEKS, RunMode.STROKES, strokes=100_000)
    host.run_for(0.5)
    ack = host.ack(Stop)
    report = host.wait_report()
    assert report.outcome is RunOutcome.STOPPED and ack.value == report.run_id
    assert 0 < report.strokes == int(host.pen.physics.phase)  # a partial turn is no stroke
    assert host.pen.state in (PenState.STOPPING, PenState.IDLE)
    host.run_for(0.1)
    assert host.pen.state is PenState.IDLE
    assert [e.value for e in host.events(EventCode.STOPPED)] == [RunOutcome.STOPPED]


def test_second_run_on_the_same_mounting_continues_the_cartridge_count() -> None:
    host = Host(seed=3)
    host.ready()
    host.start(CHEEKS, RunMode.STROKES, strokes=300)
    host.wait_report()
    host.run_for(0.1)
    host.start(CHEEKS, RunMode.STROKES, strokes=200)
    host.wait_report()
    host.run_for(0.1)
    info = host.cmd(GetCartridge)
    assert isinstance(info, CartridgeInfo)
    assert info.state is CartridgeState.LOCKED and info.strokes_used == 500
    assert len(host.events(EventCode.CARTRIDGE_LOCKED)) == 1


def test_telemetry_streams_at_the_set_rate_and_stops_at_zero() -> None:
    host = Host(seed=2)
    host.ready()
    host.ack(SetTelemetry, 50)
    before = len(host.telemetry())
    host.run_for(1.0)
    assert 49 <= len(host.telemetry()) - before <= 51
    host.ack(SetTelemetry, 0)
    host.run_for(0.1)
    before = len(host.telemetry())
    host.run_for(1.0)
    assert len(host.telemetry()) == before


def test_telemetry_reports_true_rate_and_commanded_depth_while_running() -> None:
    host = Host(seed=4)
    host.ready(depth_um=800)
    host.ack(SetTelemetry, 100)
    host.start(CHEEKS, RunMode.DURATION, duration_ms=2000)
    host.run_for(1.0)
    sample = host.telemetry()[-1]
    assert sample.state is PenState.RUNNING
    assert abs(sample.depth_um - 800) <= 10
    assert abs(sample.rate_csps / 100 - host.pen.true_rate_sps()) < 1.0
    assert sample.current_ma > 300


# ------------------------------------------------------------------------------ reply cache
def test_reply_cache_answers_a_repeated_cmd_id_without_executing_again() -> None:
    host = Host(seed=1)
    host.ready()
    first = host.request(Run(900, CHEEKS, RunMode.STROKES, 50, 0))
    host.wait_report()
    host.run_for(0.1)
    again = host.request(Run(900, CHEEKS, RunMode.STROKES, 50, 0))
    assert first == again and isinstance(first, Ack)
    assert len(host.reports()) == 1
    assert host.pen.nvm.lifetime_strokes == 50


def test_reply_cache_survives_a_host_reconnect_but_forgets_after_256() -> None:
    host = Host(seed=1)
    host.ready()
    first = host.request(SetDepth(5000, 600, 0))
    host.ack(SetDepth, 700, 0)
    host.connect()  # a new link epoch: the pen must be asked Hello again
    host.hello()
    assert host.resumed is True
    assert host.request(SetDepth(5000, 600, 0)) == first
    assert host.status().depth_set_um == 700  # the cached answer, not a second execution
    for _ in range(256):
        host.cmd(GetStatus)
    assert isinstance(host.request(SetDepth(5000, 600, 0)), Ack)
    assert host.status().depth_set_um == 600


# ------------------------------------------------------------------------------ watchdog etc.
def test_set_watchdog_changes_the_heartbeat_timeout() -> None:
    host = Host(seed=1)
    host.ready()
    host.ack(SetWatchdog, 2000)
    host.start(CHEEKS, RunMode.DURATION, duration_ms=10_000)
    host.heartbeats = False
    host.silent = True
    host.run_for(1.9)
    assert host.pen.state is PenState.RUNNING
    host.run_for(0.2)
    assert host.pen.state is PenState.FAULT and host.pen.fault is FaultCode.WATCHDOG


def test_get_cartridge_reads_the_tag() -> None:
    host = Host(seed=1)
    host.ready()
    info = host.cmd(GetCartridge)
    cart = host.pen.cartridge
    assert isinstance(info, CartridgeInfo) and cart is not None
    assert (info.cartridge_id, info.lot, info.manufactured_day, info.expiry_day) == (
        cart.cartridge_id,
        cart.lot,
        cart.manufactured_day,
        cart.expiry_day,
    )
    assert info.state is CartridgeState.NEW and info.strokes_used == 0


def test_clear_fault_outside_a_fault_is_a_harmless_ack() -> None:
    host = Host(seed=1)
    host.ready()
    assert host.ack(ClearFault).value == 0
    assert host.pen.state is PenState.IDLE


def test_emergency_stop_when_idle_latches_too() -> None:
    host = Host(seed=1)
    host.ready()
    host.ack(EmergencyStop)
    assert host.pen.state is PenState.FAULT
    reply = host.nak(Run, CHEEKS, RunMode.STROKES, 10, 0)
    assert reply.error is ErrorCode.FAULT_ACTIVE and reply.value == FaultCode.EMERGENCY_STOP
    host.ack(ClearFault)
    host.start(CHEEKS, RunMode.STROKES, strokes=10)


# ------------------------------------------------------------------------------ calibration
def _cal(counter: int, gain: int = 0, offset: int = 0, rate: int = 0) -> tuple[int, ...]:
    fields = (1, gain, offset, rate, 1_764_000_000, counter)
    return (*fields, calibration_crc(*fields))


def test_calibration_write_read_commit() -> None:
    host = Host(seed=1)
    host.ready()
    active = host.cmd(CalRead, CalBank.ACTIVE)
    assert isinstance(active, CalData) and active.valid == 1 and active.counter == 1
    record = _cal(2, gain=-1234, offset=17, rate=555)
    host.ack(CalWrite, *record)
    staging = host.cmd(CalRead, CalBank.STAGING)
    assert isinstance(staging, CalData) and staging.valid == 1
    assert (staging.depth_gain_ppm, staging.depth_offset_um, staging.rate_gain_ppm) == (
        -1234,
        17,
        555,
    )
    unchanged = host.cmd(CalRead, CalBank.ACTIVE)
    assert unchanged == active.replace(cmd_id=unchanged[0])  # nothing in use changed yet
    assert host.ack(CalCommit, record[-1]).value == 2
    now_active = host.cmd(CalRead, CalBank.ACTIVE)
    assert isinstance(now_active, CalData) and now_active.counter == 2
    assert host.events(EventCode.CALIBRATION_COMMITTED)[-1].value == 2


def test_calibration_write_with_a_wrong_crc_is_refused() -> None:
    host = Host(seed=1)
    host.ready()
    record = list(_cal(2, gain=100))
    record[-1] ^= 1
    reply = host.nak(CalWrite, *record)
    assert reply.error is ErrorCode.CALIBRATION_CRC_MISMATCH
    staging = host.cmd(CalRead, CalBank.STAGING)
    assert isinstance(staging, CalData) and staging.valid == 0


def test_calibration_commit_needs_the_staging_crc() -> None:
    host = Host(seed=1)
    host.ready()
    record = _cal(2, gain=100)
    host.ack(CalWrite, *record)
    reply = host.nak(CalCommit, record[-1] ^ 0xFF)
    assert reply.error is ErrorCode.CALIBRATION_CRC_MISMATCH
    assert reply.limit == _i32(record[-1])


def test_calibration_downgrade_is_refused() -> None:
    host = Host(seed=1)
    host.ready()
    newer = _cal(5, gain=100)
    host.ack(CalWrite, *newer)
    host.ack(CalCommit, newer[-1])
    for counter in (5, 4, 1):
        older = _cal(counter, gain=200)
        host.ack(CalWrite, *older)
        reply = host.nak(CalCommit, older[-1])
        assert reply.error is ErrorCode.CALIBRATION_DOWNGRADE
        assert (reply.value, reply.limit) == (counter, 5)


def test_calibration_commit_refused_while_running() -> None:
    host = Host(seed=1)
    host.ready()
    record = _cal(2)
    host.ack(CalWrite, *record)
    host.start(CHEEKS, RunMode.DURATION, duration_ms=1000)
    reply = host.nak(CalCommit, record[-1])
    assert reply.error is ErrorCode.BAD_STATE


def test_corrupt_calibration_is_reported_at_boot_and_refuses_runs_until_recommitted() -> None:
    host = Host(seed=1, calibration="corrupt")
    host.ready()
    host.run_for(0.05)
    assert [f.fault for f in host.faults()] == [FaultCode.CALIBRATION_CORRUPT]
    status = host.status()
    assert status.calibrated == 0 and status.fault is FaultCode.CALIBRATION_CORRUPT
    active = host.cmd(CalRead, CalBank.ACTIVE)
    assert isinstance(active, CalData) and active.valid == 0
    assert host.nak(Run, CHEEKS, RunMode.STROKES, 10, 0).error is ErrorCode.UNCALIBRATED
    stale = _cal(1)  # the factory counter again: a downgrade, even though the record is corrupt
    host.ack(CalWrite, *stale)
    assert host.nak(CalCommit, stale[-1]).error is ErrorCode.CALIBRATION_DOWNGRADE
    fresh = _cal(2)
    host.ack(CalWrite, *fresh)
    host.ack(CalCommit, fresh[-1])
    assert host.status().calibrated == 1
    host.start(CHEEKS, RunMode.STROKES, strokes=10)


def test_blank_calibration_refuses_runs_without_a_fault_report() -> None:
    host = Host(seed=1, calibration="blank")
    host.ready()
    host.run_for(0.05)
    assert host.faults() == []
    assert host.status().calibrated == 0
    assert host.nak(Run, CHEEKS, RunMode.STROKES, 10, 0).error is ErrorCode.UNCALIBRATED
    fresh = _cal(1)
    host.ack(CalWrite, *fresh)
    host.ack(CalCommit, fresh[-1])
    host.start(CHEEKS, RunMode.STROKES, strokes=10)


def test_a_matching_calibration_makes_true_depth_and_rate_the_commanded_ones() -> None:
    host = Host(seed=11)
    host.ready(depth_um=1000, rate_sps=110)
    errors = host.pen.unit_errors
    g, o, s = errors.depth_gain_ppm / 1e6, errors.depth_offset_um, errors.speed_gain_ppm / 1e6
    # actuator = commanded * (1 + gain) + offset must undo true = actuator * (1 + g) + o
    gain = round((1 / (1 + g) - 1) * 1e6)
    offset = round(-o / (1 + g))
    rate = round((1 / (1 + s) - 1) * 1e6)
    record = _cal(2, gain, offset, rate)
    host.ack(CalWrite, *record)
    host.ack(CalCommit, record[-1])
    host.start(CHEEKS, RunMode.DURATION, duration_ms=1000)
    host.run_for(0.5)
    assert abs(host.pen.true_depth_um() - 1000) < 2
    assert abs(host.pen.true_rate_sps() - 110) < 0.05
    assert abs(host.pen.bench.gauge.read_mm(host.now) - 1.0) < 0.01


# ------------------------------------------------------------------------------ power cycle
def test_power_cycle_new_boot_id_ram_lost_nvm_kept() -> None:
    host = Host(seed=1)
    first = host.ready(depth_um=700)
    host.ack(SetTelemetry, 10)
    record = _cal(3, gain=500)
    host.ack(CalWrite, *record)
    host.ack(CalCommit, record[-1])
    host.start(CHEEKS, RunMode.STROKES, strokes=100)
    host.wait_report()
    host.request(SetDepth(777, 900, 0))
    host.pen.power_cycle(host.now)
    assert host.pen.boot_id != first.boot_id
    host.run_for(0.3)  # the next heartbeat is answered with RST: the old link is gone
    assert host.peer_reset()
    host.connect()
    again = host.hello()
    assert again.boot_id == host.pen.boot_id != first.boot_id
    status = host.status()
    assert status.depth_set_um == 0 and status.telemetry_hz == 0  # RAM lost
    assert status.lifetime_strokes == 100 and status.run_id == 0  # NVM kept, runs renumbered
    assert status.cartridge_state is CartridgeState.LOCKED  # same mounting, tag still locked
    active = host.cmd(CalRead, CalBank.ACTIVE)
    assert isinstance(active, CalData) and active.counter == 3
    assert isinstance(host.request(SetDepth(777, 900, 0)), Ack)  # reply cache was RAM
    assert host.status().depth_set_um == 900
    assert [e.value for e in host.events(EventCode.BOOTED)][-1] == 1


def test_power_cycle_during_a_run_keeps_the_strokes_on_the_tag() -> None:
    host = Host(seed=1)
    host.ready()
    host.start(CHEEKS, RunMode.DURATION, duration_ms=5000)
    host.run_for(1.0)
    delivered = int(host.pen.physics.phase)
    host.pen.power_cycle(host.now)
    cart = host.pen.cartridge
    assert cart is not None and cart.strokes_used == delivered > 0
    assert host.pen.state is PenState.IDLE and host.pen.physics.omega == 0.0
    host.run_for(0.05)
    assert host.pen.true_depth_um() == 0.0


def test_brownout_reset_boots_into_a_latched_fault() -> None:
    host = Host(seed=1)
    host.ready()
    boot = host.pen.boot_id
    host.ack(SimSet, SimParam.BROWNOUT_RESET, 20)
    host.run_for(0.05)
    assert host.pen.boot_id != boot
    assert host.pen.state is PenState.FAULT and host.pen.fault is FaultCode.BROWNOUT
    host.connect()
    host.hello()
    assert host.status().fault is FaultCode.BROWNOUT
    host.ack(ClearFault)
    assert host.pen.state is PenState.IDLE


# ------------------------------------------------------------------------------ sim commands
@pytest.mark.parametrize(
    ("param", "value"),
    [
        (SimParam.LINK_DELAY_MS, 3),
        (SimParam.OVERHEAT, 50),
        (SimParam.BATTERY_MV, 3900),
        (SimParam.DEPTH_DRIFT_UM, -40),
        (SimParam.AMBIENT_DC, 300),
        (SimParam.DEPTH_GAIN_ERROR_PPM, 12_000),
        (SimParam.DEPTH_OFFSET_ERROR_UM, -25),
        (SimParam.SPEED_GAIN_ERROR_PPM, 9_000),
        (SimParam.STALL, 1),
        (SimParam.LINK_DROP_PPM, 1000),
    ],
)
def test_sim_set_then_sim_get_round_trips_and_is_announced(param: SimParam, value: int) -> None:
    host = Host(seed=1)
    host.ready()
    host.ack(SimSet, param, value)
    reply = host.cmd(SimGet, param)
    assert isinstance(reply, SimParamValue) and reply.value == value
    assert host.events(EventCode.SIM_PARAMETER_CHANGED)[-1].value == param


def test_sim_set_out_of_range_names_the_limit() -> None:
    host = Host(seed=1)
    host.ready()
    reply = host.nak(SimSet, SimParam.BATTERY_MV, 5000)
    assert (reply.error, reply.value, reply.limit) == (ErrorCode.MALFORMED, 5000, 4300)
    assert host.events(EventCode.SIM_PARAMETER_CHANGED) == []


def test_link_fault_params_refused_when_the_config_disables_them() -> None:
    host = Host(seed=1, link_faults=False)
    identity = host.ready()
    assert not Capability(identity.capabilities) & Capability.LINK_FAULT_INJECTION
    assert host.nak(SimSet, SimParam.LINK_DROP_PPM, 10).error is ErrorCode.UNKNOWN_COMMAND
    with pytest.raises(LocalProtocolError):
        host.pen.set_param(SimParam.LINK_DROP_PPM, 10, host.now)


def test_set_param_has_the_same_effect_as_sim_set() -> None:
    host = Host(seed=1)
    host.ready()
    host.pen.set_param(SimParam.AMBIENT_DC, 310, host.now)
    assert host.cmd(SimGet, SimParam.AMBIENT_DC).value == 310  # type: ignore[attr-defined]
    host.run_for(0.05)
    assert host.events(EventCode.SIM_PARAMETER_CHANGED)
    with pytest.raises(LocalProtocolError, match="BATTERY_MV"):
        host.pen.set_param(SimParam.BATTERY_MV, 1, host.now)


def test_sim_mount_cartridge_over_the_protocol() -> None:
    host = Host(seed=1, cartridge=False)
    host.ready()
    assert host.nak(Run, CHEEKS, RunMode.STROKES, 10, 0).error is ErrorCode.NO_CARTRIDGE
    today = host.pen.config.today_day
    ack = host.ack(SimMountCartridge, 4711, "LOT-A", today - 10, today + 300)
    assert ack.value == CartridgeState.NEW
    host.start(CHEEKS, RunMode.STROKES, strokes=10)
    assert host.events(EventCode.CARTRIDGE_MOUNTED)[-1].value == 4711


@pytest.mark.parametrize(
    ("param", "value"),
    [
        (SimParam.LINK_DROP_PPM, 150_000),
        (SimParam.LINK_CORRUPT_PPM, 150_000),
        (SimParam.LINK_DUPLICATE_PPM, 300_000),
        (SimParam.LINK_DELAY_MS, 40),
    ],
)
def test_runs_count_exactly_over_a_faulty_line(param: SimParam, value: int) -> None:
    host = Host(seed=9)
    host.ready()
    host.ack(SetTelemetry, 50)
    host.ack(SimSet, param, value)
    host.start(CHEEKS, RunMode.STROKES, strokes=333)
    report = host.wait_report(timeout=10.0)
    assert report.strokes == 333 and report.outcome is RunOutcome.COMPLETED
    assert host.pen.link_faults is not None
    if param is not SimParam.LINK_DELAY_MS:
        assert sum(host.pen.link_faults.stats.values()) > 0


def test_disconnect_stops_reading_and_writing_for_its_duration() -> None:
    host = Host(seed=9)
    host.ready()
    host.ack(SetTelemetry, 100)
    host.run_for(0.05)
    host.pen.set_param(SimParam.DISCONNECT, 300, host.now)
    before = len(host.telemetry())
    host.run_for(0.29)
    assert len(host.telemetry()) == before
    assert host.pen.link_faults is not None and host.pen.link_faults.stats["discarded"] > 0
    host.run_for(1.5)  # telemetry is a datagram: what the outage swallowed stays lost
    assert len(host.telemetry()) - before >= 145
    assert host.cmd(SimGet, SimParam.DISCONNECT).value == 0  # type: ignore[attr-defined]


def test_delayed_bytes_arrive_late_but_in_order() -> None:
    host = Host(seed=9)
    host.ready()
    host.ack(SimSet, SimParam.LINK_DELAY_MS, 100)
    host.pump(0.001)
    sent_at = host.now
    reply = host.cmd(GetStatus)
    assert isinstance(reply, Status)
    assert host.now - sent_at >= 0.2  # 100 ms each way


# ------------------------------------------------------------------------------ config
def test_from_query_parses_every_option() -> None:
    config = SimConfig.from_query(
        "seed=7&cartridge=0&calibration=blank&serial=ABC&model=X&firmware=2.3.4"
        "&hardware_revision=5&manufacturing_errors=false&today_day=20000&link_faults=no"
        "&boot_seed=9&state=/var/tmp/pen-7.json"
    )
    assert config == SimConfig(
        seed=7,
        serial="ABC",
        model="X",
        firmware=(2, 3, 4),
        hardware_revision=5,
        manufacturing_errors=False,
        cartridge=False,
        calibration="blank",
        today_day=20000,
        link_faults=False,
        boot_seed=9,
        state="/var/tmp/pen-7.json",
    )
    assert SimConfig.from_query("") == SimConfig()
    assert SimConfig.from_query("day_seconds=86399.5").day_seconds == 86_399.5
    assert SimConfig.from_query("?seed=3").seed == 3


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("colour=red", ["colour", "seed", "calibration"]),
        ("seed=x", ["seed", "x"]),
        ("calibration=perfect", ["perfect", "nominal", "blank", "corrupt"]),
        ("cartridge=maybe", ["cartridge", "maybe"]),
        ("firmware=1.2", ["firmware"]),
        ("boot_seed=-1", ["boot_seed", "-1"]),
        ("state=", ["state", "file path"]),
    ],
)
def test_from_query_refuses_unknown_keys_and_bad_values_by_name(
    query: str, words: list[str]
) -> None:
    with pytest.raises(LocalProtocolError) as info:
        SimConfig.from_query(query)
    for word in words:
        assert word in str(info.value)


def test_ideal_unit_and_no_cartridge_options() -> None:
    pen = SimulatedPen(SimConfig(manufacturing_errors=False, cartridge=False))
    assert pen.unit_errors.depth_gain_ppm == pen.unit_errors.speed_gain_ppm == 0
    assert pen.cartridge is None
    assert pen.status().cartridge_state is CartridgeState.ABSENT


def test_only_commands_reach_handlers() -> None:
    assert all(c.KIND in (Kind.COMMAND, Kind.SIM_COMMAND) for c in COMMANDS)
    assert issubclass(Event, tuple) and issubclass(Identity, tuple)


def test_a_million_stroke_run_is_counted_exactly_until_the_cartridge_wears_out() -> None:
    host = Host(seed=1)
    host.ready(rate_sps=110)
    host.ack(SetWatchdog, 2000)
    host.start(CHEEKS, RunMode.STROKES, strokes=L.STROKES_MAX)
    report = host.wait_report(timeout=1900.0, step=0.25)
    assert report.outcome is RunOutcome.CARTRIDGE_LIMIT  # 30 min of needling come first
    assert report.duration_ms == L.CARTRIDGE_LIFE_MS
    assert report.strokes == int(host.pen.physics.phase) < L.STROKES_MAX
    cart = host.pen.cartridge
    assert cart is not None and cart.strokes_used == report.strokes
    host.run_for(0.5)
    assert host.status().lifetime_strokes == report.strokes


def test_a_restarted_simulator_process_looks_rebooted_to_the_host() -> None:
    # the in-process simulator always powers on at the same virtual time: that must not make
    # two processes' pens the same boot (the treatment log keys runs on serial, boot and run)
    first = SimulatedPen(SimConfig(seed=21), now=0.0)
    again = SimulatedPen(SimConfig(seed=21), now=0.0)
    assert again.boot_id != first.boot_id
    assert again.identity.serial == first.identity.serial


def test_boot_ids_are_repeatable_only_when_a_test_asks() -> None:
    first = SimulatedPen(SimConfig(seed=21, boot_seed=5), now=1000.0)
    again = SimulatedPen(SimConfig(seed=21, boot_seed=5), now=2000.0)
    other = SimulatedPen(SimConfig(seed=21, boot_seed=6), now=1000.0)
    assert first.boot_id == again.boot_id != other.boot_id
    boots = [first.boot_id]
    for t in (1001.0, 1002.0):
        first.power_cycle(t)
        again.power_cycle(t + 1000.0)
        assert first.boot_id == again.boot_id
        boots.append(first.boot_id)
    assert len(set(boots)) == 3  # each power cycle a new boot id
    assert SimConfig.from_query("boot_seed=5&seed=21") == SimConfig(seed=21, boot_seed=5)


def test_reading_the_disconnect_parameter_while_connected_is_zero_not_a_crash() -> None:
    """SimGet(DISCONNECT) with no outage once raised OverflowError and killed `sim serve`."""
    from micropen.protocol.messages import SimParam

    pen = SimulatedPen(SimConfig(seed=2), now=0.0)
    assert pen.get_param(SimParam.DISCONNECT, 0.0) == 0
    pen.set_param(SimParam.DISCONNECT, 250, 1.0)
    assert pen.get_param(SimParam.DISCONNECT, 1.1) == 150
    assert pen.get_param(SimParam.DISCONNECT, 2.0) == 0


def test_cmd_id_0_is_reserved_and_refused_as_malformed() -> None:
    """docs/protocol.md: a host never numbers a command 0; the pen refuses one that is."""
    host = Host(seed=1)
    host.ready()
    reply = host.request(Raw(bytes((GetStatus.ID,)) + struct.pack("<I", 0)))
    assert isinstance(reply, Nak)
    assert (reply.cmd_id, reply.error, reply.value) == (0, ErrorCode.MALFORMED, GetStatus.ID)
