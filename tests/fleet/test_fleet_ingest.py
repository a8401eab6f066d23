"""Ingest into a real PostgreSQL (issue 15 part 2): migrations, idempotent upserts of every
record kind, rejected messages kept, the bench export, and the CLI's contract."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _fleet_helpers import ADMIN, WATCHER, FleetBroker
from _ingest_helpers import fresh_session
from test_fleet_records import _every_record
from typer.testing import CliRunner

from micropen.host import AsyncPen
from micropen.host.calibration.records import RecordStore
from micropen.host.fleet import records as R
from micropen.host.fleet.export import export_history
from micropen.host.fleet.ingest import IngestConfig, IngestWorker
from micropen.host.fleet.migrate import SchemaTooNew, migrate, migrations
from micropen.host.fleet.topics import encode
from micropen.tools.cli import app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "calibration"))
from _cal_helpers import make_record

TABLES = {
    "session": "sessions", "run": "runs", "event": "events", "fault": "faults",
    "override": "overrides", "cartridge": "cartridge_mounts", "calibration": "calibration_records",
}  # fmt: skip


def _rows(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]


def test_migrations_apply_once_in_order_and_refuse_a_newer_database(fleet_db: str) -> None:
    known = [m.version for m in migrations()]
    assert known[0] == 1 and known == sorted(known)
    assert migrate(fleet_db) == known
    assert migrate(fleet_db) == [], "a second run changes nothing"
    assert [r[0] for r in _rows(fleet_db, "SELECT version FROM schema_version")] == known
    tables = {r[0] for r in _rows(fleet_db, "SELECT tablename FROM pg_tables "
                                  "WHERE schemaname = 'public'")}  # fmt: skip
    assert set(TABLES.values()) | {"pens", "sites", "rejected_messages"} <= tables
    with psycopg.connect(fleet_db) as conn:
        conn.execute("INSERT INTO schema_version (version, name) VALUES (999, 'future')")
    with pytest.raises(SchemaTooNew, match="999.*upgrade micropen"):
        migrate(fleet_db)


async def _run_worker(worker: IngestWorker) -> tuple[asyncio.Task[None], asyncio.Event]:
    subscribed = asyncio.Event()
    worker.add_notice_listener(lambda n: subscribed.set() if n["event"] == "subscribed" else None)
    task = asyncio.create_task(worker.run())
    async with asyncio.timeout(15):
        waiter = asyncio.ensure_future(subscribed.wait())
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    return task, subscribed


async def _until(predicate: Any, within: float, what: str) -> None:
    try:
        async with asyncio.timeout(within):
            while not predicate():
                await asyncio.sleep(0.05)  # polling a real database from outside
    except TimeoutError:
        raise AssertionError(f"{what} did not happen within {within} s") from None


async def test_every_kind_is_stored_once_however_often_it_arrives(
    fleet_broker: FleetBroker, fleet_db: str
) -> None:
    await fresh_session(fleet_broker.config(WATCHER))
    worker = IngestWorker(fleet_broker.config(WATCHER), fleet_db,
                          IngestConfig(worker_id="unit", group="unit-test"))  # fmt: skip
    task, _ = await _run_worker(worker)
    records = _every_record()
    try:
        async with fleet_broker.config(ADMIN).client("unit-publisher") as pub:
            for _ in range(3):  # redeliveries, re-sends: the same records again
                for payload in records:
                    kind = R.KIND_OF_SCHEMA[payload["schema"]]
                    topic = R.record_topic(payload["site"], payload["serial"], kind)
                    await pub.publish(topic, encode(payload), qos=1)
            await pub.publish(R.record_topic("clinic-r", "PEN-R1", "run"), b"{not json", qos=1)
            wrong_pen = {**records[1], "serial": "PEN-OTHER"}
            await pub.publish(R.record_topic("clinic-r", "PEN-R1", "run"), encode(wrong_pen),
                              qos=1)  # fmt: skip
            bad_override = {**next(r for r in records if r["schema"] == "micropen.override/1"),
                            "id": "PEN-R1:000b0071:override:blank", "reason": "  "}  # fmt: skip
            await pub.publish(R.record_topic("clinic-r", "PEN-R1", "override"),
                              encode(bad_override), qos=1)  # fmt: skip
        expected = 3 * len(records) + 3
        await _until(lambda: worker.counters["acked"] >= expected, 15, "every message acked")
    finally:
        worker.stop()
        await task
        await fresh_session(fleet_broker.config(WATCHER))  # a stopped worker keeps its session
    for kind, table in TABLES.items():
        ids = {r["id"] for r in records if R.KIND_OF_SCHEMA[r["schema"]] == kind}
        stored = _rows(fleet_db, f"SELECT record_id FROM {table}")
        assert sorted(r[0] for r in stored) == sorted(ids), table
    [(strokes, outcome)] = _rows(fleet_db, "SELECT strokes, outcome FROM runs")
    assert (strokes, outcome) == (500, "COMPLETED")
    [(sha, committed)] = _rows(fleet_db, "SELECT record_sha256, committed FROM calibration_records")
    assert len(sha) == 64 and committed is True
    reasons = sorted(r[0] for r in _rows(fleet_db, "SELECT reason FROM rejected_messages"))
    assert len(reasons) == 3, reasons
    assert any("not JSON" in r for r in reasons) and any("PEN-OTHER" in r for r in reasons)
    assert any("refused by the database" in r for r in reasons), "the blank override reason"
    assert worker.counters["rejected"] == 3
    assert _rows(fleet_db, "SELECT serial, site FROM pens") == [("PEN-R1", "clinic-r")]


async def test_a_benchs_history_exports_idempotently(tmp_path: Path, fleet_db: str) -> None:
    log = tmp_path / "treatment.sqlite"
    async with await AsyncPen.open("sim://?seed=21", log=log, command_timeout=5) as pen:
        await pen.set_depth(1.8, area="cheeks", override_reason="physician order 7")
        first = await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=40)
        second = await pen.run(depth_mm=0.6, rate_sps=70, area="forehead", strokes=25)
        assert pen.identity is not None
        serial = pen.identity.serial
    store_path = tmp_path / "calibration.sqlite"
    store = RecordStore(store_path)
    record = make_record(serial=serial)
    store.begin(record)
    store.finish(record)
    once = export_history([log, store_path], fleet_db, site="bench-7")
    counts = {t: _rows(fleet_db, f"SELECT count(*) FROM {t}")[0][0] for t in TABLES.values()}
    twice = export_history([log, store_path], fleet_db, site="bench-7")
    again = {t: _rows(fleet_db, f"SELECT count(*) FROM {t}")[0][0] for t in TABLES.values()}
    assert once == twice and counts == again, "run twice: the same rows"
    runs = _rows(fleet_db, "SELECT run_id, strokes, outcome FROM runs ORDER BY run_id")
    assert runs == [(first.run_id, 40, "COMPLETED"), (second.run_id, 25, "COMPLETED")]
    assert _rows(fleet_db, "SELECT depth_um, reason FROM overrides") == [
        (1800, "physician order 7")
    ]
    used = _rows(fleet_db, "SELECT run_id, lot FROM cartridge_mounts WHERE action = 'used'")
    assert sorted(r[0] for r in used) == [first.run_id, second.run_id] and all(r[1] for r in used)
    assert counts["sessions"] == 1 and counts["events"] > 0
    [(number, sha)] = _rows(fleet_db, "SELECT certificate_number, record_sha256 FROM "
                            "calibration_records")  # fmt: skip
    assert number == record.certificate_number and len(sha) == 64


def test_cli_contract_of_migrate_export_and_ingest(fleet_db: str, tmp_path: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["fleet", "db", "migrate", "--db", fleet_db, "--json"])
    assert done.exit_code == 0, done.output
    versions = [m.version for m in migrations()]
    assert json.loads(done.stdout) == {"applied": versions, "schema_version": versions[-1]}
    bad = runner.invoke(app, ["fleet", "db", "migrate", "--db", "postgresql://u:secret@h/d"])
    assert bad.exit_code == 2 and "PGPASSWORD" in bad.output
    missing = runner.invoke(app, ["fleet", "export", "--from-sqlite", str(tmp_path / "none"),
                                  "--db", fleet_db, "--json"])  # fmt: skip
    assert missing.exit_code == 2 and "does not exist" in missing.output
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    refused = runner.invoke(app, ["fleet", "export", "--from-sqlite", str(junk), "--db",
                                  fleet_db, "--site", "clinic-1"])  # fmt: skip
    assert refused.exit_code == 1 and "not an SQLite database" in refused.output
    no_server = runner.invoke(app, ["fleet", "db", "migrate", "--db",
                                    "postgresql://u@127.0.0.1:1/d"])  # fmt: skip
    assert no_server.exit_code == 1 and "check --db" in no_server.output
    wrong = runner.invoke(app, ["fleet", "ingest", "--mqtt", "mqtt://h", "--db", fleet_db,
                                "--worker-id", "a/b"])  # fmt: skip
    assert wrong.exit_code == 2 and "a/b" in wrong.output


async def test_a_worker_refused_by_the_broker_says_so(
    fleet_broker: FleetBroker, fleet_db: str
) -> None:
    from micropen.host.fleet.errors import BrokerRefused

    wrong = fleet_broker.config(WATCHER, pw="not-the-password")
    worker = IngestWorker(wrong, fleet_db, IngestConfig(worker_id="refused", group="unit-test"))
    with pytest.raises(BrokerRefused, match="refused user 'watcher'.*--password-file"):
        async with asyncio.timeout(15):
            await worker.run()
