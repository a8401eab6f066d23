"""The pen's TelemetryBatch stream: what it carries, when it leaves, what it never does.

Driven through the bare-Link harness (no host library), in virtual time. Limits are stated
literally from docs/protocol.md: 8 samples a batch, a batch leaves when its first sample is
``max_delay_ms`` old, at most 8 messages waiting or unacknowledged on the link for telemetry.
"""

from __future__ import annotations

import itertools

from test_firmware_harness import Host

from micropen.protocol.messages import (
    Ack,
    Capability,
    ErrorCode,
    Nak,
    PenState,
    RunMode,
    SetTelemetry,
    SetTelemetryBatch,
    Telemetry,
    TelemetryBatch,
    unpack_telemetry,
)

CHEEKS = 4  # a treatment area that allows 110 strokes/s


def _batched(host: Host) -> list[Telemetry]:
    return [s for b in host.of(TelemetryBatch) for s in unpack_telemetry(b)]


def _run_treatment(host: Host, *, batches: bool) -> None:
    """The same commands either way; only the batch request differs (0: singles)."""
    host.ready(depth_um=800, rate_sps=110)
    host.ack(SetTelemetryBatch, 8 if batches else 0, 100)
    host.ack(SetTelemetry, 100)
    host.start(CHEEKS, RunMode.DURATION, duration_ms=1500)
    host.wait_report(timeout=3.0)
    host.run_for(0.3)
    host.ack(SetTelemetry, 0)


def test_batches_carry_exactly_the_samples_singles_would_have() -> None:
    batched = Host(seed=21, boot_seed=21)
    singles = Host(seed=21, boot_seed=21)
    _run_treatment(batched, batches=True)
    _run_treatment(singles, batches=False)
    assert not batched.of(Telemetry) and not singles.of(TelemetryBatch)
    got, expected = _batched(batched), singles.telemetry()
    assert len(expected) > 150
    assert got == expected
    assert {s.state for s in got} >= {PenState.RUNNING, PenState.IDLE}


def test_sample_numbers_run_on_without_a_gap() -> None:
    host = Host(seed=22)
    host.ready()
    host.ack(SetTelemetryBatch, 8, 100)
    host.ack(SetTelemetry, 200)
    host.run_for(1.0)
    host.ack(SetTelemetry, 0)  # flushes the batch being filled before its Ack
    batches = host.of(TelemetryBatch)
    assert len(batches) >= 25
    for a, b in itertools.pairwise(batches):
        assert b.first_seq == a.first_seq + a.sample_count
    fw = host.pen.firmware
    assert fw.telemetry_seq == batches[-1].first_seq + batches[-1].sample_count
    assert fw.telemetry_skipped == 0
    assert all(b.sample_count == 8 for b in batches[:-1])  # 200 Hz: full before 100 ms
    times = [s.t_ms for s in _batched(host)]
    assert all(b - a == 5 for a, b in itertools.pairwise(times))


def test_a_batch_leaves_when_its_first_sample_is_max_delay_old() -> None:
    """100 Hz during a run, max_delay_ms 30: never more than 30 ms (+ the 1 ms the host reads
    at) between the first sample of a batch and its arrival, so batches hold 3 or 4 samples."""
    host = Host(seed=23)
    host.ready(depth_um=800, rate_sps=110)
    host.ack(SetTelemetryBatch, 8, 30)
    host.ack(SetTelemetry, 100)
    host.start(CHEEKS, RunMode.DURATION, duration_ms=1500)
    arrivals: list[tuple[float, TelemetryBatch]] = []
    seen = 0
    for _ in range(1000):
        host.pump(0.001)
        batches = host.of(TelemetryBatch)
        arrivals += [(host.now, b) for b in batches[seen:]]
        seen = len(batches)
    assert len(arrivals) >= 25
    for now, batch in arrivals:
        first = unpack_telemetry(batch)[0]
        waited_ms = now * 1000.0 - first.t_ms  # the pen booted at 0
        assert waited_ms <= 30 + 1, (waited_ms, batch.sample_count)
        assert 1 <= batch.sample_count <= 4


def test_at_a_low_rate_every_sample_still_leaves_within_max_delay() -> None:
    host = Host(seed=24)
    host.ready()
    host.ack(SetTelemetryBatch, 8, 20)
    host.ack(SetTelemetry, 5)
    arrivals: list[tuple[float, TelemetryBatch]] = []
    seen = 0
    for _ in range(1500):
        host.pump(0.001)
        batches = host.of(TelemetryBatch)
        arrivals += [(host.now, b) for b in batches[seen:]]
        seen = len(batches)
    assert len(arrivals) >= 6
    for now, batch in arrivals:
        assert batch.sample_count == 1  # 200 ms apart: each leaves alone after 20 ms
        assert now * 1000.0 - unpack_telemetry(batch)[0].t_ms <= 20 + 1


def test_a_stalled_link_builds_no_backlog_and_every_drop_shows_as_a_gap() -> None:
    """The host stops acknowledging for 2 s while the pen streams 1 kHz: the pen keeps at
    most 8 messages waiting or unacknowledged, drops and counts the rest; when the host
    listens again the numbers show exactly the samples dropped."""
    host = Host(seed=25)
    host.ready()
    host.ack(SetTelemetryBatch, 8, 10)
    host.ack(SetTelemetry, 1000)
    host.run_for(0.2, step=0.001)
    fw = host.pen.firmware
    assert fw.telemetry_skipped == 0
    host.silent = True
    most = 0
    for _ in range(2000):
        host.pump(0.001)
        most = max(most, fw.link.in_flight + fw.link.backlog)
    assert most <= 8
    assert fw.telemetry_skipped >= 1500
    host.silent = False
    host.run_for(0.5, step=0.001)
    host.ack(SetTelemetry, 0)
    batches = host.of(TelemetryBatch)
    received = sum(b.sample_count for b in batches)
    assert received + fw.telemetry_skipped == fw.telemetry_seq
    gaps = sum(b.first_seq - a.first_seq - a.sample_count for a, b in itertools.pairwise(batches))
    assert gaps == fw.telemetry_skipped
    assert len({b.first_seq for b in batches}) == len(batches), "a batch came twice"


def test_no_session_no_batches_and_nothing_is_held_for_one() -> None:
    host = Host(seed=26, session=None)  # Hello, but no OpenSession
    host.ready()
    host.ack(SetTelemetryBatch, 8, 50)
    host.ack(SetTelemetry, 100)
    host.run_for(0.5)
    fw = host.pen.firmware
    assert not host.of(TelemetryBatch) and not host.of(Telemetry)
    skipped = fw.telemetry_skipped
    assert skipped >= 45
    assert not any(isinstance(m, TelemetryBatch | Telemetry) for m in fw._held)
    host.session = 0x5E55_2000
    host.hello()  # names the session now
    host.run_for(0.5)
    batches = host.of(TelemetryBatch)
    assert batches and batches[0].first_seq >= skipped
    assert not host.of(Telemetry)


def test_a_new_epoch_drops_what_was_unsent_and_goes_back_to_singles() -> None:
    host = Host(seed=27)
    host.ready()
    host.ack(SetTelemetryBatch, 8, 100)
    host.ack(SetTelemetry, 100)
    host.run_for(0.5)
    host.silent = True  # these batches are never acknowledged
    host.run_for(0.3)
    host.silent = False
    before = len(host.inbox)
    host.connect()  # a new link epoch, as after a cable pull
    host.hello()
    host.run_for(0.5)
    fw = host.pen.firmware
    assert not any(isinstance(m, TelemetryBatch | Telemetry) for m in fw._held)
    after = host.inbox[before:]
    assert not any(isinstance(m, TelemetryBatch) for m in after), "batches are per epoch"
    assert sum(isinstance(m, Telemetry) for m in after) >= 40
    assert fw.telemetry_skipped > 0  # the old epoch's unacknowledged batches, counted


def test_samples_taken_before_a_reply_arrive_before_it() -> None:
    host = Host(seed=28)
    host.ready()
    host.ack(SetTelemetryBatch, 8, 100)
    host.ack(SetTelemetry, 100)
    host.run_for(0.33)
    ack = host.cmd(SetTelemetry, 0)
    assert isinstance(ack, Ack)
    fw = host.pen.firmware
    position = next(i for i, m in enumerate(host.inbox) if m is ack)
    received = sum(m.sample_count for m in host.inbox[:position] if isinstance(m, TelemetryBatch))
    assert received == fw.telemetry_seq > 0  # every sample taken, before the Ack
    host.run_for(0.3)
    assert sum(b.sample_count for b in host.of(TelemetryBatch)) == received


def test_asking_for_zero_samples_goes_back_to_singles() -> None:
    host = Host(seed=29)
    host.ready()
    host.ack(SetTelemetryBatch, 8, 100)
    host.ack(SetTelemetry, 100)
    host.run_for(0.3)
    assert host.ack(SetTelemetryBatch, 0, 100).value == 0
    batched = len(host.of(TelemetryBatch))
    host.run_for(0.3)
    assert len(host.of(TelemetryBatch)) == batched
    assert len(host.telemetry()) >= 25


def test_a_host_that_never_asks_gets_singles() -> None:
    """Old host × new pen: the pen offers batches but sends them only when asked."""
    host = Host(seed=30)
    identity = host.ready()
    assert identity.capabilities & Capability.TELEMETRY_BATCH
    host.ack(SetTelemetry, 100)
    host.run_for(0.5)
    assert len(host.telemetry()) >= 45
    assert not host.of(TelemetryBatch)


def test_a_pen_without_the_capability_refuses_the_request_and_sends_singles() -> None:
    """New host × old pen (modelled by the capability and the command absent)."""
    host = Host(seed=31, telemetry_batch=False)
    identity = host.ready()
    assert not identity.capabilities & Capability.TELEMETRY_BATCH
    refused = host.nak(SetTelemetryBatch, 8, 100)
    assert isinstance(refused, Nak) and refused.error is ErrorCode.UNKNOWN_COMMAND
    assert refused.value == 0x1C
    host.ack(SetTelemetry, 100)
    host.run_for(0.5)
    assert len(host.telemetry()) >= 45
    assert not host.of(TelemetryBatch)
