"""``sim://`` as a host sees it: each opening powers a unit on (a new boot id), so runs on the
same simulated unit from successive programs never collide in the treatment log; with
``state=PATH`` the unit keeps its NVM between openings, one holder at a time.

Reproduction pinned here: the in-process simulator's clock starts at the same virtual time at
every opening, and boot ids were drawn from the seed and that time — so the second
``micropen run`` on a machine was refused by the log ("run 1 of pen SIM-000000 ... is already
logged").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from micropen.host import AsyncPen, open_pen
from micropen.host.errors import PenURLError, TransportError
from micropen.host.transports import make_transport
from micropen.host.transports.sim import SimTransport
from micropen.host.treatment_log import TreatmentLog
from micropen.protocol.messages import CalBank
from micropen.sim.pen import SimConfig, SimulatedPen
from micropen.tools.cli import app

RUN = ["run", "--depth", "0.5", "--speed", "90", "--area", "forehead", "--strokes", "40"]


def test_micropen_run_twice_on_the_simulator_logs_both_runs(
    _own_micropen_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICROPEN_PEN", "sim://")
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(app, [*RUN, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout.strip().splitlines()[-1])["strokes_delivered"] == 40
    with TreatmentLog(TreatmentLog.default_path()) as log:
        runs = [run for s in log.sessions() for run in log.session(s.id).runs]
    assert len(runs) == 2 and runs[0].boot_id != runs[1].boot_id


def test_each_opening_of_sim_is_a_new_boot() -> None:
    boots = set()
    for _ in range(3):
        with open_pen("sim://?seed=5", log=False) as pen:
            assert pen.identity is not None
            boots.add(pen.identity.boot_id)
    assert len(boots) == 3


def test_boot_seed_makes_the_boot_id_repeatable() -> None:
    boots = set()
    for _ in range(2):
        with open_pen("sim://?seed=5&boot_seed=11", log=False) as pen:
            assert pen.identity is not None
            boots.add(pen.identity.boot_id)
    assert len(boots) == 1


# ------------------------------------------------------------------ state=PATH
async def test_calibration_written_through_one_opening_is_read_by_the_next(
    tmp_path: Path,
) -> None:
    url = f"sim://?seed=44&state={tmp_path / 'pen.json'}"
    async with await AsyncPen.open(url, log=False) as pen:
        crc = await pen.cal_write(
            depth_gain_ppm=11_000, depth_offset_um=25, rate_gain_ppm=-7_000, counter=4
        )
        await pen.cal_commit(crc)
    async with await AsyncPen.open(url, log=False) as again:
        active = await again.cal_read(CalBank.ACTIVE)
        assert (active.valid, active.counter, active.crc) == (1, 4, crc)
        assert (active.depth_gain_ppm, active.depth_offset_um) == (11_000, 25)


async def test_two_openings_of_one_unit_at_once_are_refused(tmp_path: Path) -> None:
    url = f"sim://?seed=44&state={tmp_path / 'pen.json'}"
    async with await AsyncPen.open(url, log=False):
        with pytest.raises(TransportError) as info:
            await AsyncPen.open(url, log=False)
        assert "in use by process" in str(info.value) and "\n" not in str(info.value)
    async with await AsyncPen.open(url, log=False) as pen:  # closed: the unit is free again
        assert pen.identity is not None


def test_a_state_file_of_another_unit_is_bad_input(tmp_path: Path) -> None:
    state = tmp_path / "pen.json"
    SimulatedPen(SimConfig(seed=44, state=str(state)), now=0.0).close(1.0)
    with pytest.raises(PenURLError, match="belongs to unit SIM-000044"):
        make_transport(f"sim://?seed=45&state={state}")


def test_a_damaged_state_file_cannot_be_opened(tmp_path: Path) -> None:
    state = tmp_path / "pen.json"
    state.write_text("{not json")
    with pytest.raises(TransportError, match="is damaged") as info:
        make_transport(f"sim://?seed=44&state={state}")
    assert "\n" not in str(info.value)
    assert state.read_text() == "{not json"


async def test_a_transport_reopened_after_another_holder_used_the_unit_powers_on_anew(
    tmp_path: Path,
) -> None:
    state = str(tmp_path / "pen.json")
    transport = make_transport(f"sim://?seed=44&state={state}")
    assert isinstance(transport, SimTransport)
    await transport.open()
    first = transport.pen
    await transport.close()  # the unit is free while the port is closed
    other = SimulatedPen(SimConfig(seed=44, state=state), now=0.0)
    other.mount_cartridge(0, "", 0, 0, 1.0)  # someone took the cartridge off meanwhile
    other.close(2.0)
    await transport.open()
    assert transport.pen is not first and transport.pen.cartridge is None
    assert transport.bench.gauge.read() == 0.0  # the bench follows the pen powered now
    await transport.close()
    await transport.open()  # nobody else in between: the same instance carries on
    assert transport.pen.cartridge is None
    await transport.close()
