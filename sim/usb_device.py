"""Simulated pens as USB devices: glue between :class:`SimulatedPen` and :class:`SimUsbBackend`.

Why: the host's USB transport is plain pyusb. With ``make_sim_usb_backend(configs)`` passed as
``backend=`` to ``usb.core.find``, that exact code enumerates, configures and talks to simulated
pens over bulk endpoints, with no libusb and no hardware.

Lifetimes follow the hardware. A :class:`SimUsbPen` is one pen on the bus; it keeps its state for
as long as it exists (it has a battery: a host closing the device or a USB port reset does not
reboot it, and a reconnecting host must resynchronise with a pen that kept running). Each time
the host opens the device the backend asks :meth:`SimUsbPen.open_pipe` for a fresh
:class:`SimPenPipe` onto that pen; output the previous connection left unread is gone, as a
device's IN FIFO is emptied by a reset, and the link's retransmissions recover it.

A config with ``state=PATH`` keeps the unit's non-volatile memory in that file (see
:mod:`.statefile`); the file is locked from the moment the :class:`SimUsbPen` exists until
:meth:`SimUsbPen.close` powers it off (or the process ends).

Threads: the pen has deadlines of its own (watchdog, telemetry, retransmissions) that must fire
even while the host is not reading, so each pipe owns one stepping thread, started in its
constructor and joined in :meth:`SimPenPipe.close` (never fire-and-forget). The pen is only
touched with the pen's lock held; readers wait on a condition of that lock, woken as soon as the
pen has output. While no pipe is open nobody steps the pen; the next pipe advances it to the
present first.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from .clock import Clock, RealClock
from .pen import SimConfig, SimulatedPen
from .serve import Outbox, sleep_time
from .usb_backend import PipeFactory, SimUsbBackend, SimUsbDeviceInfo

__all__ = ["SimPenPipe", "SimUsbPen", "make_sim_usb_backend"]


class SimUsbPen:
    """One simulated pen plugged into the simulated bus; :meth:`open_pipe` is its PipeFactory."""

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        address: int = 1,
        bus: int = 1,
        clock: Clock | None = None,
    ) -> None:
        self.clock: Clock = clock or RealClock()
        self.pen = SimulatedPen(config or SimConfig(), now=self.clock.now())
        self.lock = threading.Lock()  # guards self.pen
        self.info = SimUsbDeviceInfo(serial=self.pen.identity.serial, address=address, bus=bus)

    def open_pipe(self) -> SimPenPipe:
        return SimPenPipe(self)

    def close(self) -> None:
        """Power the pen off: its state file, if any, gets its last write and is unlocked.
        Close the backend (or unplug the pen) first: the pen is not to be driven after this."""
        with self.lock:
            self.pen.close(self.clock.now())

    def device(self) -> tuple[SimUsbDeviceInfo, PipeFactory]:
        """What :class:`SimUsbBackend` and its ``plug()`` take."""
        return self.info, self.open_pipe


class SimPenPipe:
    """The device side of the bulk endpoints for one host connection (a ``UsbPipe``)."""

    def __init__(self, unit: SimUsbPen) -> None:
        self._pen = unit.pen
        self._clock = unit.clock
        self._ready = threading.Condition(unit.lock)
        self._out = Outbox()
        self._closed = False
        self._stepped_at = float("-inf")
        self.bytes_dropped = 0
        self._thread = threading.Thread(
            target=self._run, name=f"sim-usb-pen-{unit.info.serial}", daemon=False
        )
        self._thread.start()

    def host_write(self, data: bytes) -> None:
        with self._ready:
            if self._closed:
                raise EOFError("the simulated pen's pipe is closed")
            self._pen.receive_data(data, self._clock.now())
            self._step()
            self._ready.notify_all()  # the stepper recomputes its deadline

    def host_read(self, size: int, timeout_s: float) -> bytes:
        with self._ready:
            self._step()
            end = self._clock.now() + timeout_s
            while not self._out:
                remaining = end - self._clock.now()
                if self._closed or remaining <= 0:
                    return b""
                self._ready.wait(remaining)
            return self._out.take(size)

    @property
    def pending(self) -> int:
        """Bytes of pen output waiting for the host to read them."""
        with self._ready:
            return len(self._out)

    def close(self) -> None:
        with self._ready:
            if self._closed:
                return
            self._closed = True
            self._ready.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    # -- internals (lock held)
    def _run(self) -> None:
        with self._ready:
            while not self._closed:
                self._step()
                self._ready.wait(self._wait_s())

    def _step(self) -> None:
        now = self._clock.now()
        self._pen.advance(now)
        out = self._pen.data_to_send(now)
        self._stepped_at = now
        if out:
            self.bytes_dropped += self._out.push(out)
            self._ready.notify_all()

    def _wait_s(self) -> float:
        return sleep_time(self._pen.next_deadline(), self._stepped_at, self._clock.now())


def make_sim_usb_backend(
    configs: Sequence[SimConfig], *, clock: Clock | None = None
) -> SimUsbBackend:
    """A pyusb backend with one simulated pen per config plugged in, at addresses 1, 2, ...

    Each device's USB serial number is its pen's serial. Close the backend when done: that
    closes the open pipes and joins their threads.
    """
    units = [SimUsbPen(config, address=i + 1, clock=clock) for i, config in enumerate(configs)]
    backend = SimUsbBackend(unit.device() for unit in units)
    backend.units = units  # the bench's hands on each unit (its pairing button, ...)
    return backend
