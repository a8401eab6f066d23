"""Remote command parsing and policy, without a broker (deny by default, hazard 8)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from micropen.host.fleet.commands import (
    ALLOWED_BY_DEFAULT,
    NEVER_REMOTE,
    OPT_IN,
    Command,
    CommandPolicy,
    CommandRefused,
    RecentReplies,
    nesting,
    parse_command,
)
from micropen.host.fleet.errors import BrokerConfigError
from micropen.host.fleet.payloads import command_payload
from micropen.host.fleet.replay import ReplayGuard
from micropen.host.fleet.topics import encode

SCHEMA = "micropen.command/2"


def test_default_policy_allows_only_status_and_stop() -> None:
    policy = CommandPolicy()
    assert policy.allowed == ALLOWED_BY_DEFAULT == {"status", "stop"}
    for name in sorted(OPT_IN | set(NEVER_REMOTE) | {"reboot"}):
        with pytest.raises(CommandRefused) as refused:
            policy.check(Command("c1", name))
        assert refused.value.code == "not-allowed" and refused.value.command_id == "c1"
        assert name in refused.value.reason


def test_opt_in_is_explicit_and_run_can_never_be_allowed() -> None:
    policy = CommandPolicy(allow=["set_depth"])
    policy.check(Command("c", "set_depth"))
    with pytest.raises(CommandRefused, match="--allow set_rate"):
        policy.check(Command("c", "set_rate"))
    with pytest.raises(BrokerConfigError, match="operator holding the pen"):
        CommandPolicy(allow=["run"])
    with pytest.raises(BrokerConfigError, match="unknown remote command 'shutdown'"):
        CommandPolicy(allow=["shutdown"])


def test_parse_a_command() -> None:
    raw = encode(command_payload("stop", command_id="abc", sender="desk 3", sent_at=5.0))
    assert parse_command(raw, sender="operator") == Command(
        "abc", "stop", {}, "operator", display_name="desk 3", sent_at=5.0
    )


@pytest.mark.parametrize(
    ("payload", "match", "has_id"),
    [
        (b"{", "not JSON", False),
        (b"[]", "not a JSON object", False),
        (json.dumps({"schema": "micropen.command/2", "command": "stop"}).encode(), "'id'", False),
        (json.dumps({"schema": "micropen.command/1", "id": "x", "command": "stop"}).encode(),
         "micropen.command/2", True),
        (json.dumps({"schema": "micropen.command/2", "id": "x", "sent_at": 1}).encode(),
         "'command'", True),
        (json.dumps({"schema": "micropen.command/2", "id": "x", "command": "status",
                     "sent_at": 1, "args": [1]}).encode(), "'args'", True),
        (json.dumps({"schema": "micropen.command/2", "id": "x", "command": "stop"}).encode(),
         "sent_at: Field required", True),
    ],
)  # fmt: skip
def test_bad_commands_are_refused_with_a_reason(payload: bytes, match: str, has_id: bool) -> None:
    with pytest.raises(CommandRefused, match=match) as refused:
        parse_command(payload)
    assert refused.value.code == "bad-request"
    assert (refused.value.command_id is not None) == has_id


def test_a_retained_command_is_refused() -> None:
    with pytest.raises(CommandRefused, match="retained") as refused:
        parse_command(encode(command_payload("stop", command_id="old")), retained=True)
    assert (refused.value.command_id, refused.value.name) == ("old", "stop")


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_another_error(data: bytes) -> None:
    try:
        parse_command(data)
    except CommandRefused as refused:
        assert refused.code == "bad-request"


def test_recent_replies_are_bounded() -> None:
    recent = RecentReplies(size=3)
    for i in range(5):
        recent.add(str(i), {"id": str(i)})
    assert recent.get("0") is None and recent.get("4") == {"id": "4"}


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\n'),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=3), inner, max_size=3)
    ),
    max_leaves=20,
)


@given(_JSON, st.integers(1, 4))
def test_nesting_measures_what_json_parses_without_recursing(value: object, limit: int) -> None:
    """The bracket scan agrees with the parsed depth (brackets and quotes inside strings
    included), and the shallow copy is valid JSON no deeper than the limit."""
    data = json.dumps(value).encode()
    deepest, shallow = nesting(data, limit)
    assert deepest == _depth(value)
    assert _depth(json.loads(shallow)) <= limit
    if deepest <= limit:
        assert shallow == data


def test_a_payload_built_to_make_a_scanner_quadratic_is_read_in_linear_time() -> None:
    """An unterminated string of 32,000 escaped quotes took a regex scanner 18 s."""
    for data in (b'"' + b'\\"' * 32_000, b"[" * 65_536, b'"\\' * 32_768):
        started = time.perf_counter()
        with pytest.raises(CommandRefused, match="not JSON"):
            parse_command(data)
        assert time.perf_counter() - started < 2.0


def test_unicode_and_control_characters_never_reach_the_log_as_a_name_or_id() -> None:
    for name in ("st\u202eop", "stop\nFAKE LOG LINE", "ｓｔｏｐ"):
        with pytest.raises(CommandRefused, match="'command' must be a command name") as refused:
            parse_command(json.dumps({"schema": SCHEMA, "id": "u1", "command": name}).encode())
        assert refused.value.name is None
    with pytest.raises(CommandRefused, match="id: String should match pattern"):
        parse_command(
            json.dumps(
                {"schema": SCHEMA, "id": "\u0430bc", "command": "stop", "sent_at": 1}
            ).encode()
        )


class _BrokenDisk:
    def execute(self, *args: object) -> object:
        raise sqlite3.OperationalError("disk I/O error")

    def close(self) -> None:
        pass


def test_the_replay_store_remembers_across_reopen_and_forgets_after_the_window(
    tmp_path: Path,
) -> None:
    now = [1_000.0]
    path = tmp_path / "replay.sqlite"
    guard = ReplayGuard(path, max_age=60, skew=5, clock=lambda: now[0])
    guard.admit(Command("a", "stop", sent_at=1_000.0))
    guard.close()
    again = ReplayGuard(path, max_age=60, skew=5, clock=lambda: now[0])
    with pytest.raises(CommandRefused, match="already received") as refused:
        again.admit(Command("a", "stop", sent_at=1_000.0))
    assert refused.value.code == "replay"
    now[0] += 60.5  # past its window: refused as too old, and its row may go
    with pytest.raises(CommandRefused, match="older than 60 s"):
        again.admit(Command("a", "stop", sent_at=1_000.0))
    again.admit(Command("b", "status", sent_at=now[0]))
    assert len(again) == 1  # "a" was pruned: the store is bounded by the window
    with pytest.raises(CommandRefused, match="in the future"):
        again.admit(Command("c", "status", sent_at=now[0] + 5.5))
    again.admit(Command("d", "status", sent_at=now[0] + 4.5))  # within the 5 s skew


def test_a_failing_replay_store_refuses_commands_but_never_a_stop(tmp_path: Path) -> None:
    guard = ReplayGuard(tmp_path / "replay.sqlite", clock=lambda: 10.0)
    guard._db = _BrokenDisk()  # type: ignore[assignment]
    with pytest.raises(CommandRefused, match="disk I/O error") as refused:
        guard.admit(Command("s", "status", sent_at=10.0))
    assert refused.value.code == "internal"
    guard.admit(Command("t", "stop", sent_at=10.0))  # runs: a stop refused may harm


def test_only_utf8_is_read() -> None:
    """json.loads guesses UTF-16 from bytes; a UTF-16 payload could hide its brackets."""
    payload = json.dumps({"schema": SCHEMA, "id": "w", "command": "stop", "sent_at": 1})
    assert parse_command(payload.encode()).name == "stop"
    for encoding in ("utf-16", "utf-16-be", "utf-32"):
        with pytest.raises(CommandRefused, match=r"not JSON \(UTF-8\)"):
            parse_command(payload.encode(encoding))
