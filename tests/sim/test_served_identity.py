"""Every served form of the simulator says it is one: ``Capability.SIMULATOR`` in the Identity
it answers a Hello with — on a pty, on TCP, as a USB device, and from the command line. A host
(and its treatment log) can then never take it for a real pen, whatever serial or model it was
configured with. Each power-on of a served simulator is a new boot (a new boot id)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import serial
import usb.core
import usb.util
from _pen_host import handshake, open_port, read_line, served_in_thread, stop_child
from test_usb_device import UsbPort

from micropen.protocol.messages import Capability, Identity
from micropen.sim.pen import SimConfig
from micropen.sim.serve import PtyTransport, TcpTransport
from micropen.sim.usb_device import make_sim_usb_backend

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX ptys")

# a simulator dressed up as a production unit still says what it is
DISGUISED = SimConfig(seed=8, serial="MP12-004711", model="MP-12", link_faults=False)


def _is_simulator(identity: Identity) -> None:
    assert Capability.SIMULATOR in Capability(identity.capabilities), identity


@pytest.mark.parametrize("config", [SimConfig(seed=8), DISGUISED], ids=["plain", "disguised"])
def test_a_pty_served_pen_says_it_is_a_simulator(config: SimConfig) -> None:
    with (
        served_in_thread(config, PtyTransport()) as server,
        serial.Serial(str(server.describe()["pty"]), timeout=0.02) as port,
    ):
        identity = handshake(port)
    _is_simulator(identity)
    assert identity.serial == config.serial_number


@pytest.mark.parametrize("config", [SimConfig(seed=8), DISGUISED], ids=["plain", "disguised"])
def test_a_tcp_served_pen_says_it_is_a_simulator(config: SimConfig) -> None:
    with served_in_thread(config, TcpTransport()) as server:
        url = f"socket://127.0.0.1:{server.describe()['tcp']}"
        with serial.serial_for_url(url, timeout=0.02) as port:
            identity = handshake(port)
    _is_simulator(identity)
    assert identity.serial == config.serial_number


def test_a_usb_served_pen_says_it_is_a_simulator() -> None:
    backend = make_sim_usb_backend([SimConfig(seed=8), DISGUISED])
    try:
        devices = list(usb.core.find(find_all=True, backend=backend, idVendor=0x1209))
        assert len(devices) == 2
        for dev in devices:
            identity = handshake(UsbPort(dev))
            _is_simulator(identity)
            assert identity.serial == dev.serial_number
            usb.util.dispose_resources(dev)
    finally:
        backend.close()


CLI = "from micropen.tools.cli import main; main()"


@contextmanager
def _cli_server(*args: str) -> Iterator[dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "sim", "serve", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield json.loads(read_line(proc.stdout))  # type: ignore[arg-type]
    finally:
        status = stop_child(proc)
        assert status == 0, proc.stderr.read() if proc.stderr else status


@pytest.mark.parametrize("where", [["--tcp", "0"], ["--pty"]], ids=["tcp", "pty"])
def test_the_cli_served_pen_says_it_is_a_simulator_and_boots_anew_each_time(
    where: list[str],
) -> None:
    boots = []
    for _ in range(2):  # the same unit served twice: two power-ons
        query = "seed=8&serial=MP12-004711&model=MP-12"
        with _cli_server(*where, "--query", query) as info, open_port(info) as port:
            identity = handshake(port)
        _is_simulator(identity)
        assert identity.serial == "MP12-004711"
        boots.append(identity.boot_id)
    assert boots[0] != boots[1]


def test_boot_ids_of_a_served_pen_repeat_only_when_asked() -> None:
    boots = []
    for _ in range(2):
        with (
            _cli_server("--tcp", "0", "--query", "seed=8&boot_seed=3") as info,
            open_port(info) as p,
        ):
            boots.append(handshake(p).boot_id)
    assert boots[0] == boots[1]
