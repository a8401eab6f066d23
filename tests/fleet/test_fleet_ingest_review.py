"""Issue 15's outside review of the ingest path: each finding reproduced against a real
mosquitto and a real PostgreSQL, fixed, and kept fixed. No message, however built, ends a
worker or stores a value no pen can produce; a clean stop loses nothing; the export is
read-only and names its site."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _fleet_helpers import ADMIN, ARCHIVERS, WATCHER, FleetBroker, password
from _ingest_helpers import fresh_session
from typer.testing import CliRunner

from micropen.host import AsyncPen
from micropen.host.fleet import ingest as ingest_module
from micropen.host.fleet import records as R
from micropen.host.fleet.broker import BrokerConfig
from micropen.host.fleet.errors import PayloadError
from micropen.host.fleet.export import export_history
from micropen.host.fleet.ingest import IngestConfig, IngestWorker, _message_error
from micropen.host.fleet.migrate import migrate
from micropen.host.fleet.topics import decode, encode
from micropen.tools.cli import app
from micropen.tools.fleet_ingest_cli import describe_summary
from micropen.tools.ingest_workers import WorkerProcess

SITE = "clinic-r"
PEN, OTHER = "PEN-A", "PEN-B"


def _rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


def _run(serial: str, run_id: int, **changes: Any) -> dict[str, Any]:
    record = {
        "schema": "micropen.run/1", "site": SITE, "serial": serial,
        "id": f"{serial}:00000001:run:{run_id}", "at": time.time(), "boot_id": 1,
        "run_id": run_id, "outcome": "COMPLETED", "mode": "STROKES", "target": 20,
        "strokes": 20, "duration_ms": 245, "area": "forehead", "depth_um": 500,
        "rate_sps": 90, "cartridge_id": 123,
    }  # fmt: skip
    record.update(changes)
    return record


def _raw(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode()  # json.dumps writes NaN: what a broken bridge might send


@asynccontextmanager
async def _worker(config: BrokerConfig, dsn: str, **kw: Any) -> AsyncIterator[IngestWorker]:
    """An in-process worker, subscribed; stopped, then decommissioned (its session ended)."""
    await fresh_session(config)
    worker = IngestWorker(config, dsn, IngestConfig(worker_id="review", group="review", **kw))
    subscribed = asyncio.Event()
    worker.add_notice_listener(lambda n: subscribed.set() if n["event"] == "subscribed" else None)
    task = asyncio.create_task(worker.run())
    async with asyncio.timeout(15):
        waiter = asyncio.ensure_future(subscribed.wait())
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield worker
        assert not task.done(), f"the worker ended: {task.exception() if task.done() else ''}"
    finally:
        worker.stop()
        async with asyncio.timeout(15):
            await task
        await fresh_session(config)


async def _until(predicate: Any, within: float, what: str) -> None:
    try:
        async with asyncio.timeout(within):
            while not predicate():
                await asyncio.sleep(0.02)  # a worker's counters, moved by the real broker
    except TimeoutError:
        raise AssertionError(f"{what} did not happen within {within} s") from None


async def _publish(broker: FleetBroker, items: list[tuple[str, bytes]]) -> None:
    async with broker.config(ADMIN).client("review-publisher") as pub:
        for topic, data in items:
            await pub.publish(topic, data, qos=1)


TOPIC = R.record_topic(SITE, PEN, "run")

# finding 1 and 3: what the reviewer stored or crashed a worker with, and why each is refused
_DEEP = b'"area": ' + b"[" * 50_000 + b"]" * 50_000
_DUP = b'"strokes": 20, "strokes": 99999'
HOSTILE: dict[str, tuple[bytes, str]] = {
    "deep": (_raw(_run(PEN, 2)).replace(b'"area": "forehead"', _DEEP), "nested 50001 levels"),
    "negative strokes": (_raw(_run(PEN, 3, strokes=-5)), "strokes = -5"),
    "fractional strokes": (_raw(_run(PEN, 4, strokes=1.5)), "strokes = 1.5"),
    "boolean strokes": (_raw(_run(PEN, 5, strokes=True)), "strokes = True"),
    "200 KB area": (_raw(_run(PEN, 6, area="x" * 200_000)), "at most 131072"),
    "another pen's id": (_raw(_run(PEN, 1, id=f"{OTHER}:00000001:run:1")), "natural key"),
    "duplicate key": (_raw(_run(PEN, 7)).replace(b'"strokes": 20', _DUP), "appears twice"),
    "at 1e300": (_raw(_run(PEN, 8, at=1e300)), "at = 1e+300"),
    "at NaN": (_raw(_run(PEN, 9, at=float("nan"))), "NaN"),
    "NUL in area": (_raw(_run(PEN, 10, area="fore\0head")), "unprintable"),
    "too deep for a pen": (_raw(_run(PEN, 11, depth_um=9000)), "9000: is outside 0..2500"),
    "unknown outcome": (_raw(_run(PEN, 12, outcome="EXPLODED")), "outcome = 'EXPLODED'"),
}


async def test_hostile_records_are_rejected_with_their_reason_and_the_worker_goes_on(
    fleet_broker: FleetBroker, fleet_db: str
) -> None:
    victim = _run(OTHER, 1, strokes=33)  # the real record the spoofed id would have pre-empted
    valid = _run(PEN, 1)
    async with _worker(fleet_broker.config(WATCHER), fleet_db) as worker:
        await _publish(fleet_broker, [(TOPIC, data) for data, _ in HOSTILE.values()]
                       + [(TOPIC, encode(valid)),
                          (R.record_topic(SITE, OTHER, "run"), encode(victim))])  # fmt: skip
        total = len(HOSTILE) + 2
        await _until(lambda: worker.counters["acked"] >= total, 15, "every message acked")
    assert worker.counters["rejected"] == len(HOSTILE)
    runs = _rows(fleet_db, "SELECT serial, run_id, strokes, record_id FROM runs ORDER BY serial")
    assert runs == [
        (PEN, 1, 20, f"{PEN}:00000001:run:1"),
        (OTHER, 1, 33, f"{OTHER}:00000001:run:1"),
    ], "the spoofed id did not pre-empt the other pen's real record"
    reasons = [r[0] for r in _rows(fleet_db, "SELECT reason FROM rejected_messages")]
    assert len(reasons) == len(HOSTILE)
    for name, (_, why) in HOSTILE.items():
        assert any(why in r for r in reasons), (name, why, reasons)
    summary = json.dumps(worker.statistics(), allow_nan=False)  # strict JSON: no NaN latency
    assert "NaN" not in summary


async def test_a_database_refusal_of_any_class_is_that_messages_rejection(
    fleet_broker: FleetBroker, fleet_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 2, the database's line of defence: with the checks before it switched off, a
    wrong JSON type reaches PostgreSQL (DatatypeMismatch, SQLSTATE 42804), which refuses that
    message alone; the worker stores the rest and lives."""
    monkeypatch.setattr(ingest_module, "parse_record", decode)  # schema checks only
    async with _worker(fleet_broker.config(WATCHER), fleet_db) as worker:
        await _publish(fleet_broker, [(TOPIC, _raw(_run(PEN, 2, strokes=True))),
                                      (TOPIC, _raw(_run(PEN, 3, depth_um="deep"))),
                                      (TOPIC, encode(_run(PEN, 1)))])  # fmt: skip
        await _until(lambda: worker.counters["acked"] >= 3, 15, "all three acked")
    assert _rows(fleet_db, "SELECT run_id FROM runs") == [(1,)]
    reasons = [r[0] for r in _rows(fleet_db, "SELECT reason FROM rejected_messages")]
    assert len(reasons) == 2 and all("refused by the database" in r for r in reasons), reasons
    assert worker.counters["db_errors"] == 0, "a message's error is not an outage"


def test_only_connection_failures_are_outages() -> None:
    from psycopg import errors as E

    for refused in (E.DatatypeMismatch, E.NumericValueOutOfRange, E.CheckViolation,
                    E.UndefinedColumn, E.InvalidTextRepresentation):  # fmt: skip
        exc = refused()
        assert exc.sqlstate is not None and exc.sqlstate[:2] in ("22", "23", "42")
        assert _message_error(exc), refused
    assert not _message_error(psycopg.OperationalError("connection lost"))
    assert not _message_error(E.AdminShutdown())  # 57P01: the server restarting
    assert not _message_error(E.InsufficientPrivilege()), "42501: the setup, not a message"
    assert not _message_error(psycopg.InterfaceError("connection closed"))


def test_a_payload_check_raises_only_payload_errors() -> None:
    from micropen.host.fleet.record_check import parse_record

    for data, _ in HOSTILE.values():
        with pytest.raises(PayloadError):
            parse_record(data, "records/run")
    with pytest.raises(PayloadError, match="nested"):
        decode(b"[" * 50_000 + b"]" * 50_000, "records/run")  # the plain decoder too


async def test_records_published_while_every_worker_is_stopped_are_stored_once(
    fleet_broker: FleetBroker, fleet_db: str, tmp_path: Path
) -> None:
    """Finding 4: SIGTERM every worker, publish, restart them: nothing is lost. Then one leaves
    the group (--leave-group) and the other stores everything published after."""
    migrate(fleet_db)
    for user in ARCHIVERS:
        (tmp_path / f"{user}.pw").write_text(password(user))
        await fresh_session(fleet_broker.config(user))

    def worker(n: int) -> WorkerProcess:
        user = ARCHIVERS[n]
        return WorkerProcess(f"keep-{n}", fleet_broker.mosquitto.url, fleet_db, username=user,
                             password_file=tmp_path / f"{user}.pw", batch=20)  # fmt: skip

    def batch(first: int, n: int) -> list[tuple[str, bytes]]:
        return [(R.record_topic(SITE, PEN, "run"), encode(_run(PEN, i)))
                for i in range(first, first + n)]  # fmt: skip

    def count() -> int:
        return int(_rows(fleet_db, "SELECT count(*) FROM runs")[0][0])

    first = [worker(0), worker(1)]
    again = [worker(0), worker(1)]
    try:
        for w in first:
            w.start()
        await _publish(fleet_broker, batch(1, 40))
        await _until(lambda: count() == 40, 20, "the first 40 stored")
        for w in first:
            w.stop()
        await _publish(fleet_broker, batch(41, 40))  # no worker runs
        for w in again:
            w.start()
        await _until(lambda: count() == 80, 20, "the 40 published meanwhile stored")
        again[0].stop()
        left = again[0].leave()  # decommissioned: its share goes to the other worker
        assert left["received"] == 0  # all 80 were stored before it stopped: nothing was held
        await _publish(fleet_broker, batch(81, 40))
        await _until(lambda: count() == 120, 20, "all 40 stored by the remaining worker")
        again[1].stop()
        again[1].leave()
    finally:
        for w in (*first, *again):
            w.ensure_dead()
    ids = [r[0] for r in _rows(fleet_db, "SELECT run_id FROM runs ORDER BY run_id")]
    assert ids == list(range(1, 121)), "every record exactly once"


async def test_two_workers_on_one_account_are_told_so(
    fleet_broker: FleetBroker, fleet_db: str
) -> None:
    """Finding 6: the broker makes the username the client id, so two workers of one account
    take each other's connection; after a few such drops a worker says so in one line."""
    migrate(fleet_db)
    config = fleet_broker.config(ARCHIVERS[0])
    await fresh_session(config)
    said: list[str] = []
    workers = [IngestWorker(config, fleet_db, IngestConfig(worker_id=f"twin-{i}", group="twins",
                                                           migrate=False, backoff=(0.05,)))
               for i in range(2)]  # fmt: skip

    def listen(notice: dict[str, Any]) -> None:
        if notice["event"] == "kicked":
            said.append(notice["reason"])

    for w in workers:
        w.add_notice_listener(listen)
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        await _until(lambda: said, 20, "a worker saying another client uses its account")
    finally:
        for w in workers:
            w.stop()
        async with asyncio.timeout(15):
            await asyncio.gather(*tasks)
        await fresh_session(config)
    assert "another client may be using broker account 'archiver-1'" in said[0]
    assert "\n" not in said[0]


def test_cli_refuses_a_negative_time_and_a_missing_site_and_speaks_words(
    fleet_db: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    negative = runner.invoke(app, ["fleet", "ingest", "--mqtt", "mqtt://127.0.0.1:1", "--db",
                                   fleet_db, "--seconds", "-1"])  # fmt: skip
    assert negative.exit_code == 2 and "--seconds -1" in negative.output, negative.output
    log = tmp_path / "treatment.sqlite"
    log.write_bytes(b"")
    no_site = runner.invoke(app, ["fleet", "export", "--from-sqlite", str(log), "--db",
                                  fleet_db, "--json"])  # fmt: skip
    assert no_site.exit_code == 2 and "--site NAME" in no_site.output, no_site.output
    words = describe_summary({"received": 3, "stored": 2, "rejected": 1, "acked": 3,
                              "batches": 1, "mqtt_connects": 1, "mqtt_disconnects": 0,
                              "db_errors": 0, "latency_ms": {"p50": 1.5, "p99": 2.0,
                                                             "max": 2.0, "n": 2}})  # fmt: skip
    assert words.startswith("ingest stopped: 3 messages received, 2 stored, 1 rejected")
    assert "{" not in words and "p50 1.5 ms" in words


async def test_export_reads_without_a_trace(tmp_path: Path, fleet_db: str) -> None:
    """Finding 5: the export is read-only: nothing appears beside its input."""
    bench = tmp_path / "bench"
    bench.mkdir()
    log = bench / "treatment.sqlite"
    async with await AsyncPen.open("sim://?seed=21", log=log, command_timeout=5) as pen:
        await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=10)
    before = sorted(p.name for p in bench.iterdir())
    assert before == ["treatment.sqlite"], before
    result = export_history([log], fleet_db, site="bench-7")
    assert result["by_kind"]["run"] == 1
    assert sorted(p.name for p in bench.iterdir()) == before, "no -wal/-shm left behind"
