"""Remote commands: deny by default (hazard 8, "a remote party commands the pen").

A remote party may ask for ``status`` and may ``stop`` the pen; nothing else unless the bridge
was started with an explicit ``--allow``, and even then only from a short list of
non-treatment commands, each checked against the pen's envelope before anything is sent. Starting
a run is never accepted remotely: a treatment is started by the operator holding the pen. A
retained command is refused (it would replay at every reconnect), and a command id seen recently
is answered again from memory, never executed twice (QoS 1 may deliver it twice); ids and
timestamps are also checked against a durable store (:mod:`.replay`).

A payload is hostile until proven otherwise, and no payload may end the bridge: its size is
bounded before anything reads it (:data:`MAX_COMMAND_BYTES`), its nesting depth is measured by a
scan that never recurses before ``json.loads`` sees it (:data:`MAX_DEPTH`), numbers are bounded
(:data:`MAX_NUMBER`; a 400-digit number becomes infinity, never an ``OverflowError``), NaN and
infinities are refused, duplicate keys are refused, and the fields are checked by a pydantic
schema. Every way a payload can be wrong ends in :class:`CommandRefused`. ``stop`` is never
refused because of its arguments (hazard 2): bad or unknown arguments of a stop are reported in
its reply and ignored.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar

# pydantic (already pulled in by typer) is the schema validator: a well-kept library that
# checks types, lengths and number bounds in one declaration and reports the failing field,
# where hand-written isinstance chains drifted (the OverflowError of issue 15).
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    ValidationError,
)

from micropen.protocol import limits as L

from .. import safety
from ..connection import AsyncPen
from ..errors import HostError, InvalidInput, SafetyLimitError
from .errors import BrokerConfigError
from .topics import SCHEMAS

__all__ = [
    "ALLOWED_BY_DEFAULT",
    "MAX_ARGS",
    "MAX_COMMAND_BYTES",
    "MAX_DEPTH",
    "MAX_NUMBER",
    "NEVER_REMOTE",
    "OPT_IN",
    "Command",
    "CommandPolicy",
    "CommandRefused",
    "execute",
    "parse_command",
]

ALLOWED_BY_DEFAULT = frozenset({"status", "stop"})
OPT_IN = frozenset({"emergency_stop", "clear_fault", "set_telemetry", "set_depth", "set_rate"})
NEVER_REMOTE = {
    "run": "a treatment is started only by the operator holding the pen",
    "start_run": "a treatment is started only by the operator holding the pen",
    "cal_write": "calibration is written only at a bench (micropen calibrate)",
    "cal_commit": "calibration is written only at a bench (micropen calibrate)",
    "set_watchdog": "the watchdog protects the patient when the host goes silent",
    "sim_set": "fault injection is a bench tool",
}
MAX_ID = 128
MAX_COMMAND_BYTES = 64 * 1024  # a real command is < 1 KB; checked before anything parses it
MAX_DEPTH = 8  # JSON nesting (the object itself is level 1; args are scalars at level 2)
MAX_ARGS = 16
MAX_ARG_NAME = 64
MAX_TEXT = 128
MAX_NUMBER = 1_000_000  # |value| of a numeric argument; the envelope checks the real limits
MAX_INT_DIGITS = 16  # longer integers are read as floats (inf beyond 1e308), never as bignums
ID_PATTERN = r"^[A-Za-z0-9._:-]+$"  # ASCII only: no control, bidi or look-alike characters
_NAME = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_ID}}}")  # a command name, same alphabet
T = TypeVar("T")


class CommandRefused(Exception):
    """A command was not executed; ``code`` and ``reason`` go into the reply."""

    def __init__(
        self, code: str, reason: str, command_id: str | None = None, name: str | None = None
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.command_id = command_id
        self.name = name  # the command's name when it could be read


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed command. ``sender`` is the authenticated broker user (the ``cmd/{user}`` topic
    level the ACL lets only that user write); ``display_name`` is the payload's free-text
    ``from``, unverified; ``ignored`` says which arguments a stop ignored, and why."""

    id: str
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    sender: str | None = None
    display_name: str | None = None
    sent_at: float = 0.0
    ignored: str | None = None


_Number = Annotated[StrictFloat, Field(ge=-MAX_NUMBER, le=MAX_NUMBER, allow_inf_nan=False)]
_Integer = Annotated[StrictInt, Field(ge=-MAX_NUMBER, le=MAX_NUMBER)]
_Text = Annotated[str, Field(max_length=MAX_TEXT)]
_Scalar = Annotated[
    StrictBool | _Integer | _Number | _Text | None, Field(union_mode="left_to_right")
]
_ARGS: TypeAdapter[dict[str, Any]] = TypeAdapter(
    Annotated[
        dict[Annotated[str, Field(min_length=1, max_length=MAX_ARG_NAME)], _Scalar],
        Field(max_length=MAX_ARGS),
    ]
)


class _Envelope(BaseModel):
    """Everything of micropen.command/2 but its args (checked apart, so a stop survives them)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: Annotated[str, Field(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN)]
    command: Annotated[str, Field(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN)]
    sent_at: Annotated[float, Field(ge=0, allow_inf_nan=False)]


_SPECIAL = re.compile(rb'[\\"\[\]{}]')  # backslash, quote, brackets: all that nesting reads


def nesting(data: bytes, limit: int = MAX_DEPTH) -> tuple[int, bytes]:
    """(deepest nesting, the payload with every container deeper than ``limit`` replaced by
    null). One left-to-right pass over quotes, backslashes and brackets, in time linear in the
    payload and without recursion: ``json.loads`` recurses once per level, so a 5,000-level
    payload must be measured before it is parsed. (A regular expression for JSON strings would
    rescan from every quote of an unterminated string: quadratic, 18 s for 64 KiB of ``\\"``.)
    The shallow copy is read only to answer a refusal with the command's id, or to stop."""
    depth = deepest = 0
    start = escaped_until = -1
    in_string = False
    cuts: list[tuple[int, int]] = []
    for match in _SPECIAL.finditer(data):
        at = match.start()
        if at < escaped_until:
            continue  # the character after a backslash
        char = data[at]
        if in_string:
            if char == 0x5C:  # backslash: the next byte is escaped
                escaped_until = at + 2
            elif char == 0x22:
                in_string = False
            continue
        if char == 0x22:
            in_string = True
        elif char in b"[{":
            depth += 1
            deepest = max(deepest, depth)
            if depth == limit + 1:
                start = at
        elif char in b"]}":
            if depth == limit + 1 and start >= 0:
                cuts.append((start, at + 1))
                start = -1
            depth -= 1
    if deepest <= limit:
        return deepest, data
    pieces, at = [], 0
    for begin, end in cuts:
        pieces += [data[at:begin], b"null"]
        at = end
    pieces.append(data[at:])
    return deepest, b"".join(pieces)


def _int_or_float(text: str) -> int | float:
    return int(text) if len(text.lstrip("-")) <= MAX_INT_DIGITS else float(text)


def _loads(data: str) -> tuple[Any, list[str]]:
    """json.loads with bounded integers; the duplicate keys it met."""
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in items:
            if key in obj:
                duplicates.append(key)
            else:
                obj[key] = value  # the first one counts (and the command is refused anyway)
        return obj

    return json.loads(data, parse_int=_int_or_float, object_pairs_hook=pairs), duplicates


def _field_error(exc: ValidationError, prefix: str = "") -> str:
    """'args.depth_mm: Input should be a finite number' — the most telling error of a union."""
    errors = exc.errors(include_url=False)
    telling = [e for e in errors if not e["type"].endswith("_type")] or errors
    first = telling[0]
    loc = [str(p) for p in first["loc"] if not str(p).startswith(("constrained-", "bool"))]
    where = ".".join([prefix, *loc] if prefix else loc) or prefix or "payload"
    if first["type"].endswith("_type") and prefix == "args":
        return f"{where}: must be a number, text, true/false or null, got {first['input']!r:.40}"
    return f"{where}: {first['msg']}"


_ARGS_RULE = (
    f"args hold at most {MAX_ARGS} plain values: numbers within ±{MAX_NUMBER}, text up to "
    f"{MAX_TEXT} characters, true/false or null"
)


def _display_name(value: Any) -> str | None:
    """The payload's 'from', kept only as printable text of at most MAX_TEXT characters
    (it is unverified and only displayed; a bad one is dropped, never a reason to refuse)."""
    if isinstance(value, str) and 0 < len(value) <= MAX_TEXT and value.isprintable():
        return value
    return None


def parse_command(
    data: bytes | bytearray, *, retained: bool = False, sender: str | None = None
) -> Command:
    """A command payload, or CommandRefused carrying the id when readable. ``sender`` is the
    authenticated broker user the command came from (the bridge reads it from the topic)."""
    data = bytes(data)
    if len(data) > MAX_COMMAND_BYTES:
        raise CommandRefused(
            "too-large", f"command payload is {len(data)} bytes; at most {MAX_COMMAND_BYTES}"
        )
    try:  # UTF-8 only (json.loads would guess UTF-16/32 from bytes): then no byte of a
        data.decode("utf-8")  # multi-byte character is a quote, backslash or bracket
        deepest, readable = nesting(data)
        obj, duplicates = _loads(readable.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise CommandRefused("bad-request", "command payload is not JSON (UTF-8)") from None
    if not isinstance(obj, dict):
        raise CommandRefused("bad-request", "command payload is not a JSON object")
    raw_id, name = obj.get("id"), obj.get("command")
    cid = raw_id if isinstance(raw_id, str) and 0 < len(raw_id) <= MAX_ID else None
    name = name if isinstance(name, str) and _NAME.fullmatch(name) else None  # logged: plain
    if cid is None or "id" in duplicates:
        raise CommandRefused(
            "bad-request", f"command needs one 'id' string of 1–{MAX_ID} chars", None, name
        )
    if retained:
        raise CommandRefused(
            "bad-request", "retained commands are refused (they replay on every reconnect); "
            "publish commands with retain=false", cid, name,
        )  # fmt: skip
    if obj.get("schema") != SCHEMAS["cmd"].name:
        raise CommandRefused(
            "bad-request", f"schema {obj.get('schema')!r}; this bridge reads {SCHEMAS['cmd'].name}",
            cid, name,
        )  # fmt: skip
    if name is None:
        raise CommandRefused("bad-request", "'command' must be a command name", cid)
    if duplicates:
        raise CommandRefused(
            "bad-request", f"duplicate key {duplicates[0]!r}: each key may appear once", cid, name
        )
    try:
        envelope = _Envelope.model_validate(obj)
    except ValidationError as exc:
        raise CommandRefused("bad-request", _field_error(exc), cid, name) from None
    args, ignored = obj.get("args", {}), None
    try:
        if deepest > MAX_DEPTH:
            raise CommandRefused(
                "bad-request", f"payload is nested {deepest} levels deep; at most {MAX_DEPTH}"
            )
        if not isinstance(args, dict):
            raise CommandRefused("bad-request", "'args' must be a JSON object")
        args = _ARGS.validate_python(args)
    except (CommandRefused, ValidationError) as exc:
        why = exc.reason if isinstance(exc, CommandRefused) else _field_error(exc, "args")
        if name != "stop":
            reason = why if isinstance(exc, CommandRefused) else f"{why} ({_ARGS_RULE})"
            raise CommandRefused("bad-request", reason, cid, name) from None
        args, ignored = {}, f"{why}: the arguments were ignored, the pen was stopped"
    return Command(
        envelope.id, name, args, sender, _display_name(obj.get("from")), envelope.sent_at, ignored
    )


class CommandPolicy:
    """Which commands this bridge executes: status and stop, plus what ``allow`` adds."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        extra = set(allow)
        for name in sorted(extra):
            if name in NEVER_REMOTE:
                raise BrokerConfigError(
                    f"{name!r} cannot be allowed remotely: {NEVER_REMOTE[name]}"
                )
            if name not in OPT_IN | ALLOWED_BY_DEFAULT:
                raise BrokerConfigError(
                    f"unknown remote command {name!r}; can be allowed: {', '.join(sorted(OPT_IN))}"
                )
        self.allowed = frozenset(ALLOWED_BY_DEFAULT | extra)

    def check(self, command: Command) -> None:
        if command.name in self.allowed:
            return
        if command.name in NEVER_REMOTE:
            why = NEVER_REMOTE[command.name]
        elif command.name in OPT_IN:
            why = f"not enabled on this bridge (start it with --allow {command.name})"
        else:
            why = "unknown command"
        raise CommandRefused(
            "not-allowed",
            f"remote command {command.name!r} refused: {why}; remotely allowed: "
            f"{', '.join(sorted(self.allowed))}",
            command.id,
        )


class RecentReplies(Generic[T]):
    """The last replies (or replies in progress) by command id, so a redelivered command is
    answered, not re-run."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._replies: OrderedDict[str, T] = OrderedDict()

    def get(self, command_id: str) -> T | None:
        return self._replies.get(command_id)

    def add(self, command_id: str, reply: T) -> None:
        self._replies[command_id] = reply
        self._replies.move_to_end(command_id)
        while len(self._replies) > self.size:
            self._replies.popitem(last=False)

    def discard(self, command_id: str) -> None:
        self._replies.pop(command_id, None)


def _number(args: dict[str, Any], key: str, cid: str) -> float:
    value = args.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CommandRefused("bad-request", f"'{key}' must be a number, got {value!r}", cid)
    return value


def _integer(args: dict[str, Any], key: str, cid: str) -> int:
    value = _number(args, key, cid)
    if not isinstance(value, int):
        raise CommandRefused("bad-request", f"'{key}' must be a whole number, got {value!r}", cid)
    return value


def check_envelope(pen: AsyncPen, command: Command) -> None:
    """Refuse ("envelope") what the pen's or the area's limits forbid, before sending."""
    args, cid = command.args, command.id
    if command.name == "stop":
        return  # a stop is never refused because of its arguments (hazard 2): they are ignored
    try:
        area = safety.resolve_area(args["area"]) if "area" in args else None
        if command.name == "set_depth":
            if args.get("override_reason"):
                raise SafetyLimitError(
                    "a soft-cap override is given only by the operator at the pen, not remotely"
                )
            assert pen.identity is not None
            safety.check_depth(_number(args, "depth_mm", cid), pen.identity, area)
        elif command.name == "set_rate":
            assert pen.identity is not None
            safety.check_rate(_integer(args, "rate_sps", cid), pen.identity, area)
        elif command.name == "set_telemetry":
            hz = _integer(args, "hz", cid)
            if not 0 <= hz <= L.TELEMETRY_MAX_HZ:
                raise SafetyLimitError(f"telemetry rate {hz} Hz is outside 0–{L.TELEMETRY_MAX_HZ}")
    except SafetyLimitError as exc:
        raise CommandRefused("envelope", str(exc), cid) from None


async def execute(pen: AsyncPen, command: Command) -> Any:
    """Run an allowed command on the pen; its result for the reply, or CommandRefused."""
    if pen.identity is None:
        raise CommandRefused("pen", "the bridge has no link to the pen yet", command.id)
    check_envelope(pen, command)
    args = command.args
    try:
        if command.name == "status":
            status = await pen.status()
            return {k: v for k, v in status.to_dict().items() if k != "cmd_id"}
        if command.name == "stop":
            await pen.stop()
            return _stopped(command)
        if command.name == "emergency_stop":
            await pen.emergency_stop()
        elif command.name == "clear_fault":
            await pen.clear_fault()
        elif command.name == "set_telemetry":
            await pen.set_telemetry(int(args["hz"]))
        elif command.name == "set_depth":
            await pen.set_depth(float(args["depth_mm"]), area=args.get("area"))
        elif command.name == "set_rate":
            await pen.set_rate(int(args["rate_sps"]), area=args.get("area"))
        else:  # the policy let through something execute() does not know: refuse, loudly
            raise CommandRefused(
                "not-allowed", f"no remote handler for {command.name!r}", command.id
            )
    except SafetyLimitError as exc:
        raise CommandRefused("envelope", str(exc), command.id) from None
    except InvalidInput as exc:
        raise CommandRefused("bad-request", str(exc), command.id) from None
    except HostError as exc:
        raise CommandRefused("pen", str(exc), command.id) from None
    return {"done": command.name}


def _stopped(command: Command) -> dict[str, Any]:
    """The result of a stop, naming the arguments it ignored (a stop takes none)."""
    result: dict[str, Any] = {"done": "stop"}
    if command.ignored is not None:
        result["ignored_args"] = command.ignored
    elif command.args:
        names = ", ".join(sorted(command.args))
        result["ignored_args"] = f"stop takes no arguments; ignored: {names}"
    return result
