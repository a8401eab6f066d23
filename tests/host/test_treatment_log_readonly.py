"""A treatment log on read-only media: `micropen log list` reads it; a host that must write to
it gets LogNotWritable naming the disk, not "the file is damaged".

The read-only disk is a real one: a tmpfs remounted read-only inside a private mount namespace
(``unshare``), so nothing on this machine's own mounts changes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
set -e
mount -t tmpfs tmpfs "$DIR"
"$PY" -c "
from micropen.host.treatment_log import TreatmentLog
with TreatmentLog('$DIR/log.sqlite') as log:
    log.start_session(pen_serial='SN1', pen_model='MP-12', firmware='1.0.0', protocol_version=1,
                      boot_id=7, operator='ana', pen_url='sim://', is_simulated=True)
"
mount -o remount,ro "$DIR"
"$PY" -m micropen.tools.cli log list --db "$DIR/log.sqlite" --json
"$PY" -c "
from micropen.host.treatment_log import TreatmentLog, LogNotWritable
try:
    TreatmentLog('$DIR/log.sqlite')
except LogNotWritable as exc:
    print('NOT WRITABLE:', exc)
"
"""


def _read_only_disk_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _read_only_disk_available(), reason="needs unshare (mount namespaces)")
def test_a_log_on_read_only_media_is_listed_and_refused_for_writing(tmp_path: Path) -> None:
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", SCRIPT],
        env={"DIR": str(mount_point), "PY": sys.executable, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    listing, refusal = done.stdout.splitlines()
    [session] = json.loads(listing)["sessions"]
    assert (session["pen_serial"], session["operator"]) == ("SN1", "ana")
    assert refusal.startswith("NOT WRITABLE:") and "read-only" in refusal
    assert "damaged" not in refusal
