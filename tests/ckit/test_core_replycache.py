"""The C reply cache (protocol/c/mp_replycache.c) against sim/replycache.py's SessionCaches:
same sessions kept, same hits, same misses (a reused cmd_id, another session, another
command under the same number), under hypothesis through ctypes; and the byte budget, which
the Python cache does not have, never answers a wrong reply. Runs are replayed under ASan."""

from __future__ import annotations

import sys
from pathlib import Path

import cbuild
from _core_harness import E_ARG, E_FULL, E_UNKNOWN, SMALL, CReplyCache, replay
from hypothesis import given, settings
from hypothesis import strategies as st

from micropen.protocol.schema import Kind, Message
from micropen.sim.replycache import SessionCaches

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "protocol"))
from strategies import any_message

COMMANDS = any_message([Kind.COMMAND])
REPLIES = any_message([Kind.REPLY])


def _with_id(command: Message, cmd_id: int) -> Message:
    return command.replace(**{command.FIELDS[0].name: cmd_id})


STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("open"), st.integers(1, 5)),
        st.tuples(st.just("store"), st.integers(1, 5), st.integers(0, 12), COMMANDS, REPLIES),
        st.tuples(st.just("lookup"), st.integers(1, 5), st.integers(0, 12), COMMANDS),
        st.tuples(st.just("again"), st.integers(0, 40)),  # look up a command stored before
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(steps=STEPS)
def test_the_c_cache_answers_as_the_python_one(steps: list[tuple]) -> None:  # type: ignore[type-arg]
    model = SessionCaches(max_sessions=3, replies=8)
    c = CReplyCache(SMALL)
    stored: list[tuple[int, Message]] = []
    for step in steps:
        if step[0] == "open":
            assert c.open(step[1]) == int(model.open(step[1]))
        elif step[0] == "store":
            _, session, cmd_id, command, reply = step
            command = _with_id(command, cmd_id)
            rc = c.store(session, command.encode(), reply.encode())
            held = session in model._sessions
            model.store(session, command, reply)
            assert rc == (0 if held else E_UNKNOWN)
            stored.append((session, command))
        else:
            if step[0] == "again":
                if not stored:
                    continue
                session, command = stored[step[1] % len(stored)]
            else:
                _, session, cmd_id, command = step
                command = _with_id(command, cmd_id)
            expected = model.lookup(session, command)
            got = c.lookup(session, command.encode())
            assert got == (None if expected is None else expected.encode())
        for session in range(1, 6):
            cache = model._sessions.get(session)
            assert c.count(session) == (0 if cache is None else len(cache))
    if cbuild.sanitizers_work() and len(steps) >= 40:  # the longer runs, under ASan/UBSan
        replay(c)


def test_rules_of_the_protocol_document() -> None:
    c = CReplyCache()
    run = bytes.fromhex("05" + "07000000" + "f401" + "6e00" + "0000" + "00" + "e8030000" + "00")
    ack = bytes.fromhex("41" + "07000000" + "01000000")
    assert c.store(1, run, ack) == E_UNKNOWN  # a session never opened holds nothing
    assert c.open(1) == 0  # new to this boot: Ack.value 0
    assert c.store(1, run, ack) == 0
    assert c.lookup(1, run) == ack  # same session, same command, same cmd_id
    assert c.lookup(2, run) is None  # another session
    other = run[:5] + bytes([run[5] ^ 1]) + run[6:]
    assert c.lookup(1, other) is None  # another command under the same number: executed
    assert c.open(1) == 1  # still held: the host may re-send
    for session in (2, 3, 4, 5):  # four more sessions: the least recently opened goes
        assert c.open(session) == 0
    assert c.open(1) == 0 and c.lookup(1, run) is None
    assert c.store(1, run[:4], ack) == E_ARG  # no cmd_id
    assert c.store(1, run + b"\0" * 240, ack) == E_ARG  # longer than any message
    if cbuild.sanitizers_work():
        replay(c)


def test_256_replies_per_session_and_the_oldest_goes_first() -> None:
    c = CReplyCache()
    c.open(9)
    commands = [bytes([0x02]) + i.to_bytes(4, "little") for i in range(300)]  # GetStatus
    for i, command in enumerate(commands):
        assert c.store(9, command, bytes([0x41]) + i.to_bytes(4, "little") + b"\0" * 4) == 0
    assert c.count(9) == 256
    assert c.lookup(9, commands[43]) is None and c.lookup(9, commands[44]) is not None
    assert c.lookup(9, commands[299]) == bytes([0x41]) + (299).to_bytes(4, "little") + b"\0" * 4


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(5, 241), st.integers(0, 241)), min_size=1, max_size=90),
    reuse=st.integers(1, 400),
)
def test_the_byte_budget_evicts_oldest_first_and_never_answers_wrong(
    sizes: list[tuple[int, int]], reuse: int
) -> None:
    """Entries as long as messages get (FwChunk: 234 bytes) fill the 8 KiB budget before 256
    entries; the oldest go first, what is held is answered exactly, nothing else is."""
    c = CReplyCache()
    c.open(1)
    entries = []
    for i, (req_len, reply_len) in enumerate(sizes):
        cmd_id = i % reuse
        request = bytes([0x12]) + cmd_id.to_bytes(4, "little") + bytes([i & 0xFF]) * (req_len - 5)
        reply = bytes([0x4B, i & 0xFF]) * (reply_len // 2) + b"\x4b" * (reply_len % 2)
        assert c.store(1, request, reply) == 0
        entries.append((request, reply))
    held = c.count(1)
    latest: dict[bytes, int] = {}
    for i, (request, _) in enumerate(entries):
        latest[request[1:5]] = i
    hits = []
    for i, (request, reply) in enumerate(entries):
        got = c.lookup(1, request)
        if latest[request[1:5]] != i:
            newer = entries[latest[request[1:5]]]  # its id was reused: only the newer is held
            assert got is None or (newer[0] == request and got == newer[1])
        elif got is not None:
            assert got == reply
            hits.append(i)
    assert len(hits) == held  # every live entry answers
    assert hits == sorted(hits) and (not hits or hits[-1] == max(latest.values()))
    total = sum(3 + len(entries[i][0]) + len(entries[i][1]) for i in hits)
    assert total <= 8192
    if cbuild.sanitizers_work() and len(sizes) > 80:
        replay(c)


def test_an_entry_larger_than_the_budget_is_refused() -> None:
    c = CReplyCache(("MP_REPLYCACHE_BYTES=256",))  # not sanitized: one more build is enough
    c.open(1)
    assert c.store(1, b"\x12" + b"\x01" * 240, b"\x4b" * 20) == E_FULL
    assert c.store(1, b"\x02\x01\0\0\0", b"\x41" * 9) == 0
    assert c.lookup(1, b"\x02\x01\0\0\0") == b"\x41" * 9
