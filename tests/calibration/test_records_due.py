"""The SQLite records (history, JSON round trip, incomplete on start) and due dates."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from _cal_helpers import make_record

from micropen.host.calibration import DueState, Outcome, Quantity, RecordStore, check_due
from micropen.host.calibration.due import DUE_SOON_DAYS, all_due
from micropen.host.calibration.record import CalibrationRecord
from micropen.host.calibration.records import DB_FILENAME, default_db_path

T0 = datetime(2025, 1, 10, 9, 0, tzinfo=UTC)


def test_record_round_trips_through_json_exactly() -> None:
    record = make_record()
    data = json.loads(json.dumps(record.to_dict()))
    again = CalibrationRecord.from_dict(data)
    assert again == record
    assert data["summary"]["as_found"] == "fail" and data["summary"]["as_left"] == "pass"
    assert data["summary"]["as_left_max_error_mm"] == pytest.approx(0.006)


def test_store_keeps_every_attempt_and_indexes_points_and_instruments(
    store: RecordStore,
) -> None:
    first = make_record(started=T0)
    second = make_record(started=T0 + timedelta(days=1), procedure="verify", outcome="fail")
    other = make_record(serial="SIM-000008", started=T0 + timedelta(days=2))
    for record in (first, second, other):
        store.begin(record)
        store.finish(record)
    assert [r.record_id for r in store.history()] == [
        other.record_id,
        second.record_id,
        first.record_id,
    ]
    assert [r.record_id for r in store.history("SIM-000007")] == [
        second.record_id,
        first.record_id,
    ]
    assert store.get(first.record_id) == first
    assert store.get("nope") is None
    assert store.pens() == ["SIM-000007", "SIM-000008"]
    with sqlite3.connect(store.path) as db:
        n_points = db.execute(
            "SELECT COUNT(*) FROM points WHERE record_id = ?", (first.record_id,)
        ).fetchone()[0]
        overdue = db.execute(
            "SELECT serial, override_reason FROM instruments WHERE overdue = 1 AND record_id = ?",
            (first.record_id,),
        ).fetchall()
    assert n_points == len(first.points) == 20
    assert overdue == [("TA-7", "loan unit, recal booked")]


def test_a_record_begun_but_never_finished_stays_incomplete(store: RecordStore) -> None:
    record = make_record()
    record.outcome, record.reason = Outcome.INCOMPLETE, "in progress (the process ended ...)"
    record.points, record.finished_at = [], None
    store.begin(record)  # the process dies here
    stored = store.get(record.record_id)
    assert stored is not None and stored.outcome is Outcome.INCOMPLETE
    assert "in progress" in stored.reason


def test_default_db_path_follows_micropen_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICROPEN_HOME", str(tmp_path))
    assert default_db_path() == tmp_path / DB_FILENAME
    assert RecordStore().path == tmp_path / DB_FILENAME


def test_last_pass_skips_failed_and_incomplete_and_counts_verify_for_both(
    store: RecordStore,
) -> None:
    depth_only = make_record(procedure="depth", started=T0)
    failed = make_record(procedure="all", outcome="fail", started=T0 + timedelta(days=5))
    verify = make_record(procedure="verify", started=T0 + timedelta(days=9))
    for record in (depth_only, failed):
        store.finish(record)
    assert store.last_pass("SIM-000007", Quantity.DEPTH) == depth_only
    assert store.last_pass("SIM-000007", Quantity.RATE) is None
    store.finish(verify)
    assert store.last_pass("SIM-000007", Quantity.RATE) == verify
    assert store.last_pass("SIM-000007", Quantity.DEPTH) == verify


def test_due_states(store: RecordStore) -> None:
    serial = "SIM-000007"
    assert check_due(serial, store=store, today=date(2025, 1, 1)).state is DueState.NEVER
    store.finish(make_record(procedure="depth", started=T0))
    never = check_due(serial, store=store, today=date(2025, 1, 11))
    assert never.state is DueState.NEVER and never.limiting is Quantity.RATE
    assert "no passing rate calibration" in never.message
    store.finish(make_record(procedure="rate", started=T0 + timedelta(days=30)))
    done = (T0 + timedelta(minutes=3)).date()
    due = done + timedelta(days=365)  # the depth one, done first, is due first
    ok = check_due(serial, store=store, today=done)
    assert (ok.state, ok.due, ok.limiting, ok.days_left) == (DueState.OK, due, Quantity.DEPTH, 365)
    soon = check_due(serial, store=store, today=due - timedelta(days=DUE_SOON_DAYS))
    assert soon.state is DueState.DUE_SOON and not soon.needs_attention
    late = check_due(serial, store=store, today=due + timedelta(days=3))
    assert late.state is DueState.OVERDUE and late.days_left == -3 and late.needs_attention
    assert "overdue since" in late.message and "3 days" in late.message
    short = check_due(serial, store=store, today=done, interval_days=30)
    assert short.due == done + timedelta(days=30)


def test_due_uses_each_records_interval_and_all_due_sorts_soonest_first(
    store: RecordStore,
) -> None:
    store.finish(make_record(serial="A", started=T0, interval_days=90))
    store.finish(make_record(serial="B", started=T0, interval_days=365))
    store.finish(make_record(serial="C", procedure="depth", started=T0))
    today = T0.date() + timedelta(days=100)
    statuses = all_due(store, today=today)
    assert [s.serial for s in statuses] == ["C", "A", "B"]
    assert [s.state for s in statuses] == [DueState.NEVER, DueState.OVERDUE, DueState.OK]
    assert statuses[1].to_dict()["due"] == (T0.date() + timedelta(days=90)).isoformat()
