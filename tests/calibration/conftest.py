"""Fixtures: a calibration database in a temporary folder, and an in-process simulated pen."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from micropen.host.calibration import RecordStore
from micropen.host.connection import AsyncPen


@pytest.fixture
def store(tmp_path: Path) -> RecordStore:
    return RecordStore(tmp_path / "calibration.sqlite")


@pytest.fixture
async def sim_pen(request: pytest.FixtureRequest) -> AsyncIterator[AsyncPen]:
    """``sim://?seed=3`` (parametrise with indirect=True to change the query)."""
    query = getattr(request, "param", "seed=3")
    pen = await AsyncPen.open(f"sim://?{query}")
    await pen.status()
    try:
        yield pen
    finally:
        await pen.close()
