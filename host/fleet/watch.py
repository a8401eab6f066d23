"""Watching the fleet: one live view per pen, from retained status and fault events.

The broker hands a new subscriber every pen's retained status at once, so a watcher started at
any time sees the whole fleet, including pens whose bridge vanished (their last will says
``online: false``). Faults arriving on ``events`` update the pen's ``last_fault`` between status
messages. Reconnects follow aiomqtt's documented pattern: a loop catching ``MqttError``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator
from dataclasses import asdict, dataclass
from typing import Any

import aiomqtt

from .broker import BrokerConfig
from .errors import PayloadError
from .topics import decode, parse_topic, topic_filter

__all__ = ["FleetWatcher", "PenView"]

log = logging.getLogger("micropen.fleet")


@dataclass(frozen=True, slots=True)
class PenView:
    """What the watch table shows for one pen."""

    site: str
    serial: str
    online: bool
    link: str | None = None
    state: str | None = None
    fault: str | None = None
    cartridge: str | None = None
    last_fault: str | None = None
    calibration_due: str | None = None
    run: str | None = None
    updated_at: float | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def view_from_status(
    site: str, serial: str, status: dict[str, Any], previous: PenView | None
) -> PenView:
    """A status payload → PenView (offline payloads keep the last known pen fields). Site and
    serial come from the topic, which the broker's ACL ties to the publisher, not the payload."""
    if not status["online"]:
        base = previous or PenView(site, serial, False)
        return PenView(
            site, serial, False, link=None, state=base.state, fault=base.fault,
            cartridge=base.cartridge, last_fault=base.last_fault,
            calibration_due=base.calibration_due, run=base.run,
            updated_at=status.get("updated_at"), reason=status.get("reason"),
        )  # fmt: skip
    cartridge = status.get("cartridge")
    run = status.get("run")
    last_fault = status.get("last_fault")
    return PenView(
        site=site,
        serial=serial,
        online=True,
        link=status.get("link"),
        state=status.get("state"),
        fault=status.get("fault"),
        cartridge=f"{cartridge['id']} {cartridge['state']}" if cartridge else None,
        last_fault=_fault_text(last_fault) or (previous.last_fault if previous else None),
        calibration_due=status.get("calibration_due"),
        run=f"#{run['id']} {run['outcome']} {run['strokes']}" if run else None,
        updated_at=status.get("updated_at"),
    )


def _fault_text(fault: dict[str, Any] | None) -> str | None:
    if not fault:
        return None
    return f"{fault.get('code')} ({fault.get('value')})"


class FleetWatcher:
    """Live views of the pens of one site (``+``: every site)."""

    def __init__(self, broker: BrokerConfig, *, site: str = "+", backoff: float = 1.0) -> None:
        self.broker = broker
        self.site = site
        self.backoff = backoff
        self.pens: dict[tuple[str, str], PenView] = {}
        self.counters = {"messages": 0, "bad_payloads": 0, "reconnects": 0}

    async def updates(self) -> AsyncGenerator[PenView, None]:
        """Yield a pen's view each time it changes; reconnects until the consumer stops."""
        first = True
        while True:
            client = self.broker.client(f"micropen-watch-{uuid.uuid4().hex[:12]}")
            try:
                async with client:
                    await client.subscribe(topic_filter("status", site=self.site), qos=1)
                    await client.subscribe(topic_filter("events", site=self.site), qos=1)
                    first = False
                    async for message in client.messages:
                        view = self.apply(str(message.topic), message.payload)
                        if view is not None:
                            yield view
            except aiomqtt.MqttError as exc:
                if first:
                    raise
                self.counters["reconnects"] += 1
                log.warning("fleet watch: %s; reconnecting in %.1f s", exc, self.backoff)
                await asyncio.sleep(self.backoff)

    def apply(self, topic: str, payload: Any) -> PenView | None:
        """Fold one message into the views; returns the changed view (None if nothing did)."""
        self.counters["messages"] += 1
        try:
            site, serial, channel = parse_topic(topic)
            if not payload:  # a cleared retained status: the pen left the fleet
                return (
                    None
                    if self.pens.pop((site, serial), None) is None
                    else PenView(site, serial, False, reason="removed")
                )
            data = decode(payload, channel)
        except PayloadError as exc:
            self.counters["bad_payloads"] += 1
            log.warning("fleet watch: ignoring %s: %s", topic, exc)
            return None
        key = (site, serial)
        previous = self.pens.get(key)
        if channel == "status":
            view = view_from_status(site, serial, data, previous)
        elif channel == "events" and data.get("kind") == "fault" and previous is not None:
            text = f"{data.get('code')} ({data.get('value')})"
            view = _replace(previous, last_fault=text)
        else:
            return None
        self.pens[key] = view
        return view


def _replace(view: PenView, **changes: Any) -> PenView:
    values = view.to_dict()
    values.update(changes)
    return PenView(**values)
