"""The record sink of a bridge: every record of a pen connection into the on-disk outbox,
committed before the pen's frame is acknowledged (see :mod:`micropen.host.record_sinks`).

Make it before the pen is opened and give it to the connection, so it also stores what the
pen hands over right after the handshake (records it kept for the next host)::

    records = RecordOutbox(config)
    pen = await AsyncPen.open(url, record_sinks=[records])
    bridge = FleetBridge(pen, broker, config, records=records)

A bridge made without one makes its own and registers it on the open pen (from then on).

Each item becomes its ``events``/``sessions`` payload (the live channels) and its fleet
records (:mod:`.records`), all committed in ONE outbox transaction; an outbox that cannot
store them raises :class:`OutboxError`, and the connection then does not acknowledge the
record (the pen keeps it for the next host session).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from micropen.protocol.messages import Event, FaultReport, RunReport

from ..connection import AsyncPen, ConnectionNotice
from . import payloads as P
from . import records as R
from .errors import FleetError
from .outbox import Outbox
from .topics import PenTopics, encode

if TYPE_CHECKING:
    from .bridge import BridgeConfig

__all__ = ["RecordOutbox"]

log = logging.getLogger("micropen.fleet")


class RecordOutbox:
    """A record sink committing a pen's records to its bridge outbox."""

    def __init__(self, config: BridgeConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.counters = {"queued": 0, "outbox_errors": 0}
        self.last_fault: dict[str, Any] | None = None
        self.on_queued: Callable[[], None] = lambda: None  # the bridge wakes its drain
        self._clock = clock
        self._pen: AsyncPen | None = None
        self._outbox: Outbox | None = None
        self._topics: PenTopics | None = None
        self._closed = False

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            raise FleetError("the record outbox is not attached to an open pen yet")
        return self._outbox

    def on_connected(self, pen: AsyncPen, first: bool) -> None:
        """Called by the connection before the pen session opens (identity known)."""
        self.attach(pen)

    def attach(self, pen: AsyncPen) -> None:
        """Open this pen's outbox and queue its host-session record (once)."""
        if self._outbox is not None:
            return
        ident = pen.identity
        if ident is None:
            raise FleetError("open the pen (AsyncPen.open) before bridging it")
        self._pen = pen
        self._topics = PenTopics(self.config.site, ident.serial)
        outbox = Outbox(
            Path(self.config.queue_dir) / f"outbox-{self.config.site}-{ident.serial}.sqlite",
            clock=self._clock,
        )
        self._outbox = outbox
        try:
            self.queue(self._session_records())
        except FleetError:
            self._outbox = None
            outbox.close()
            raise

    def close(self) -> None:
        """Release the outbox; records after this are not the fleet's (as before a bridge
        was attached): the treatment log still has them, and an export brings them over."""
        self._closed = True
        if self._outbox is not None:
            self._outbox.close()

    def __call__(self, item: Any) -> None:
        """The sink: runs on the pen's loop before the pen's frame is acknowledged."""
        pen = self._pen
        if self._closed:
            return
        if pen is None:
            raise FleetError("a record arrived before the record outbox was attached")
        ident = pen.identity
        boot = ident.boot_id if ident is not None else 0
        now = self._clock()
        assert self._topics is not None
        legacy = self._legacy_payloads(item, self._topics.serial, boot, now)
        records = R.from_pen_record(self.config.site, self._topics.serial, boot, item, now)
        if isinstance(item, ConnectionNotice) and item.kind == "rebooted":
            records += self._session_records()
        self.queue(records, legacy=legacy)

    def _session_records(self) -> list[dict[str, Any]]:
        pen = self._pen
        assert pen is not None and pen.identity is not None
        return [R.session_record(
            self.config.site, pen.identity, host_session=pen.session,
            simulated=pen.is_simulated, at=self._clock(),
        )]  # fmt: skip

    def queue(
        self,
        records: list[dict[str, Any]],
        *,
        legacy: Sequence[tuple[str, dict[str, Any]]] = (),
        remember: bool = False,
    ) -> int:
        """Commit records (and the legacy channel payloads of the same item) in one outbox
        transaction; OutboxError (counted) if the outbox cannot."""
        topics = self._topics
        assert topics is not None
        rows = [(p["id"], topics.topic(c), encode(p)) for c, p in legacy]
        rows += [
            (f"records/{_kind(p)}/{p['id']}", R.record_topic(p["site"], p["serial"], _kind(p)),
             encode(p))
            for p in records
        ]  # fmt: skip
        if not rows:
            return 0
        try:
            added = self.outbox.put_many(rows, remember=remember)
        except FleetError:
            self.counters["outbox_errors"] += 1
            log.error("fleet outbox: %d record(s) NOT queued; not acknowledged", len(rows))
            raise
        self.counters["queued"] += added
        self.on_queued()
        return added

    def _legacy_payloads(
        self, message: Any, serial: str, boot: int, now: float
    ) -> list[tuple[str, dict[str, Any]]]:
        """The events/sessions channel payloads (micropen.event/1, micropen.session/1)."""
        site = self.config.site
        if isinstance(message, RunReport):
            return [("sessions", P.session_payload(site, serial, boot, message, now))]
        if isinstance(message, FaultReport):
            payload = P.fault_payload(site, serial, boot, message, now)
            self.last_fault = {k: payload[k] for k in ("code", "value", "run_id", "at")}
            return [("events", payload)]
        if isinstance(message, Event):
            return [("events", P.pen_event_payload(site, serial, boot, message, now))]
        if isinstance(message, ConnectionNotice):
            return [("events", P.event_payload(
                site, serial, boot_id=boot, kind="link", code=message.kind, value=0, run_id=0,
                pen_t_ms=None, at=now, detail=message.detail,
            ))]  # fmt: skip
        return []

    def publish_calibrations(self) -> int:
        """Queue this pen's finished calibration records not queued before; how many."""
        path = self.config.calibration_store
        if path is None or not Path(path).exists() or self._topics is None:
            return 0
        from ..calibration.records import RecordStore

        serial = self._topics.serial
        found = [r for r in RecordStore(path).history(serial) if r.finished_at is not None]
        ids = {f"records/calibration/calibration:{r.record_id}": r for r in found}
        done = self.outbox.published(ids)
        fresh = [r for key, r in ids.items() if key not in done]
        records = [R.calibration_record(self.config.site, r.to_dict(), at=self._clock())
                   for r in fresh]  # fmt: skip
        return self.queue(records, remember=True)


def _kind(payload: dict[str, Any]) -> str:
    """The record kind of a record payload: its topic's last level."""
    return R.KIND_OF_SCHEMA[str(payload["schema"])]
