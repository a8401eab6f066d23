"""The pen's telemetry as single samples, whichever way it came, and the samples that did not.

A pen that reports ``Capability.TELEMETRY_BATCH`` sends ``TelemetryBatch`` frames (up to 8
samples each, on the reliable link) once the host asked with ``SetTelemetryBatch``; any other
pen, or before the request, sends single ``Telemetry`` datagrams. :class:`TelemetryStream` is
the one place batches are unpacked: everything downstream (listeners, ``monitor``, the
treatment log, the fleet bridge, the rate check) sees one ``Telemetry`` per sample, in the
pen's order.

The pen numbers every sample it takes from boot, sent or not (``first_seq``), so the numbers
show what the host did not get: samples the pen dropped because the link was stalled or slow
(it keeps no telemetry backlog), or taken while no session was open (across a reconnect). The
count of those is ``missing``. Single samples carry no number; those received between two
batches are taken off the gap, so a switch between singles and batches is not a loss.
"""

from __future__ import annotations

from micropen.protocol.errors import RemoteProtocolError
from micropen.protocol.messages import (
    TELEMETRY_SEQ_MOD,
    Telemetry,
    TelemetryBatch,
    telemetry_sample,
    unpack_telemetry,
)

__all__ = ["TelemetryStream"]


class TelemetryStream:
    """Unpacks batches into samples and counts gaps in the pen's sample numbers (per boot)."""

    __slots__ = ("_boot_id", "_next", "_singles", "bad_samples", "batches", "missing")

    def __init__(self) -> None:
        self._boot_id: int | None = None
        self._next: int | None = None  # the number the next batch should start at
        self._singles = 0  # single samples since the last batch (they carry no number)
        self.batches = 0
        self.missing = 0  # samples the pen took on this boot that never reached us
        self.bad_samples = 0  # samples in a batch that failed their range checks

    def boot(self, boot_id: int) -> None:
        """The pen's boot, from each handshake: a new boot numbers its samples from 0."""
        if boot_id != self._boot_id:
            self._boot_id, self._next, self._singles = boot_id, None, 0

    def single(self) -> None:
        """A single Telemetry arrived (no number: it fills part of the next gap)."""
        self._singles += 1

    def unpack(self, batch: TelemetryBatch) -> list[Telemetry]:
        """The batch's samples, each range-checked like a single Telemetry; one that fails
        is left out and counted (the rest still arrive)."""
        self.batches += 1
        expected, first = self._next, batch.first_seq
        count = batch.sample_count
        if expected is not None:
            gap = (first - expected) % TELEMETRY_SEQ_MOD
            if gap < TELEMETRY_SEQ_MOD // 2:  # a batch from before (impossible in order): none
                self.missing += max(0, gap - self._singles)
        self._singles = 0
        self._next = (first + count) % TELEMETRY_SEQ_MOD
        try:
            return unpack_telemetry(batch)
        except RemoteProtocolError:
            return self._unpack_each(batch)

    def _unpack_each(self, batch: TelemetryBatch) -> list[Telemetry]:
        samples = []
        for index in range(batch.sample_count):
            try:
                samples.append(telemetry_sample(batch, index))
            except RemoteProtocolError:
                self.bad_samples += 1
        return samples
