"""The on-disk outbox: ordered, de-duplicated by id, durable across reopen."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from micropen.host.fleet.errors import OutboxError
from micropen.host.fleet.outbox import Outbox


def test_entries_survive_a_reopen_in_order(tmp_path: Path) -> None:
    path = tmp_path / "q" / "outbox.sqlite"
    with Outbox(path, clock=lambda: 100.0) as box:
        for i in range(5):
            assert box.put(f"id-{i}", f"t/{i}", f"p{i}".encode())
    with Outbox(path, clock=lambda: 103.5) as box:
        entries = box.peek()
        assert [e.msg_id for e in entries] == [f"id-{i}" for i in range(5)]
        assert entries[2].payload == b"p2" and entries[2].topic == "t/2" and entries[2].qos == 1
        assert box.oldest_age() == 3.5
        box.delete(entries[0].seq)
    with Outbox(path) as box:
        assert len(box) == 4 and box.peek(1)[0].msg_id == "id-1"


def test_put_commits_before_returning(tmp_path: Path) -> None:
    """Another connection sees the entry as soon as put() returned: it is on disk."""
    path = tmp_path / "outbox.sqlite"
    with Outbox(path) as box:
        box.put("e1", "t", b"x")
        other = sqlite3.connect(path)
        try:
            assert other.execute("SELECT msg_id FROM outbox").fetchall() == [("e1",)]
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            other.close()


def test_same_id_is_queued_once(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as box:
        assert box.put("dup", "t", b"1") is True
        assert box.put("dup", "t", b"2") is False
        assert [e.payload for e in box.peek()] == [b"1"]
        box.attempted(box.peek()[0].seq)
        assert box.peek()[0].attempts == 1


def test_unusable_folder_and_closed_box_name_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutboxError, match="--queue-dir"):
        Outbox(blocker / "sub" / "o.sqlite")
    box = Outbox(tmp_path / "o.sqlite")
    box.close()
    with pytest.raises(OutboxError, match="closed"):
        box.put("a", "t", b"")


def test_a_newer_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(OutboxError, match="newer than this code"):
        Outbox(path)


class OutboxMachine(RuleBasedStateMachine):
    """Against a list model: FIFO order, de-duplication, reopen keeps everything."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        self.path = Path(self.folder.name) / "o.sqlite"
        self.box = Outbox(self.path)
        self.model: list[tuple[str, bytes]] = []

    @rule(msg_id=st.sampled_from([f"m{i}" for i in range(12)]), payload=st.binary(max_size=8))
    def put(self, msg_id: str, payload: bytes) -> None:
        fresh = self.box.put(msg_id, "t", payload)
        assert fresh == (msg_id not in [m for m, _ in self.model])
        if fresh:
            self.model.append((msg_id, payload))

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        entries = self.box.peek()
        index = data.draw(st.integers(0, len(entries) - 1))
        self.box.delete(entries[index].seq)
        del self.model[index]

    @rule()
    def reopen(self) -> None:
        self.box.close()
        self.box = Outbox(self.path)

    @invariant()
    def matches_model(self) -> None:
        assert [(e.msg_id, e.payload) for e in self.box.peek(1000)] == self.model
        assert len(self.box) == len(self.model)

    def teardown(self) -> None:
        self.box.close()
        self.folder.cleanup()


OutboxMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
test_outbox_state_machine = OutboxMachine.TestCase
