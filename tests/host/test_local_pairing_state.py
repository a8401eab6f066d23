"""A simulated pen with a state file, opened by one process after another: each process pairs
its own host with it, and those pairings must not pile up until the pen refuses everyone (an
outside tester's 9th `micropen status` failed with "the pen holds 8 pairings")."""

from __future__ import annotations

from pathlib import Path

from micropen.host import open_pen
from micropen.sim.pen import LOCAL_PAIRING_NAME


def test_twelve_sessions_in_a_row_keep_one_local_pairing(tmp_path: Path) -> None:
    url = f"sim://?seed=7&state={tmp_path / 'pen.state'}"
    for _ in range(12):  # more than the 8 pairings a pen holds
        with open_pen(url, log=False) as pen:
            assert pen.async_pen.authenticated
            assert pen.status().state.name == "IDLE"
    with open_pen(url, log=False) as pen:
        sim = pen.async_pen.transport.pen  # type: ignore[attr-defined]
        local = [p for p in sim.nvm.pairings.listing() if p.name == LOCAL_PAIRING_NAME]
        assert len(local) == 1
