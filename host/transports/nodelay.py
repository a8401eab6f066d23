"""TCP_NODELAY on every TCP connection we open.

The protocol is request/response with small frames: with Nagle's algorithm on, a frame written
while an earlier one waits for its ACK is held until that ACK comes — against a peer that delays
its ACKs (40 ms on Linux) every request then costs 40 ms. asyncio sets the option on its own
connections since Python 3.7, and pyserial's ``rfc2217://`` does; pyserial's ``socket://`` does
not. We set it ourselves everywhere, so no path depends on a library default.
"""

from __future__ import annotations

import socket
from typing import Any

__all__ = ["set_nodelay", "set_nodelay_on_port"]


def set_nodelay(sock: Any) -> None:
    """Turn Nagle off on a TCP socket (``socket.socket`` or asyncio's ``TransportSocket``;
    a Unix socket or None is left alone)."""
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def set_nodelay_on_port(port: Any) -> None:
    """The same for a pyserial port opened from a ``socket://`` or ``rfc2217://`` URL (its
    socket is the private ``_socket``; a serial device has none)."""
    set_nodelay(getattr(port, "_socket", None))
