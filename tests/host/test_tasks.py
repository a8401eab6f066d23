"""The owned-task helpers: nothing outlives its owner, the caller's cancellation is never
swallowed, a failing child ends its scope promptly with its own error, cleanup always ends."""

from __future__ import annotations

import asyncio

import pytest

from micropen.host.tasks import TaskScope, cancel_and_wait, shielded


async def _forever() -> None:
    await asyncio.Event().wait()


async def _fail_after(seconds: float, error: Exception) -> None:
    await asyncio.sleep(seconds)
    raise error


async def test_a_scope_cancels_and_awaits_its_tasks_on_the_way_out() -> None:
    async with TaskScope("t") as scope:
        task = scope.start(_forever())
        await asyncio.sleep(0)
    assert task.cancelled()


async def test_a_failing_child_ends_the_scope_at_once_with_its_own_error() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ValueError, match="boom"):
        async with TaskScope("t") as scope:
            sibling = scope.start(_forever())
            scope.start(_fail_after(0.01, ValueError("boom")))
            await asyncio.sleep(10)  # the owner's body is cancelled, not waited out
    assert loop.time() - started < 1.0
    assert sibling.cancelled()
    assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]
    await asyncio.sleep(0)  # and no cancellation is left pending on the owner


async def test_a_child_that_returns_ends_nothing() -> None:
    async with TaskScope("t") as scope:
        done = scope.start(asyncio.sleep(0))
        other = scope.start(_forever())
        await done
        await asyncio.sleep(0)
        assert not other.done()


async def test_the_callers_cancellation_passes_through_a_scope() -> None:
    entered = asyncio.Event()

    async def owner() -> None:
        async with TaskScope("t") as scope:
            scope.start(_forever())
            entered.set()
            await _forever()

    task = asyncio.create_task(owner())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_callers_cancellation_wins_over_a_failing_child() -> None:
    entered = asyncio.Event()

    async def owner() -> None:
        async with TaskScope("t") as scope:
            scope.start(_fail_after(0.01, ValueError("boom")))
            entered.set()
            await _forever()

    task = asyncio.create_task(owner())
    await entered.wait()
    task.cancel()
    await asyncio.sleep(0.02)
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancel_and_wait_waits_for_a_slow_cleanup_and_re_raises_the_cancel() -> None:
    ended: list[str] = []

    async def slow_to_end() -> None:
        try:
            await _forever()
        finally:
            await shielded(asyncio.sleep(0.05))
            ended.append("child")

    child = asyncio.create_task(slow_to_end())
    await asyncio.sleep(0)

    async def owner() -> None:
        await cancel_and_wait([child])

    task = asyncio.create_task(owner())
    await asyncio.sleep(0.01)
    task.cancel()  # the owner is cancelled while its child is still cleaning up
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended == ["child"]  # the owner did not return before its child ended


async def test_cancel_and_wait_returns_the_errors_the_tasks_ended_with() -> None:
    failing = asyncio.create_task(_fail_after(0, KeyError("k")))
    await asyncio.sleep(0.001)
    errors = await cancel_and_wait([failing, asyncio.create_task(_forever())])
    assert [type(e) for e in errors] == [KeyError]


async def test_shielded_cleanup_runs_to_its_end_through_two_cancels() -> None:
    steps: list[int] = []

    async def cleanup() -> None:
        for i in range(3):
            await asyncio.sleep(0.01)
            steps.append(i)

    task = asyncio.create_task(shielded(cleanup()))
    await asyncio.sleep(0.005)
    task.cancel()
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == [0, 1, 2]


async def test_shielded_returns_the_result_and_raises_the_error_when_not_cancelled() -> None:
    async def value() -> int:
        return 7

    assert await shielded(value()) == 7
    with pytest.raises(KeyError):
        await shielded(_fail_after(0, KeyError("k")))


async def test_a_cancel_arriving_as_the_cleanup_finishes_is_not_swallowed() -> None:
    """The caller is cancelled in the very step its shielded work completes."""
    work: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(shielded(work))
    await asyncio.sleep(0)
    work.set_result(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_child_failing_while_the_scope_closes_is_raised_not_lost() -> None:
    async def fails_when_cancelled() -> None:
        try:
            await _forever()
        finally:
            raise KeyError("cleanup broke")

    with pytest.raises(KeyError, match="cleanup broke"):
        async with TaskScope("t") as scope:
            scope.start(fails_when_cancelled())
            await asyncio.sleep(0)
