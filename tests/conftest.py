"""Settings every test shares.

* Each test gets its own ``MICROPEN_HOME``: pens opened through the API record into the
  treatment log by default, and a test must never write into the developer's own log (nor
  see another test's records).
* Hypothesis: the ``ci`` profile (chosen when ``CI`` is set, as ``.ci/run`` runs) is
  derandomized, so a red CI run is reproducible from its log; ``dev`` explores new examples.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def _own_micropen_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "micropen-home"
    monkeypatch.setenv("MICROPEN_HOME", str(home))
    return home


# Suites that time the pen on the wall clock with real processes (the HIL suite against a
# served simulator: heartbeats every 25 ms at the shortest watchdog, 50 ms retraction limits)
# and the station's tests driving chromium: under `pytest -n 2` on a 2-core machine, a
# browser on one core starved a HIL test on the other. One xdist group keeps them on one
# worker, one at a time (`--dist loadgroup` in pyproject's addopts); each still measures
# against the spec's limits.
_WALL_CLOCK = (
    "hil_tests/",
    *(
        f"tests/station/test_station_{name}.py"
        for name in ("browser", "load", "stale", "login", "fleet")
    ),
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    root = Path(__file__).resolve().parents[1]
    for item in items:
        try:
            where = item.path.resolve().relative_to(root).as_posix()
        except ValueError:
            continue
        if where.startswith(_WALL_CLOCK):
            item.add_marker(pytest.mark.xdist_group("wall-clock"))
