"""Fleet telemetry over MQTT: pens and benches publish to a broker; live monitoring and
authenticated, deny-by-default remote stop. See docs/fleet.md."""

from .bridge import BridgeConfig, FleetBridge
from .broker import BrokerConfig, parse_broker_url
from .commands import ALLOWED_BY_DEFAULT, CommandPolicy
from .console import send_command
from .errors import BrokerConfigError, BrokerRefused, FleetError, OutboxError, PayloadError
from .outbox import Outbox
from .topics import SCHEMAS, TOPIC_ROOT, PenTopics, topic_filter
from .watch import FleetWatcher, PenView

__all__ = [
    "ALLOWED_BY_DEFAULT",
    "SCHEMAS",
    "TOPIC_ROOT",
    "BridgeConfig",
    "BrokerConfig",
    "BrokerConfigError",
    "BrokerRefused",
    "CommandPolicy",
    "FleetBridge",
    "FleetError",
    "FleetWatcher",
    "Outbox",
    "OutboxError",
    "PayloadError",
    "PenTopics",
    "PenView",
    "parse_broker_url",
    "send_command",
    "topic_filter",
]
