"""Shared helpers of the fleet tests: broker credentials, a collecting subscriber."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiomqtt
from _fleet_certs import PKI

from micropen.host.fleet.broker import BrokerConfig
from micropen.host.fleet.mosquitto import LocalMosquitto

PEN_SERIALS = [f"SIM-{seed:06d}" for seed in range(1, 21)]
ADMIN, WATCHER, OPERATOR = "admin", "watcher", "operator"
# the broker replaces each client id by its username (docs/fleet.md), so two clients of one
# user cannot be connected at once: tests that need several get these accounts
ARCHIVERS = ("archiver-1", "archiver-2")
# the ACL binds every pen to the sites of its roster: the test roster lists each test pen at
# each of these sites (a test that bridges a pen at another site sees its publishes dropped)
TEST_SITES = (
    "pub", "retain", "stop", "deny", "env", "odd", "log", "auth", "acl", "nobody", "will",
    "table", "cli", "restart", "requeue", "scale", "watch", "clinic", "shared",
    "attack", "replay", "sender", "bigcmd", "takeover", "fail", "stopargs", "clinic-r",
    "fault-site", "sig2", "sig15",
)  # fmt: skip


def password(user: str) -> str:
    return f"pw-{user}-secret"


@dataclass
class FleetBroker:
    """A running broker plus the credentials and certificates of the test fleet."""

    mosquitto: LocalMosquitto
    pki: PKI

    def config(
        self,
        user: str | None,
        *,
        pw: str | None = None,
        tls: bool = False,
        mutual: bool = False,
        cafile: Path | None = None,
    ) -> BrokerConfig:
        """A client config for ``user`` (its right password unless ``pw``)."""
        if tls or mutual:
            index = 1 if mutual else 0
            port, host = self.mosquitto.tls_ports[index], "localhost"
        else:
            port, host = self.mosquitto.port, "127.0.0.1"
        config = BrokerConfig(
            host=host,
            port=port,
            tls=tls or mutual,
            username=user,
            password=(pw if pw is not None else password(user)) if user else None,
            cafile=str(cafile or self.pki.ca) if (tls or mutual) else None,
            keepalive=5,
            timeout=5.0,
        )
        if mutual:
            config = replace(
                config, client_cert=str(self.pki.client_cert), client_key=str(self.pki.client_key)
            )
        return config


@dataclass
class Collector:
    """Messages received by a subscriber, with a bounded wait for a condition."""

    messages: list[aiomqtt.Message] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, message: aiomqtt.Message) -> None:
        self.messages.append(message)
        self._changed.set()

    def on(self, suffix: str) -> list[aiomqtt.Message]:
        return [m for m in self.messages if str(m.topic).endswith(suffix)]

    async def wait_for(
        self, predicate: Callable[[list[aiomqtt.Message]], Any], timeout: float = 10.0
    ) -> Any:
        async with asyncio.timeout(timeout):
            while not (result := predicate(self.messages)):
                self._changed.clear()
                await self._changed.wait()
        return result


@contextlib.asynccontextmanager
async def subscribed(
    config: BrokerConfig, *filters: str, identifier: str | None = None, clean: bool = True
) -> AsyncIterator[tuple[aiomqtt.Client, Collector]]:
    """A connected client subscribed (QoS 1) to ``filters``, collecting in the background."""
    client = config.client(identifier or f"test-{id(filters):x}", clean_session=clean)
    collector = Collector()
    async with client:
        for f in filters:
            await client.subscribe(f, qos=1)

        async def pump() -> None:
            async for message in client.messages:
                collector.add(message)

        task = asyncio.create_task(pump())
        try:
            yield client, collector
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
