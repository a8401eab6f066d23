"""The SCPI instrument code path against the simulator's bench server, as a real bench is
reached: the pen over TCP in another process, its gauge and tachometer on their own SCPI port
(TCP, and pyserial's ``socket://`` for the serial channel)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from _cal_helpers import SIM_TODAY, StepClock

from micropen.host.calibration import (
    InstrumentDisconnected,
    InstrumentError,
    Outcome,
    Quantity,
    RecordStore,
    ScpiInstrument,
    Stage,
    close_instruments,
    open_instruments,
    run_calibration,
)
from micropen.host.calibration.instruments import SerialChannel, TcpChannel
from micropen.host.connection import AsyncPen
from micropen.host.errors import InvalidInput
from micropen.host.pairing import HostKeys

SERVER_START_S = 10.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``micropen sim serve --tcp 0 --bench-tcp 0`` in a child process, stopped afterwards;
    paired with a keystore of the module's own (``keys``: the tests outlive one MICROPEN_HOME)."""
    day = (SIM_TODAY - SIM_TODAY.replace(year=1970, month=1, day=1)).days
    home = tmp_path_factory.mktemp("bench-home")
    proc = subprocess.Popen(
        [sys.executable, "-m", "micropen.tools.cli", "sim", "serve", "--tcp", "0",
         "--bench-tcp", "0", "--json", "--query", f"seed=5&today_day={day}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MICROPEN_HOME": str(home)},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = _read_line_within(proc, SERVER_START_S)
        yield {**json.loads(line), "keys": home / "pairings.json"}
    finally:
        proc.terminate()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)


def _read_line_within(proc: subprocess.Popen[str], seconds: float) -> str:
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(seconds):
            raise AssertionError(f"sim.serve printed nothing within {seconds} s")
    return proc.stdout.readline()


async def test_scpi_identity_per_instrument(served: dict[str, Any]) -> None:
    url = f"scpi+tcp://127.0.0.1:{served['bench_tcp']}"
    instruments = await open_instruments(url, list(Quantity), today=SIM_TODAY)
    try:
        gauge, tacho = instruments[Quantity.DEPTH].info, instruments[Quantity.RATE].info
        assert (gauge.manufacturer, gauge.model, gauge.serial) == (
            "micropen-sim",
            "SIM-DG-1",
            "DG-000005",
        )
        assert (tacho.model, tacho.serial) == ("SIM-TA-1", "TA-000005")
        assert gauge.cal_due == SIM_TODAY + timedelta(days=180) and gauge.kind == "scpi"
        assert await instruments[Quantity.DEPTH].read(0.5) == 0.0  # needles home
    finally:
        await close_instruments(instruments.values())


async def test_calibration_over_tcp_with_the_scpi_bench(
    served: dict[str, Any], store: RecordStore
) -> None:
    keys = HostKeys(served["keys"])
    pen = await AsyncPen.open(f"socket://127.0.0.1:{served['tcp']}", keys=keys)
    try:
        assert pen.bench is None  # nothing in-process: the bench is another instrument
        url = f"scpi+tcp://127.0.0.1:{served['bench_tcp']}"
        instruments = await open_instruments(url, [Quantity.DEPTH], today=SIM_TODAY)
        try:
            record = await run_calibration(
                pen, "depth", instruments, store=store, clock=StepClock(), today=SIM_TODAY
            )
        finally:
            await close_instruments(instruments.values())
    finally:
        await pen.close()
    assert record.outcome is Outcome.PASS, record.reason
    assert record.max_error(Stage.AS_LEFT, Quantity.DEPTH) <= 0.05
    assert record.instruments[0].url == url and record.instruments[0].serial == "DG-000005"
    # the bench server says it is the simulator's: declared calibration, SIMULATION marked
    assert record.instruments[0].calibration is not None
    assert record.instruments[0].calibration.certificate == "SIM-DG-000005"
    assert record.simulation and "depth instrument SIM-DG-1 s/n DG-000005" in record.simulated_parts


async def test_serial_channel_speaks_the_same_scpi(served: dict[str, Any]) -> None:
    """The serial code path (pyserial) against the bench server via ``socket://``."""
    channel = SerialChannel(f"socket://127.0.0.1:{served['bench_tcp']}", baud=9600, timeout=2.0)
    await channel.open()
    instrument = await ScpiInstrument.connect(channel, Quantity.RATE)
    try:
        assert instrument.info.model == "SIM-TA-1"
        assert await instrument.read(110) == 0.0  # motor off
    finally:
        await instrument.aclose()


async def test_an_instrument_that_hangs_up_mid_procedure_is_a_disconnect() -> None:
    """A SCPI instrument that identifies itself, answers once, then drops the connection."""
    answers = iter(["ACME,DG-9,S1,2.0;2099-01-01", "1.234"])

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            answer = next(answers, None)
            if answer is None:
                break
            del line
            writer.write(answer.encode() + b"\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        instruments = await open_instruments(
            f"scpi+tcp://127.0.0.1:{port}?measure=depth", [Quantity.DEPTH], today=SIM_TODAY
        )
        gauge = instruments[Quantity.DEPTH]
        assert (gauge.info.manufacturer, gauge.info.model) == ("ACME", "DG-9")
        assert await gauge.read(1.2) == 1.234
        with pytest.raises(InstrumentDisconnected, match="closed the connection"):
            await gauge.read(1.2)
        await gauge.aclose()


async def test_bad_instrument_urls_are_bad_input(served: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match="unknown option"):
        await open_instruments("scpi+tcp://127.0.0.1:1?bogus=1", [Quantity.DEPTH], today=SIM_TODAY)
    with pytest.raises(InvalidInput, match="does not measure rate"):
        await open_instruments(
            f"scpi+tcp://127.0.0.1:{served['bench_tcp']}?measure=depth",
            [Quantity.RATE],
            today=SIM_TODAY,
        )
    with pytest.raises(InstrumentError, match="cannot reach"):
        await open_instruments("scpi+tcp://127.0.0.1:1", [Quantity.DEPTH], today=SIM_TODAY)


async def test_tcp_channel_times_out_on_a_silent_instrument() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        channel = TcpChannel("127.0.0.1", port, timeout=0.2)
        await channel.open()
        with pytest.raises(InstrumentDisconnected, match="did not answer"):
            await channel.query("*IDN?")
        await channel.aclose()
