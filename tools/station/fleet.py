"""The fleet as the station shows it: ``FleetWatcher`` (host/fleet) fed into a page.

The watcher is the one ``micropen fleet watch`` uses; the station only keeps its task and tells
the fleet page's connections about every changed view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from micropen.host.tasks import cancel_and_wait
from micropen.protocol.errors import MicropenError

from .hub import Channel

__all__ = ["FleetView"]

log = logging.getLogger("micropen.station")
RETRY_S = 5.0


class FleetView:
    """Pens of the fleet from the MQTT broker (``None``: no broker configured)."""

    def __init__(self, mqtt: str | None, *, site: str = "+") -> None:
        self.mqtt = mqtt
        self.site = site
        self.channel = Channel()
        self.error: str | None = None
        self.connected = False
        self._watcher: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def configured(self) -> bool:
        return self.mqtt is not None

    async def start(self) -> None:
        if self.mqtt is None:
            return
        from micropen.host.fleet import FleetWatcher, parse_broker_url

        self._watcher = FleetWatcher(parse_broker_url(self.mqtt), site=self.site)
        self._task = asyncio.create_task(self._follow(), name="station fleet watch")

    async def _follow(self) -> None:
        """The watcher's views, for as long as the station runs. The watcher reconnects on its
        own once it was connected; a broker that cannot be reached at all is tried again every
        RETRY_S, and the page says why meanwhile."""
        import aiomqtt

        watcher = self._watcher
        while True:
            try:
                async with contextlib.aclosing(watcher.updates()) as views:
                    async for view in views:
                        self.connected, self.error = True, None
                        self.channel.publish({"type": "pen", "pen": view.to_dict()})
            except (aiomqtt.MqttError, MicropenError, OSError) as exc:
                self.connected = False
                self.error = (
                    f"broker {self.mqtt}: {exc}; trying again every {RETRY_S:g} s "
                    "(micropen doctor --mqtt URL checks it)"
                )
                self.channel.publish({"type": "error", "error": self.error})
                log.warning("fleet view: %s", self.error)
            await asyncio.sleep(RETRY_S)

    def pens(self) -> list[dict[str, Any]]:
        if self._watcher is None:
            return []
        views = sorted(self._watcher.pens.values(), key=lambda v: (v.site, v.serial))
        return [v.to_dict() for v in views]

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
