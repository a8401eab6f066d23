"""Requests waiting for the pen's answer: numbering, matching replies, failing, re-sending.

Why a class of its own: "no reply matches the wrong request" and "nothing runs twice" are
decided here and nowhere else. A reply resolves only the request with its ``cmd_id`` and of
the type that request expects; a late reply (its request timed out) is counted, never matched.
After a reconnect, an unanswered command is re-sent only where that cannot execute it twice
(:meth:`PendingRequests.after_reconnect`).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass

from micropen.protocol.messages import (
    CalRead,
    EmergencyStop,
    GetCartridge,
    GetStatus,
    Nak,
    SimGet,
    Stop,
)
from micropen.protocol.schema import Kind, Message

from .errors import HostError, OutcomeUnknown, PenRebooted

__all__ = ["QUERIES", "SAFE_TO_REPEAT", "Pending", "PendingRequests"]

# Safe to send again whatever happened to the first copy: queries change nothing, and the stops
# are idempotent (the pen always executes them, never answers them from its cache).
QUERIES = (GetStatus, GetCartridge, CalRead, SimGet)
SAFE_TO_REPEAT = (*QUERIES, Stop, EmergencyStop)


@dataclass(slots=True)
class Pending:
    message: Message
    future: asyncio.Future[Message]
    urgent: bool


class PendingRequests:
    """The commands of one host session that the pen has not answered yet."""

    def __init__(self, counters: dict[str, int]) -> None:
        self._ids = itertools.count(random.randrange(1, 1 << 30))
        self._table: dict[int, Pending] = {}
        self.counters = counters  # commands, late_replies, mismatched_replies

    def new_id(self) -> int:
        """The next command number; 0 is reserved (the pen answers a message too short to
        carry a number with cmd_id 0), so the count skips it when it wraps."""
        while True:
            cmd_id = next(self._ids) & 0xFFFF_FFFF
            if cmd_id:
                return cmd_id

    def add(self, message: Message, urgent: bool) -> asyncio.Future[Message]:
        """Register ``message`` (its ``cmd_id`` from :meth:`new_id`) before it is sent."""
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._table[message.cmd_id] = Pending(message, future, urgent)  # type: ignore[attr-defined]
        self.counters["commands"] += 1
        return future

    def discard(self, cmd_id: int) -> None:
        self._table.pop(cmd_id, None)

    def resolve(self, reply: Message) -> None:
        """A reply arrived: it answers its own request, or nothing."""
        pending = self._table.get(reply.cmd_id)  # type: ignore[attr-defined]
        if pending is None or pending.future.done():
            self.counters["late_replies"] += 1  # its request timed out: never mis-matched
            return
        expected = type(pending.message).REPLY
        if expected is not None and not isinstance(reply, expected | Nak):
            # not an answer to this request (a stale cache entry, a confused peer): never let
            # it resolve the request
            self.counters["mismatched_replies"] += 1
            return
        pending.future.set_result(reply)

    def fail_all(self, error: BaseException) -> None:
        for cmd_id, pending in list(self._table.items()):
            if not pending.future.done():
                pending.future.set_exception(error)
            self._table.pop(cmd_id, None)

    def after_reconnect(self, resumed: bool, rebooted: bool) -> list[Pending]:
        """What to re-send after a reconnect; the rest fail now.

        Only while the pen still holds this session's reply cache (``resumed``) is re-sending
        safe for every command; otherwise a command that may already have run fails as
        OutcomeUnknown (the caller resolves it from the pen's state). After a reboot only
        queries are re-sent: the rest fail as PenRebooted (the pen forgot them)."""
        resend: list[Pending] = []
        for cmd_id, pending in list(self._table.items()):
            message = pending.message
            if message.KIND not in (Kind.COMMAND, Kind.SIM_COMMAND) or pending.future.done():
                continue
            if isinstance(message, QUERIES if rebooted else SAFE_TO_REPEAT) or (
                resumed and not rebooted
            ):
                resend.append(pending)
                continue
            pending.future.set_exception(_not_resent(type(message).__name__, rebooted))
            self._table.pop(cmd_id, None)
        return resend

    def __len__(self) -> int:
        return len(self._table)

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._table))

    def get(self, cmd_id: int) -> Pending | None:
        return self._table.get(cmd_id)


def _not_resent(name: str, rebooted: bool) -> HostError:
    if rebooted:
        return PenRebooted(
            f"the pen restarted while {name} was pending; it was not re-sent — check status() "
            "before repeating it"
        )
    return OutcomeUnknown(
        f"the link dropped before the pen answered {name} and the pen no longer holds this "
        "session's replies; it may or may not have been executed — call status() to "
        "resynchronise"
    )
