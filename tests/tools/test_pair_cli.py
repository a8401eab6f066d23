"""``micropen pair`` as a technician uses it, against ``micropen sim serve --unpaired``: the
pen refuses needles until paired, the codes are compared, the pairing is listed and revoked,
and no key is ever printed."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "micropen.tools.cli"]
RUN = ["run", "--depth", "0.5", "--speed", "90", "--area", "forehead", "--strokes", "40"]
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def unpaired_pen(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    screen = tmp_path / "pen-screen.txt"
    with screen.open("w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            [*CLI, "sim", "serve", "--pty", "--seed", "71", "--unpaired"],
            stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            yield proc.stdout.readline().split()[0], proc, screen
        finally:
            proc.terminate()
            proc.wait(10)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in done.stderr
    return done


def _pen_code(screen: Path) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = re.findall(r"code (\d{6})", screen.read_text(encoding="utf-8"))
        if found:
            return found[-1]
        time.sleep(0.05)
    raise AssertionError("the pen's screen showed no code")


def _pair(
    url: str, screen: Path, server: subprocess.Popen[str]
) -> subprocess.CompletedProcess[str]:
    """Run micropen pair; compare its code with the pen's screen as a technician would."""
    proc = subprocess.Popen(
        [*CLI, "pair", "--pen", url, "--name", "bench 1", "--json"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    line = ""
    while "pairing code" not in line:
        line = proc.stderr.readline()
        assert line, "micropen pair showed no code"
    host_code = "".join(re.search(r"(\d{3}) (\d{3})", line).groups())  # type: ignore[union-attr]
    same = host_code == _pen_code(screen)
    if same:
        server.send_signal(signal.SIGUSR1)  # the technician accepts on the pen
        time.sleep(0.2)
    answer = "y\n" if same else "n\n"
    out, err = proc.communicate(answer, timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_pair_run_list_revoke(unpaired_pen: tuple[str, subprocess.Popen[str], Path]) -> None:
    url, server, screen = unpaired_pen
    refused = _cli(*RUN, "--pen", url)
    assert refused.returncode == 1 and "micropen pair --pen" in refused.stderr

    closed = _cli("pair", "--pen", url, "--json")  # the button was not pressed
    assert closed.returncode == 1 and "not in pairing mode" in closed.stderr

    server.send_signal(signal.SIGUSR1)  # the pen's pairing button
    time.sleep(0.2)
    done = _pair(url, screen, server)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["serial"] == "SIM-000071" and result["authenticated"] is True

    ran = _cli(*RUN, "--pen", url, "--json")
    assert ran.returncode == 0, ran.stderr

    listed = _cli("pair", "list", "--pen", url, "--json")
    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    assert [p["serial"] for p in document["pens"]] == ["SIM-000071"]
    assert [h["host_id"] for h in document["pen_pairings"]] == [document["host_id"]]
    keystore = json.loads(Path(document["path"]).read_text(encoding="utf-8"))
    key = keystore["pens"][0]["key"]
    for output in (done.stdout, listed.stdout, ran.stdout, done.stderr, listed.stderr):
        assert key not in output  # no key is ever printed

    revoked = _cli("pair", "revoke", "SIM-000071", "--pen", url, "--json")
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout)["pairings_left_on_pen"] == 0
    again = _cli(*RUN, "--pen", url)
    assert again.returncode == 1 and "not paired" in again.stderr

    # found by review: stop and estop must work even when the keystore cannot be used
    Path(document["path"]).chmod(0o644)
    for command in ("stop", "estop"):
        stopped = _cli(command, "--pen", url)
        assert stopped.returncode == 0, stopped.stderr
        assert "chmod 600" in stopped.stderr and "stopping the pen anyway" in stopped.stderr
