"""TCP to a pen or a simulator (``socket://host:port``, pyserial's URL form)."""

from __future__ import annotations

import asyncio
import contextlib

from ..errors import TransportError
from ..url import PenURL
from .nodelay import set_nodelay

__all__ = ["SocketTransport"]


class SocketTransport:
    """asyncio streams; TCP_NODELAY because every frame is latency-bound."""

    is_simulated = False
    bench = None

    def __init__(self, url: PenURL) -> None:
        host, _, port = url.target.rpartition(":")
        if not port.isdigit():
            raise TransportError(f"{url.text!r}: the port must be a number")
        self._host, self._port = host or "127.0.0.1", int(port)
        self.description = f"TCP {self._host}:{self._port}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        try:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        except OSError as exc:
            raise TransportError(
                f"cannot connect to {self.description}: {exc.strerror or exc}; is the pen or "
                "`micropen sim serve --tcp` running there?"
            ) from exc
        set_nodelay(self._writer.get_extra_info("socket"))

    async def read(self) -> bytes:
        if self._reader is None:
            raise TransportError(f"{self.description} is not open")
        try:
            data = await self._reader.read(65536)
        except OSError as exc:
            raise TransportError(f"{self.description}: {exc}") from exc
        if not data:
            raise TransportError(f"{self.description} closed by the peer")
        return data

    def write(self, data: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            raise TransportError(f"{self.description} is not open")
        self._writer.write(data)

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
