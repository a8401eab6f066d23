"""The operator's side of remote commands: send one, wait for its reply.

The reply topic is subscribed before the command is published, so a fast bridge cannot answer
into the void; replies are matched by the command's id, never by arrival order.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiomqtt

from .broker import BrokerConfig
from .errors import FleetError, PayloadError
from .payloads import command_payload
from .topics import PenTopics, decode, encode

__all__ = ["send_command"]


async def send_command(
    broker: BrokerConfig,
    *,
    site: str,
    serial: str,
    command: str,
    args: dict[str, Any] | None = None,
    sender: str | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Publish one command to a pen's bridge and return its reply payload ({id, ok, ...}).

    The command goes to ``.../cmd/{broker user}``; ``sender`` is only a display name (the
    bridge records it as unverified). Raises FleetError when no reply arrives within
    ``timeout`` (the bridge is offline, or the broker's ACL dropped the command: MQTT does not
    tell the sender)."""
    topics = PenTopics(site, serial)
    payload = command_payload(command, args=args, sender=sender, sent_at=time.time())
    # the topic's last level is this broker user: the ACL lets only this user write it, so the
    # bridge logs an authenticated sender (an anonymous test broker proves nothing: "anonymous")
    target = topics.command_topic(broker.username or "anonymous")
    async with broker.client(f"micropen-console-{uuid.uuid4().hex[:12]}") as client:
        await client.subscribe(topics.reply, qos=1)
        await client.publish(target, encode(payload), qos=1)
        try:
            async with asyncio.timeout(timeout):
                return await _reply(client, payload["id"])
        except TimeoutError:
            raise FleetError(
                f"no reply from pen {serial} at site {site} within {timeout:.0f} s; is its "
                "bridge online (micropen fleet watch) and may this user write its cmd topic?"
            ) from None


async def _reply(client: aiomqtt.Client, command_id: str) -> dict[str, Any]:
    async for message in client.messages:
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            continue
        try:
            reply = decode(payload, "reply")
        except PayloadError:
            continue
        if reply["id"] == command_id:
            return reply
    raise FleetError("the broker connection closed before the reply arrived")
