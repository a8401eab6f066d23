"""The HIL suite's waiting helpers fail loudly when the pen does not get there: a helper that
returned the last status on timeout let a test go on against a pen still moving."""

from __future__ import annotations

from typing import Any

import pytest

from micropen.hil_tests import drive, target
from micropen.protocol.messages import (
    CartridgeState,
    FaultCode,
    PenState,
    RunMode,
    RunOutcome,
    Status,
)

STOPPING = Status(
    1, PenState.STOPPING, FaultCode.NONE, 500, 90, 0, 500, 0, 0, 0, RunMode.STROKES, 0, 0,
    RunOutcome.NONE, 0, 77, CartridgeState.NEW, 0, 3700, 300, 1, 1, 1, 0,
)  # fmt: skip


class _StuckPen:
    """A pen whose needles never come home."""

    def __init__(self) -> None:
        self.asked = 0

    def status(self) -> Status:
        self.asked += 1
        return STOPPING


def test_wait_idle_fails_when_the_pen_stays_stopping() -> None:
    pen: Any = _StuckPen()
    with pytest.raises(AssertionError, match="still stopping 0.05 s after the run"):
        drive.wait_idle(pen, timeout=0.05)
    assert pen.asked > 1


def test_waiting_for_rest_fails_when_the_pen_never_rests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(target, "AT_REST_TIMEOUT_S", 0.05)
    pen: Any = _StuckPen()
    with pytest.raises(AssertionError, match="still stopping .* did not come to rest"):
        target._wait_at_rest(pen)
