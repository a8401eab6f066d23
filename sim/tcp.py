"""The TCP plumbing the pen server and the bench server share: a non-blocking listener, and
an accept that hands back a non-blocking, no-delay socket (every frame is latency-bound)."""

from __future__ import annotations

import socket

__all__ = ["accept_nodelay", "listen"]


def listen(host: str, port: int) -> socket.socket:
    """A non-blocking listening socket on ``host:port`` (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family)
    listener.setblocking(False)
    return listener


def accept_nodelay(listener: socket.socket) -> socket.socket | None:
    """The next connection, ready for a selector loop; None if it went away first."""
    try:
        sock, _ = listener.accept()
    except (BlockingIOError, ConnectionAbortedError):
        return None
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
