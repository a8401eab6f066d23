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
