"""The pen's reply cache, scoped to host sessions.

Why it exists: a host that loses the link re-sends the commands it had no answer for, with
their original ``cmd_id``. The pen must answer such a re-send from memory instead of executing
it a second time (hazard 9: a ``Run`` executed twice).

Why it is scoped: a ``cmd_id`` only means something inside the host session that chose it. A
second host process numbering its commands from 1, or one host reusing an id for another
command, must never be answered with someone else's reply — that would acknowledge a ``Run``
or a ``Stop`` that never happened. So an entry is a hit only when the *same session* sends the
*same command* (message id and body) under the *same* ``cmd_id``; anything else is executed.

The pen keeps the caches of the few most recent sessions (RAM, lost at reboot). A host that
reopens its session learns whether its cache survived (:meth:`SessionCaches.open` returns
``True``), and re-sends only if it did.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from micropen.protocol import limits as L
from micropen.protocol.schema import Message

__all__ = ["MAX_SESSIONS", "REPLIES_PER_SESSION", "SessionCaches"]

MAX_SESSIONS = L.REPLY_CACHE_SESSIONS  # the least recently opened is forgotten first
REPLIES_PER_SESSION = L.REPLY_CACHE_PER_SESSION


@dataclass(frozen=True, slots=True)
class _Entry:
    request: bytes  # the command as encoded, cmd_id included: the identity of the command
    reply: Message


class SessionCaches:
    """Per-session reply caches, bounded in sessions and in replies per session."""

    def __init__(
        self, max_sessions: int = MAX_SESSIONS, replies: int = REPLIES_PER_SESSION
    ) -> None:
        self._max_sessions, self._replies = max_sessions, replies
        self._sessions: OrderedDict[int, OrderedDict[int, _Entry]] = OrderedDict()

    def open(self, session: int) -> bool:
        """Make ``session`` the most recent one; True when its cache was still held."""
        if session in self._sessions:
            self._sessions.move_to_end(session)
            return True
        self._sessions[session] = OrderedDict()
        while len(self._sessions) > self._max_sessions:
            self._sessions.popitem(last=False)
        return False

    def lookup(self, session: int, command: Message) -> Message | None:
        """The reply already given to this very command by this session, if any."""
        cache = self._sessions.get(session)
        if cache is None:
            return None
        entry = cache.get(command[0])
        if entry is None or entry.request != command.encode():
            return None
        return entry.reply

    def store(self, session: int, command: Message, reply: Message) -> None:
        cache = self._sessions.get(session)
        if cache is None:
            return
        cmd_id = command[0]
        cache.pop(cmd_id, None)  # a reused id replaces the older command's entry
        cache[cmd_id] = _Entry(command.encode(), reply)
        if len(cache) > self._replies:
            cache.popitem(last=False)

    def __len__(self) -> int:
        return len(self._sessions)
