"""A simulated unit keeps its non-volatile memory in a state file, as a pen keeps its flash.

In one process and in virtual time; ``test_state_file_processes.py`` does the same across real
processes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_firmware_harness import Host

from micropen.protocol import limits as L
from micropen.protocol.messages import (
    Ack,
    CalBank,
    CalCommit,
    CalData,
    CalRead,
    CalWrite,
    CartridgeState,
    ErrorCode,
    PenState,
    Run,
    RunMode,
    SetDepth,
    calibration_crc,
)
from micropen.sim import statefile
from micropen.sim.pen import SimConfig, SimulatedPen
from micropen.sim.statefile import (
    FORMAT,
    VERSION,
    StateFileBusy,
    StateFileDamaged,
    StateFileError,
    StateFileMismatch,
)

CHEEKS = int(L.Area.CHEEKS)


@pytest.fixture
def state(tmp_path: Path) -> str:
    return str(tmp_path / "pen-44.json")


def _doc(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _record(counter: int, gain: int = 12_000, offset: int = -30, rate: int = 9_000) -> tuple:
    fields = (1, gain, offset, rate, 1_700_000_000, counter)
    return (*fields, calibration_crc(*fields))


def _commit(host: Host, counter: int, **kw: int) -> tuple:
    record = _record(counter, **kw)
    host.ack(CalWrite, *record)
    assert host.ack(CalCommit, record[-1]).value == counter
    return record


def _active(host: Host) -> CalData:
    reply = host.cmd(CalRead, CalBank.ACTIVE)
    assert isinstance(reply, CalData)
    return reply


def _one_line(exc: pytest.ExceptionInfo[BaseException], *words: str) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    for word in words:
        assert word in text, (word, text)
    return text


# ------------------------------------------------------------------ what is kept
def test_a_new_state_file_is_written_at_power_on_bound_to_the_unit(state: str) -> None:
    pen = SimulatedPen(SimConfig(seed=44, state=state), now=0.0)
    doc = _doc(state)
    assert (doc["format"], doc["version"]) == (FORMAT, VERSION)
    assert doc["unit"]["seed"] == 44 and doc["unit"]["serial"] == "SIM-000044"
    assert len(doc["sha256"]) == 64
    cart = pen.cartridge
    assert cart is not None and doc["nvm"]["mounted"]["cartridge_id"] == cart.cartridge_id
    assert not [p for p in os.listdir(os.path.dirname(state)) if p.endswith(".tmp")]
    pen.close(1.0)


def test_calibration_is_on_disk_before_the_commit_is_answered(state: str) -> None:
    host = Host(seed=44, state=state)
    host.ready()
    record = _record(5)
    host.ack(CalWrite, *record)
    staged = _doc(state)["nvm"]["calibration"]
    assert staged["staging"] == list(record) and staged["counter_floor"] == 1
    reply = host.cmd(CalCommit, record[-1])
    assert isinstance(reply, Ack)  # the moment the host holds the Ack, the file has it:
    written = _doc(state)["nvm"]["calibration"]
    assert written["active"] == list(record) and written["counter_floor"] == 5


def test_calibrate_in_one_power_on_verify_in_the_next(state: str) -> None:
    host = Host(seed=44, state=state)
    host.ready()
    record = _commit(host, 5)
    host.pen.close(host.now)

    again = Host(SimulatedPen(SimConfig(seed=44, state=state), now=0.0))
    again.ready()
    active = _active(again)
    assert (active.valid, active.counter, active.crc) == (1, 5, record[-1])
    gain, offset, rate = again.pen.firmware.correction
    assert (gain, offset, rate) == (1.012, -30.0, 1.009)
    stale = _record(4)  # the security counter came back too: a downgrade is still refused
    again.ack(CalWrite, *stale)
    assert again.nak(CalCommit, stale[-1]).error is ErrorCode.CALIBRATION_DOWNGRADE
    again.pen.close(again.now)


def test_runs_lock_and_count_into_the_file_and_the_mounting_continues(state: str) -> None:
    host = Host(seed=44, state=state)
    host.ready()
    run_id = host.start(CHEEKS, RunMode.STROKES, strokes=120)
    cart = host.pen.cartridge
    assert cart is not None
    locked = _doc(state)["nvm"]
    assert locked["cartridges"]["locked_id"] == cart.cartridge_id  # written at the lock
    assert locked["run_in_progress"] is True
    report = host.wait_report()
    assert (report.run_id, report.strokes) == (run_id, 120)
    ended = _doc(state)["nvm"]
    assert ended["run_in_progress"] is False and ended["lifetime_strokes"] == 120
    assert ended["mounted"]["strokes_used"] == 120
    host.pen.close(host.now)

    again = Host(SimulatedPen(SimConfig(seed=44, state=state), now=0.0))
    again.ready()
    status = again.status()
    assert status.lifetime_strokes == 120
    assert (status.cartridge_id, status.cartridge_state) == (
        cart.cartridge_id,
        CartridgeState.LOCKED,
    )
    assert status.cartridge_strokes == 120
    again.start(CHEEKS, RunMode.STROKES, strokes=30)  # the same mounting runs on
    assert again.wait_report().strokes == 30
    assert again.status().lifetime_strokes == 150
    again.pen.close(again.now)


def test_a_cartridge_taken_off_and_a_new_one_put_on_are_kept(state: str) -> None:
    pen = SimulatedPen(SimConfig(seed=44, state=state), now=0.0)
    today = pen.config.today_day
    pen.mount_cartridge(0, "", 0, 0, 1.0)
    assert _doc(state)["nvm"]["mounted"] is None
    pen.mount_cartridge(4242, "LOT-9", today - 2, today + 100, 2.0)
    assert _doc(state)["nvm"]["mounted"]["cartridge_id"] == 4242
    pen.close(3.0)
    again = SimulatedPen(SimConfig(seed=44, state=state, cartridge=True), now=0.0)
    assert again.cartridge is not None and again.cartridge.cartridge_id == 4242
    assert again.status().cartridge_state is CartridgeState.NEW
    again.close(1.0)


def test_power_off_mid_run_writes_the_usage_and_the_cartridge_runs_on(state: str) -> None:
    host = Host(seed=44, state=state)
    host.ready()
    host.start(CHEEKS, RunMode.DURATION, duration_ms=5000)
    host.run_for(0.5)
    delivered = int(host.pen.physics.phase)
    host.pen.close(host.now)  # SIGTERM to a server: orderly power-off
    doc = _doc(state)["nvm"]
    assert doc["run_in_progress"] is False
    assert doc["mounted"]["strokes_used"] == doc["lifetime_strokes"] == delivered > 0
    again = SimulatedPen(SimConfig(seed=44, state=state), now=0.0)
    assert again.status().cartridge_state is CartridgeState.LOCKED
    again.close(1.0)


def test_a_unit_that_lost_power_mid_run_retires_the_cartridge(state: str) -> None:
    """Killed without its shutdown write: the cartridge's usage is unknown, it never runs."""
    host = Host(seed=44, state=state)
    host.ready()
    host.start(CHEEKS, RunMode.DURATION, duration_ms=5000)
    host.run_for(0.5)
    cart = host.pen.cartridge
    assert cart is not None
    state_file = host.pen.state_file
    assert state_file is not None
    state_file.release()  # what the OS does when the process is killed: no last write
    again = Host(SimulatedPen(SimConfig(seed=44, state=state), now=0.0))
    assert cart.cartridge_id in again.pen.nvm.cartridges.retired_ids
    assert _doc(state)["nvm"]["run_in_progress"] is False  # judged once, written at once
    again.ready()
    assert again.status().cartridge_state is CartridgeState.RETIRED
    assert again.nak(Run, CHEEKS, RunMode.STROKES, 5, 0).error is ErrorCode.CARTRIDGE_USED
    again.pen.close(again.now)


def test_nothing_is_written_when_nothing_non_volatile_changed(state: str) -> None:
    host = Host(seed=44, state=state)
    host.ready()
    state_file = host.pen.state_file
    assert state_file is not None
    before = state_file.writes
    host.ack(SetDepth, 700, 0)
    host.run_for(2.0)
    host.status()
    assert state_file.writes == before


def test_writes_are_atomic_and_synced(state: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pen = SimulatedPen(SimConfig(seed=44, state=state), now=0.0)
    synced: list[int] = []
    replaced: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(statefile.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    monkeypatch.setattr(
        statefile.os,
        "replace",
        lambda a, b: (replaced.append((str(a), str(b))), real_replace(a, b)),
    )
    pen.mount_cartridge(0, "", 0, 0, 1.0)
    assert len(replaced) == 1 and replaced[0][1] == state
    assert replaced[0][0].endswith(".tmp") and os.path.dirname(replaced[0][0]) == str(
        Path(state).parent
    )
    assert len(synced) == 2  # the file's data, then the folder's entry


def test_a_failed_write_leaves_the_last_state_and_says_so(
    state: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pen = SimulatedPen(SimConfig(seed=44, state=state), now=0.0)
    before = Path(state).read_bytes()

    def disk_full(a: object, b: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(statefile.os, "replace", disk_full)
    with pytest.raises(StateFileError) as info:
        pen.mount_cartridge(0, "", 0, 0, 1.0)
    _one_line(info, state, "No space left", "last saved state")
    assert Path(state).read_bytes() == before
    assert not [p for p in os.listdir(Path(state).parent) if p.endswith(".tmp")]


# ------------------------------------------------------------------ refused files
def _damage_cases(path: Path) -> dict[str, bytes]:
    raw = path.read_bytes()
    doc = json.loads(raw)
    edited = json.loads(raw)
    edited["nvm"]["lifetime_strokes"] = 999_999  # a value changed, checksum not
    future = json.loads(raw)
    future["version"] = VERSION + 1
    future["sha256"] = statefile._digest(future)  # a well-formed file from a newer release
    nonsense = dict(doc, nvm={"calibration": 7})
    nonsense["sha256"] = statefile._digest(nonsense)
    bad_tag = json.loads(raw)
    bad_tag["nvm"]["mounted"]["lot"] = "L" * 40  # no cartridge tag holds that
    bad_tag["sha256"] = statefile._digest(bad_tag)
    return {
        "truncated": raw[: len(raw) // 2],
        "empty": b"",
        "bit flip": raw.replace(b'"lifetime_strokes": 0', b'"lifetime_strokes": 1'),
        "edited": json.dumps(edited).encode(),
        "other format": json.dumps({"format": "something-else"}).encode(),
        "newer version": json.dumps(future).encode(),
        "wrong structure": json.dumps(nonsense).encode(),
        "impossible cartridge": json.dumps(bad_tag).encode(),
        "binary": bytes(range(256)),
    }


@pytest.mark.parametrize(
    "case",
    [
        "truncated",
        "empty",
        "bit flip",
        "edited",
        "other format",
        "newer version",
        "wrong structure",
        "impossible cartridge",
        "binary",
    ],
)
def test_a_damaged_file_is_refused_in_one_line_and_never_reset(state: str, case: str) -> None:
    SimulatedPen(SimConfig(seed=44, state=state), now=0.0).close(1.0)
    damaged = _damage_cases(Path(state))[case]
    Path(state).write_bytes(damaged)
    with pytest.raises(StateFileDamaged) as info:
        SimulatedPen(SimConfig(seed=44, state=state), now=0.0)
    text = _one_line(info, state)
    assert ("version" in text) if case == "newer version" else ("damaged" in text)
    assert "delete it" in text or "another state file" in text
    assert Path(state).read_bytes() == damaged  # not touched, not replaced by a fresh unit
    with pytest.raises(StateFileDamaged):  # and the refusal did not keep the file locked
        SimulatedPen(SimConfig(seed=44, state=state), now=0.0)


@pytest.mark.parametrize(
    ("other", "words"),
    [
        ({"seed": 45}, ["SIM-000044", "seed 44", "not SIM-000045", "seed=44"]),
        ({"serial": "SIM-000045"}, ["SIM-000044", "not SIM-000045"]),
        ({"manufacturing_errors": False}, ["manufacturing_errors=True in the file"]),
        ({"model": "MP-12"}, ["model="]),
    ],
)
def test_another_units_file_is_refused(state: str, other: dict, words: list[str]) -> None:
    SimulatedPen(SimConfig(seed=44, state=state), now=0.0).close(1.0)
    before = Path(state).read_bytes()
    with pytest.raises(StateFileMismatch) as info:
        SimulatedPen(SimConfig(**{"seed": 44, "state": state, **other}), now=0.0)
    _one_line(info, state, *words)
    assert Path(state).read_bytes() == before


def test_options_that_set_the_factory_state_do_not_override_the_file(state: str) -> None:
    host = Host(seed=44, state=state)
    host.ready()
    _commit(host, 3)
    host.pen.close(host.now)
    pen = SimulatedPen(
        SimConfig(seed=44, state=state, calibration="blank", cartridge=False), now=0.0
    )
    assert pen.nvm.cal.calibrated and pen.nvm.cal.counter_floor == 3
    assert pen.cartridge is not None  # the file's cartridge is in the bay
    pen.close(1.0)


# ------------------------------------------------------------------ one holder
def test_a_unit_can_be_powered_on_only_once(state: str) -> None:
    first = SimulatedPen(SimConfig(seed=44, state=state), now=0.0)
    with pytest.raises(StateFileBusy) as info:
        SimulatedPen(SimConfig(seed=44, state=state), now=0.0)
    _one_line(info, state, "in use by process", str(os.getpid()), "only once")
    first.close(1.0)
    second = SimulatedPen(SimConfig(seed=44, state=state), now=0.0)
    assert second.state is PenState.IDLE
    second.close(1.0)


def test_a_pen_that_fails_to_power_on_does_not_keep_the_unit_locked(
    state: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: SimulatedPen, now: float, reason: object) -> None:
        raise RuntimeError("self-test crashed")

    with monkeypatch.context() as patch:
        patch.setattr(SimulatedPen, "_boot", broken)
        with pytest.raises(RuntimeError):
            SimulatedPen(SimConfig(seed=44, state=state), now=0.0)
    SimulatedPen(SimConfig(seed=44, state=state), now=0.0).close(1.0)


def test_a_missing_folder_is_refused_in_one_line(tmp_path: Path) -> None:
    path = str(tmp_path / "no-such-folder" / "pen.json")
    with pytest.raises(StateFileError) as info:
        SimulatedPen(SimConfig(seed=44, state=path), now=0.0)
    _one_line(info, path, "folder")


def test_release_and_reclaim_tell_whether_another_holder_changed_the_unit(state: str) -> None:
    pen = SimulatedPen(SimConfig(seed=44, state=state), now=0.0)
    pen.release_state()
    assert pen.reclaim_state()  # nobody touched it
    pen.release_state()
    other = SimulatedPen(SimConfig(seed=44, state=state), now=0.0)
    other.mount_cartridge(0, "", 0, 0, 1.0)
    other.close(2.0)
    assert not pen.reclaim_state()  # stale: this instance must be replaced by a power-on
    state_file = pen.state_file
    assert state_file is not None and not state_file.held  # and it holds nothing
    assert _doc(state)["nvm"]["mounted"] is None  # the other holder's change is intact


# ------------------------------------------------------------------ the USB-served unit
def test_a_usb_served_unit_keeps_its_state_and_is_powered_once(state: str) -> None:
    import usb.core
    import usb.util
    from _bench_pairing import pair_with_this_host
    from _pen_host import PenHost
    from test_usb_device import UsbPort

    from micropen.sim.usb_backend import SimUsbBackend
    from micropen.sim.usb_device import SimUsbPen

    config = SimConfig(seed=44, state=state)
    unit = SimUsbPen(config)
    pair_with_this_host(unit.pen, unit.clock.now())
    with pytest.raises(StateFileBusy):
        SimUsbPen(config, address=2)
    backend = SimUsbBackend([unit.device()])
    try:
        dev = usb.core.find(backend=backend, idVendor=0x1209, idProduct=0x0001)
        host = PenHost(UsbPort(dev))
        host.connect()
        host.hello()
        record = _record(7)
        assert isinstance(host.request(lambda c: CalWrite(c, *record)), Ack)
        assert isinstance(host.request(lambda c: CalCommit(c, record[-1])), Ack)
        usb.util.dispose_resources(dev)
    finally:
        backend.close()
    unit.close()
    again = SimUsbPen(config)
    assert again.pen.nvm.cal.active is not None and again.pen.nvm.cal.active.counter == 7
    again.close()
