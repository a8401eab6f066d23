"""The remote-command gate (hazard 8, deny by default), boundary by boundary.

Written to kill the mutants of host/fleet/commands.py that tests/fleet/test_fleet_commands.py
let survive (docs/safety.md): id and name lengths, the policy's messages, the reply memory's
bound, the envelope check and every branch of ``execute`` — on the simulator, without a broker.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from micropen.host import AsyncPen
from micropen.host.errors import InvalidInput, PenTimeout, SafetyLimitError
from micropen.host.fleet.commands import (
    Command,
    CommandPolicy,
    CommandRefused,
    RecentReplies,
    check_envelope,
    execute,
    nesting,
    parse_command,
)
from micropen.host.fleet.errors import BrokerConfigError
from micropen.protocol.messages import FaultCode, PenState, SimParam

SCHEMA = "micropen.command/2"


def _raw(**fields: Any) -> bytes:
    return json.dumps({"schema": SCHEMA, "sent_at": 1.0, **fields}).encode()


def _cmd(cid: str, name: str, args: dict[str, Any] | None = None) -> Command:
    """A command as the bridge receives it: parsed from JSON, so its name is a fresh string."""
    return parse_command(_raw(id=cid, command=name, args=args or {}))


# ------------------------------------------------------------------ parse_command
@pytest.mark.parametrize("length", [1, 128])
def test_ids_and_names_of_1_to_128_chars_are_read(length: int) -> None:
    command = parse_command(_raw(id="i" * length, command="n" * length))
    assert command == Command("i" * length, "n" * length, {}, None, sent_at=1.0)


def test_an_empty_or_129_char_id_is_refused() -> None:
    for bad in ("", "i" * 129, 7):
        with pytest.raises(CommandRefused, match="'id' string of 1–128 chars") as refused:
            parse_command(_raw(id=bad, command="stop"))
        assert refused.value.command_id is None and refused.value.name == "stop"


def test_an_empty_or_129_char_name_is_refused_with_the_id() -> None:
    for bad in ("", "n" * 129, 5):
        with pytest.raises(CommandRefused, match="'command' must be a command name") as refused:
            parse_command(_raw(id="c9", command=bad))
        assert refused.value.command_id == "c9" and refused.value.code == "bad-request"


def test_a_retained_command_is_refused_before_its_schema_is_read() -> None:
    payload = json.dumps({"schema": "other/9", "id": "r1", "command": "stop"}).encode()
    with pytest.raises(CommandRefused, match="retained commands are refused"):
        parse_command(payload, retained=True)
    with pytest.raises(
        CommandRefused, match="schema 'other/9'; this bridge reads micropen.command/2"
    ):
        parse_command(payload)


@pytest.mark.parametrize("schema", ["alpha/1", "micropen.command/0", None])
def test_any_other_schema_is_refused(schema: str | None) -> None:
    fields = {"id": "s1", "command": "stop", "sent_at": 1} | ({"schema": schema} if schema else {})
    with pytest.raises(CommandRefused, match="this bridge reads micropen.command/2") as refused:
        parse_command(json.dumps(fields).encode())
    assert (refused.value.code, refused.value.command_id) == ("bad-request", "s1")


def test_a_parsed_command_cannot_be_altered_after_its_check() -> None:
    command = parse_command(_raw(id="f1", command="stop"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        command.name = "run"  # type: ignore[misc]


def test_retained_must_be_named() -> None:
    with pytest.raises(TypeError):
        parse_command(_raw(id="k1", command="stop"), True)  # type: ignore[misc]


def test_args_default_to_empty_and_a_display_name_must_be_printable_text() -> None:
    assert parse_command(
        _raw(id="a", command="status", args={"x": 1}, **{"from": "desk"}), sender="op"
    ) == Command("a", "status", {"x": 1}, "op", "desk", 1.0)
    for bad in (3, "", "x" * 129, "desk\n2", "evil\u202etxt"):  # dropped, never refused
        assert parse_command(_raw(id="a", command="stop", **{"from": bad})).display_name is None
    assert parse_command(_raw(id="a", command="stop")).args == {}


# ------------------------------------------------------------------ CommandPolicy
def test_allowing_a_default_command_is_harmless_and_opt_ins_add_up() -> None:
    assert CommandPolicy(allow=["status", "stop"]).allowed == {"status", "stop"}
    policy = CommandPolicy(allow=["set_rate", "emergency_stop"])
    assert policy.allowed == {"status", "stop", "set_rate", "emergency_stop"}
    policy.check(Command("c", "emergency_stop"))
    policy.check(Command("c", "status"))


def test_an_unknown_allow_lists_only_the_opt_in_commands() -> None:
    with pytest.raises(BrokerConfigError) as info:
        CommandPolicy(allow=["reboot"])
    assert str(info.value) == (
        "unknown remote command 'reboot'; can be allowed: "
        "clear_fault, emergency_stop, set_depth, set_rate, set_telemetry"
    )


def test_every_never_remote_command_names_its_reason() -> None:
    for name, reason in [
        ("run", "a treatment is started only by the operator holding the pen"),
        ("start_run", "a treatment is started only by the operator holding the pen"),
        ("cal_write", "calibration is written only at a bench"),
        ("cal_commit", "calibration is written only at a bench"),
        ("set_watchdog", "the watchdog protects the patient when the host goes silent"),
        ("sim_set", "fault injection is a bench tool"),
    ]:
        with pytest.raises(
            BrokerConfigError, match=f"'{name}' cannot be allowed remotely: {reason}"
        ):
            CommandPolicy(allow=[name])
        with pytest.raises(CommandRefused, match=reason):
            CommandPolicy().check(Command("c", name))


def test_a_refusal_says_why_and_lists_what_is_allowed() -> None:
    policy = CommandPolicy(allow=["set_depth"])
    with pytest.raises(CommandRefused) as refused:
        policy.check(Command("c7", "reboot"))
    assert refused.value.reason == (
        "remote command 'reboot' refused: unknown command; "
        "remotely allowed: set_depth, status, stop"
    )
    assert refused.value.code == "not-allowed" and refused.value.command_id == "c7"
    with pytest.raises(
        CommandRefused, match=r"not enabled on this bridge \(start it with --allow "
    ):
        policy.check(Command("c8", "clear_fault"))


# ------------------------------------------------------------------ RecentReplies
def test_recent_replies_keep_exactly_size_and_drop_the_oldest_first() -> None:
    recent: RecentReplies[str] = RecentReplies(size=3)
    assert RecentReplies().size == 256
    for i in range(3):
        recent.add(str(i), f"r{i}")
    assert [recent.get(str(i)) for i in range(3)] == ["r0", "r1", "r2"]  # full, nothing dropped
    recent.add("0", "r0 again")  # touched: now the newest
    recent.add("3", "r3")
    assert recent.get("1") is None
    assert [recent.get(k) for k in ("0", "2", "3")] == ["r0 again", "r2", "r3"]
    recent.discard("2")
    recent.discard("never seen")
    assert recent.get("2") is None and recent.get("3") == "r3"


# ------------------------------------------------------------------ check_envelope / execute
@pytest.fixture
async def pen() -> Any:
    async with await AsyncPen.open("sim://?seed=5", log=False) as pen:
        yield pen


def _refused(pen: AsyncPen, name: str, **args: Any) -> CommandRefused:
    with pytest.raises(CommandRefused) as refused:
        check_envelope(pen, _cmd("e1", name, args))
    assert refused.value.command_id == "e1"
    return refused.value


async def test_the_envelope_is_checked_before_sending(pen: AsyncPen) -> None:
    for name, args in [
        ("set_depth", {"depth_mm": 0.75, "area": "forehead"}),
        ("set_depth", {"depth_mm": 1.5}),
        ("set_rate", {"rate_sps": 150}),
        ("set_rate", {"rate_sps": 70, "area": "nose_upper_lip"}),
        ("set_telemetry", {"hz": 0}),
        ("set_telemetry", {"hz": 1000}),
        ("stop", {}),
        ("status", {}),
        ("emergency_stop", {}),
        ("clear_fault", {}),
        ("aaa", {}),  # unknown names sort before and after every known one
        ("zzz", {}),
    ]:
        check_envelope(pen, _cmd("ok", name, args))  # inside the envelope: no refusal
    assert _refused(pen, "set_depth", depth_mm=0.8, area="forehead").code == "envelope"
    assert "soft cap" in _refused(pen, "set_depth", depth_mm=1.6).reason
    assert _refused(pen, "set_depth", depth_mm=1.6, override_reason="x").reason == (
        "a soft-cap override is given only by the operator at the pen, not remotely"
    )
    assert (
        "not allowed for nose_upper_lip"
        in _refused(pen, "set_rate", rate_sps=90, area="nose_upper_lip").reason
    )
    assert "outside the pen's range 50–150" in _refused(pen, "set_rate", rate_sps=151).reason
    for hz in (-1, 1001):
        refused = _refused(pen, "set_telemetry", hz=hz)
        assert (refused.code, refused.reason) == (
            "envelope",
            f"telemetry rate {hz} Hz is outside 0–1000",
        )
    check_envelope(pen, _cmd("s", "stop", {"area": "elbow"}))  # a stop is never refused (hazard 2)
    elbow = _refused(pen, "set_depth", depth_mm=0.5, area="elbow")
    assert "unknown treatment area 'elbow'" in elbow.reason


async def test_arguments_must_be_numbers_of_the_right_kind(pen: AsyncPen) -> None:
    for name, args, says in [
        ("set_depth", {"depth_mm": True}, "'depth_mm' must be a number, got True"),
        ("set_depth", {"depth_mm": "0.5"}, "'depth_mm' must be a number, got '0.5'"),
        ("set_depth", {}, "'depth_mm' must be a number, got None"),
        ("set_rate", {"rate_sps": 90.0}, "'rate_sps' must be a whole number, got 90.0"),
        ("set_telemetry", {"hz": False}, "'hz' must be a number, got False"),
    ]:
        refused = _refused(pen, name, **args)
        assert (refused.code, refused.reason) == ("bad-request", says)


async def test_execute_needs_a_pen_link(pen: AsyncPen) -> None:
    pen.identity = None
    with pytest.raises(CommandRefused, match="no link to the pen yet") as refused:
        await execute(pen, _cmd("x1", "status"))
    assert (refused.value.code, refused.value.command_id) == ("pen", "x1")


async def test_execute_runs_each_allowed_command(pen: AsyncPen) -> None:
    status = await execute(pen, _cmd("s", "status"))
    assert set(status) == set((await pen.status()).to_dict()) - {"cmd_id"}  # every other field
    assert "cmd_id" not in status and status["state"] == "IDLE" and "battery_mv" in status
    assert await execute(pen, _cmd("t", "set_telemetry", {"hz": 20})) == {"done": "set_telemetry"}
    assert pen.telemetry_hz == 20
    assert await execute(pen, _cmd("d", "set_depth", {"depth_mm": 0.7, "area": "forehead"})) == {
        "done": "set_depth"
    }
    assert await execute(pen, _cmd("r", "set_rate", {"rate_sps": 70, "area": "forehead"})) == {
        "done": "set_rate"
    }
    after = await pen.status()
    assert (after.depth_set_um, after.rate_set_sps) == (700, 70)
    assert await execute(pen, _cmd("p", "stop")) == {"done": "stop"}
    assert await execute(pen, _cmd("e", "emergency_stop")) == {"done": "emergency_stop"}
    assert (await pen.status()).fault is FaultCode.EMERGENCY_STOP
    assert await execute(pen, _cmd("c", "clear_fault")) == {"done": "clear_fault"}
    assert (await pen.status()).state is PenState.IDLE


@pytest.mark.parametrize("name", ["aaa", "reboot", "zzz"])
async def test_execute_refuses_what_it_has_no_handler_for(pen: AsyncPen, name: str) -> None:
    with pytest.raises(CommandRefused, match=f"no remote handler for '{name}'") as refused:
        await execute(pen, _cmd("u", name))
    assert (refused.value.code, refused.value.command_id) == ("not-allowed", "u")
    assert (await pen.status()).state is PenState.IDLE  # nothing was done


async def test_a_fault_that_still_stands_is_the_pens_refusal(pen: AsyncPen) -> None:
    await pen.sim_set(SimParam.FLUID_INGRESS, 1)
    with pytest.raises(CommandRefused) as refused:  # the pen refuses: the pen is still wet
        await execute(pen, _cmd("f", "clear_fault"))
    assert (refused.value.code, refused.value.command_id) == ("pen", "f")


class _Failing:
    """A pen whose set_depth raises what it is given (the host's own checks, repeated)."""

    def __init__(self, identity: Any, error: Exception) -> None:
        self.identity, self.error = identity, error

    async def set_depth(self, depth_mm: float, *, area: Any = None) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (SafetyLimitError("too deep"), "envelope"),
        (InvalidInput("not a depth"), "bad-request"),
        (PenTimeout("the pen did not answer"), "pen"),
    ],
)
def test_execute_maps_each_host_error_to_its_reply_code(error: Exception, code: str) -> None:
    import asyncio

    from micropen.host.safety import NOMINAL_PEN

    stub = _Failing(NOMINAL_PEN, error)
    with pytest.raises(CommandRefused) as refused:
        asyncio.run(execute(stub, _cmd("m", "set_depth", {"depth_mm": 0.5})))  # type: ignore[arg-type]
    assert (refused.value.code, refused.value.reason, refused.value.command_id) == (
        code,
        str(error),
        "m",
    )


# ------------------------------------------------------------------ hostile payloads (run 2)
def _note(levels: int) -> list[Any]:
    """An extra field (ignored by the schema) that nests the payload ``levels`` deep: the
    object itself is level 1, the list level 2."""
    note: list[Any] = [']"[ {', {"k": "}"}]  # brackets inside strings do not count
    for _ in range(levels - 3):
        note = [note]
    return note


def test_a_payload_nested_8_levels_is_read_and_9_is_refused() -> None:
    assert parse_command(_raw(id="n8", command="status", note=_note(8))).args == {}
    with pytest.raises(CommandRefused) as refused:
        parse_command(_raw(id="n9", command="status", note=_note(9)))
    assert (refused.value.code, refused.value.command_id, refused.value.name) == (
        "bad-request",
        "n9",
        "status",
    )
    assert refused.value.reason == "payload is nested 9 levels deep; at most 8"  # no args rule


def test_a_stop_nested_too_deep_still_stops_and_says_what_it_ignored() -> None:
    stop = parse_command(_raw(id="s9", command="stop", args={"x": 1}, note=_note(40)))
    assert (stop.id, stop.name, stop.args) == ("s9", "stop", {})
    assert stop.ignored == (
        "payload is nested 40 levels deep; at most 8: the arguments were ignored, "
        "the pen was stopped"
    )


RULE = (
    "(args hold at most 16 plain values: numbers within ±1000000, text up to 128 characters, "
    "true/false or null)"
)


def test_16_arguments_are_read_and_17_are_refused_naming_the_rule() -> None:
    sixteen = {f"a{i}": i for i in range(16)}
    assert parse_command(_raw(id="a", command="set_depth", args=sixteen)).args == sixteen
    with pytest.raises(CommandRefused) as refused:
        parse_command(_raw(id="a", command="set_depth", args={**sixteen, "a16": 16}))
    reason = refused.value.reason  # pydantic's middle words differ between its versions
    assert reason.startswith("args: Dictionary should have at most 16 items after validation")
    assert reason.endswith(RULE)


@pytest.mark.parametrize("value", [-1_000_000, 1_000_000, -1_000_000.0, 1_000_000.0, 0.5])
def test_numbers_within_plus_minus_1_000_000_are_read(value: float) -> None:
    args = parse_command(_raw(id="a", command="set_depth", args={"x": value})).args
    assert args == {"x": value} and type(args["x"]) is type(value)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (-1_000_001, "greater than or equal to -1000000"),
        (-1_000_000.5, "greater than or equal to -1000000"),
        (1_000_001, "less than or equal to 1000000"),
        (1_000_000.5, "less than or equal to 1000000"),
    ],
)
def test_numbers_beyond_plus_minus_1_000_000_are_refused(value: float, says: str) -> None:
    with pytest.raises(CommandRefused) as refused:
        parse_command(_raw(id="a", command="set_depth", args={"x": value}))
    assert refused.value.reason == f"args.x: Input should be {says} {RULE}"


def _digits(name: str, digits: str) -> bytes:
    return (
        b'{"schema": "micropen.command/2", "sent_at": 1, "id": "big", "command": "%s", '
        b'"args": {"x": %s}}' % (name.encode(), digits.encode())
    )


def test_a_5000_digit_number_is_infinity_not_an_error_and_a_stop_survives_it() -> None:
    """Python refuses to read integers of more than 4300 digits; the bridge reads long ones as
    floats, so such a number is an argument out of range, never an unreadable payload."""
    with pytest.raises(CommandRefused) as refused:
        parse_command(_digits("set_depth", "9" * 5000))
    assert refused.value.reason == f"args.x: Input should be a finite number {RULE}"
    stop = parse_command(_digits("stop", "-" + "9" * 5000))
    assert (stop.name, stop.args) == ("stop", {})
    assert stop.ignored == (
        "args.x: Input should be a finite number: the arguments were ignored, the pen was stopped"
    )


def test_an_argument_needs_a_name() -> None:
    with pytest.raises(CommandRefused, match="String should have at least 1 character"):
        parse_command(_raw(id="a", command="set_depth", args={"": 1}))
    assert parse_command(_raw(id="a", command="set_depth", args={"d": 1})).args == {"d": 1}


def test_a_payload_of_64_kib_is_read_and_one_byte_more_is_refused_unread() -> None:
    base = len(_raw(id="p", command="status", pad=""))
    exactly = _raw(id="p", command="status", pad="x" * (65_536 - base))
    assert len(exactly) == 65_536 and parse_command(exactly).name == "status"
    with pytest.raises(CommandRefused) as refused:
        parse_command(_raw(id="p", command="status", pad="x" * (65_537 - base)))
    assert (refused.value.code, refused.value.reason, refused.value.command_id) == (
        "too-large",
        "command payload is 65537 bytes; at most 65536",
        None,  # not even the id is read
    )


def test_a_duplicate_key_refusal_names_the_first_one_repeated() -> None:
    payload = (
        b'{"schema": "micropen.command/2", "sent_at": 1, "id": "d", "command": "status", '
        b'"b": 1, "a": 1, "b": 2, "a": 2}'
    )
    with pytest.raises(CommandRefused) as refused:
        parse_command(payload)
    assert refused.value.reason == "duplicate key 'b': each key may appear once"


def test_a_bad_envelope_field_is_named_in_pydantics_words() -> None:
    for sent_at, says in [
        ([1], "sent_at: Input should be a valid number"),
        (-1, "sent_at: Input should be greater than or equal to 0"),
    ]:
        with pytest.raises(CommandRefused) as refused:
            parse_command(_raw(id="e", command="status", sent_at=sent_at))
        assert refused.value.reason == says


def test_an_argument_that_is_not_a_plain_value_is_named_with_the_rule() -> None:
    with pytest.raises(CommandRefused) as refused:
        parse_command(_raw(id="a", command="set_depth", args={"x": [1]}))
    assert (
        refused.value.reason
        == f"args.x: must be a number, text, true/false or null, got [1] {RULE}"
    )


def test_text_arguments_of_up_to_128_characters_are_read() -> None:
    assert parse_command(_raw(id="a", command="set_depth", args={"t": "x" * 128})).args
    with pytest.raises(CommandRefused) as refused:
        parse_command(_raw(id="a", command="set_depth", args={"t": "x" * 129}))
    assert refused.value.reason == f"args.t: String should have at most 128 characters {RULE}"


def test_nesting_at_limit_0_replaces_the_whole_document() -> None:
    assert nesting(b"[1]", 0) == (1, b"null")
    assert nesting(b'{"a": [2], "b": {}}', 1) == (2, b'{"a": null, "b": null}')


@pytest.mark.parametrize("name", ["aaa", "zzz"])  # before and after "stop" in sort order
async def test_only_a_stop_escapes_the_area_check(pen: AsyncPen, name: str) -> None:
    refused = _refused(pen, name, area="elbow")
    assert refused.code == "envelope"
    assert refused.reason.startswith("unknown treatment area 'elbow'; valid: ")


def test_of_several_bad_arguments_the_first_is_named() -> None:
    with pytest.raises(CommandRefused) as refused:
        parse_command(_raw(id="a", command="set_depth", args={"x": 1_000_001, "y": -1_000_001}))
    assert refused.value.reason == f"args.x: Input should be less than or equal to 1000000 {RULE}"


def test_a_one_character_display_name_is_kept() -> None:
    assert parse_command(_raw(id="a", command="stop", **{"from": "A"})).display_name == "A"


def test_argument_names_of_up_to_64_characters_are_read() -> None:
    assert parse_command(_raw(id="a", command="set_depth", args={"n" * 64: 1})).args
    with pytest.raises(CommandRefused) as refused:
        parse_command(_raw(id="a", command="set_depth", args={"n" * 65: 1}))
    assert "String should have at most 64 characters" in refused.value.reason


def test_a_display_name_of_128_characters_is_kept() -> None:
    shown = parse_command(_raw(id="a", command="stop", **{"from": "D" * 128})).display_name
    assert shown == "D" * 128


@pytest.mark.parametrize("name", ["aaa", "zzz"])  # before and after "stop" in sort order
def test_only_a_stop_survives_bad_arguments(name: str) -> None:
    with pytest.raises(CommandRefused) as refused:
        parse_command(_raw(id="a", command=name, args={"x": [1]}))
    assert (refused.value.code, refused.value.name) == ("bad-request", name)
