"""Issue 15 part 2's fault test: real mosquitto, real PostgreSQL, two `micropen fleet ingest`
processes. One worker is SIGKILLed mid-stream and restarted, the broker is restarted, the
database is restarted — and every published record is in the database exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import psycopg
import pytest
from _fleet_helpers import ARCHIVERS, FleetBroker, password

from micropen.host.fleet import records as R
from micropen.host.fleet.migrate import migrate
from micropen.host.fleet.outbox import Outbox
from micropen.host.fleet.postgres import LocalPostgres, find_postgres
from micropen.host.fleet.topics import encode
from micropen.protocol.messages import RunMode, RunOutcome, RunReport
from micropen.tools.ingest_workers import WorkerProcess

pytestmark = pytest.mark.slow

PENS = ["SIM-000001", "SIM-000002", "SIM-000003", "SIM-000004"]
RUNS_PER_PEN = 500  # 2,000 run records (+ a cartridge record each): 4,000 messages
SITE = "fault-site"


@pytest.fixture
def own_pg() -> Iterator[LocalPostgres]:
    """A cluster of its own: this test restarts it."""
    if find_postgres() is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    cluster = LocalPostgres(fsync=False)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


def _count(dsn: str) -> int:
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM runs) + (SELECT count(*) FROM cartridge_mounts)"
            ).fetchone()
    except psycopg.OperationalError:
        return -1  # restarting
    assert row is not None
    return int(row[0])


def _waiting(dsn: str, worker_id: str) -> bool:
    """Whether that worker's database session waits for a lock (it holds an open batch)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s "
            "AND wait_event_type = 'Lock'",
            (f"micropen-ingest-%-{worker_id}",),
        ).fetchone()
    return row is not None and row[0] > 0


async def _until(predicate: object, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within} s")
        await asyncio.sleep(0.05)  # polling a real database from outside


def _fill_outboxes(folder: Path) -> tuple[dict[str, Outbox], set[str]]:
    """What four bridges would have queued: each pen's run reports and cartridge records."""
    boxes, ids = {}, set()
    for serial in PENS:
        box = Outbox(folder / f"outbox-{serial}.sqlite")
        rows = []
        for run_id in range(1, RUNS_PER_PEN + 1):
            report = RunReport(
                run_id=run_id, outcome=RunOutcome.COMPLETED, mode=RunMode.STROKES, target=run_id,
                strokes=run_id, duration_ms=10 * run_id, area=1, depth_um=500, rate_sps=90,
                cartridge_id=1000 + run_id,
            )  # fmt: skip
            for payload in (
                R.run_record(SITE, serial, 0xB007, report, time.time()),
                R.cartridge_record(SITE, serial, boot_id=0xB007, action="used",
                                   cartridge_id=1000 + run_id, lot=f"LOT-{run_id % 7}",
                                   run_id=run_id, pen_t_ms=None, at=time.time()),
            ):  # fmt: skip
                kind = R.KIND_OF_SCHEMA[payload["schema"]]
                rows.append((payload["id"], R.record_topic(SITE, serial, kind), encode(payload)))
                ids.add(payload["id"])
        box.put_many(rows)
        boxes[serial] = box
    return boxes, ids


async def _drain(serial: str, box: Outbox, broker: FleetBroker, pace: float) -> None:
    """A bridge's outbox drain: QoS 1, delete after PUBACK, reconnect after a broker loss."""
    config = broker.config(serial)
    while len(box):
        try:
            async with config.client(f"bridge-{serial}") as client:
                while entries := box.peek(20):
                    for entry in entries:
                        await client.publish(entry.topic, entry.payload, qos=1)
                        box.delete(entry.seq)
                    await asyncio.sleep(pace)  # a stream, not one burst
        except aiomqtt.MqttError:
            await asyncio.sleep(0.2)  # reconnect backoff while the broker restarts


async def test_sigkill_broker_restart_and_db_restart_lose_and_duplicate_nothing(
    own_broker: FleetBroker, own_pg: LocalPostgres, tmp_path: Path
) -> None:
    dsn = own_pg.create_database("fleet_faults")
    migrate(dsn)
    mqtt_url = own_broker.mosquitto.url
    # one broker account per worker: the broker makes the username the client id, so it is
    # also the worker's persistent session (docs/fleet.md)
    accounts = {"w1": ARCHIVERS[0], "w2": ARCHIVERS[1]}
    for user in ARCHIVERS:
        (tmp_path / f"{user}.pw").write_text(password(user))

    def worker(name: str) -> WorkerProcess:
        user = accounts[name]
        return WorkerProcess(name, mqtt_url, dsn, username=user,
                             password_file=tmp_path / f"{user}.pw", batch=50)  # fmt: skip

    boxes, published = _fill_outboxes(tmp_path / "queues")
    w1, w2 = worker("w1"), worker("w2")
    restarted = worker("w1")  # the same worker id: its persistent session is waiting for it
    try:
        w1.start()
        w2.start()
        drains = [
            asyncio.ensure_future(_drain(serial, box, own_broker, pace=0.01))
            for serial, box in boxes.items()
        ]
        total = len(published)
        await _until(lambda: _count(dsn) >= total // 5, 60, "a fifth of the records stored")
        # w1 is caught holding a batch it received and cannot commit yet (a lock on the tables
        # stalls both workers' inserts), then SIGKILLed: an ack before the commit would lose it
        blocker = psycopg.connect(dsn)
        blocker.execute("LOCK TABLE runs, cartridge_mounts IN EXCLUSIVE MODE")
        await _until(lambda: _waiting(dsn, "w1"), 30, "w1 waiting to commit a batch")
        w1.kill()
        blocker.rollback()
        blocker.close()
        await _until(lambda: _count(dsn) >= 2 * total // 5, 60, "w2 going on alone")
        restarted.start()
        own_broker.mosquitto.restart()  # persistence: the workers' sessions and queues survive
        await _until(lambda: _count(dsn) >= 3 * total // 5, 60, "storing after the broker restart")
        own_pg.restart()  # the workers retry their batch, without acknowledging, until it commits
        async with asyncio.timeout(90):
            await asyncio.gather(*drains)
        await _until(lambda: _count(dsn) == total, 60, f"all {total} records stored")
        second = w2.stop()
        third = restarted.stop()
    finally:
        for w in (w1, w2, restarted):
            w.ensure_dead()
        for box in boxes.values():
            box.close()
    with psycopg.connect(dsn) as conn:
        stored = {r[0] for r in conn.execute("SELECT record_id FROM runs")}
        stored |= {r[0] for r in conn.execute("SELECT record_id FROM cartridge_mounts")}
        rows = conn.execute("SELECT serial, run_id, strokes FROM runs").fetchall()
        cartridges = conn.execute("SELECT count(*) FROM cartridge_mounts").fetchone()
        rejected = conn.execute("SELECT count(*) FROM rejected_messages").fetchone()
    assert stored == published, "every published record is present"
    assert cartridges is not None
    assert len(rows) + cartridges[0] == len(published), "exactly once: one row per record"
    assert all(strokes == run_id for _, run_id, strokes in rows), "the pen's exact counts"
    assert rejected == (0,)
    assert second["stored"] > 0 and third["stored"] > 0, "both live workers took a share"
    assert second["db_errors"] + third["db_errors"] > 0, "the database restart was noticed"
    assert second["mqtt_disconnects"] > 0, "the broker restart was noticed"
