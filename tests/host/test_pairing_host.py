"""The host's side of pairing: the keystore (permissions, damage, no key ever shown), the
exchange with a pen in pairing mode, and what a host without a pairing may do."""

from __future__ import annotations

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

        async def accept(code: str) -> bool:
            assert f"code {code}" in sim.pen.display[-1]  # what the pen's screen shows
            return True

        paired = await pair(pen, keys, accept, name="bench 3")
        assert paired.serial == "SIM-000004" and keys.lookup(paired.pen_id) is not None
    finally:
        await pen.close()
    document = json.loads(keys.path.read_text(encoding="utf-8"))
    assert document["pens"][0]["serial"] == "SIM-000004"
