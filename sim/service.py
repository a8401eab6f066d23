"""Service mode: the only way the pen runs on the bench fixture (hazard 1, depth beyond the
treatment area).

The bench fixture profile reaches the pen's whole envelope and every speed level, which
calibration needs and no skin may get. So the firmware keeps the two apart: outside service
mode a bench-fixture run is refused (``SERVICE_MODE_REQUIRED``), inside it a treatment-area
run is refused (``SERVICE_MODE_ACTIVE``). Service mode belongs to the host session that
entered it; it ends when that host asks, when another session takes the pen, when the watchdog
fires or a fault latches, and at every reboot (it lives in RAM only).
"""

from __future__ import annotations

from dataclasses import dataclass

from micropen.protocol import limits as L
from micropen.protocol.messages import ErrorCode

from .cartridge import Refusal

__all__ = ["ServiceMode", "check_area"]


@dataclass
class ServiceMode:
    """Who holds service mode: a host session id (or, for a host without one, a link epoch).
    Held exactly while an epoch is recorded (epochs are never 0 on a live link)."""

    session: int | None = None
    epoch: int | None = None

    @property
    def held(self) -> bool:
        return self.epoch is not None

    def enter(self, session: int | None, epoch: int) -> None:
        self.session, self.epoch = session, epoch

    def leave(self) -> bool:
        """End it; True when it was on (the caller reports why)."""
        was = self.held
        self.session = self.epoch = None
        return was

    def held_by(self, session: int | None, epoch: int) -> bool:
        """Still the holder's: the same named session (across its reconnects), or for an
        unnamed one the same link epoch."""
        if not self.held:
            return False
        if self.session is not None:
            return session == self.session
        return epoch == self.epoch


def check_area(area: L.Area, in_service: bool) -> Refusal | None:
    """The fixture only in service mode; in service mode the fixture only."""
    fixture = area is L.Area.BENCH_FIXTURE
    if fixture and not in_service:
        return Refusal.of(ErrorCode.SERVICE_MODE_REQUIRED, int(area), 0)
    if not fixture and in_service:
        return Refusal.of(ErrorCode.SERVICE_MODE_ACTIVE, int(area), 0)
    return None
