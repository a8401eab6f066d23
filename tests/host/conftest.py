"""Host tests run in virtual time (looptime): the event loop's clock jumps to the next timer
whenever nothing is ready, so a 2 s reconnect backoff or a 500 ms watchdog costs microseconds,
and a timing assertion means the same on a loaded CI machine as on a quiet laptop.

Every coroutine test here gets ``@pytest.mark.looptime`` unless it says otherwise: tests about
real transports (pty, TCP, USB, subprocesses) are marked ``looptime(False)`` and run on the
wall clock, since their bytes really take time.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE not in item.path.parents:
            continue
        function = getattr(item, "function", None)
        if function is None or not inspect.iscoroutinefunction(function):
            continue
        if item.get_closest_marker("looptime") is None:
            item.add_marker(pytest.mark.looptime)
