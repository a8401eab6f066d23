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
