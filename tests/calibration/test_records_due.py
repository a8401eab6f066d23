"""The SQLite records (history, JSON round trip, incomplete on start) and due dates."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from _cal_helpers import make_record

from micropen.host.calibration import (
    DueState,
    Outcome,
    Quantity,
    RecordStore,
    RuleKind,
    Verdict,
    check_due,
)
from micropen.host.calibration.due import DUE_SOON_DAYS, all_due
from micropen.host.calibration.record import CalibrationRecord
from micropen.host.calibration.records import DB_FILENAME, SCHEMA_VERSION, default_db_path
from micropen.host.errors import InvalidInput

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


def test_a_failed_verify_makes_the_pen_failed_not_ok(store: RecordStore) -> None:
    """A pen whose last verify failed is out of tolerance now, whatever passed before."""
    serial = "SIM-000007"
    store.finish(make_record(procedure="all", started=T0))
    today = T0.date() + timedelta(days=10)
    assert check_due(serial, store=store, today=today).state is DueState.OK
    failed = make_record(procedure="verify", outcome="fail", started=T0 + timedelta(days=5))
    store.finish(failed)
    status = check_due(serial, store=store, today=today)
    assert status.state is DueState.FAILED and status.needs_attention
    assert status.record_id == failed.record_id and "failed" in status.message
    incomplete = make_record(outcome="incomplete", started=T0 + timedelta(days=6))
    store.finish(incomplete)  # an attempt cut short says nothing about the pen
    assert check_due(serial, store=store, today=today).state is DueState.FAILED
    store.finish(make_record(procedure="all", started=T0 + timedelta(days=7)))
    assert check_due(serial, store=store, today=today).state is DueState.OK
    store.finish(make_record(procedure="depth", outcome="conditional_fail",
                             started=T0 + timedelta(days=8)))  # fmt: skip
    assert check_due(serial, store=store, today=today).state is DueState.FAILED


def test_certificates_are_numbered_per_series_and_keep_their_number(store: RecordStore) -> None:
    first, second = make_record(started=T0), make_record(started=T0 + timedelta(days=1))
    third = make_record(serial="SIM-000008", started=T0 + timedelta(days=2))
    for record in (first, second, third):
        record.certificate_number = ""
    store.begin(first, "EX-B2")
    store.begin(second, "EX-B2")
    store.begin(third, "OTHER")
    assert (first.certificate_number, second.certificate_number) == (
        "EX-B2-2025-00001",
        "EX-B2-2025-00002",
    )
    assert third.certificate_number == "OTHER-2025-00001"
    store.finish(first)  # finishing (or exporting) never renumbers
    stored = store.get(first.record_id)
    assert stored is not None and stored.certificate_number == "EX-B2-2025-00001"
    assert store.find("EX-B2-2025-00002").record_id == second.record_id
    assert store.find(third.record_id[:12]).record_id == third.record_id


def test_find_refuses_ambiguous_short_and_unknown_references(store: RecordStore) -> None:
    for record in (make_record(started=T0), make_record(started=T0 + timedelta(days=1))):
        store.finish(record)
    with pytest.raises(InvalidInput, match="names 2 records"):
        store.find("SIM-000007-2025")
    with pytest.raises(InvalidInput, match="no calibration record 'SIM-0'"):
        store.find("SIM-0")  # under 6 characters: not a prefix search
    with pytest.raises(InvalidInput, match="cal history"):
        store.find("deadbeefdeadbeef")


V1_SCHEMA = """
CREATE TABLE calibrations (record_id TEXT PRIMARY KEY, procedure TEXT NOT NULL,
    pen_serial TEXT NOT NULL, pen_model TEXT NOT NULL, firmware TEXT NOT NULL,
    technician TEXT NOT NULL, station TEXT NOT NULL, started_at TEXT NOT NULL,
    finished_at TEXT, outcome TEXT NOT NULL, reason TEXT NOT NULL, committed INTEGER NOT NULL,
    interval_days INTEGER NOT NULL, software_version TEXT NOT NULL, ambient_c REAL,
    record_json TEXT NOT NULL);
CREATE TABLE points (record_id TEXT NOT NULL, quantity TEXT NOT NULL, stage TEXT NOT NULL,
    set_value REAL NOT NULL, mean REAL NOT NULL, error REAL NOT NULL, tolerance REAL NOT NULL,
    verdict TEXT NOT NULL, readings TEXT NOT NULL);
CREATE TABLE instruments (record_id TEXT NOT NULL, role TEXT NOT NULL, kind TEXT NOT NULL,
    manufacturer TEXT NOT NULL, model TEXT NOT NULL, serial TEXT NOT NULL,
    cal_due TEXT NOT NULL, overdue INTEGER NOT NULL, override_reason TEXT NOT NULL);
PRAGMA user_version = 1;
"""


def _format_1(record: CalibrationRecord) -> dict[str, object]:
    """The record as micropen wrote it before uncertainty: no budgets, "marginal" verdicts."""
    data = record.to_dict()
    for key in ("certificate_number", "issuer", "owner", "method", "method_revision",
                "decision_rule", "simulated_parts", "ambient_location", "simulation"):  # fmt: skip
        del data[key]
    for point in data["points"]:
        del point["uncertainty"]
    for inst in data["instruments"]:
        del inst["calibration"], inst["simulated"]
        inst["kind"] = "sim-bench"
    data["points"][0]["verdict"] = "marginal"
    data["pen"]["url"] = "sim://?seed=7"
    data["format"] = 1
    return data


def test_a_version_1_database_reads_and_upgrades_on_the_first_write(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old = _format_1(make_record(started=T0))
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA)
        db.execute(
            "INSERT INTO calibrations VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (old["record_id"], "all", "SIM-000007", "MP-12 SIM", "1.0.0", "A. Tech", "b1",
             T0.isoformat(), None, "pass", "ok", 1, 365, "0.1.0", 22.5, json.dumps(old)),
        )  # fmt: skip
    store = RecordStore(path)
    legacy = store.get(str(old["record_id"]))
    assert legacy is not None and legacy.points[0].verdict is Verdict.PASS  # simple acceptance
    assert legacy.decision_rule.kind is RuleKind.SIMPLE and legacy.points[0].uncertainty is None
    assert legacy.certificate_id == f"LEGACY-{str(old['record_id'])[:12].upper()}"
    assert legacy.simulated_parts == [
        "pen SIM-000007",
        "depth instrument 543-790 s/n DG-7",
        "rate instrument 461920 s/n TA-7",
    ]  # the old record of a simulator still says so
    new = make_record(started=T0 + timedelta(days=1))
    new.certificate_number = ""
    store.begin(new)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        expanded = db.execute("SELECT expanded_uncertainty FROM points WHERE record_id = ?",
                              (new.record_id,)).fetchone()[0]  # fmt: skip
    assert expanded == new.points[0].expanded
    assert new.certificate_number == "MP-2025-00001"
    assert [r.record_id for r in store.history()] == [new.record_id, old["record_id"]]
