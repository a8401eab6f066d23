"""Durable, time-bounded replay protection for remote commands (hazards 8 and 9).

A command carries an id and ``sent_at`` (the console's wall clock). The bridge refuses a command
sent more than ``max_age`` seconds ago or more than ``skew`` seconds in the future, and executes
each id at most once: the ids it admitted are committed to SQLite *before* the command runs and
kept until their command would be too old anyway, so a captured ``stop`` replayed after any
number of other commands, or after a bridge restart, is refused (``replay``); replayed later
still, it is refused as too old (``expired``). The store is therefore bounded by time, not by
a count: at most the commands of one window.

Why a file of its own (``replay-{site}-{serial}.sqlite`` in the bridge's queue folder) and not a
table in the outbox: the outbox holds what goes *out* and is deleted on PUBACK; this holds what
came *in* and expires by time; keeping them apart keeps each schema and its migrations simple,
and a damaged or deleted replay file costs at most one window of protection, never queued
events. Same durability rules as the outbox: WAL, ``synchronous=FULL``, commit before acting.
If the store fails (disk full), commands are refused, except ``stop``, which runs anyway: a
stop executed twice does no harm, a stop refused may (hazard 2).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from .commands import Command, CommandRefused
from .errors import FleetError

__all__ = ["ReplayGuard"]

FORMAT = 1
log = logging.getLogger("micropen.fleet")


class ReplayGuard:
    """Admit each command id once, within ``max_age`` s of its ``sent_at``."""

    def __init__(
        self,
        path: Path,
        *,
        max_age: float = 60.0,
        skew: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (max_age > 0 and skew >= 0):
            raise FleetError(f"replay window {max_age} s / skew {skew} s: use positive seconds")
        self.path = Path(path)
        self.max_age, self.skew, self._clock = max_age, skew, clock
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db: sqlite3.Connection | None = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > FORMAT:
                raise FleetError(
                    f"{self.path} is replay store format {version}; this micropen reads "
                    f"{FORMAT}: upgrade micropen or give another --queue-dir"
                )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, sender TEXT, "
                "sent_at REAL NOT NULL, received_at REAL NOT NULL, keep_until REAL NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS seen_keep ON seen (keep_until)")
            self._db.execute(f"PRAGMA user_version={FORMAT}")
        except sqlite3.Error as exc:
            raise FleetError(f"cannot open the replay store {self.path}: {exc}") from exc

    def check_age(self, command: Command) -> float:
        """The time now if ``command`` is inside the window, else CommandRefused ``expired``."""
        now = self._clock()
        age = now - command.sent_at
        if age > self.max_age:
            raise CommandRefused(
                "expired", f"command sent {age:.0f} s ago; commands older than {self.max_age:g} s "
                "are refused (replay protection): send a new one", command.id, command.name,
            )  # fmt: skip
        if -age > self.skew:
            raise CommandRefused(
                "expired", f"command sent_at is {-age:.0f} s in the future (allowed clock skew "
                f"{self.skew:g} s): synchronise the console's clock (NTP)", command.id,
                command.name,
            )  # fmt: skip
        return now

    def admit(self, command: Command) -> None:
        """Return if ``command`` may run now (its id is then committed as used); else
        CommandRefused ``expired`` (outside the window) or ``replay`` (id already used)."""
        now = self.check_age(command)
        db = self._open()
        try:
            db.execute("DELETE FROM seen WHERE keep_until < ?", (now,))
            added = db.execute(
                "INSERT OR IGNORE INTO seen VALUES (?, ?, ?, ?, ?)",
                (command.id, command.sender, command.sent_at, now, command.sent_at + self.max_age),
            ).rowcount
        except sqlite3.Error as exc:
            if command.name == "stop":  # fail safe (hazard 2): stopping twice does no harm
                log.error("replay store %s failed (%s); stop %s runs anyway", self.path, exc,
                          command.id)  # fmt: skip
                return
            raise CommandRefused(  # refuse rather than risk running a command twice
                "internal", f"the replay store {self.path} failed ({exc}); the command was not "
                "run", command.id, command.name,
            ) from exc  # fmt: skip
        if not added:
            first = db.execute("SELECT received_at FROM seen WHERE id = ?", (command.id,))
            row = first.fetchone()
            when = f" {now - row[0]:.0f} s ago" if row else ""
            raise CommandRefused(
                "replay", f"command id {command.id!r} was already received{when}; a command "
                "runs at most once (send a new one with a new id)", command.id, command.name,
            )  # fmt: skip

    def __len__(self) -> int:
        return int(self._open().execute("SELECT COUNT(*) FROM seen").fetchone()[0])

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            raise FleetError(f"the replay store {self.path} is closed")
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
