"""Unit tests for the treatment log: every method, idempotent run reports, migrations, exports.

Every test uses a real SQLite file under tmp_path and a fake clock, so times are exact.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from micropen.host.treatment_log import (
    EVENT_KINDS,
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
    SampleRow,
    TreatmentLog,
    TreatmentLogError,
    apply_migrations,
)
from micropen.protocol.errors import MicropenError
from micropen.protocol.messages import PenState, Telemetry

RUNNING = int(PenState.RUNNING)
IDLE = int(PenState.IDLE)


class FakeClock:
    """Each reading is one second after the last, so every record has a distinct time."""

    def __init__(self, start: float = 1_700_000_000.25) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def log(tmp_path: Path, clock: FakeClock) -> Iterator[TreatmentLog]:
    with TreatmentLog(tmp_path / "t.sqlite", clock=clock) as opened:
        yield opened


def session(log: TreatmentLog, serial: str = "MP-0001", **kw: Any) -> int:
    args: dict[str, Any] = {
        "pen_serial": serial,
        "pen_model": "MicroPen-12",
        "firmware": "1.2.3",
        "protocol_version": 1,
        "boot_id": 0xB007,
        "operator": "A. Nurse",
        "pen_url": "sim://?seed=1",
        "is_simulated": True,
    }
    args.update(kw)
    return log.start_session(**args)


def run_start(log: TreatmentLog, sid: int, run_id: int = 1, **kw: Any) -> None:
    args: dict[str, Any] = {
        "run_id": run_id,
        "area": "cheeks",
        "depth_um": 1000,
        "rate_sps": 110,
        "mode": "STROKES",
        "target": 500,
        "cartridge_id": 77,
        "cartridge_lot": "LOT-A1",
        "soft_cap_override_reason": None,
    }
    args.update(kw)
    log.record_run_start(sid, **args)


def report(log: TreatmentLog, sid: int, run_id: int = 1, boot_id: int = 0xB007, **kw: Any) -> bool:
    args: dict[str, Any] = {
        "boot_id": boot_id,
        "run_id": run_id,
        "outcome": "COMPLETED",
        "strokes": 500,
        "target": 500,
        "duration_ms": 4545,
        "area": "cheeks",
        "depth_um": 1000,
        "rate_sps": 110,
        "cartridge_id": 77,
    }
    args.update(kw)
    return log.record_run_report(sid, **args)


def sample(
    t_ms: int, host_time: float, depth: int = 1000, rate: int = 11000, state: int = RUNNING
) -> SampleRow:
    return SampleRow(t_ms, state, depth, rate, t_ms // 10, 350, 310, 3900, 77, 1000, host_time)


# --- opening, settings, default path ---------------------------------------------------------
def test_new_log_has_current_schema_wal_full_sync_and_foreign_keys(log: TreatmentLog) -> None:
    assert log.settings() == {
        "journal_mode": "wal",
        "synchronous": 2,  # FULL
        "foreign_keys": 1,
        "fullfsync": 1,
        "user_version": SCHEMA_VERSION,
    }
    assert log.schema_version == SCHEMA_VERSION == MIGRATIONS[-1].version


def test_error_is_a_micropen_error() -> None:
    assert issubclass(TreatmentLogError, MicropenError)


def test_reopening_keeps_everything(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "t.sqlite"
    with TreatmentLog(path, clock=clock) as first:
        sid = session(first)
    with TreatmentLog(path, clock=clock) as second:
        assert [s.id for s in second.sessions()] == [sid]
        assert second.schema_version == SCHEMA_VERSION


def test_missing_folders_are_created(tmp_path: Path) -> None:
    with TreatmentLog(tmp_path / "a" / "b" / "t.sqlite") as log:
        session(log)
    assert (tmp_path / "a" / "b" / "t.sqlite").is_file()


def test_an_in_memory_log_works_for_tests_of_other_parts() -> None:
    with TreatmentLog(":memory:") as log:
        sid = session(log)
        assert report(log, sid, 1)
        assert not report(log, sid, 1)
        log.check()


def test_a_file_that_is_not_a_database_is_refused_with_a_fix(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    path.write_bytes(b"this is a text file, not a treatment log\n" * 100)
    with pytest.raises(TreatmentLogError, match="move it aside"):
        TreatmentLog(path)


def test_methods_after_close_raise(tmp_path: Path) -> None:
    log = TreatmentLog(tmp_path / "t.sqlite")
    log.close()
    log.close()  # closing twice is harmless
    with pytest.raises(TreatmentLogError, match="closed"):
        session(log)
    with pytest.raises(TreatmentLogError, match="closed"):
        log.sessions()


# --- sessions ----------------------------------------------------------------------------------
def test_start_session_stores_the_pen_identity(log: TreatmentLog, clock: FakeClock) -> None:
    sid = session(log, started_at=123.5)
    d = log.session(sid)
    assert (d.pen_serial, d.pen_model, d.firmware, d.protocol_version, d.boot_id) == (
        "MP-0001",
        "MicroPen-12",
        "1.2.3",
        1,
        0xB007,
    )
    assert (d.operator, d.pen_url, d.is_simulated) == ("A. Nurse", "sim://?seed=1", True)
    assert (d.started_at, d.ended_at, d.outcome) == (123.5, None, None)
    sid2 = session(log, is_simulated=False)
    assert sid2 > sid
    assert log.session(sid2).started_at == clock.now  # default: the injected clock
    assert log.session(sid2).is_simulated is False


def test_hostile_free_text_is_stored_as_is(log: TreatmentLog) -> None:
    operator = 'Robert\'); DROP TABLE sessions;-- «Ŝ» "q"\n\t,;'
    sid = session(log, operator=operator)
    assert log.session(sid).operator == operator
    assert [s.operator for s in log.sessions()] == [operator]


def test_text_that_sqlite_cannot_hold_is_refused_before_writing(log: TreatmentLog) -> None:
    with pytest.raises(TreatmentLogError, match="operator"):
        session(log, operator="bad \udc80 surrogate")
    with pytest.raises(TreatmentLogError, match="pen_serial must be text"):
        session(log, pen_serial=1234)
    with pytest.raises(TreatmentLogError, match=r"operator 'ok\\x00hidden' contains a NUL"):
        session(log, operator="ok\x00hidden")
    assert log.sessions() == []


def test_non_finite_times_are_refused(log: TreatmentLog) -> None:
    with pytest.raises(TreatmentLogError, match="finite"):
        session(log, started_at=float("nan"))
    sid = session(log)
    with pytest.raises(TreatmentLogError, match="finite"):
        log.add_samples(sid, [sample(0, float("inf"))])
    assert log.session(sid).sample_count == 0


def test_end_session_sets_outcome_once(log: TreatmentLog) -> None:
    sid = session(log)
    log.end_session(sid, outcome="completed", ended_at=999.0)
    log.end_session(sid, outcome="completed", ended_at=1234.0)  # same outcome: no-op
    d = log.session(sid)
    assert (d.ended_at, d.outcome) == (999.0, "completed")
    with pytest.raises(TreatmentLogError, match="already ended"):
        log.end_session(sid, outcome="aborted")
    assert log.session(sid).outcome == "completed"


def test_unknown_session_is_refused_by_every_writer(log: TreatmentLog) -> None:
    writers: list[Callable[[], object]] = [
        lambda: run_start(log, 42),
        lambda: log.record_override(42, depth_um=1800, area="cheeks", reason="r"),
        lambda: log.record_event(42, kind="event", code="X", value=0, run_id=0, pen_t_ms=0),
        lambda: report(log, 42),
        lambda: log.add_samples(42, [sample(0, 1.0)]),
        lambda: log.end_session(42, outcome="x"),
        lambda: log.session(42),
    ]
    for write in writers:
        with pytest.raises(TreatmentLogError, match="session 42 does not exist"):
            write()


def test_sessions_lists_newest_first_with_filter_and_limit(log: TreatmentLog) -> None:
    a = session(log, "PEN-A", started_at=10.0)
    b = session(log, "PEN-B", started_at=20.0)
    c = session(log, "PEN-A", started_at=30.0)
    assert [s.id for s in log.sessions()] == [c, b, a]
    assert [s.id for s in log.sessions(pen_serial="PEN-A")] == [c, a]
    assert [s.id for s in log.sessions(limit=2)] == [c, b]
    assert log.sessions(pen_serial="nobody") == []


def test_session_summary_counts_runs_strokes_faults_and_overrides(log: TreatmentLog) -> None:
    sid = session(log)
    other = session(log, "OTHER")
    log.record_override(sid, depth_um=1800, area="cheeks", reason="deep acne scars")
    run_start(log, sid, 1, depth_um=1800, soft_cap_override_reason="deep acne scars")
    assert report(log, sid, 1, strokes=480, depth_um=1800, outcome="STOPPED")
    run_start(log, sid, 2)
    assert report(log, sid, 2, strokes=20, outcome="FAULT")
    log.record_event(sid, kind="fault", code="STALL", value=950, run_id=2, pen_t_ms=9000)
    log.record_event(sid, kind="event", code="STOPPED", value=0, run_id=2, pen_t_ms=9001)
    log.record_event(other, kind="fault", code="STALL", value=1, run_id=0, pen_t_ms=1)
    log.end_session(sid, outcome="fault")
    (summary,) = log.sessions(pen_serial="MP-0001")
    assert (summary.runs, summary.strokes_delivered, summary.faults, summary.overrides) == (
        2,
        500,
        1,
        1,
    )
    assert (summary.outcome, summary.is_simulated, summary.operator) == ("fault", True, "A. Nurse")
    assert log.session(sid).strokes_delivered == 500


# --- runs and run reports --------------------------------------------------------------------
def test_run_start_stores_the_commanded_run(log: TreatmentLog, clock: FakeClock) -> None:
    sid = session(log)
    run_start(log, sid, 3, depth_um=1750, soft_cap_override_reason="thick scar tissue")
    (run,) = log.session(sid).runs
    assert (run.run_id, run.boot_id, run.area, run.depth_um, run.rate_sps, run.mode) == (
        3,
        0xB007,
        "cheeks",
        1750,
        110,
        "STROKES",
    )
    assert (run.target, run.cartridge_id, run.cartridge_lot) == (500, 77, "LOT-A1")
    assert run.soft_cap_override_reason == "thick scar tissue"
    assert run.started_at == clock.now
    assert (run.reported_at, run.strokes, run.outcome) == (None, None, None)


def test_run_start_recorded_twice_is_stored_once(log: TreatmentLog) -> None:
    sid = session(log)
    run_start(log, sid, 1)
    run_start(log, sid, 1)
    assert len(log.session(sid).runs) == 1


def test_run_start_with_other_settings_for_the_same_run_is_refused(log: TreatmentLog) -> None:
    sid = session(log)
    run_start(log, sid, 1)
    with pytest.raises(TreatmentLogError, match=r"depth_um: 1000 -> 1200.*boot_id="):
        run_start(log, sid, 1, depth_um=1200)
    assert log.session(sid).runs[0].depth_um == 1000


def test_same_run_id_after_a_pen_reboot_needs_the_new_boot_id(log: TreatmentLog) -> None:
    sid = session(log)
    run_start(log, sid, 1)
    assert report(log, sid, 1)
    with pytest.raises(TreatmentLogError, match="already logged"):
        run_start(log, sid, 1)  # a new run 1 under the stale boot id would merge into the old
    run_start(log, sid, 1, boot_id=0xB008)
    assert report(log, sid, 1, boot_id=0xB008, strokes=7)
    runs = log.session(sid).runs
    assert [(r.boot_id, r.run_id, r.strokes) for r in runs] == [(0xB007, 1, 500), (0xB008, 1, 7)]


def test_soft_cap_override_reason_on_a_run_cannot_be_blank(log: TreatmentLog) -> None:
    sid = session(log)
    with pytest.raises(TreatmentLogError, match="needs a reason"):
        run_start(log, sid, 1, soft_cap_override_reason="  \n")
    assert log.session(sid).runs == []


def test_run_report_completes_the_run(log: TreatmentLog, clock: FakeClock) -> None:
    sid = session(log)
    run_start(log, sid, 1)
    assert report(log, sid, 1, strokes=499, outcome="STOPPED", duration_ms=4000) is True
    (run,) = log.session(sid).runs
    assert (run.outcome, run.strokes, run.duration_ms, run.reported_target) == (
        "STOPPED",
        499,
        4000,
        500,
    )
    assert (run.reported_area, run.reported_depth_um, run.reported_rate_sps) == (
        "cheeks",
        1000,
        110,
    )
    assert (run.reported_cartridge_id, run.reported_at, run.report_session_id) == (
        77,
        clock.now,
        sid,
    )
    assert log.session(sid).events == []  # report matched the command: nothing flagged
    assert report(log, sid, 2, host_time=42.0)  # the host may pass its own receive time
    assert log.session(sid).runs[1].reported_at == 42.0


def test_run_report_delivered_twice_is_stored_once(log: TreatmentLog) -> None:
    sid = session(log)
    run_start(log, sid, 1)
    assert report(log, sid, 1) is True
    assert report(log, sid, 1) is False
    assert log.sessions()[0].strokes_delivered == 500
    assert log.session(sid).events == []


def test_run_report_redelivered_to_a_new_session_after_reconnect_is_stored_once(
    log: TreatmentLog,
) -> None:
    first = session(log)
    run_start(log, first, 1)
    assert report(log, first, 1)
    second = session(log)  # same pen, reconnected
    assert report(log, second, 1) is False
    assert [(s.id, s.strokes_delivered) for s in log.sessions()] == [(second, 0), (first, 500)]


def test_run_reports_are_keyed_by_pen_serial_boot_and_run(log: TreatmentLog) -> None:
    a = session(log, "PEN-A")
    b = session(log, "PEN-B")
    assert report(log, a, 1, boot_id=5)
    assert report(log, b, 1, boot_id=5)  # another pen, same boot and run ids
    assert report(log, a, 1, boot_id=6)  # the same pen after a reboot
    assert report(log, a, 2, boot_id=5)
    assert not report(log, a, 1, boot_id=5)
    assert log.sessions(pen_serial="PEN-A")[0].runs == 3


def test_a_duplicate_report_with_other_content_is_flagged_not_stored(log: TreatmentLog) -> None:
    sid = session(log)
    run_start(log, sid, 1)
    assert report(log, sid, 1, strokes=500)
    assert report(log, sid, 1, strokes=501) is False
    assert log.session(sid).runs[0].strokes == 500
    (event,) = log.session(sid).events
    assert (event.kind, event.code, event.value, event.run_id, event.pen_t_ms) == (
        "host",
        "run_report_conflict",
        501,
        1,
        None,
    )
    assert "strokes: 500 -> 501" in event.detail


def test_a_report_that_differs_from_the_command_is_stored_and_flagged(log: TreatmentLog) -> None:
    sid = session(log)
    run_start(log, sid, 1, depth_um=1000)
    assert report(log, sid, 1, depth_um=1250, strokes=10)
    assert log.session(sid).runs[0].reported_depth_um == 1250
    (event,) = log.session(sid).events
    assert (event.kind, event.code) == ("host", "run_report_mismatch")
    assert event.detail == "depth_um: commanded 1000, reported 1250"


def test_a_report_that_arrives_before_its_start_is_joined_to_it(log: TreatmentLog) -> None:
    sid = session(log)
    assert report(log, sid, 4, strokes=3, target=3)
    (run,) = log.session(sid).runs
    assert (run.started_at, run.strokes, run.area) == (None, 3, None)
    run_start(log, sid, 4, target=3)
    (run,) = log.session(sid).runs
    assert (run.area, run.target, run.strokes, run.outcome) == ("cheeks", 3, 3, "COMPLETED")
    assert log.session(sid).events == []
    assert not report(log, sid, 4, strokes=3, target=3)


reports = st.lists(
    st.tuples(
        st.sampled_from(["PEN-A", "PEN-B"]),
        st.integers(1, 2),  # boot id
        st.integers(1, 3),  # run id
        st.integers(0, 1000),  # strokes
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(reports)
def test_stroke_totals_count_each_run_once(batch: list[tuple[str, int, int, int]]) -> None:
    """Whatever order and however often the pens re-send reports, each run counts once, with
    the strokes of its first report."""
    with tempfile.TemporaryDirectory() as tmp, TreatmentLog(Path(tmp) / "t.sqlite") as log:
        sids = {serial: session(log, serial) for serial in ("PEN-A", "PEN-B")}
        first: dict[tuple[str, int, int], int] = {}
        for serial, boot, run_id, strokes in batch:
            stored = report(log, sids[serial], run_id, boot_id=boot, strokes=strokes)
            assert stored is ((serial, boot, run_id) not in first)
            first.setdefault((serial, boot, run_id), strokes)
        for serial in sids:
            (summary,) = log.sessions(pen_serial=serial)
            mine = [s for (pen, _, _), s in first.items() if pen == serial]
            assert (summary.runs, summary.strokes_delivered) == (len(mine), sum(mine))


# --- events and overrides --------------------------------------------------------------------
def test_record_event_stores_every_kind(log: TreatmentLog, clock: FakeClock) -> None:
    sid = session(log)
    for n, kind in enumerate(EVENT_KINDS):
        log.record_event(sid, kind=kind, code=f"C{n}", value=-n, run_id=n, pen_t_ms=100 * n)
    log.record_event(sid, kind="host", code="note", value=0, run_id=0, pen_t_ms=None, detail="d")
    events = log.session(sid).events
    assert [(e.kind, e.code, e.value, e.run_id, e.pen_t_ms) for e in events[:-1]] == [
        (kind, f"C{n}", -n, n, 100 * n) for n, kind in enumerate(EVENT_KINDS)
    ]
    assert (events[-1].pen_t_ms, events[-1].detail, events[-1].host_time) == (None, "d", clock.now)


def test_record_event_refuses_an_unknown_kind(log: TreatmentLog) -> None:
    sid = session(log)
    with pytest.raises(TreatmentLogError, match="'alarm' is not one of event, fault"):
        log.record_event(sid, kind="alarm", code="X", value=0, run_id=0, pen_t_ms=0)
    assert log.session(sid).events == []


def test_record_override_stores_depth_area_and_reason(log: TreatmentLog, clock: FakeClock) -> None:
    sid = session(log)
    log.record_override(sid, depth_um=1800, area="scalp", reason="alopecia protocol, Dr. X")
    log.record_override(sid, depth_um=1700, area="scalp", reason="again", host_time=5.5)
    o, again = log.session(sid).overrides
    assert (again.depth_um, again.reason, again.host_time) == (1700, "again", 5.5)
    assert (o.session_id, o.depth_um, o.area, o.reason, o.host_time) == (
        sid,
        1800,
        "scalp",
        "alopecia protocol, Dr. X",
        clock.now,
    )


@pytest.mark.parametrize("reason", ["", "   ", "\n\t"])
def test_override_without_a_reason_is_refused(log: TreatmentLog, reason: str) -> None:
    sid = session(log)
    with pytest.raises(TreatmentLogError, match="needs a reason"):
        log.record_override(sid, depth_um=1800, area="scalp", reason=reason)
    assert log.session(sid).overrides == []


def test_concurrent_writers_lose_nothing(log: TreatmentLog) -> None:
    sid = session(log)

    def write(worker: int) -> None:
        for n in range(25):
            log.record_event(sid, kind="event", code=f"w{worker}", value=n, run_id=0, pen_t_ms=n)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    events = log.session(sid).events
    assert sorted((e.code, e.value) for e in events) == sorted(
        (f"w{w}", n) for w in range(4) for n in range(25)
    )


def test_a_second_reader_sees_committed_records_at_once(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    with TreatmentLog(path) as writer, TreatmentLog(path) as reader:
        sid = session(writer)
        writer.record_event(sid, kind="event", code="BOOTED", value=0, run_id=0, pen_t_ms=1)
        assert [e.code for e in reader.session(sid).events] == ["BOOTED"]


# --- samples -----------------------------------------------------------------------------------
def test_add_samples_stores_a_batch(log: TreatmentLog) -> None:
    sid = session(log)
    log.add_samples(sid, [sample(t, 100.0 + t / 1000) for t in range(250)])
    log.add_samples(sid, [])
    assert log.session(sid).sample_count == 250


def test_a_batch_that_fails_halfway_stores_nothing(log: TreatmentLog) -> None:
    sid = session(log)
    good = [sample(t, 100.0 + t) for t in range(10)]
    bad = SampleRow(None, RUNNING, 1, 1, 1, 1, 1, 1, 1, 1, 200.0)  # type: ignore[arg-type]
    with pytest.raises(TreatmentLogError, match="NOT stored"):
        log.add_samples(sid, [*good, bad, *good])
    assert log.session(sid).sample_count == 0
    with pytest.raises(TreatmentLogError, match="expected 11"):
        log.add_samples(sid, [*good, (1, 2, 3)])  # type: ignore[list-item]
    assert log.session(sid).sample_count == 0


def test_sample_row_from_telemetry() -> None:
    msg = Telemetry(
        t_ms=1234,
        state=PenState.RUNNING,
        depth_um=995,
        rate_csps=10990,
        run_strokes=77,
        current_ma=410,
        temperature_dc=322,
        battery_mv=3810,
        cartridge_id=9,
        cartridge_strokes=1077,
    )
    assert SampleRow.from_telemetry(msg, 5.5) == (
        1234,
        2,
        995,
        10990,
        77,
        410,
        322,
        3810,
        9,
        1077,
        5.5,
    )


def test_run_statistics_use_running_samples_between_run_starts(tmp_path: Path) -> None:
    """Samples are attributed by the host time they were received, not by when the batch was
    flushed: a late batch of run 1, flushed after run 2 started, still counts for run 1."""
    with TreatmentLog(tmp_path / "t.sqlite") as log:
        sid = session(log, started_at=0.0)
        log.add_samples(sid, [sample(0, 5.0, depth=5, state=IDLE)])  # before any run
        run_start(log, sid, 1, started_at=10.0)
        run1 = [sample(1, 10.5, 990), sample(2, 11.0, 1010, 10800), sample(3, 11.5, 1000, 11200)]
        tail = [sample(4, 12.0, 1020, 11000), sample(5, 12.5, 0, 0, state=IDLE)]
        log.add_samples(sid, run1)
        run_start(log, sid, 2, started_at=20.0, depth_um=500)
        log.add_samples(sid, tail)  # late flush of run 1's last samples
        log.add_samples(sid, [sample(6, 20.5, 480, 9000), sample(7, 21.0, 520, 9100)])
        r1, r2 = log.session(sid).runs
        assert log.session(sid).sample_count == 8
        assert (r1.samples, r1.depth_um_min, r1.depth_um_max, r1.depth_um_mean) == (
            4,
            990,
            1020,
            1005.0,
        )
        assert (r1.rate_csps_min, r1.rate_csps_max, r1.rate_csps_mean) == (10800, 11200, 11000.0)
        assert (r2.samples, r2.depth_um_min, r2.depth_um_max, r2.depth_um_mean) == (
            2,
            480,
            520,
            500.0,
        )
        assert r2.rate_csps_mean == 9050.0


def test_a_run_without_samples_has_no_statistics(log: TreatmentLog) -> None:
    sid = session(log)
    run_start(log, sid, 1)
    (run,) = log.session(sid).runs
    assert (run.samples, run.depth_um_min, run.depth_um_mean, run.rate_csps_max) == (
        0,
        None,
        None,
        None,
    )


# --- export ------------------------------------------------------------------------------------
def populate(log: TreatmentLog) -> tuple[int, int]:
    a = session(log, operator='Dr. "Q", O\'Neil\nline two', started_at=1.25)
    log.record_override(a, depth_um=1800, area="cheeks", reason="scars, deep; «ok»")
    run_start(log, a, 1, depth_um=1800, soft_cap_override_reason="scars, deep; «ok»")
    log.add_samples(a, [sample(t, 1.0e9 + t / 7, 1790 + t) for t in range(30)])
    assert report(log, a, 1, depth_um=1800)
    log.record_event(a, kind="fault", code="STALL", value=950, run_id=1, pen_t_ms=4000, detail="x")
    log.end_session(a, outcome="completed", ended_at=99.125)
    b = session(log, "PEN-B", is_simulated=False)
    log.record_event(b, kind="link", code="reconnected", value=0, run_id=0, pen_t_ms=None)
    return a, b


def db_rows(path: Path, table: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY id")]
    finally:
        conn.close()


def test_export_json_round_trips_every_table(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "t.sqlite"
    with TreatmentLog(path, clock=clock) as log:
        a, b = populate(log)
        out = io.StringIO()
        assert log.export_json(None, out) == 2
    doc = json.loads(out.getvalue())
    assert (doc["format"], doc["schema_version"]) == ("micropen.treatment-log", SCHEMA_VERSION)
    sessions = doc["sessions"]
    assert [s["id"] for s in sessions] == [a, b]
    for s, row in zip(sessions, db_rows(path, "sessions"), strict=True):
        assert {k: s[k] for k in row} == {**row, "is_simulated": bool(row["is_simulated"])}
    for table in ("runs", "events", "overrides"):
        assert [r for s in sessions for r in s[table]] == db_rows(path, table)
    exported = [(s["id"], *r) for s in sessions for r in s["samples"]]
    stored = [
        (r["session_id"], *(r[c] for c in SampleRow._fields)) for r in db_rows(path, "samples")
    ]
    assert exported == [tuple(x) for x in stored] and len(exported) == 30
    assert sessions[0]["sample_columns"] == list(SampleRow._fields)
    assert sessions[0]["operator"] == 'Dr. "Q", O\'Neil\nline two'


def test_export_json_of_chosen_sessions(log: TreatmentLog) -> None:
    a, b = populate(log)
    out = io.StringIO()
    assert log.export_json([b], out) == 1
    assert [s["id"] for s in json.loads(out.getvalue())["sessions"]] == [b]
    empty = io.StringIO()
    assert log.export_json([], empty) == 0
    assert json.loads(empty.getvalue())["sessions"] == []
    with pytest.raises(TreatmentLogError, match=r"sessions \[99\] do not exist"):
        log.export_json([a, 99], io.StringIO())


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def as_csv(row: dict[str, Any]) -> dict[str, str]:
    return {k: "" if v is None else str(v) for k, v in row.items()}


def test_export_csv_round_trips_every_table(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    with TreatmentLog(path) as log:
        a, _ = populate(log)
        files = log.export_csv(None, tmp_path / "out")
        only_a = log.export_csv([a], tmp_path / "only-a")
    names = ["sessions", "runs", "events", "overrides", "samples"]
    assert files == [tmp_path / "out" / f"{n}.csv" for n in names]
    for name, file in zip(names, files, strict=True):
        assert read_csv(file) == [as_csv(r) for r in db_rows(path, name)], name
    assert [r["id"] for r in read_csv(only_a[0])] == [str(a)]
    assert {r["session_id"] for r in read_csv(only_a[2])} == {str(a)}
    floats = [float(r["host_time"]) for r in read_csv(files[4])]
    assert floats == [1.0e9 + t / 7 for t in range(30)]  # floats survive exactly


free_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip() != "")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operator=free_text, reason=free_text, detail=free_text | st.just(""))
def test_free_text_survives_storage_json_and_csv(operator: str, reason: str, detail: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with TreatmentLog(Path(tmp) / "t.sqlite") as log:
            sid = session(log, operator=operator)
            log.record_override(sid, depth_um=1600, area="scalp", reason=reason)
            log.record_event(
                sid, kind="host", code="n", value=0, run_id=0, pen_t_ms=0, detail=detail
            )
            d = log.session(sid)
            assert (d.operator, d.overrides[0].reason, d.events[0].detail) == (
                operator,
                reason,
                detail,
            )
            out = io.StringIO()
            log.export_json(None, out)
            files = log.export_csv(None, Path(tmp) / "csv")
        s = json.loads(out.getvalue())["sessions"][0]
        assert (s["operator"], s["overrides"][0]["reason"], s["events"][0]["detail"]) == (
            operator,
            reason,
            detail,
        )
        assert read_csv(files[0])[0]["operator"] == operator
        assert read_csv(files[3])[0]["reason"] == reason
        assert read_csv(files[2])[0]["detail"] == detail


# --- migrations ----------------------------------------------------------------------------------
def test_an_old_schema_is_migrated_and_keeps_its_records(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    assert apply_migrations(conn, MIGRATIONS[:1]) == 1
    conn.execute(
        "INSERT INTO sessions (pen_serial, pen_model, firmware, protocol_version, boot_id, "
        "operator, pen_url, is_simulated, started_at) VALUES ('OLD', 'm', 'f', 1, 2, 'op', "
        "'sim://', 1, 5.0)"
    )
    conn.close()
    with TreatmentLog(path) as log:
        assert log.schema_version == SCHEMA_VERSION
        assert [s.pen_serial for s in log.sessions()] == ["OLD"]
        report(log, log.sessions()[0].id, 1)
    conn = sqlite3.connect(path)
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'index'")}
    conn.close()
    assert {"samples_by_session_time", "events_by_session", "runs_by_session"} <= indexes


def test_a_newer_schema_is_refused_with_a_fix(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(TreatmentLogError, match=rf"version {SCHEMA_VERSION + 1}.*upgrade micropen"):
        TreatmentLog(path)


def test_a_failing_migration_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    TreatmentLog(path).close()
    bad = Migration(SCHEMA_VERSION + 1, "broken", ("CREATE TABLE extra (a)", "NOT SQL AT ALL"))
    conn = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError):
        apply_migrations(conn, (*MIGRATIONS, bad))
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema")}
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    assert version == SCHEMA_VERSION
    assert "extra" not in names


def test_migrations_are_numbered_one_up() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


# --- integrity -----------------------------------------------------------------------------------
def test_check_passes_on_a_healthy_log(log: TreatmentLog) -> None:
    populate(log)
    log.check()
    log.check(quick=True)


def test_check_finds_a_damaged_page(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    with TreatmentLog(path) as log:
        sid = session(log)
        for n in range(20):
            log.add_samples(sid, [sample(t, float(t)) for t in range(n * 100, n * 100 + 100)])
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    root = conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = 'samples_by_session_time'")
    index_page = root.fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with path.open("r+b") as f:  # scribble over the whole root page of one index
        f.seek((index_page - 1) * page_size)
        f.write(b"\xa5" * page_size)
    with (
        TreatmentLog(path) as damaged,
        pytest.raises(TreatmentLogError, match=r"sqlite3 FILE \.recover"),
    ):
        damaged.check()


def test_check_finds_rows_pointing_at_missing_sessions(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    TreatmentLog(path).close()
    conn = sqlite3.connect(path)  # foreign keys are off on a bare connection
    conn.execute(
        "INSERT INTO events (session_id, kind, code, value, run_id, detail, host_time) "
        "VALUES (404, 'event', 'X', 0, 0, '', 1.0)"
    )
    conn.commit()
    conn.close()
    with TreatmentLog(path) as log, pytest.raises(TreatmentLogError, match="1 rows pointing"):
        log.check()


def _open_at_once(path: str, barrier: Any) -> None:
    barrier.wait()
    TreatmentLog(path).close()


def test_processes_creating_one_new_log_at_once_all_open_it(tmp_path: Path) -> None:
    """Two bench tools (or two test workers) opening a log that does not exist yet: each opens
    it; before, one failed with 'table sessions already exists' or 'database is locked'."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    for attempt in range(3):
        path = str(tmp_path / f"log{attempt}.sqlite")
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_open_at_once, args=(path, barrier)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
        with TreatmentLog(path) as log:
            assert log.schema_version == SCHEMA_VERSION


def test_a_migration_another_process_already_applied_is_skipped(tmp_path: Path) -> None:
    """The deterministic half of the race above: between reading the version and taking the
    write lock, another process applied the step. Before, it ran again ('table sessions
    already exists')."""
    from micropen.host.treatment_log import MIGRATIONS, _apply_one

    path = tmp_path / "log.sqlite"
    TreatmentLog(path).close()  # every step applied
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        _apply_one(conn, MIGRATIONS[0])  # as a process that read version 0 a moment ago
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()
