"""The on-disk outbox: events and run reports wait here until the broker has them.

Delivery is at least once. :meth:`Outbox.put` commits (WAL, ``synchronous=FULL``) before it
returns, and the bridge calls it from the pen connection's listener — which runs before the host
acknowledges the pen's frame — so an event the pen sees acknowledged is on disk. An entry is
deleted only after its QoS 1 publish completed (the broker's PUBACK); a crash between PUBACK and
delete re-sends it, and consumers drop the duplicate by the payload's ``id``. The same ``id``
put twice while still queued is stored once.

Entries leave in the order they were put. Nothing here is asynchronous: a put is one short
transaction, well under the pen's retransmit timeout.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from .errors import OutboxError

__all__ = ["Outbox", "OutboxEntry"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    queued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
)
"""
# ids put with remember=True (records published once, e.g. calibration records): a scan that
# finds them again does not queue them again after they were delivered and deleted
_PUBLISHED = """
CREATE TABLE IF NOT EXISTS published (msg_id TEXT PRIMARY KEY, queued_at REAL NOT NULL)
"""
_VERSION = 1


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    seq: int
    msg_id: str
    topic: str
    payload: bytes
    qos: int
    queued_at: float
    attempts: int


class Outbox:
    """One SQLite queue file. Thread-safe (one connection behind a lock)."""

    def __init__(
        self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = str(path)
        self._clock = clock
        self._lock = threading.Lock()
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._conn: sqlite3.Connection | None = self._open()
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(
                f"cannot open the fleet outbox {self.path}: {exc}; check --queue-dir is a "
                "writable local folder"
            ) from exc

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
            if mode != "wal":
                raise sqlite3.OperationalError(f"journal mode is {mode!r}, WAL is needed")
            conn.execute("PRAGMA synchronous = FULL")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > _VERSION:
                raise sqlite3.OperationalError(
                    f"outbox format {version} is newer than this code ({_VERSION}); upgrade"
                )
            conn.execute(_SCHEMA)
            conn.execute(_PUBLISHED)
            conn.execute(f"PRAGMA user_version = {_VERSION}")
        except BaseException:
            conn.close()
            raise
        return conn

    # --- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def _db(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise OutboxError(f"the fleet outbox {self.path} is closed")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise OutboxError(f"fleet outbox {self.path}: could not {what}: {exc}") from exc

    # --- queue -----------------------------------------------------------------------------
    def put(self, msg_id: str, topic: str, payload: bytes, qos: int = 1) -> bool:
        """Store and commit one entry; False if an entry with this id is already queued."""
        with self._db(f"store {msg_id}") as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO outbox (msg_id, topic, payload, qos, queued_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (msg_id, topic, payload, qos, self._clock()),
            )
            return cur.rowcount == 1

    def put_many(
        self, entries: Sequence[tuple[str, str, bytes]], qos: int = 1, *, remember: bool = False
    ) -> int:
        """Store ``(msg_id, topic, payload)`` entries in ONE transaction (all or none); how
        many were new. ``remember``: an id ever put this way is never queued again."""
        with self._db(f"store {len(entries)} entries") as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                added = 0
                now = self._clock()
                for msg_id, topic, payload in entries:
                    if remember:
                        cur = conn.execute(
                            "INSERT OR IGNORE INTO published (msg_id, queued_at) VALUES (?, ?)",
                            (msg_id, now),
                        )
                        if cur.rowcount != 1:
                            continue
                    cur = conn.execute(
                        "INSERT OR IGNORE INTO outbox (msg_id, topic, payload, qos, queued_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (msg_id, topic, payload, qos, now),
                    )
                    added += cur.rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return added

    def published(self, msg_ids: Iterable[str]) -> set[str]:
        """Which of ``msg_ids`` were ever put with ``remember=True``."""
        wanted = list(msg_ids)
        with self._db("read") as conn:
            found: set[str] = set()
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT msg_id FROM published WHERE msg_id IN ({marks})", chunk
                ).fetchall()
                found.update(str(r[0]) for r in rows)
        return found

    def peek(self, limit: int = 100) -> list[OutboxEntry]:
        """The oldest entries, in order; they stay queued until :meth:`delete`."""
        with self._db("read") as conn:
            rows = conn.execute(
                "SELECT seq, msg_id, topic, payload, qos, queued_at, attempts FROM outbox "
                "ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [OutboxEntry(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], r[6]) for r in rows]

    def attempted(self, seq: int) -> None:
        """Count a publish attempt (for statistics; it does not change the order)."""
        with self._db("count an attempt") as conn:
            conn.execute("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", (seq,))

    def delete(self, seq: int) -> None:
        """Forget a delivered entry (call only after its PUBACK)."""
        with self._db(f"delete entry {seq}") as conn:
            conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def __len__(self) -> int:
        with self._db("count") as conn:
            return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def oldest_age(self) -> float | None:
        """Seconds the oldest queued entry has waited, None when empty."""
        with self._db("read") as conn:
            row = conn.execute("SELECT MIN(queued_at) FROM outbox").fetchone()
        return None if row[0] is None else max(0.0, self._clock() - float(row[0]))
