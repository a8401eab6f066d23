"""Telemetry batching in virtual time: numbered batches, bounded rate, counted decimation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from micropen.host.fleet.batcher import TelemetryBatcher


def _sample(t_ms: int) -> tuple[int, ...]:
    return (t_ms, 1, 500, 9000, 0, 400, 250, 4000, 7, 0)


def test_one_numbered_batch_per_interval() -> None:
    b = TelemetryBatcher(interval=0.1, max_hz=1000)
    assert b.take(0.0) is None  # nothing yet: no batch, no number used
    for t in range(10):
        b.add(_sample(t * 10))
    assert not b.due(0.05) or b.pending == 10
    first = b.take(0.1)
    assert first is not None and first.seq == 0 and len(first.samples) == 10
    assert not b.due(0.15)
    b.add(_sample(100))
    assert not b.due(0.15) and b.due(0.2)
    second = b.take(0.2)
    assert second is not None and second.seq == 1 and second.samples == (_sample(100),)


def test_rate_limit_decimates_and_reports_it() -> None:
    b = TelemetryBatcher(interval=0.1, max_hz=100)  # at most one sample per 10 ms of pen time
    for t in range(100):  # 1 kHz for 100 ms
        b.add(_sample(t))
    batch = b.take(0.1)
    assert batch is not None
    assert [s[0] for s in batch.samples] == list(range(0, 100, 10))
    assert batch.decimated == 90
    assert b.counters == {"samples": 10, "decimated": 90, "batches": 1}


def test_a_pen_reboot_restarts_the_limiter() -> None:
    b = TelemetryBatcher(interval=0.1, max_hz=100)
    b.add(_sample(50_000))
    b.add(_sample(3))  # the pen rebooted: its clock went back
    batch = b.take(1.0)
    assert batch is not None and len(batch.samples) == 2


def test_full_batches_are_cut_early() -> None:
    b = TelemetryBatcher(interval=10.0, max_hz=1000, max_samples=5)
    for t in range(12):
        b.add(_sample(t))
    assert b.due(0.0)
    sizes = []
    while (batch := b.take(0.0)) is not None:
        sizes.append(len(batch.samples))
    assert sizes == [5, 5, 2]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        TelemetryBatcher(interval=0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=300), st.integers(10, 1000))
def test_every_sample_is_sent_or_counted(gaps: list[int], max_hz: int) -> None:
    b = TelemetryBatcher(interval=0.1, max_hz=max_hz, max_samples=50)
    t, sent, decimated, seqs = 0, 0, 0, []
    for i, gap in enumerate(gaps):
        t += gap
        b.add(_sample(t))
        if i % 7 == 0 and (batch := b.take(i * 0.1)) is not None:
            sent, decimated = sent + len(batch.samples), decimated + batch.decimated
            seqs.append(batch.seq)
    while (batch := b.take(1e9)) is not None:
        sent, decimated = sent + len(batch.samples), decimated + batch.decimated
        seqs.append(batch.seq)
    assert sent + decimated == len(gaps)
    assert seqs == list(range(len(seqs)))
