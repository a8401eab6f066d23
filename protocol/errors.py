"""The protocol's errors, split by whose fault they are (as h11 does).

::

    MicropenError                  root of every error micropen raises
    ├── LocalProtocolError         the caller misused the API or gave a value out of range
    └── RemoteProtocolError        the peer sent something invalid (never a crash, always this)
        └── FieldOutOfRange        one field of a well-formed message is outside its range

The host and the simulator extend this tree; they never raise bare exceptions for protocol
problems. Messages name the value, the limit and what to do.
"""

from __future__ import annotations

__all__ = ["FieldOutOfRange", "LocalProtocolError", "MicropenError", "RemoteProtocolError"]


class MicropenError(Exception):
    """Root of every error micropen raises on purpose."""


class LocalProtocolError(MicropenError, ValueError):
    """This side asked for something the protocol does not allow (bad value, wrong state)."""


class RemoteProtocolError(MicropenError):
    """The peer sent bytes that do not form a valid message."""


class FieldOutOfRange(RemoteProtocolError):
    """A message of the right size whose field ``name`` is outside its declared range.

    ``limit`` is the bound it broke (the lower one when below, the upper one when above; 0 for
    a value that is no member of its enumeration); ``refusal`` is the error code a pen answers
    with (the field's declared ``refuse=``, such as ``DEPTH_OUT_OF_RANGE``), or 0 when the
    field declares none and the answer is ``MALFORMED``.
    """

    def __init__(
        self, owner: str, name: str, value: int, limit: int, refusal: int, text: str
    ) -> None:
        super().__init__(text)
        self.owner, self.name, self.value, self.limit, self.refusal = (
            owner,
            name,
            value,
            limit,
            refusal,
        )
