"""The whole update journey through the command line and a real pty: sign, upload with the
cable pulled in the middle, test-boot, confirm; then a downgrade and a tampered image are
refused, and the pen logged each refusal as a security event."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from micropen.host.treatment_log import TreatmentLog
from micropen.protocol.image import ImageFault
from micropen.protocol.messages import FwSlotId, SimParam
from micropen.sim.pen import SimConfig, SimulatedPen
from micropen.sim.serve import PtyTransport

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))
from _pen_host import served_in_thread

CLI = [sys.executable, "-m", "micropen.tools.cli", "firmware"]
pytestmark = pytest.mark.timeout(120)


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=90)
    if check:
        assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done


def _sign(tmp: Path, name: str, version: str, counter: int, size: int = 120_000) -> Path:
    payload = tmp / f"{name}.bin"
    payload.write_bytes(os.urandom(size))
    out = tmp / f"{name}.img"
    _cli("sign", str(payload), "--dev-key", "--version", version,
         "--security-counter", str(counter), "--out", str(out))  # fmt: skip
    return out


def _pull_when_a_third_arrived(server: object, size: int, done: threading.Event) -> None:
    """Watch from the test (reads only); the pull itself runs in the serving loop."""
    pen: SimulatedPen = server.pen  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while pen.firmware.update.next_offset < size // 3:
        assert time.monotonic() < deadline, "the upload never reached a third"
        time.sleep(0.002)
    server.call_soon(lambda p, now: p.set_param(SimParam.DISCONNECT, 1500, now))  # type: ignore[attr-defined]
    done.set()


def test_sign_upload_with_a_cable_pull_test_boot_confirm_then_refusals(tmp_path: Path) -> None:
    image = _sign(tmp_path, "new", "1.1.0", 2)
    with served_in_thread(SimConfig(seed=61), PtyTransport()) as server:
        url = str(server.describe()["pty"])
        pulled = threading.Event()
        watcher = threading.Thread(
            target=_pull_when_a_third_arrived,
            args=(server, image.stat().st_size, pulled),
            daemon=True,
        )
        watcher.start()
        done = _cli("upload", str(image), "--pen", url, "--json")
        watcher.join(5)
        assert pulled.is_set(), "the cable was never pulled"
        result = json.loads(done.stdout)
        assert result["test_booted"] and result["running"] == "1.1.0"
        assert result["link_reconnects"] >= 1  # the pull cut the link; the upload went on

        status = json.loads(_cli("status", "--pen", url, "--json").stdout)
        assert [s["version"] for s in status["slots"]] == ["1.1.0", "1.0.0"]
        assert not status["slots"][0]["confirmed"]
        confirmed = json.loads(_cli("confirm", "--pen", url, "--json").stdout)
        assert confirmed == {"version": "1.1.0", "was_on_trial": True, "security_counter": 2}

        older = _sign(tmp_path, "old", "1.0.5", 1)
        refused = _cli("upload", str(older), "--pen", url, check=False)
        assert refused.returncode == 1
        assert "security counter 1 is below the pen's 2" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) <= 2  # the simulator notice + one line

        data = bytearray(_sign(tmp_path, "evil", "9.0.0", 9, size=20_000).read_bytes())
        data[5000] ^= 0xFF
        tampered = tmp_path / "tampered.img"
        tampered.write_bytes(bytes(data))
        refused = _cli("upload", str(tampered), "--pen", url, check=False)
        assert refused.returncode == 2 and "hash_mismatch" in refused.stderr  # the host's check

        # an unpaired host (another user's data folder: no pairing with this pen) is refused
        stranger = subprocess.run(
            [*CLI, "upload", str(older), "--pen", url],
            capture_output=True, text=True, timeout=90,
            env={**os.environ, "MICROPEN_HOME": str(tmp_path / "stranger")},
        )  # fmt: skip
        assert stranger.returncode == 1 and "NOT_AUTHORIZED" in stranger.stderr
        assert "Traceback" not in stranger.stderr
        # the operator's host connects again and is handed the pen's record of the refusal
        _cli("status", "--pen", url)
        primary = server.pen.bootloader.view(FwSlotId.PRIMARY).image
        assert primary is not None and primary.version == (1, 1, 0)
    # the pen reported the refused downgrade; the host's treatment log keeps it
    with TreatmentLog(TreatmentLog.default_path(), readonly=True) as log:
        rows = log._read("SELECT code, value FROM events")
    codes = [(row["code"], row["value"]) for row in rows]
    assert ("IMAGE_REJECTED", int(ImageFault.DOWNGRADE)) in codes, codes
    assert ("FIRMWARE_TEST_BOOT", 2) in codes and ("FIRMWARE_CONFIRMED", 2) in codes
    assert any(code == "SECURITY_DENIED" for code, _ in codes), codes  # the unpaired host
