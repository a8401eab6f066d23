"""What every transport offers the connection: open, read, write, close."""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Transport"]


class Transport(Protocol):
    """Bytes to and from one pen. ``open`` may be called again after ``close`` (reconnect)."""

    description: str
    is_simulated: bool
    bench: Any  # bench instruments reachable through this transport (the simulator), else None

    async def open(self) -> None:
        """Open the port; raises TransportError saying what to do when it cannot."""

    async def read(self) -> bytes:
        """Wait for at least one byte; raises TransportError when the port is gone."""

    def write(self, data: bytes) -> None:
        """Queue bytes for sending; never blocks the event loop for long."""

    async def close(self) -> None:
        """Release the port. Safe to call twice."""
