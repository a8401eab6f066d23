"""The bench channel: SCPI lines in, readings of the pen's true physical state out."""

from __future__ import annotations

import datetime
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import serial
from _bench_pairing import pair_with_this_host
from _pen_host import PenHost, read_line, stop_child

from micropen.protocol import limits as L
from micropen.protocol.messages import Ack, Heartbeat, Run, RunMode, SetDepth, Stop
from micropen.sim.bench import GAUGE_NOISE_MM, GAUGE_RESOLUTION_MM, TACHO_NOISE_FRACTION
from micropen.sim.bench_server import ERROR_QUEUE_SIZE, MAX_LINE, BenchTcpService, ScpiBench
from micropen.sim.clock import RealClock
from micropen.sim.pen import SimConfig, SimulatedPen
from micropen.sim.serve import PenServer, TcpTransport

SEED = 36  # a unit whose true depth is ~0.076 mm shallower than set: a bench echoing the
# set depth instead of measuring would fail here
GAUGE_TOL_MM = 5 * GAUGE_NOISE_MM + GAUGE_RESOLUTION_MM


# ---------------------------------------------------------------- the interpreter, sans I/O
@pytest.fixture
def scpi() -> ScpiBench:
    return ScpiBench(SimulatedPen(SimConfig(seed=SEED)).bench)


def test_identity_and_calibration_due_of_each_instrument(scpi: ScpiBench) -> None:
    pen_bench = SimulatedPen(SimConfig(seed=SEED)).bench
    gauge, tacho = pen_bench.gauge, pen_bench.tachometer
    assert scpi.handle_line("*IDN?", 0.0) == f"micropen-sim,{gauge.model},{gauge.serial},1.0"
    due = scpi.handle_line("SYST:CAL:DUE?", 0.0)
    assert due == gauge.cal_due.isoformat()
    assert datetime.date.fromisoformat(due) == gauge.cal_due
    assert scpi.handle_line("INST:SEL RATE", 0.0) is None
    assert scpi.handle_line("inst:sel?", 0.0) == "RATE"
    assert scpi.handle_line(":INSTRUMENT:SELECT?;*IDN?", 0.0) == (
        f"RATE;micropen-sim,{tacho.model},{tacho.serial},1.0"
    )
    assert scpi.handle_line("*RST;INST:SEL?", 0.0) == "DEPTH"


def test_readings_of_a_pen_at_rest(scpi: ScpiBench) -> None:
    assert scpi.handle_line("MEAS:DEPTH?", 1.0) == "0.000"  # needles home
    assert scpi.handle_line("measure:rate?", 1.0) == "0.00"  # motor off


def test_errors_are_answered_and_queued(scpi: ScpiBench) -> None:
    assert scpi.handle_line("SYST:ERR?", 0.0) == '0,"No error"'
    assert scpi.handle_line("MEAS:VOLT?", 0.0) == '-113,"Undefined header"'
    assert scpi.handle_line("INST:SEL VOLTS", 0.0) is None  # a command: only queued
    assert scpi.handle_line("SYST:ERR?;SYSTEM:ERROR?;SYST:ERR?", 0.0) == (
        '-113,"Undefined header";-224,"Illegal parameter value";0,"No error"'
    )
    for _ in range(ERROR_QUEUE_SIZE + 5):
        scpi.handle_line("BOGUS", 0.0)
    errors = [scpi.handle_line("SYST:ERR?", 0.0) for _ in range(ERROR_QUEUE_SIZE + 1)]
    assert errors[-2:] == ['-350,"Queue overflow"', '0,"No error"']
    scpi.handle_line("BOGUS", 0.0)
    assert scpi.handle_line("*CLS;SYST:ERR?", 0.0) == '0,"No error"'


# ---------------------------------------------------------------- end to end, over TCP
@pytest.fixture
def bench_server() -> Iterator[tuple[PenServer, BenchTcpService]]:
    clock = RealClock()
    pen = SimulatedPen(SimConfig(seed=SEED), now=clock.now())
    pair_with_this_host(pen, clock.now())
    bench = BenchTcpService(pen.bench, clock)
    with PenServer(pen, TcpTransport(), clock=clock, services=[bench]) as server:
        thread = threading.Thread(target=server.run, name="bench-server")
        thread.start()
        try:
            yield server, bench
        finally:
            server.stop()
            thread.join(5.0)
            assert not thread.is_alive()


class Instrument:
    """A SCPI controller on a plain socket, as a bench script talks to a LAN instrument."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
        self.file = self.sock.makefile("rw", encoding="ascii", newline="\n")

    def query(self, line: str) -> str:
        self.file.write(line + "\n")
        self.file.flush()
        return self.file.readline().rstrip("\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _settled(host: PenHost, inst: Instrument, query: str, near: float, tol: float) -> float:
    """Keep the pen fed (heartbeats) and read until the instrument is within ``tol`` of
    ``near``, as a technician waits for the needle to settle. Returns the last reading."""
    deadline = time.monotonic() + 3.0
    counter = 0
    while True:
        counter += 1
        host.link.send(Heartbeat(counter=counter), time.monotonic())
        host.pump()
        reading = float(inst.query(query))
        if abs(reading - near) <= tol or time.monotonic() > deadline:
            return reading


def test_gauge_follows_the_true_depth_while_running(
    bench_server: tuple[PenServer, BenchTcpService],
) -> None:
    server, bench = bench_server
    pen_port = serial.serial_for_url(f"socket://127.0.0.1:{server.describe()['tcp']}", timeout=0.01)
    inst = Instrument(bench.port)
    try:
        host = PenHost(pen_port)
        host.connect()
        host.hello()
        errors = server.pen.unit_errors
        assert isinstance(host.request(lambda c: SetDepth(c, 1000, 0)), Ack)
        run = lambda c: Run(c, int(L.Area.CHEEKS), RunMode.DURATION, 0, 3000)  # noqa: E731
        assert isinstance(host.request(run), Ack)
        expected = errors.true_depth_um(1000) / 1000
        assert abs(expected - 1.0) > 0.05  # this unit is off: calibration has work to do
        assert abs(_settled(host, inst, "MEAS:DEPTH?", expected, GAUGE_TOL_MM) - expected) <= (
            GAUGE_TOL_MM
        )
        rate = L.RATE_DEFAULT_SPS * (1 + errors.speed_gain_ppm / 1e6)
        rate_tol = 5 * TACHO_NOISE_FRACTION * rate + 0.01
        assert abs(_settled(host, inst, "MEAS:RATE?", rate, rate_tol) - rate) <= rate_tol

        assert isinstance(host.request(lambda c: SetDepth(c, 1200, 0)), Ack)
        expected = errors.true_depth_um(1200) / 1000
        assert abs(_settled(host, inst, "MEAS:DEPTH?", expected, GAUGE_TOL_MM) - expected) <= (
            GAUGE_TOL_MM
        )
        assert isinstance(host.request(lambda c: Stop(c)), Ack)
        assert _settled(host, inst, "MEAS:DEPTH?", 0.0, 0.0) == 0.0  # retracted
    finally:
        inst.close()
        pen_port.close()


def test_clients_share_the_instrument_and_survive_each_other(
    bench_server: tuple[PenServer, BenchTcpService],
) -> None:
    _, bench = bench_server
    first, second = Instrument(bench.port), Instrument(bench.port)
    try:
        assert first.query("INST:SEL RATE;INST:SEL?") == "RATE"
        assert second.query("INST:SEL?") == "RATE"  # one instrument, one state
        first.sock.sendall(b"X" * (MAX_LINE + 10))  # no newline: input overrun
        assert first.query("\n*OPC?") == "1"  # the server is past the overlong line
        first.close()  # a controller going away does not disturb the others
        assert second.query("SYST:ERR?") == '-363,"Input buffer overrun"'
        assert second.query("*IDN?").startswith("micropen-sim,")
    finally:
        second.close()


def test_module_serves_the_bench_next_to_the_pen() -> None:
    argv = ["--tcp", "0", "--bench-tcp", "0", "--json", "--query", f"seed={SEED}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "micropen.tools.cli", "sim", "serve", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        info = json.loads(read_line(proc.stdout))  # type: ignore[arg-type]
        assert info["serial"] == f"SIM-{SEED:06d}"
        inst = Instrument(info["bench_tcp"])
        try:
            gauge = SimulatedPen(SimConfig(seed=SEED)).bench.gauge
            assert inst.query("*IDN?") == f"micropen-sim,{gauge.model},{gauge.serial},1.0"
            assert inst.query("MEAS:DEPTH?") == "0.000"
        finally:
            inst.close()
    finally:
        status = stop_child(proc)
    assert status == 0, proc.stderr.read() if proc.stderr else status
