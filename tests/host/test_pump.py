"""The link pump's ticker sleeps until something is due, whatever state the link is in.

Found when the host tests moved to virtual time: while the link was down (reconnecting) or the
host was told to go silent, the next heartbeat lay in the past, so the ticker woke at once,
again and again — a busy loop burning a core on a real machine for as long as the outage
lasted. Counted here in virtual time: 1.2 s of outage must cost tens of wake-ups, not
thousands.
"""

from __future__ import annotations

from micropen.host import AsyncPen
from micropen.host.pump import LinkPump
from micropen.host.transports.sim import SimTransport
from micropen.protocol.messages import SimParam


def _count_wakeups(pen: AsyncPen) -> list[float]:
    return _count_wakeups_of(pen._pump)


def _count_wakeups_of(pump: LinkPump) -> list[float]:
    link = pump.link
    handle_timeout = link.handle_timeout
    wakeups: list[float] = []

    def counted(now: float) -> None:
        wakeups.append(now)
        if len(wakeups) > 10_000:  # a spinning ticker: end it, so the test fails, not hangs
            raise AssertionError(f"the ticker spins: {len(wakeups)} wake-ups by {now:.6f} s")
        handle_timeout(now)

    link.handle_timeout = counted  # type: ignore[method-assign]
    return wakeups


async def test_the_ticker_does_not_spin_while_the_link_is_down() -> None:
    async with await AsyncPen.open("sim://?seed=3", log=False, command_timeout=5) as pen:
        transport = pen.transport
        assert isinstance(transport, SimTransport)
        wakeups = _count_wakeups(pen)
        with transport._lock:
            transport.pen.set_param(SimParam.DISCONNECT, 1200, transport.now())
        await pen.set_depth(0.6)  # answered after the reconnect
        assert pen.counters["reconnects"] == 1
        assert len(wakeups) < 100, f"{len(wakeups)} ticker wake-ups in a 1.2 s outage"


async def test_the_ticker_does_not_spin_while_the_host_is_silent() -> None:
    async with await AsyncPen.open("sim://?seed=3", log=False, command_timeout=5) as pen:
        wakeups = _count_wakeups(pen)
        pen.go_silent(0.3)
        await pen.status()  # leaves after the silence
        assert len(wakeups) < 60, f"{len(wakeups)} ticker wake-ups in 0.3 s of silence"


class _Line:
    """A transport that keeps what the pump writes and never delivers anything."""

    is_simulated = True
    bench = None

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


async def test_no_heartbeat_on_a_closed_link_and_the_ticker_lives_on() -> None:
    """Between LinkLost and the supervisor's reaction the link is closed while heartbeats are
    due: sending one raised and ended the ticker (seen once as a HIL flake)."""
    import asyncio

    loop = asyncio.get_running_loop()
    beating = asyncio.Event()
    beating.set()  # the session was ready: heartbeats flow
    pump = LinkPump(
        _Line(),  # type: ignore[arg-type]
        clock=loop.time,
        on_message=lambda message: None,
        on_tick=lambda: None,
        beating=beating,
        counters={},
    )
    assert not pump.link.connected  # closed: no epoch was opened
    ticker = asyncio.create_task(pump.ticker())
    wakeups = _count_wakeups_of(pump)
    await asyncio.sleep(1.0)  # 8 heartbeat intervals of the default 500 ms watchdog
    assert not ticker.done(), ticker.exception() if ticker.done() else None
    assert len(wakeups) <= 25, f"{len(wakeups)} ticker wake-ups in 1 s on a closed link"
    assert pump.transport.written == []  # type: ignore[attr-defined]
    ticker.cancel()
