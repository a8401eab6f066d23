"""The protocol's errors, split by whose fault they are (as h11 does).

::

    MicropenError                  root of every error micropen raises
    ├── LocalProtocolError         the caller misused the API or gave a value out of range
    └── RemoteProtocolError        the peer sent something invalid (never a crash, always this)

The host and the simulator extend this tree; they never raise bare exceptions for protocol
problems. Messages name the value, the limit and what to do.
"""

from __future__ import annotations

__all__ = ["LocalProtocolError", "MicropenError", "RemoteProtocolError"]


class MicropenError(Exception):
    """Root of every error micropen raises on purpose."""


class LocalProtocolError(MicropenError, ValueError):
    """This side asked for something the protocol does not allow (bad value, wrong state)."""


class RemoteProtocolError(MicropenError):
    """The peer sent bytes that do not form a valid message."""
