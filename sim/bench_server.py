"""The bench channel: the simulated gauge and tachometer, served as a SCPI-style instrument.

Why a separate channel: on a real calibration bench the depth gauge (a dial indicator or a laser
displacement sensor on a fixture) and the tachometer are instruments of their own. They measure
what the needles physically do and know nothing of the pen protocol, so calibration trusts them
rather than the pen. The simulator keeps that separation: its instruments read the pen's *true*
physical state (hidden manufacturing errors included, plus instrument noise) and answer in the
line-based SCPI dialect real instrument controllers speak, so the host's calibration code talks
to a real instrument or to this one without knowing which.

Wire format: ASCII lines ending in LF (a CR before it is ignored); several commands may share a
line separated by ``;`` and their answers come back on one line, separated by ``;``. Headers are
case-insensitive, a leading ``:`` is ignored, and each node may be written in its SCPI short or
long form (``MEAS``/``MEASURE``, ``SYST``/``SYSTEM``, ``ERR``/``ERROR``, ``CAL``/``CALIBRATION``,
``INST``/``INSTRUMENT``, ``SEL``/``SELECT``). Commands:

==========================  =====================================================================
``*IDN?``                   ``micropen-sim,<model>,<serial>,1.0`` of the selected instrument
                            (the gauge unless ``INST:SEL RATE``)
``MEAS:DEPTH?``             needle depth read by the gauge, mm, 3 decimals (``1.012``)
``MEAS:RATE?``              stroke rate read by the tachometer, strokes/s, 2 decimals (``110.37``)
``SYST:CAL:DUE?``           calibration due date of the selected instrument, ISO (``2026-03-01``)
``SYST:ERR?``               oldest queued error as ``<code>,"<text>"``; ``0,"No error"`` if none
``INST:SEL DEPTH|RATE``     select the gauge (DEPTH) or the tachometer (RATE) for ``*IDN?`` and
                            ``SYST:CAL:DUE?``; ``INST:SEL?`` answers ``DEPTH`` or ``RATE``
``*CLS``                    clear the error queue
``*RST``                    select the gauge again
``*OPC?``                   ``1`` (every command completes at once)
==========================  =====================================================================

Errors are queued (at most :data:`ERROR_QUEUE_SIZE`; on overflow the newest is replaced by
``-350,"Queue overflow"``) as on a real instrument. An unknown header is also answered at once with
``-113,"Undefined header"`` so a host that sent an unknown query does not wait for a timeout; a
bad parameter (``-224,"Illegal parameter value"``) and an over-long line
(``-363,"Input buffer overrun"``) are only queued. Several clients may connect at once; they
share the instrument state (selection and error queue), as they would on a real instrument.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
from collections import deque
from collections.abc import Callable

from .bench import Bench, DepthGauge, Tachometer
from .clock import Clock
from .tcp import accept_nodelay, listen

__all__ = [
    "ERROR_QUEUE_SIZE",
    "MAX_LINE",
    "BenchTcpService",
    "ScpiBench",
]

MAX_LINE = 1024  # bytes without a newline before the input is declared overrun
MAX_UNREAD = 64 * 1024  # answers a client leaves unread before it is disconnected
ERROR_QUEUE_SIZE = 16
FIRMWARE_VERSION = "1.0"
_NO_ERROR = (0, "No error")
_UNDEFINED_HEADER = (-113, "Undefined header")
_ILLEGAL_PARAMETER = (-224, "Illegal parameter value")
_QUEUE_OVERFLOW = (-350, "Queue overflow")
_INPUT_OVERRUN = (-363, "Input buffer overrun")
_LONG_FORMS = {
    "MEASURE": "MEAS",
    "SYSTEM": "SYST",
    "ERROR": "ERR",
    "CALIBRATION": "CAL",
    "INSTRUMENT": "INST",
    "SELECT": "SEL",
}


class ScpiBench:
    """The instrument's command interpreter, sans I/O: one line in, one answer line (or None)."""

    def __init__(self, bench: Bench) -> None:
        self._bench = bench
        self._selected = "DEPTH"
        self._errors: deque[tuple[int, str]] = deque()
        self._queries: dict[str, Callable[[float], str]] = {
            "*IDN?": self._idn,
            "*OPC?": lambda now: "1",
            "MEAS:DEPTH?": self._depth,
            "MEAS:RATE?": self._rate,
            "SYST:CAL:DUE?": self._cal_due,
            "SYST:ERR?": self._next_error,
            "INST:SEL?": lambda now: self._selected,
        }

    def handle_line(self, line: str, now: float) -> str | None:
        """Execute every command on ``line``; the joined answers, or None when none answers."""
        answers = []
        for command in line.split(";"):
            if command.strip():
                answer = self._execute(command.strip(), now)
                if answer is not None:
                    answers.append(answer)
        return ";".join(answers) if answers else None

    def overrun(self) -> None:
        """The transport discarded a line that was too long."""
        self._push_error(_INPUT_OVERRUN)

    # -- internals
    def _execute(self, command: str, now: float) -> str | None:
        header, _, argument = command.partition(" ")
        header = _normalise(header)
        argument = argument.strip().upper()
        query = self._queries.get(header)
        if query is not None and not argument:
            return query(now)
        if header == "INST:SEL" and argument:
            self._select(argument)
            return None
        if header == "*CLS" and not argument:
            self._errors.clear()
            return None
        if header == "*RST" and not argument:
            self._selected = "DEPTH"
            return None
        self._push_error(_UNDEFINED_HEADER)
        return _format_error(_UNDEFINED_HEADER)

    def _select(self, argument: str) -> None:
        if argument in ("DEPTH", "RATE"):
            self._selected = argument
        else:
            self._push_error(_ILLEGAL_PARAMETER)

    def _instrument(self) -> DepthGauge | Tachometer:
        bench = self._bench
        return bench.gauge if self._selected == "DEPTH" else bench.tachometer

    def _idn(self, now: float) -> str:
        inst = self._instrument()
        return f"micropen-sim,{inst.model},{inst.serial},{FIRMWARE_VERSION}"

    def _depth(self, now: float) -> str:
        return f"{self._bench.gauge.read_mm(now):.3f}"  # the gauge advances the pen to now

    def _rate(self, now: float) -> str:
        return f"{self._bench.tachometer.read_sps(now):.2f}"

    def _cal_due(self, now: float) -> str:
        return self._instrument().cal_due.isoformat()

    def _next_error(self, now: float) -> str:
        return _format_error(self._errors.popleft() if self._errors else _NO_ERROR)

    def _push_error(self, error: tuple[int, str]) -> None:
        if len(self._errors) < ERROR_QUEUE_SIZE - 1:
            self._errors.append(error)
        elif len(self._errors) == ERROR_QUEUE_SIZE - 1:
            self._errors.append(_QUEUE_OVERFLOW)


def _normalise(header: str) -> str:
    nodes = header.upper().lstrip(":").split(":")
    return ":".join(_LONG_FORMS.get(node.rstrip("?"), node.rstrip("?")) for node in nodes) + (
        "?" if header.endswith("?") else ""
    )


def _format_error(error: tuple[int, str]) -> str:
    code, text = error
    return f'{code},"{text}"'


class _Client:
    """One connected controller: its partial input line and unsent answers."""

    __slots__ = ("inbox", "outbox", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox = bytearray()
        self.outbox = bytearray()


class BenchTcpService:
    """Serves :class:`ScpiBench` on TCP inside the pen's selector loop (see ``serve.Service``).

    It runs on the pen server's thread: a reading advances the pen to ``now``, and no other
    thread touches the pen meanwhile, so no lock is needed.
    """

    def __init__(
        self, bench: Bench, clock: Clock, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.scpi = ScpiBench(bench)
        self._clock = clock
        self._listener = listen(host, port)
        self.port: int = self._listener.getsockname()[1]
        self._clients: dict[socket.socket, _Client] = {}
        self._selector: selectors.BaseSelector | None = None

    def register(self, selector: selectors.BaseSelector) -> None:
        self._selector = selector
        selector.register(self._listener, selectors.EVENT_READ, self._on_accept)

    def describe(self) -> dict[str, str | int]:
        return {"bench_tcp": self.port}

    def close(self) -> None:
        for client in list(self._clients.values()):
            self._drop(client)
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self._listener)
        self._listener.close()

    # -- internals
    def _on_accept(self, events: int) -> None:
        sock = accept_nodelay(self._listener)
        if sock is None:
            return
        client = _Client(sock)
        self._clients[sock] = client
        if self._selector is not None:
            self._selector.register(sock, selectors.EVENT_READ, self._handler(client))

    def _handler(self, client: _Client) -> Callable[[int], None]:
        return lambda events: self._on_client(client, events)

    def _on_client(self, client: _Client, events: int) -> None:
        if events & selectors.EVENT_READ:
            try:
                data = client.sock.recv(4096)
            except BlockingIOError:
                data = None
            except OSError:
                data = b""
            if data == b"":
                self._drop(client)
                return
            if data:
                self._receive(client, data)
        self._flush(client)

    def _receive(self, client: _Client, data: bytes) -> None:
        client.inbox += data
        *lines, rest = client.inbox.split(b"\n")
        client.inbox = bytearray(rest)
        if len(client.inbox) > MAX_LINE:
            client.inbox.clear()
            self.scpi.overrun()
        for raw in lines:
            text = raw.rstrip(b"\r").decode("ascii", errors="replace")
            answer = self.scpi.handle_line(text, self._clock.now())
            if answer is not None:
                client.outbox += answer.encode("ascii", errors="replace") + b"\n"
        if len(client.outbox) > MAX_UNREAD:  # it sends queries and never reads the answers
            self._drop(client)

    def _flush(self, client: _Client) -> None:
        if client.sock not in self._clients:
            return
        try:
            while client.outbox:
                sent = client.sock.send(client.outbox)
                del client.outbox[:sent]
        except BlockingIOError:
            pass
        except OSError:
            self._drop(client)
            return
        if self._selector is not None:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.outbox else 0)
            self._selector.modify(client.sock, events, self._handler(client))

    def _drop(self, client: _Client) -> None:
        self._clients.pop(client.sock, None)
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(client.sock)
        client.sock.close()
