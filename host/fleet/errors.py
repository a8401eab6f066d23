"""Errors of the fleet bridge and watcher.

::

    MicropenError (micropen.protocol.errors)
    └── HostError (micropen.host.errors)
        └── FleetError
            ├── BrokerConfigError (also InvalidInput)   bad broker URL, site name or credential file
            ├── BrokerRefused                          the broker refused these credentials
            ├── PayloadError (also RemoteProtocolError) a message on the bus breaks its schema
            └── OutboxError                            the on-disk queue cannot store or read
"""

from __future__ import annotations

from micropen.protocol.errors import RemoteProtocolError

from ..errors import HostError, InvalidInput

__all__ = ["BrokerConfigError", "BrokerRefused", "FleetError", "OutboxError", "PayloadError"]


class FleetError(HostError):
    """Root of the fleet errors."""


class BrokerConfigError(FleetError, InvalidInput):
    """The broker URL, a topic level or a credential/certificate file is not usable."""


class BrokerRefused(FleetError):
    """The broker refused the username/password or client certificate at the first connect."""


class PayloadError(FleetError, RemoteProtocolError):
    """A message on the bus is not JSON of the expected schema; it is ignored, not guessed."""


class OutboxError(FleetError):
    """The on-disk outbox could not store or read an entry; the entry must not be acked."""
