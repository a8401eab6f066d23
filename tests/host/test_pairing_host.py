"""The host's side of pairing: the keystore (permissions, damage, no key ever shown), the
exchange with a pen in pairing mode, and what a host without a pairing may do."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest
from _waits import sim_of

from micropen.host import AsyncPen
from micropen.host.errors import PenRefused
from micropen.host.pairing import HostKeys, KeystoreError, PairingRefused, pair


def test_the_keystore_is_private_and_never_shows_a_key(tmp_path: Path) -> None:
    keys = HostKeys(tmp_path / "k" / "pairings.json")
    key = bytes(range(32))
    keys.add(0xABCD, key, "SIM-1", "MP-12 SIM")
    path = keys.path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert key.hex() not in repr(keys.pens()) and key.hex() not in repr(keys)
    again = HostKeys(path)
    assert again.lookup(0xABCD) == (0xABCD, key) and again.host_id == keys.host_id
    os.chmod(path, 0o644)
    with pytest.raises(KeystoreError, match="chmod 600"):
        HostKeys(path)
    os.chmod(path, 0o600)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(KeystoreError, match="damaged.*pair the pens again"):
        HostKeys(path)


def test_two_processes_creating_the_keystore_agree_on_one_host_id(tmp_path: Path) -> None:
    path = tmp_path / "pairings.json"
    first, second = HostKeys(path), HostKeys(path)
    assert first.host_id != second.host_id  # neither has written yet
    settled = first.settle_host_id()
    assert second.settle_host_id() == settled == HostKeys(path).host_id


async def test_the_built_in_simulator_pairs_by_itself_and_an_unpaired_host_may_only_read() -> None:
    pen = await AsyncPen.open("sim://?seed=3", log=None)
    try:
        assert pen.authenticated
    finally:
        await pen.close()
    bare = await AsyncPen.open("sim://?seed=3", log=None, keys=None)
    try:
        assert not bare.authenticated
        assert (await bare.status()).state.name == "IDLE"  # reading is allowed
        with pytest.raises(PenRefused, match="not paired.*micropen pair --pen"):
            await bare.set_rate(90)
    finally:
        await bare.close()


async def test_pairing_with_the_pen_in_pairing_mode(tmp_path: Path) -> None:
    keys = HostKeys(tmp_path / "pairings.json")
    pen = await AsyncPen.open("sim://?seed=4", log=None, keys=None)
    try:
        sim = sim_of(pen)
        with sim._lock:
            sim.pen.press_pairing_button(sim.now())
        shown: list[str] = []

        async def refuse(code: str) -> bool:
            shown.append(code)
            return False

        with pytest.raises(PairingRefused, match="codes did not match"):
            await pair(pen, keys, refuse)
        assert not keys.pens()
        await asyncio.sleep(61)  # the refused request holds the window until it closes
        with sim._lock:
            sim.pen.press_pairing_button(sim.now())  # a new window for a new request

        async def accept(code: str) -> bool:
            assert f"code {code}" in sim.pen.display[-1]  # what the pen's screen shows
            with sim._lock:
                sim.pen.press_pairing_button(sim.now())  # the technician accepts on the pen
            return True

        paired = await pair(pen, keys, accept, name="bench 3")
        assert paired.serial == "SIM-000004" and keys.lookup(paired.pen_id) is not None
    finally:
        await pen.close()
    document = json.loads(keys.path.read_text(encoding="utf-8"))
    assert document["pens"][0]["serial"] == "SIM-000004"


async def test_the_operator_hears_at_once_when_another_party_touched_its_pen(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One write from an unpaired party (SYN, Hello, SetDepth 2.0 mm with the override bit)
    while the operator's host is connected: refused by the pen; the operator's host reconnects,
    warns, and its treatment log says in words what happened."""
    from micropen.host.treatment_log import TreatmentLog
    from micropen.protocol.framing import encode_frame
    from micropen.protocol.link import Flag
    from micropen.protocol.messages import PROTOCOL_VERSION, Hello, SetDepth
    from micropen.protocol.schema import schema_hash

    log_path = tmp_path / "treatment.sqlite"
    pen = await AsyncPen.open("sim://?seed=5", log=log_path)
    try:
        await pen.set_depth(1.0, area="cheeks")
        sim = sim_of(pen)
        hello = Hello(1, PROTOCOL_VERSION, schema_hash()).encode()
        deeper = SetDepth(2, 2000, 1).encode()
        one_write = (
            encode_frame(Flag.SYN, 77, 0x1234, 0x5678)
            + encode_frame(Flag.DATA | Flag.ACK, 77, 0, 0, hello)
            + encode_frame(Flag.DATA | Flag.ACK, 77, 1, 0, deeper)
        )
        with caplog.at_level("WARNING", logger="micropen.host"):
            with sim._lock:
                sim.pen.receive_data(one_write, sim.now())
            from _waits import until

            await until(
                lambda: "refused SetDepth" in caplog.text, within=5, what="the operator warned"
            )
        assert "an unpaired party opened the pen's link" in caplog.text
        status = await pen.status()
        assert status.depth_set_um == 1000 and status.soft_cap_override == 0
    finally:
        await pen.close()
    with TreatmentLog(log_path, readonly=True) as log:
        rows = log._read("SELECT code, detail FROM events WHERE kind = 'event'")
    details = {row["code"]: row["detail"] for row in rows}
    assert "refused SetDepth" in details["SECURITY_DENIED"]
    assert "unpaired party" in details["UNPAIRED_CONNECT"]


def test_pairings_of_simulators_that_are_gone_do_not_pile_up(tmp_path: Path) -> None:
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    keys = HostKeys(tmp_path / "pairings.json")
    keys.add(1, bytes(32), "SIM-000001", "MP-12 SIM", holder_pid=gone.pid)
    keys.add(2, bytes(32), "SIM-000002", "MP-12 SIM", holder_pid=os.getpid())
    keys.add(3, bytes(32), "MP12-00417", "MP-12")
    assert [p.serial for p in HostKeys(keys.path).pens()] == ["MP12-00417", "SIM-000002"]


async def test_a_pen_this_host_is_paired_with_answering_unauthenticated_is_flagged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by review: a host paired with SIM-000006 took an unauthenticated answer from
    something calling itself SIM-000006 (a stripped SYNACK, a fake pen) without a word."""
    keys = HostKeys(tmp_path / "pairings.json")
    keys.add(0x1234, bytes(32), "SIM-000006", "MP-12 SIM")  # paired with a pen of that serial
    with caplog.at_level("WARNING", logger="micropen.host"):
        pen = await AsyncPen.open("sim://?seed=6", log=None, keys=keys)
        assert pen.authenticated  # the in-process pen paired itself: nothing to flag
        await pen.close()
    assert "without authentication" not in caplog.text
    caplog.clear()
    bare = HostKeys(tmp_path / "pairings.json")
    with caplog.at_level("WARNING", logger="micropen.host"):
        from micropen.host.connection import AsyncPen as Core
        from micropen.host.transports import make_transport

        transport = make_transport("sim://?seed=6")
        transport.local_pairing = None  # type: ignore[attr-defined]  # as a served pen: not ours
        pen = Core(transport, url="sim://?seed=6", keys=bare)
        await pen._start()
        await pen.close()
    assert "answered as SIM-000006" in caplog.text and "without authentication" in caplog.text


def test_a_keystore_that_cannot_be_written_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk raised a bare OSError (a traceback on the command line) before."""
    import errno

    from micropen.host import pairing

    def full(path: Path, data: bytes, mode: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pairing, "write_atomically", full)
    keys = HostKeys(tmp_path / "pairings.json")
    with pytest.raises(KeystoreError, match="No space left on device; free some space"):
        keys.add(1, bytes(32), "SIM-1", "MP-12 SIM")
    assert not list(tmp_path.glob(".pairings.json.*.tmp"))
