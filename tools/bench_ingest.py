"""Ingest throughput and latency: records through a local mosquitto into a local PostgreSQL by
1 and then 2 ``micropen fleet ingest`` processes, in the same run.

* throughput: ``records`` run records published at once (8 QoS 1 publishers), timed from the
  first publish until the database holds all of them (polled every 20 ms);
* latency: ``rate`` records/s published for ``seconds`` (paced, well under the throughput), each
  stamped with its creation time ``at`` (the pen's event as the bench sees it); each worker
  measures commit time − ``at`` for every record it stores (its summary: p50/p99); with two
  workers the figure is the worse worker's.

PostgreSQL runs with its defaults (``fsync`` and ``synchronous_commit`` on): every batch
commit waits for the disk. Everything runs on this machine: the workers, the broker, the
database and the publishers share its cores.

``micropen bench ingest --json``
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from micropen.host.fleet import records as R
from micropen.host.fleet.broker import BrokerConfig
from micropen.host.fleet.migrate import migrate
from micropen.host.fleet.mosquitto import LocalMosquitto
from micropen.host.fleet.postgres import LocalPostgres
from micropen.host.fleet.topics import encode
from micropen.protocol.messages import RunMode, RunOutcome, RunReport

from .ingest_workers import WorkerProcess

__all__ = ["measure_ingest"]

PUBLISHERS = 8
PENS = 50


def _payload(seq: int, phase: str) -> tuple[str, bytes]:
    serial = f"BENCH-{seq % PENS:04d}"
    report = RunReport(
        run_id=seq, outcome=RunOutcome.COMPLETED, mode=RunMode.STROKES, target=300, strokes=300,
        duration_ms=3300, area=1, depth_um=500, rate_sps=90, cartridge_id=seq,
    )  # fmt: skip
    payload = R.run_record("bench", serial, hash(phase) & 0xFFFF_FFFF, report, time.time())
    return R.record_topic("bench", serial, "run"), encode(payload)


async def _publish(broker: BrokerConfig, seqs: range, phase: str, rate: float | None) -> None:
    """Publish ``seqs`` (QoS 1) from PUBLISHERS clients; paced at ``rate``/s when given."""
    start = time.monotonic()

    async def one(index: int) -> None:
        async with broker.client(f"bench-pub-{phase}-{index}") as client:
            for n, seq in enumerate(seqs[index::PUBLISHERS]):
                if rate is not None:
                    due = start + (n * PUBLISHERS + index) / rate
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                topic, data = _payload(seq, phase)
                await client.publish(topic, data, qos=1)

    await asyncio.gather(*(one(i) for i in range(PUBLISHERS)))


def _count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM runs").fetchone()
    return int(row[0]) if row else 0


async def _until_stored(dsn: str, total: int, timeout: float) -> float:
    """Until the database holds ``total`` runs; the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    while (n := await asyncio.to_thread(_count, dsn)) < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {n} of {total} records stored within {timeout} s")
        await asyncio.sleep(0.02)  # polling the database from outside
    return time.monotonic()


def _workers(n: int, mq: LocalMosquitto, dsn: str, tag: str, batch: int) -> list[WorkerProcess]:
    workers = [WorkerProcess(f"{tag}-{i}", mq.url, dsn, batch=batch) for i in range(n)]
    for w in workers:
        w.start()
    return workers


async def _one_setup(
    n: int, mq: LocalMosquitto, pg: LocalPostgres, records: int, rate: float, seconds: float,
    batch: int,
) -> dict[str, Any]:  # fmt: skip
    broker = BrokerConfig(host="127.0.0.1", port=mq.port, tls=False)
    figures: dict[str, Any] = {}
    # latency, paced
    dsn = pg.create_database(f"bench_latency_{n}")
    migrate(dsn)
    paced = int(rate * seconds)
    workers = _workers(n, mq, dsn, f"lat{n}", batch)
    try:
        await _publish(broker, range(paced), f"lat{n}", rate)
        await _until_stored(dsn, paced, 60)
        summaries = [w.stop() for w in workers]
        for w in workers:  # a stopped worker keeps its share queued: decommission it
            w.leave()
    finally:
        for w in workers:
            w.ensure_dead()
    lat = [s["latency_ms"] for s in summaries if "latency_ms" in s]
    figures[f"{n}w_latency_p50_ms"] = max(x["p50"] for x in lat)
    figures[f"{n}w_latency_p99_ms"] = max(x["p99"] for x in lat)
    # throughput, burst
    dsn = pg.create_database(f"bench_burst_{n}")
    migrate(dsn)
    workers = _workers(n, mq, dsn, f"tput{n}", batch)
    try:
        start = time.monotonic()
        published_at: list[float] = []
        publishing = asyncio.ensure_future(_publish(broker, range(records), f"tput{n}", None))
        publishing.add_done_callback(lambda _: published_at.append(time.monotonic()))
        done = await _until_stored(dsn, records, 300)
        await publishing
        summaries = [w.stop() for w in workers]
        for w in workers:  # a stopped worker keeps its share queued: decommission it
            w.leave()
    finally:
        for w in workers:
            w.ensure_dead()
    figures[f"{n}w_records_per_s"] = round(records / (done - start), 1)
    figures[f"{n}w_publish_records_per_s"] = round(records / (published_at[0] - start), 1)
    figures[f"{n}w_share_per_worker"] = [s["stored"] for s in summaries]
    figures[f"{n}w_mean_batch"] = round(
        sum(s["stored"] for s in summaries) / max(1, sum(s["batches"] for s in summaries)), 1
    )
    return figures


def measure_ingest(
    records: int = 20_000, rate: float = 200.0, seconds: float = 5.0, batch: int = 200
) -> dict[str, Any]:
    """Figures for docs/performance.md (1 and 2 workers, same run)."""
    figures: dict[str, Any] = {
        "records": records, "paced_rate_per_s": rate, "paced_seconds": seconds,
        "batch_max": batch, "cpus": os.cpu_count(), "postgres_fsync": True,
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="micropen-bench-ingest-") as tmp:
        mq = LocalMosquitto(Path(tmp) / "broker", allow_anonymous=True)
        pg = LocalPostgres(fsync=True)
        try:
            mq.start()
            pg.start()
            for n in (1, 2):
                figures.update(asyncio.run(_one_setup(n, mq, pg, records, rate, seconds, batch)))
        finally:
            mq.stop()
            pg.cleanup()
    figures["speedup_2w_over_1w"] = round(figures["2w_records_per_s"] / figures["1w_records_per_s"],
                                          2)  # fmt: skip
    return figures
