"""The host's side of telemetry batches, in virtual time: negotiated by capability, unpacked in
one place, every sample reaching listeners and the treatment log once and in order.

Old peers are modelled by the capability or the request being absent: ``batch_telemetry=False``
is a host from before batches, ``sim://?telemetry_batch=0`` a pen from before them.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from _waits import pull_the_cable, sim_of, until

from micropen.host import AsyncPen
from micropen.host.recorder import SessionRecorder
from micropen.host.telemetry import TelemetryStream
from micropen.host.treatment_log import SampleRow, TreatmentLog
from micropen.protocol.messages import (
    Capability,
    PenState,
    RunOutcome,
    Telemetry,
    TelemetryBatch,
    pack_telemetry,
)

HZ = 200  # a sample every 5 ms


async def _open(url: str, log: TreatmentLog | None = None, **options: object) -> AsyncPen:
    recorder = None if log is None else SessionRecorder(log, purpose="test")
    return await AsyncPen.open(url, recorder=recorder, **options)


def _listen(pen: AsyncPen) -> list[Telemetry]:
    samples: list[Telemetry] = []
    pen.add_listener(lambda m: samples.append(m) if isinstance(m, Telemetry) else None)
    return samples


def _steps(samples: list[Telemetry]) -> set[int]:
    return {b.t_ms - a.t_ms for a, b in itertools.pairwise(samples)}


async def test_listeners_and_the_log_see_every_sample_once_in_order(tmp_path: Path) -> None:
    log = TreatmentLog(tmp_path / "log.sqlite")
    pen = await _open("sim://?seed=51", log)
    try:
        assert pen.identity is not None
        assert pen.identity.capabilities & Capability.TELEMETRY_BATCH
        samples = _listen(pen)
        await pen.set_telemetry(HZ)
        report = await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=120)
        assert report.outcome is RunOutcome.COMPLETED
        await pen.set_telemetry(0)  # every sample taken before it arrives before its Ack
        stats = pen.statistics()
    finally:
        await pen.close()
    assert stats["telemetry_batches"] > 0 and stats["telemetry_missing"] == 0
    assert stats["datagrams_received"] == 0, "a pen asked for batches sent singles"
    assert len(samples) >= 1.3 * HZ  # the run lasts 1.33 s
    assert _steps(samples) == {5}, "a sample missing, doubled or out of order"
    assert PenState.RUNNING in {s.state for s in samples}
    assert max(s.run_strokes for s in samples) <= report.strokes
    session = log.sessions()[0].id
    stored = list(log._iter_samples([session], SampleRow._fields))
    assert [row[0] for row in stored] == [s.t_ms for s in samples]
    assert [tuple(row[:10]) for row in stored] == [tuple(s) for s in samples]
    log.close()


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("sim://?seed=52", {"batch_telemetry": False}),  # old host × new pen
        ("sim://?seed=52&telemetry_batch=0", {}),  # new host × old pen
    ],
    ids=["old host, new pen", "new host, old pen"],
)
async def test_without_both_ends_agreeing_samples_come_singly(
    url: str, options: dict[str, object]
) -> None:
    pen = await _open(url, **options)
    try:
        samples = _listen(pen)
        await pen.set_telemetry(HZ)
        await until(lambda: len(samples) >= 100, within=2.0, what="100 samples")
        await pen.set_telemetry(0)
        stats = pen.statistics()
    finally:
        await pen.close()
    assert stats["telemetry_batches"] == 0
    assert stats["datagrams_received"] >= 100
    assert _steps(samples[:100]) == {5}
    assert stats["bad_messages"] == 0  # nothing refused: the host never asked an old pen


async def test_a_reconnect_shows_as_counted_missing_samples() -> None:
    """Samples the pen took while the cable was out never reach the host: the numbers in the
    next batch show how many, and the host counts exactly those."""
    pen = await _open("sim://?seed=53")
    try:
        samples = _listen(pen)
        await pen.set_telemetry(100)
        await until(lambda: len(samples) >= 50, within=2.0, what="50 samples")
        pull_the_cable(pen, 1200)
        await until(lambda: pen.counters["reconnects"], within=6.0, what="a reconnect")
        seen = len(samples)
        await until(lambda: len(samples) >= seen + 50, within=2.0, what="samples again")
        await pen.set_telemetry(0)
        stats = pen.statistics()
        firmware = sim_of(pen).pen.firmware
        assert firmware._batch_max == 8, "the host asked again on the new epoch"
    finally:
        await pen.close()
    gaps = [b.t_ms - a.t_ms for a, b in itertools.pairwise(samples) if b.t_ms - a.t_ms != 10]
    assert len(gaps) == 1 and gaps[0] > 1000
    assert stats["telemetry_missing"] == gaps[0] // 10 - 1 > 0


def _sample(t_ms: int) -> Telemetry:
    return Telemetry(t_ms, PenState.IDLE, 0, 0, 0, 0, 250, 4000, 0, 0)


def test_stream_counts_gaps_but_not_samples_that_came_singly() -> None:
    stream = TelemetryStream()
    stream.boot(7)
    assert len(stream.unpack(pack_telemetry(0, [_sample(0), _sample(5)]))) == 2
    stream.single()  # number 2 came as a datagram (before the switch to batches)
    stream.unpack(pack_telemetry(3, [_sample(15)]))
    assert stream.missing == 0
    stream.unpack(pack_telemetry(10, [_sample(50)]))  # numbers 4..9 never came
    assert stream.missing == 6
    stream.boot(8)  # a new boot numbers from 0 again: not a gap
    stream.unpack(pack_telemetry(0, [_sample(0)]))
    assert stream.missing == 6 and stream.batches == 4


def test_a_sample_out_of_range_is_left_out_and_counted() -> None:
    body = bytearray(pack_telemetry(0, [_sample(0), _sample(5), _sample(10)]).samples)
    body[27 + 4] = 77  # the second sample's state: no such PenState
    batch = TelemetryBatch(0, 3, bytes(body))
    stream = TelemetryStream()
    stream.boot(1)
    assert [s.t_ms for s in stream.unpack(batch)] == [0, 10]
    assert stream.bad_samples == 1
