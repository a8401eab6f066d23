"""``micropen doctor``'s device checks: serial ports and groups, the udev rule, libusb, pens.

The permission story on Linux: a USB pen's device node (/dev/bus/usb/BBB/DDD) belongs to root
until a udev rule hands it to a group (``plugdev`` on Debian/Ubuntu) or, with
``TAG+="uaccess"``, to whoever sits at the desktop; serial ports (ttyUSB, ttyACM) belong to
``dialout`` (``uucp`` on Arch), and joining that group takes effect at the next login. Every
check takes the tree, the account and the group database it looks at, so tests point it at
fake ones; every fix is written out in full.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from micropen.host.transports.discovery import Scan

from .doctor_checks import Access, Verdict, ok, problem, skipped, warning

__all__ = [
    "RULE_FILE",
    "UDEV_RULE_DIRS",
    "Account",
    "Group",
    "GroupTable",
    "Groups",
    "SystemGroups",
    "check_libusb",
    "check_pens",
    "check_serial_group",
    "check_serial_ports",
    "check_udev_rule",
    "check_usb_bus",
    "check_user",
    "pen_rules",
    "serial_ports",
]

RULE_FILE = Path("/etc/udev/rules.d/70-micropen.rules")  # below 73: uaccess is applied at 73
# udev's precedence: a file in /etc masks one of the same name in /run, which masks /lib's
UDEV_RULE_DIRS = (
    Path("/etc/udev/rules.d"),
    Path("/run/udev/rules.d"),
    Path("/lib/udev/rules.d"),
    Path("/usr/lib/udev/rules.d"),
)
SERIAL_GLOBS = ("ttyUSB*", "ttyACM*", "cu.usbserial*", "cu.usbmodem*")
SERIAL_GROUPS = ("dialout", "uucp")  # Debian, Ubuntu, Fedora, openSUSE: dialout; Arch: uucp
USB_GROUP = "plugdev"  # Debian and Ubuntu; elsewhere the rule relies on uaccess
UACCESS_BEFORE = 73  # 73-seat-late.rules turns TAG+="uaccess" into an ACL


# --- who is asking ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Group:
    name: str
    gid: int
    members: frozenset[str] = frozenset()  # listed in the group database (not primary members)


class Groups(Protocol):
    """The group database (``grp``); :class:`GroupTable` is the in-memory one for tests."""

    def by_name(self, name: str) -> Group | None: ...

    def by_gid(self, gid: int) -> Group | None: ...


class SystemGroups:
    """This system's groups, looked up one at a time (no enumeration of a large directory)."""

    def by_name(self, name: str) -> Group | None:
        import grp

        try:
            return _group(grp.getgrnam(name))
        except KeyError:
            return None

    def by_gid(self, gid: int) -> Group | None:
        import grp

        try:
            return _group(grp.getgrgid(gid))
        except KeyError:
            return None


def _group(entry: Any) -> Group:
    return Group(entry.gr_name, entry.gr_gid, frozenset(entry.gr_mem))


@dataclass(frozen=True, slots=True)
class GroupTable:
    groups: tuple[Group, ...] = ()

    def by_name(self, name: str) -> Group | None:
        return next((g for g in self.groups if g.name == name), None)

    def by_gid(self, gid: int) -> Group | None:
        return next((g for g in self.groups if g.gid == gid), None)


@dataclass(frozen=True, slots=True)
class Account:
    """The user running doctor, and the groups this process has — the ones the kernel checks,
    which lag behind the group database until the next login."""

    name: str
    uid: int
    gids: frozenset[int]

    @classmethod
    def current(cls) -> Account:
        import pwd

        uid = os.getuid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:  # a container's arbitrary uid
            name = str(uid)
        return cls(name, uid, frozenset([*os.getgroups(), os.getegid()]))

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def serial_group(groups: Groups) -> Group | None:
    """The group that owns serial ports on this distribution."""
    return next((g for n in SERIAL_GROUPS if (g := groups.by_name(n)) is not None), None)


def _join(account: Account, group: Group) -> tuple[str, str]:
    """What is wrong with this account's membership of ``group``, and the fix."""
    if account.name in group.members:
        return (
            f"{account.name} was added to group {group.name}, but this login session started "
            "before that",
            f"log out and back in (or, for this shell only: newgrp {group.name})",
        )
    return (
        f"{account.name} is not in group {group.name}",
        f'sudo usermod -aG {group.name} "$USER", then log out and back in',
    )


def check_user(account: Account, sudo_user: str | None) -> Verdict:
    """Who runs micropen decides whose records folders are used and whose permissions count:
    a bench runs as the technician, and ``sudo micropen`` writes into root's folders."""
    if not account.is_root:
        return ok(f"{account.name} (uid {account.uid})")
    if sudo_user:
        return warning(
            f"running under sudo: records and pairings go to root's folders, not {sudo_user}'s, "
            "and this report says nothing about that account's permissions",
            "run micropen (and micropen doctor) without sudo, as the technician",
        )
    return warning(
        "running as root: records go to root's folders, and every permission check passes "
        "whatever a technician's account may do",
        "run micropen doctor as the account that runs treatments and calibrations",
    )


# --- serial -----------------------------------------------------------------------------------
def serial_ports(dev: Path) -> dict[Path, list[str]]:
    """Every USB serial port under ``dev``, with the /dev/serial/by-id names that point to it."""
    ports: dict[Path, list[str]] = {}
    for pattern in SERIAL_GLOBS:
        for port in sorted(dev.glob(pattern)):
            ports.setdefault(port.resolve(), [])  # one key per device, however it is reached
    for link in sorted((dev / "serial" / "by-id").glob("*")):
        target = link.resolve()
        if target.exists():  # a dangling name: its device has just gone
            ports.setdefault(target, []).append(link.name)
    return ports


def check_serial_ports(
    dev: Path, account: Account, groups: Groups, access: Access = os.access
) -> Verdict:
    """Which USB serial ports exist and whether this user can open them."""
    ports = serial_ports(dev)
    if not ports:
        return skipped(f"no USB serial ports ({dev}/ttyUSB*, ttyACM*, serial/by-id)")
    blocked = [p for p in ports if not access(p, os.R_OK | os.W_OK)]
    if not blocked:
        names = ", ".join(_label(p, ports[p]) for p in ports)
        return ok(f"{len(ports)} port{'s' if len(ports) > 1 else ''}, all usable: {names}")
    return _blocked_ports(blocked, ports, account, groups)


def _label(port: Path, names: Sequence[str]) -> str:
    return f"{port} ({', '.join(names)})" if names else str(port)


def _blocked_ports(
    blocked: list[Path], ports: dict[Path, list[str]], account: Account, groups: Groups
) -> Verdict:
    info = blocked[0].stat()
    group = groups.by_gid(info.st_gid)
    names = ", ".join(_label(p, ports[p]) for p in blocked)
    found = f"this user cannot open {names} (mode {info.st_mode & 0o777:o}"
    if group is None or group.gid == 0 or (info.st_mode & 0o060) != 0o060:
        return problem(
            f"{found}, group {group.name if group else info.st_gid}): the port is not "
            "handed to any group",
            f"install the udev rule (see the udev-rule check), or: sudo chmod 660 {blocked[0]}",
        )
    why, fix = _join(account, group)
    return problem(f"{found}, group {group.name}): {why}", fix)


def check_serial_group(account: Account, groups: Groups, platform: str = sys.platform) -> Verdict:
    """Membership of the serial ports' group, checked before any pen is plugged in."""
    if not platform.startswith("linux"):
        return skipped(f"serial ports on {platform} need no group membership")
    if account.is_root:
        return skipped("root opens every port (see the user check)")
    group = serial_group(groups)
    if group is None:
        return skipped(f"no {' or '.join(SERIAL_GROUPS)} group on this system")
    if group.gid in account.gids:
        return ok(f"{account.name} is in group {group.name}: serial ports open")
    why, fix = _join(account, group)
    return warning(f"{why}, which owns the serial ports here", fix)


# --- the udev rule ----------------------------------------------------------------------------
def _pen_ids() -> tuple[int, int]:
    """The pen's USB ids (imported late: a broken pyusb must not stop doctor reporting it)."""
    from micropen.host.transports.usb import PEN_PID, PEN_VID

    return PEN_VID, PEN_PID


def pen_rules(groups: Groups) -> str:
    """The content of /etc/udev/rules.d/70-micropen.rules for this distribution's groups."""
    vid, pid = _pen_ids()
    usb = groups.by_name(USB_GROUP)
    tty = serial_group(groups)
    usb_group = f', GROUP="{usb.name}"' if usb else ""
    tty_group = f', GROUP="{tty.name}"' if tty else ""
    ids = f'ATTR{{idVendor}}=="{vid:04x}", ATTR{{idProduct}}=="{pid:04x}"'
    parent_ids = ids.replace("ATTR{", "ATTRS{")
    reach = (
        f'GROUP="{usb.name}" gives its members access over SSH and in services too.'
        if usb
        else "No plugdev group on this system: access is for the desktop user."
    )
    return "\n".join(
        [
            f"# micropen pen, USB {vid:04x}:{pid:04x} (pid.codes): {RULE_FILE}",
            '# TAG+="uaccess" gives the user at the desktop access; it works only in a file',
            f"# numbered below {UACCESS_BEFORE}. {reach}",
            f'SUBSYSTEM=="usb", {ids}, MODE="0660"{usb_group}, TAG+="uaccess"',
            "# the serial interface of the pen (ttyACM), like every serial port here",
            f'SUBSYSTEM=="tty", {parent_ids}, MODE="0660"{tty_group}, TAG+="uaccess"',
        ]
    )


def install_rule_fix(groups: Groups) -> str:
    """Commands that install the rule and apply it without a reboot. One quoted argument per
    line (no here-document), so the block pastes into a shell even when indented."""
    lines = " \\\n".join(f"  '{line}'" for line in pen_rules(groups).splitlines())
    return (
        f"printf '%s\\n' \\\n{lines} \\\n  | sudo tee {RULE_FILE} > /dev/null\n"
        "sudo udevadm control --reload-rules && sudo udevadm trigger\n"
        "# then unplug the pen and plug it in again"
    )


@dataclass(frozen=True, slots=True)
class _Rule:
    file: Path
    line: str


_VENDOR = re.compile(r'ATTRS?\{idVendor\}\s*==\s*"([0-9a-fA-F]{4})"')
_PRODUCT = re.compile(r'ATTRS?\{idProduct\}\s*==\s*"([0-9a-fA-F]{4})"')
_GROUP = re.compile(r'GROUP\s*:?=\s*"([^"]+)"')
_MODE = re.compile(r'MODE\s*:?=\s*"0?([0-7]{3})"')


def _rule_files(rule_dirs: Iterable[Path]) -> list[Path]:
    """The rule files udev reads, a file in an earlier folder masking its namesakes."""
    chosen: dict[str, Path] = {}
    for folder in rule_dirs:
        for file in sorted(folder.glob("*.rules")) if folder.is_dir() else []:
            chosen.setdefault(file.name, file)
    return [chosen[name] for name in sorted(chosen)]


def _rule_lines(file: Path) -> list[str] | None:
    """Rule lines with backslash continuations joined and comments dropped (None: unreadable
    by this user; udev reads rules as root)."""
    try:
        text = file.read_text(encoding="utf-8", errors="replace").replace("\\\n", " ")
    except OSError:
        return None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _pen_rules_found(rule_dirs: Iterable[Path]) -> tuple[list[_Rule], list[Path]]:
    """The rule lines naming the pen, and the rule files this user could not read."""
    vid, pid = _pen_ids()
    found, unreadable = [], []
    for file in _rule_files(rule_dirs):
        lines = _rule_lines(file)
        if lines is None:
            unreadable.append(file)
        for line in lines or []:
            vendor, product = _VENDOR.search(line), _PRODUCT.search(line)
            if vendor and int(vendor[1], 16) == vid and (not product or int(product[1], 16) == pid):
                found.append(_Rule(file, line))
    return found, unreadable


def check_udev_rule(
    rule_dirs: Sequence[Path], account: Account, groups: Groups, platform: str = sys.platform
) -> Verdict:
    """A udev rule naming the pen (USB 1209) that gives this user access to it."""
    if not platform.startswith("linux"):
        return skipped(f"udev rules are for Linux; {platform} needs none")
    if not any(d.is_dir() for d in rule_dirs):
        return skipped(
            f"no udev rules folders here ({', '.join(map(str, rule_dirs))}): a container or a "
            "system without udev; the bench PC itself needs the rule"
        )
    rules, unreadable = _pen_rules_found(rule_dirs)
    if rules:
        return _judge_rules(rules, account, groups)
    vid, pid = _pen_ids()
    unread = f" (not readable here: {', '.join(map(str, unreadable))})" if unreadable else ""
    return warning(
        f"no udev rule for the pen (USB {vid:04x}:{pid:04x}){unread}: its device node stays "
        "root's, and micropen cannot open a USB pen",
        install_rule_fix(groups),
    )


def _judge_rules(rules: list[_Rule], account: Account, groups: Groups) -> Verdict:
    """The first rule that grants this user access wins; else the first reason it does not."""
    reasons = [_rule_gap(rule, account, groups) for rule in rules]
    for rule, reason in zip(rules, reasons, strict=True):
        if reason is None:
            return ok(f"{rule.file}: {rule.line}")
    why, fix = next(r for r in reasons if r is not None)
    return warning(f"{rules[0].file} names the pen, but {why}", fix)


def _rule_gap(rule: _Rule, account: Account, groups: Groups) -> tuple[str, str] | None:
    """Why this rule does not give this user the pen (None: it does)."""
    if 'TAG+="uaccess"' in rule.line.replace(" ", ""):
        number = re.match(r"\d+", rule.file.name)
        if number is None or int(number[0]) < UACCESS_BEFORE:
            return None
        return (
            f'TAG+="uaccess" in a file numbered {number[0]} comes after the seat rules ('
            f"{UACCESS_BEFORE}) and has no effect",
            f"sudo mv {shlex.quote(str(rule.file))} {RULE_FILE} && sudo udevadm control "
            "--reload-rules && sudo udevadm trigger",
        )
    return _group_gap(rule, account, groups)


def _group_gap(rule: _Rule, account: Account, groups: Groups) -> tuple[str, str] | None:
    group_name, mode = _GROUP.search(rule.line), _MODE.search(rule.line)
    if mode is not None and int(mode[1], 8) & 0o006 == 0o006:
        return None  # everyone may read and write
    if group_name is None or mode is None or int(mode[1], 8) & 0o060 != 0o060:
        return "it grants no access (no MODE with group rw, GROUP or uaccess)", install_rule_fix(
            groups
        )
    group = groups.by_name(group_name[1])
    if group is None:
        return f"its group {group_name[1]} does not exist here", install_rule_fix(groups)
    if account.is_root or group.gid in account.gids:
        return None
    return _join(account, group)


# --- USB --------------------------------------------------------------------------------------
def check_libusb(find_backend: Callable[[], Any] | None = None) -> Verdict:
    """The libusb that pyusb will use (libusb-package's own, else the system's)."""
    try:
        backend = (find_backend or _usb_backend)()
    except ImportError as exc:
        return problem(f"pyusb is not installed ({exc.name or exc})", "pip install pyusb")
    except Exception as exc:  # TransportError("libusb not found: …") and pyusb's own errors
        return problem(
            " ".join(str(exc).split()) or type(exc).__name__,
            "python3 -m pip install libusb-package  (or: sudo apt-get install libusb-1.0-0)",
        )
    library = getattr(getattr(backend, "lib", None), "_name", None)
    return ok(f"libusb found: {library}" if library else f"libusb backend {type(backend).__name__}")


def _usb_backend() -> Any:
    """The backend micropen's USB transport uses (imported late: pyusb may be missing)."""
    from micropen.host.transports.usb import usb_backend

    return usb_backend()


def check_usb_bus(
    found: Scan, bus_dir: Path, groups: Groups, platform: str = sys.platform
) -> Verdict:
    """Whether the USB bus could be read: an unreadable bus is not an empty one."""
    if found.usb_error is not None:
        return problem(str(found.usb_error), _usb_fix(found.usb_error, groups))
    if platform.startswith("linux") and not bus_dir.is_dir():
        return skipped(
            f"no USB bus visible ({bus_dir} is missing): a container or VM without USB "
            "passthrough (docker run --device /dev/bus/usb)"
        )
    return ok("the USB bus was read")


def _usb_fix(error: BaseException, groups: Groups) -> str:
    """The udev rule when the cause is a permission (pyusb reports a missing langid so)."""
    cause = error.__cause__
    if isinstance(cause, ValueError) or getattr(cause, "errno", None) == errno.EACCES:
        return install_rule_fix(groups)
    return "follow the advice in the message above; then run micropen doctor again"


def check_pens(found: Scan) -> Verdict:
    """The pens attached now (USB, then serial by-id names), as ``micropen pens`` lists them."""
    if found.urls:
        many = " (choose one with --pen URL)" if len(found.urls) > 1 else ""
        return ok(f"{len(found.urls)} attached: {', '.join(found.urls)}{many}")
    where = "on serial ports; USB could not be read (see usb-bus)" if found.usb_error else ""
    return warning(
        f"no pen attached {where}".strip(),
        "plug the pen in and run micropen doctor again; the simulator needs none: --pen sim://",
    )
