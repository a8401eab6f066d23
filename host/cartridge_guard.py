"""The fleet-wide cartridge check before a run (hazard 4, cross-contamination).

A pen's own lockout knows only its own history: a used cartridge moved to another handpiece is
a new cartridge to that pen. With a fleet registry (a database every bench reports to) the host
asks, before each run, whether the mounted cartridge (lot and id) was used on any *other* pen,
or belongs to a recalled lot, and claims it for this pen in the same transaction — so two pens
racing for one cartridge cannot both win.

The registry itself is pluggable (:class:`Registry`; PostgreSQL in
:mod:`micropen.host.fleet.registry`). What the host does when it cannot reach it is a policy,
chosen explicitly and logged: ``refuse`` (the default: the safe side) or ``allow`` with a
reason written into the treatment log at every run it lets through.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NoReturn, Protocol

from .errors import InvalidInput, PenNotReady

__all__ = [
    "CartridgeGuard",
    "CartridgeRefused",
    "Claim",
    "Mount",
    "Recalled",
    "Registry",
    "RegistryMisconfigured",
    "RegistryUnavailable",
    "UnreachablePolicy",
    "UsedElsewhere",
]

log = logging.getLogger(__name__)

REGISTRY_TIMEOUT_S = 5.0  # a registry slower than this counts as unreachable


@dataclass(frozen=True, slots=True)
class Mount:
    """A cartridge on a pen, as the host reads it before a run."""

    serial: str
    site: str
    cartridge_id: int
    lot: str


@dataclass(frozen=True, slots=True)
class Claim:
    """The registry holds the cartridge for this pen (now, or since an earlier run)."""


@dataclass(frozen=True, slots=True)
class UsedElsewhere:
    """The cartridge is on record for another pen."""

    serial: str
    site: str
    since: datetime


@dataclass(frozen=True, slots=True)
class Recalled:
    """The cartridge's lot is blocked fleet-wide."""

    reason: str
    at: datetime
    by: str


Verdict = Claim | UsedElsewhere | Recalled


class RegistryUnavailable(Exception):
    """A registry backend could not answer (network, database down, timeout): the policy
    decides."""


class RegistryMisconfigured(Exception):
    """The registry answered, or could not be asked, because it is set up wrong (no such
    database or role, refused login, no fleet schema or a newer one, a malformed URL): always
    refused, whatever the policy — a typo must not let cartridges through unchecked."""


class Registry(Protocol):
    async def claim(self, mount: Mount) -> Verdict:
        """Check the cartridge against every pen's history and recalled lots; when it is
        free, record it as this pen's, in one transaction."""
        ...


class CartridgeRefused(PenNotReady):
    """The fleet registry refused the mounted cartridge (used on another pen, recalled lot),
    is misconfigured, or could not be asked and the policy is to refuse. ``reason``:
    used_elsewhere, recalled, registry_misconfigured, registry_unreachable."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class UnreachablePolicy:
    """What a run does when the registry cannot be asked."""

    action: Literal["refuse", "allow"] = "refuse"
    reason: str = ""

    def __post_init__(self) -> None:
        if self.action not in ("refuse", "allow"):
            raise InvalidInput(
                f"registry policy {self.action!r} is neither 'refuse' nor 'allow'; "
                "use refuse (the default) or allow with a reason"
            )
        if self.action == "allow" and len(self.reason.strip()) < 5:
            raise InvalidInput(
                "allowing runs while the cartridge registry is unreachable needs a reason of "
                "at least 5 characters (it is logged with every such run)"
            )

    @classmethod
    def parse(cls, text: str) -> UnreachablePolicy:
        """``refuse``, or ``allow:REASON``."""
        action, _, reason = text.partition(":")
        return cls(action.strip().lower(), reason.strip())  # type: ignore[arg-type]


# the host's treatment-log hook: (code, value, run_id, detail)
EventSink = Callable[[str, int, int, str], None]


class CartridgeGuard:
    """Asks the registry about the mounted cartridge before each run of a pen."""

    def __init__(
        self,
        registry: Registry,
        *,
        site: str,
        policy: UnreachablePolicy | None = None,
        timeout_s: float = REGISTRY_TIMEOUT_S,
    ) -> None:
        self.registry = registry
        self.site = site
        self.policy = policy or UnreachablePolicy()
        self.timeout_s = timeout_s

    async def admit(self, serial: str, cartridge_id: int, lot: str, record: EventSink) -> None:
        """Return when the run may start; raise CartridgeRefused (logged through ``record``)
        when it must not."""
        if not cartridge_id:
            return  # no cartridge: the pen's own check refuses the run, with its own words
        mount = Mount(serial, self.site, cartridge_id, lot)
        try:
            async with asyncio.timeout(self.timeout_s):  # a scope: a caller's cancel gets through
                verdict = await self.registry.claim(mount)
        except (RegistryUnavailable, TimeoutError) as exc:
            self._unreachable(mount, exc, record)
            return
        except RegistryMisconfigured as exc:
            message = (
                f"the fleet cartridge registry is misconfigured ({exc}); no run is allowed "
                f"unchecked on a misconfigured registry (cartridge {_name(mount)}): correct "
                "MICROPEN_REGISTRY or the database (micropen doctor says what is wrong)"
            )
            _refuse(record, mount, "registry_misconfigured", message)
        if isinstance(verdict, UsedElsewhere):
            message = (
                f"cartridge {_name(mount)} was used on pen {verdict.serial} (site "
                f"{verdict.site}) since {verdict.since:%Y-%m-%d %H:%M} UTC: a cartridge is "
                "single-use (cross-contamination); mount a new sterile cartridge"
            )
            _refuse(record, mount, "used_elsewhere", message, event="cartridge_used_elsewhere")
        if isinstance(verdict, Recalled):
            message = (
                f"cartridge {_name(mount)} belongs to a recalled lot (recalled "
                f"{verdict.at:%Y-%m-%d} by {verdict.by}: {verdict.reason}); mount a cartridge "
                "from another lot and set the recalled ones aside"
            )
            _refuse(record, mount, "recalled", message, event="lot_recalled")

    def _unreachable(self, mount: Mount, exc: BaseException, record: EventSink) -> None:
        cause = str(exc) or type(exc).__name__
        if self.policy.action == "allow":
            detail = (
                f"cartridge {_name(mount)} not checked: the fleet registry is unreachable "
                f"({cause}); allowed by policy: {self.policy.reason}"
            )
            log.warning("%s", detail)
            record("fleet_registry_unreachable_allowed", mount.cartridge_id, 0, detail)
            return
        message = (
            f"the fleet cartridge registry is unreachable ({cause}), and the policy is to "
            f"refuse runs it cannot check (cartridge {_name(mount)}); restore the connection, "
            "or set MICROPEN_REGISTRY_UNREACHABLE='allow:REASON' for this bench"
        )
        _refuse(
            record, mount, "registry_unreachable", message, event="registry_unreachable_refused"
        )


def _refuse(
    record: EventSink, mount: Mount, reason: str, message: str, *, event: str | None = None
) -> NoReturn:
    """Log the refusal in the treatment log (host event ``fleet_<event>``), then raise it."""
    record(f"fleet_{event or reason}", mount.cartridge_id, 0, message)
    raise CartridgeRefused(message, reason) from None


def _name(mount: Mount) -> str:
    return f"{mount.cartridge_id:08X} of lot {mount.lot or '(none)'}"
