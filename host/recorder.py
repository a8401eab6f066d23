"""Feeds one pen connection into the treatment log.

The connection calls these hooks from its event loop *before* it flushes the link, so the
acknowledgement of a pen event leaves the host only after the event is committed: if the host
dies first, the pen still holds the event and re-sends it to the next connection. The pen hands
nothing over before the host has opened its session (``OpenSession``), and the connection
calls :meth:`SessionRecorder.on_connected` before it opens one, so there is no window in which
a record is acknowledged and not yet stored. Telemetry
samples are batched and committed every ``flush_interval`` (they are a record of measurements,
not of events; each batch is one transaction).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from micropen.protocol import limits as L
from micropen.protocol.messages import Event, FaultReport, RunMode, RunReport, Telemetry

from .connection import ConnectionNotice
from .security_events import describe
from .treatment_log import SampleRow, TreatmentLog

if TYPE_CHECKING:
    from .connection import AsyncPen

__all__ = ["SessionRecorder"]


class SessionRecorder:
    """One treatment-log session per pen connection."""

    def __init__(
        self,
        log: TreatmentLog,
        *,
        operator: str = "",
        flush_interval: float = 0.1,
        purpose: str = "treatment",
        owns_log: bool = False,
    ):
        self.log = log
        self.operator = operator
        self.purpose = purpose
        self.owns_log = owns_log  # close the log with the session (it was opened for it)
        self.flush_interval = flush_interval
        self.session_id: int | None = None
        self._samples: list[SampleRow] = []
        self._last_flush = -math.inf
        self._boot_id = 0
        self._cartridge: tuple[int, str] = (0, "")

    def on_connected(self, pen: AsyncPen, first: bool) -> None:
        ident = pen.identity
        assert ident is not None
        self._boot_id = ident.boot_id
        if self.session_id is None:
            self.session_id = self.log.start_session(
                pen_serial=ident.serial,
                pen_model=ident.model,
                firmware=f"{ident.firmware_major}.{ident.firmware_minor}.{ident.firmware_patch}",
                protocol_version=ident.protocol_version,
                boot_id=ident.boot_id,
                operator=self.operator,
                pen_url=pen.url,
                is_simulated=pen.is_simulated,
                purpose=self.purpose,
            )
        self.log.close_interrupted_runs(self.session_id, boot_id=ident.boot_id)

    def on_notification(self, message: Any) -> None:
        if self.session_id is None:
            return
        if isinstance(message, Telemetry):
            self._samples.append(SampleRow.from_telemetry(message, time.time()))
            if len(self._samples) >= 1000:
                self.flush_samples(force=True)
        elif isinstance(message, RunReport):
            self.flush_samples(force=True)
            self.log.record_run_report(
                self.session_id,
                boot_id=self._boot_id,
                run_id=message.run_id,
                outcome=message.outcome.name,
                strokes=message.strokes,
                target=message.target,
                duration_ms=message.duration_ms,
                area=L.Area(message.area).name.lower(),
                depth_um=message.depth_um,
                rate_sps=message.rate_sps,
                cartridge_id=message.cartridge_id,
            )
        elif isinstance(message, FaultReport):
            self._event("fault", message.fault.name, message.value, message.run_id, message.t_ms)
        elif isinstance(message, Event):
            detail = describe(message)
            self._event(
                "event", message.code.name, message.value, message.run_id, message.t_ms, detail
            )
        elif isinstance(message, ConnectionNotice):
            self._event("link", message.kind, 0, 0, None, message.detail)

    def on_host_event(self, code: str, value: int, run_id: int, detail: str) -> None:
        """Something the host itself did or found (e.g. it stopped a drifting run)."""
        if self.session_id is not None:
            self._event("host", code, value, run_id, None, detail)

    def on_override(self, depth_um: int, area: str, reason: str) -> None:
        if self.session_id is not None:
            self.log.record_override(self.session_id, depth_um=depth_um, area=area, reason=reason)

    def on_run_started(
        self,
        pen: AsyncPen,
        run_id: int,
        area: L.AreaProfile,
        mode: RunMode,
        target: int,
        *,
        cartridge_lot: str,
        override_reason: str | None,
    ) -> None:
        if self.session_id is None or pen.last_status is None:
            return
        status = pen.last_status
        self.log.record_run_start(
            self.session_id,
            boot_id=self._boot_id,
            run_id=run_id,
            area=area.name,
            depth_um=status.depth_set_um,
            rate_sps=status.rate_set_sps,
            mode=mode.name,
            target=target,
            cartridge_id=status.cartridge_id,
            cartridge_lot=cartridge_lot,
            soft_cap_override_reason=override_reason,
        )

    def flush_samples(self, force: bool = False, now: float | None = None) -> None:
        """Store the buffered samples: when ``force``d, or when ``now`` (the connection's
        clock, seconds) is ``flush_interval`` past the last flush."""
        if not self._samples:
            return
        if not force and (now is None or now - self._last_flush < self.flush_interval):
            return
        assert self.session_id is not None
        batch, self._samples = self._samples, []
        self.log.add_samples(self.session_id, batch)
        if now is not None:
            self._last_flush = now

    def close_session(self, outcome: str) -> None:
        try:
            if self.session_id is not None:
                self.flush_samples(force=True)
                self.log.end_session(self.session_id, outcome=outcome)
                self.session_id = None
        finally:
            if self.owns_log:
                self.log.close()

    def _event(
        self, kind: str, code: str, value: int, run_id: int, t_ms: int | None, detail: str = ""
    ) -> None:
        assert self.session_id is not None
        self.log.record_event(
            self.session_id,
            kind=kind,
            code=code,
            value=value,
            run_id=run_id,
            pen_t_ms=t_ms,
            detail=detail,
            boot_id=self._boot_id,
        )
