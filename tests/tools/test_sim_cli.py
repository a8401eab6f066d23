"""``micropen sim``: the sub-app on its own (CliRunner), and ``serve`` for real in a child."""

from __future__ import annotations

import json
import selectors
import socket
import subprocess
import sys
import time

import pytest
import serial
from typer.testing import CliRunner

from micropen.protocol.events import MessageReceived
from micropen.protocol.link import Link, Role
from micropen.protocol.messages import (
    PROTOCOL_VERSION,
    Hello,
    Identity,
    SimGet,
    SimParam,
    SimParamValue,
)
from micropen.protocol.schema import Message, schema_hash
from micropen.sim.faults import PARAM_SPECS
from micropen.tools import sim_cli

runner = CliRunner()


def test_params_lists_every_parameter_with_its_range_and_meaning() -> None:
    result = runner.invoke(sim_cli.app, ["params"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert len(lines) == len(SimParam)
    for line, spec in zip(lines, PARAM_SPECS.values(), strict=True):
        assert line.startswith(spec.param.name.lower())
        assert f"{spec.lo}..{spec.hi}" in line and spec.doc in line


def test_params_json_is_one_object_per_line() -> None:
    result = runner.invoke(sim_cli.app, ["params", "--json"])
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert {row["name"] for row in rows} == {p.name.lower() for p in SimParam}
    drop = next(row for row in rows if row["name"] == "link_drop_ppm")
    assert (drop["lo"], drop["hi"], drop["unit"]) == (0, 1_000_000, "ppm")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["serve"], "exactly one of --pty or --tcp"),
        (["serve", "--pty", "--tcp", "0"], "exactly one of --pty or --tcp"),
        (["serve", "--tcp", "0", "--set", "warp_drive=1"], "valid: link_drop_ppm, "),
        (["serve", "--tcp", "0", "--set", "link_drop_ppm"], "expected PARAM=VALUE"),
        (["serve", "--tcp", "0", "--set", "link_drop_ppm=lots"], "not an integer"),
        (["serve", "--tcp", "0", "--set", "link_drop_ppm=2000000"], "outside 0..1000000 ppm"),
        (["serve", "--tcp", "0", "--query", "colour=red"], "unknown simulator option"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], says: str) -> None:
    result = runner.invoke(sim_cli.app, args)
    assert result.exit_code == 2
    message = result.output.strip()
    assert "\n" not in message and says in message, message


def test_a_taken_port_exits_2_naming_the_problem() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = runner.invoke(sim_cli.app, ["serve", "--tcp", str(port)])
    assert result.exit_code == 2
    assert "error:" in result.output and "\n" not in result.output.strip()


# ---------------------------------------------------------------- the real thing
def _pump(port: serial.SerialBase, link: Link) -> list[Message]:
    port.write(link.data_to_send(time.monotonic()))
    link.receive_data(port.read(max(1, port.in_waiting)), time.monotonic())
    return [e.message for e in link.events() if isinstance(e, MessageReceived)]


def _request(port: serial.SerialBase, link: Link, message: Message) -> Message:
    """Connect if needed, send ``message``, return the reply carrying its cmd_id."""
    deadline = time.monotonic() + 5.0
    if not link.connected:
        link.connect(time.monotonic())
    while not link.connected:
        assert time.monotonic() < deadline, "no SYNACK"
        _pump(port, link)
    link.send(message, time.monotonic())
    while time.monotonic() < deadline:
        for reply in _pump(port, link):
            if getattr(reply, "cmd_id", None) == getattr(message, "cmd_id", None):
                return reply
    raise AssertionError(f"no reply to {message!r}")


def test_serve_announces_json_applies_settings_and_stops_on_sigterm() -> None:
    code = "from micropen.tools.sim_cli import app; app()"
    args = ["serve", "--tcp", "0", "--seed", "31", "--json"]
    args += ["--set", "DEPTH_GAIN_ERROR_PPM=20000", "--set", "link_drop_ppm=0"]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(10.0), "the CLI announced nothing"
        info = json.loads(proc.stdout.readline())
        assert set(info) == {"tcp", "serial"} and info["serial"] == "SIM-000031"
        port = serial.serial_for_url(f"socket://127.0.0.1:{info['tcp']}", timeout=0.02)
        try:
            link = Link(Role.HOST)
            hello = Hello(cmd_id=1, protocol_version=PROTOCOL_VERSION, schema_hash=schema_hash())
            identity = _request(port, link, hello)
            assert isinstance(identity, Identity) and identity.serial == "SIM-000031"
            get = SimGet(cmd_id=2, param=SimParam.DEPTH_GAIN_ERROR_PPM)
            value = _request(port, link, get)
            assert isinstance(value, SimParamValue) and value.value == 20000
        finally:
            port.close()
    finally:
        proc.terminate()
        status = proc.wait(5.0)
    assert status == 0, proc.stderr.read() if proc.stderr else status
