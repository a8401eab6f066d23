"""Imports flow one way: tools → host → protocol, sim → protocol.

protocol imports nothing of ours; sim never imports host or tools (it must not borrow the host's
checks); host never imports tools, and reaches sim only through the `sim://` transport.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "protocol": {"sim", "host", "tools", "hil_tests"},
    "sim": {"host", "tools", "hil_tests"},
    "host": {"tools", "hil_tests", "sim"},
}
# the in-process simulator transport is the one place the host may reach the simulator
ALLOWED = {("host", "sim"): {"host/transports/sim.py"}}


def _our_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "micropen" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_flow_one_way(layer: str) -> None:
    offences = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for target in _our_imports(path) & FORBIDDEN[layer]:
            if rel not in ALLOWED.get((layer, target), set()):
                offences.append(f"{rel} imports micropen.{target}")
    assert not offences, "\n".join(offences)


def test_protocol_does_no_io() -> None:
    """Sans-I/O: no asyncio, serial, sockets, threads or clock reads in protocol/."""
    banned = {"asyncio", "serial", "socket", "threading", "time", "selectors", "usb"}
    offences = []
    for path in sorted((ROOT / "protocol").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods = [node.module.split(".")[0]]
            else:
                continue
            offences += [f"{path.name} imports {m}" for m in mods if m in banned]
    assert not offences, "\n".join(offences)


def test_no_micropen_package_in_the_repo_root() -> None:
    """A micropen/ folder at the root would shadow the installed package under pytest."""
    assert not (ROOT / "micropen").exists()


def _calls(tree: ast.AST, dotted: str) -> list[int]:
    """Line numbers of calls to ``dotted`` (e.g. "asyncio.wait_for")."""
    owner, name = dotted.rsplit(".", 1)
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == name
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == owner
    ]


# asyncio.shield guarding a future that several waiters share (not cleanup): a redelivered
# remote command awaits the first delivery's reply, and one waiter's cancel must not cancel it
SHARED_FUTURES = {"host/fleet/bridge.py"}


@pytest.mark.parametrize("layer", ["host", "tools", "hil_tests"])
def test_tasks_are_owned_the_same_way_everywhere(layer: str) -> None:
    """Timeouts are scopes (``asyncio.wait_for`` can swallow a cancel on 3.11), and nothing
    suppresses ``CancelledError`` (a caller's cancellation must always get through): both go
    through host/tasks.py."""
    offences = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "host/tasks.py":
            continue
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        offences += [f"{rel}:{n} asyncio.wait_for" for n in _calls(tree, "asyncio.wait_for")]
        if rel not in SHARED_FUTURES:
            offences += [
                f"{rel}:{n} asyncio.shield (use host.tasks.shielded)"
                for n in _calls(tree, "asyncio.shield")
            ]
        for node in ast.walk(tree):
            suppress = isinstance(node, ast.Call) and ast.unparse(node.func).endswith("suppress")
            if suppress and any("CancelledError" in ast.unparse(a) for a in node.args):  # type: ignore[attr-defined]
                offences.append(f"{rel}:{node.lineno} suppresses CancelledError")
    assert not offences, "\n".join(offences)
