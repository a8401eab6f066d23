"""Helpers of the ingest tests: ending an account's persistent session on the broker."""

from __future__ import annotations

from dataclasses import replace

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from micropen.host.fleet.broker import BrokerConfig


async def fresh_session(config: BrokerConfig) -> None:
    """End any session this account left on the broker (the broker makes the username the
    client id, so a stopped worker's persistent session, with its subscription, is the
    account's): a clean-start connection with session expiry 0."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    async with replace(config, protocol=5).client("x", clean_session=True, properties=props):
        pass
