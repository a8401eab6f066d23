"""Record sinks: other durable stores fed on the same path as the treatment log.

A pen hands its records (run reports, events, fault reports) over reliably, and the host
acknowledges a record only once it is stored. The treatment log is one store; a *record sink*
is another (the fleet bridge's on-disk outbox is one). :meth:`AsyncPen.add_record_sink`
registers a sink; the connection calls every sink with every record *before* the pen's frame is
acknowledged, right after the treatment log took it:

* pen records: :class:`~micropen.protocol.messages.RunReport`, ``FaultReport``, ``Event``;
* link notices: :class:`~micropen.host.connection.ConnectionNotice`;
* host records: :class:`OverrideRecord` (before the deeper depth is sent to the pen) and
  :class:`RunStartRecord` (after the pen accepted the run; it carries the cartridge's lot).

A sink given to the connection when it is made (``AsyncPen.open(url, record_sinks=[...])``)
sees every record of the session, also those the pen hands over right after the handshake; if
it has an ``on_connected(pen, first)`` method, that is called before the pen session opens
(the pen's identity is known then), as the treatment log's recorder is.

A sink stores the record and returns, or raises a :class:`MicropenError` (its own error type)
when it could not: the connection then ends the link epoch before any acknowledgement leaves,
exactly as for a treatment log that cannot write (the pen keeps the record and re-sends it to
the next host session); for an override, the depth is not sent. Any other exception is a bug
of the sink and is raised as it is. A sink must be quick (one local transaction): it runs on
the connection's event loop, well inside the pen's retransmit timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["OverrideRecord", "RecordSink", "RunStartRecord"]

RecordSink = Callable[[Any], None]


@dataclass(frozen=True, slots=True)
class OverrideRecord:
    """A depth beyond the soft cap, with its reason, about to be set on the pen."""

    serial: str
    boot_id: int
    depth_um: int
    area: str
    reason: str
    at: float  # host wall-clock time, s since 1970


@dataclass(frozen=True, slots=True)
class RunStartRecord:
    """A run the pen accepted: what was set, and the cartridge (id and lot) it runs on."""

    serial: str
    boot_id: int
    run_id: int
    area: str
    depth_um: int
    rate_sps: int
    mode: str
    target: int
    cartridge_id: int
    cartridge_lot: str
    override_reason: str | None
    at: float
