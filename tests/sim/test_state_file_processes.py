"""One simulated unit across real processes: ``micropen sim serve --state`` (TCP and pty) and
``sim://?seed=44&state=PATH``. The second process finds what the first left in the unit's NVM;
while one process holds the unit, another is refused; a process killed mid-run leaves a unit
whose cartridge never runs again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from _pen_host import PenHost, open_port, read_line, stop_child

from micropen.host.pairing import HostKeys
from micropen.protocol import limits as L
from micropen.protocol.messages import (
    Ack,
    CalBank,
    CalCommit,
    CalData,
    CalRead,
    CalWrite,
    CartridgeInfo,
    CartridgeState,
    ErrorCode,
    GetCartridge,
    Nak,
    Run,
    RunMode,
    SetDepth,
    calibration_crc,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file locks and ptys")

CLI = "from micropen.tools.cli import main; main()"
RECORD = (1, 15_000, -40, 8_000, 1_700_000_000, 6)
RECORD_CRC = calibration_crc(*RECORD)


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "MICROPEN_HOME": str(home)}


@contextmanager
def _serve(*args: str, home: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """``micropen sim serve … --json`` in a child process; SIGTERM (exit 0 checked) on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "sim", "serve", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(home),
    )
    try:
        assert proc.stdout is not None
        line = read_line(proc.stdout)
        assert line, proc.stderr.read() if proc.stderr else "no announcement"
        yield proc, {**json.loads(line), "home": str(home)}
    finally:
        if proc.poll() is None:
            status = stop_child(proc)
            assert status == 0, proc.stderr.read() if proc.stderr else status


@contextmanager
def _host(info: dict[str, Any]) -> Iterator[PenHost]:
    port = open_port(info)
    try:
        host = PenHost(port, HostKeys(Path(info["home"]) / "pairings.json"))  # the server's
        host.connect()
        host.hello()
        yield host
    finally:
        port.close()


def _commit(host: PenHost) -> None:
    assert isinstance(host.request(lambda c: CalWrite(c, *RECORD, RECORD_CRC)), Ack)
    reply = host.request(lambda c: CalCommit(c, RECORD_CRC))
    assert isinstance(reply, Ack) and reply.value == RECORD[-1], reply


def _active(host: PenHost) -> CalData:
    reply = host.request(lambda c: CalRead(c, CalBank.ACTIVE))
    assert isinstance(reply, CalData), reply
    return reply


@pytest.mark.parametrize("where", [["--tcp", "0"], ["--pty"]], ids=["tcp", "pty"])
def test_calibration_committed_in_one_served_process_is_there_in_the_next(
    tmp_path: Path, where: list[str]
) -> None:
    state = str(tmp_path / "pen-44.json")
    args = [*where, "--seed", "44", "--state", state]
    with _serve(*args, home=tmp_path) as (_, info), _host(info) as host:
        assert _active(host).counter == 1  # factory record
        _commit(host)
    with _serve(*args, home=tmp_path) as (_, info), _host(info) as host:
        active = _active(host)
        assert (active.valid, active.counter, active.crc) == (1, RECORD[-1], RECORD_CRC)
        assert (active.depth_gain_ppm, active.depth_offset_um) == RECORD[1:3]


def test_a_second_server_on_the_same_unit_is_refused_in_one_line(tmp_path: Path) -> None:
    state = str(tmp_path / "pen-44.json")
    args = ["--tcp", "0", "--seed", "44", "--state", state]
    with _serve(*args, home=tmp_path) as (first, _):
        second = subprocess.run(
            [sys.executable, "-c", CLI, "sim", "serve", *args],
            capture_output=True,
            text=True,
            env=_env(tmp_path),
            timeout=20,
        )
        assert second.returncode == 2
        message = second.stderr.strip()
        assert "\n" not in message and second.stdout == ""
        assert state in message and f"process {first.pid}" in message and "only once" in message


def test_another_units_state_file_is_refused_by_the_server(tmp_path: Path) -> None:
    state = str(tmp_path / "pen-44.json")
    with _serve("--tcp", "0", "--seed", "44", "--state", state, home=tmp_path):
        pass
    args = ["sim", "serve", "--tcp", "0", "--seed", "7", "--state", state]
    other = subprocess.run(
        [sys.executable, "-c", CLI, *args],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=20,
    )
    assert other.returncode == 2
    message = other.stderr.strip()
    assert "\n" not in message and "belongs to unit SIM-000044" in message and "seed=44" in message


def test_a_server_killed_mid_run_leaves_its_cartridge_retired(tmp_path: Path) -> None:
    state = str(tmp_path / "pen-44.json")
    args = ["--tcp", "0", "--seed", "44", "--state", state]
    with _serve(*args, home=tmp_path) as (proc, info), _host(info) as host:
        assert isinstance(host.request(lambda c: SetDepth(c, 1000, 0)), Ack)
        started = host.request(lambda c: Run(c, int(L.Area.CHEEKS), RunMode.DURATION, 0, 20_000))
        assert isinstance(started, Ack), started
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown write: the run's usage is lost
        proc.wait(5.0)
    with _serve(*args, home=tmp_path) as (_, info), _host(info) as host:
        cart = host.request(lambda c: GetCartridge(c))
        assert isinstance(cart, CartridgeInfo) and cart.state is CartridgeState.RETIRED
        assert isinstance(host.request(lambda c: SetDepth(c, 1000, 0)), Ack)
        refused = host.request(lambda c: Run(c, int(L.Area.CHEEKS), RunMode.STROKES, 5, 0))
        assert isinstance(refused, Nak) and refused.error is ErrorCode.CARTRIDGE_USED, refused


# ------------------------------------------------------------------ sim://?state= and the CLI
def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        capture_output=True,
        text=True,
        env=_env(home),
        timeout=120,
    )


def test_calibrate_in_one_process_verify_in_the_next(tmp_path: Path) -> None:
    """Seed 44's manufacturing errors fail the as-found depth check uncalibrated; once one
    process calibrated the unit, the next process verifies it as a bench verifies a pen."""
    state = tmp_path / "pen-44.json"
    url = f"sim://?seed=44&state={state}"
    out = str(tmp_path / "certs")
    uncalibrated = _cli(tmp_path, "calibrate", "verify", "--pen", "sim://?seed=44", "--json")
    assert uncalibrated.returncode == 1
    assert json.loads(uncalibrated.stdout)["as_found"] == "fail"

    calibrated = _cli(tmp_path, "calibrate", "all", "--pen", url, "--json", "--out", out)
    assert calibrated.returncode == 0, calibrated.stderr
    assert json.loads(calibrated.stdout)["committed"] is True

    verified = _cli(tmp_path, "calibrate", "verify", "--pen", url, "--json", "--out", out)
    assert verified.returncode == 0, verified.stderr
    result = json.loads(verified.stdout)
    assert result["as_found"] == "pass"
    assert result["as_found_max_error_mm"] <= 0.05  # as-left quality, a process later


HOLD = """
import sys
from micropen.host import open_pen
with open_pen(sys.argv[1], log=False) as pen:
    print(pen.identity.boot_id, flush=True)
    sys.stdin.readline()
"""


def test_sim_url_with_state_is_one_pen_at_a_time_across_processes(tmp_path: Path) -> None:
    url = f"sim://?seed=44&state={tmp_path / 'pen-44.json'}"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
    )
    try:
        assert holder.stdout is not None
        first_boot = int(read_line(holder.stdout, 20.0))
        refused = _cli(tmp_path, "status", "--pen", url, "--json")
        assert refused.returncode == 1
        message = refused.stderr.strip()
        assert "\n" not in message, message
        assert f"in use by process {holder.pid}" in message and "only once" in message
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        assert holder.wait(20.0) == 0, holder.stderr.read() if holder.stderr else ""
    status = _cli(tmp_path, "status", "--pen", url, "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["serial"] == "SIM-000044" and data["boot_id"] != first_boot
