"""Remote commands: deny by default (hazard 8, "a remote party commands the pen").

A remote party may ask for ``status`` and may ``stop`` the pen; nothing else unless the bridge
was started with an explicit ``--allow``, and even then only from a short list of
non-treatment commands, each checked against the pen's envelope before anything is sent. Starting
a run is never accepted remotely: a treatment is started by the operator holding the pen. A
retained command is refused (it would replay at every reconnect), and a command id seen recently
is answered again from memory, never executed twice (QoS 1 may deliver it twice).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from micropen.protocol import limits as L

from .. import safety
from ..connection import AsyncPen
from ..errors import HostError, InvalidInput, SafetyLimitError
from .errors import BrokerConfigError
from .topics import SCHEMAS

__all__ = [
    "ALLOWED_BY_DEFAULT",
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
    id: str
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    sender: str | None = None


def parse_command(data: bytes | bytearray, *, retained: bool = False) -> Command:
    """A command payload, or CommandRefused("bad-request", ...) carrying the id when readable."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise CommandRefused("bad-request", "command payload is not JSON") from None
    if not isinstance(obj, dict):
        raise CommandRefused("bad-request", "command payload is not a JSON object")
    raw_id, name = obj.get("id"), obj.get("command")
    cid = raw_id if isinstance(raw_id, str) and 0 < len(raw_id) <= MAX_ID else None
    name = name if isinstance(name, str) and 0 < len(name) <= MAX_ID else None
    if cid is None:
        raise CommandRefused(
            "bad-request", f"command needs an 'id' string of 1–{MAX_ID} chars", None, name
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
    args, sender = obj.get("args", {}), obj.get("from")
    if name is None:
        raise CommandRefused("bad-request", "'command' must be a command name", cid)
    if not isinstance(args, dict):
        raise CommandRefused("bad-request", "'args' must be a JSON object", cid, name)
    return Command(cid, name, args, sender if isinstance(sender, str) else None)


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
        elif command.name == "emergency_stop":
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
