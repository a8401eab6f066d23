"""Reference instruments behind one interface: the simulator's bench, a technician, SCPI.

Each instrument measures one quantity (needle depth in mm, or stroke rate in strokes/s) and
carries its identity (manufacturer, model, serial number), calibration due date and its own
calibration (certificate number and date, expanded uncertainty and k, resolution: see
:mod:`.traceability`) for the record and the uncertainty budget. The procedure never asks
which kind it drives; an instrument whose calibration is unknown is refused before it starts.
Instrument specs, as given to ``--gauge`` (one spec supplies the instrument for every quantity
the procedure needs):

=============================================  ===============================================
``sim``                                         the in-process simulator's bench (``pen.bench``)
``manual``                                      the technician types readings (prompted)
``scpi+tcp://HOST:PORT``                        a SCPI bench over TCP (e.g. the simulator's
                                                bench server, ``sim.serve --bench-tcp``)
``scpi+serial:///dev/ttyUSB0?baud=9600``        a SCPI bench on a serial port (pyserial)
=============================================  ===============================================

SCPI URL options: ``baud`` (serial, default 9600; 8 data bits, 1 stop bit), ``parity``
(``N``/``E``/``O``, default N), ``term`` (``lf``/``crlf``, default lf), ``timeout`` (s, default 2),
``measure`` (``depth,rate``: which quantities this instrument provides), ``due`` (YYYY-MM-DD, for
an instrument that cannot report its own due date).

SCPI command set, one line per query: ``INST:SEL DEPTH|RATE`` picks the gauge or tachometer for
``*IDN?`` (``MANUFACTURER,MODEL,SERIAL,FIRMWARE``) and ``SYST:CAL:DUE?`` (``YYYY-MM-DD``);
``MEAS:DEPTH?`` answers mm and ``MEAS:RATE?`` strokes/s. An instrument without ``INST:SEL``
works too: its identity answers for both quantities.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol
from urllib.parse import parse_qsl, urlsplit

from micropen.host.errors import InvalidInput
from micropen.host.transports.nodelay import set_nodelay, set_nodelay_on_port
from micropen.protocol import limits as L

from .errors import InstrumentDisconnected, InstrumentError, InstrumentRefused, ReadingOutOfRange
from .measurements import Quantity
from .prompts import MANUAL_ATTEMPTS, Prompt, ask, ask_calibration, ask_date
from .record import InstrumentRef
from .station import RegisteredInstrument
from .traceability import ReferenceCalibration, is_simulated_instrument, simulated_calibration

__all__ = [
    "INSTRUMENT_SPECS",
    "RANGES",
    "Instrument",
    "InstrumentInfo",
    "ManualInstrument",
    "Prompt",
    "ScpiInstrument",
    "SerialChannel",
    "SimBenchInstrument",
    "TcpChannel",
    "check_instruments",
    "check_spec",
    "close_instruments",
    "open_instruments",
]


INSTRUMENT_SPECS = ("sim", "manual", "scpi+tcp://HOST:PORT", "scpi+serial:///dev/ttyUSB0")

# what a bench instrument can show; a reading outside is a fault, not a measurement
RANGES: dict[Quantity, tuple[float, float]] = {
    Quantity.DEPTH: (-0.5, 10.0),  # mm: a 10 mm dial indicator zeroed at needle home
    Quantity.RATE: (0.0, 1000.0),  # strokes/s: an optical tachometer's low range
}
SCPI_TIMEOUT_S = 2.0
_EPOCH = dt.date(1970, 1, 1)


Register = Mapping[str, RegisteredInstrument]
"""The station file's equipment register, by serial number."""


@dataclass(frozen=True)
class InstrumentInfo:
    kind: str  # "sim-bench", "manual", "scpi"
    manufacturer: str
    model: str
    serial: str
    cal_due: dt.date
    url: str = ""
    calibration: ReferenceCalibration | None = None  # None: unknown, refused for use
    simulated: bool = False

    def ref(self, role: Quantity, today: dt.date, override_reason: str = "") -> InstrumentRef:
        overdue = self.cal_due < today
        return InstrumentRef(
            role=role.value,
            kind=self.kind,
            manufacturer=self.manufacturer,
            model=self.model,
            serial=self.serial,
            cal_due=self.cal_due,
            url=self.url,
            overdue=overdue,
            override_reason=override_reason if overdue else "",
            calibration=self.calibration,
            simulated=self.simulated,
        )

    def registered(self, register: Register) -> InstrumentInfo:
        """With the calibration the equipment register holds for this serial, if any: the
        lab's register is the authority over what an instrument declares of itself."""
        entry = register.get(self.serial)
        if entry is None:
            return self
        return dataclasses.replace(self, calibration=entry.lookup(self.model))


class Instrument(Protocol):
    """What the procedure needs from a reference instrument for one quantity."""

    @property
    def info(self) -> InstrumentInfo: ...

    @property
    def quantity(self) -> Quantity: ...

    async def read(self, set_value: float) -> float:
        """One reading; ``set_value`` is what the pen was told (shown in prompts)."""
        ...

    async def aclose(self) -> None: ...


def check_range(quantity: Quantity, value: float) -> float:
    """The reading, or ReadingOutOfRange naming it and the instrument's range."""
    lo, hi = RANGES[quantity]
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ReadingOutOfRange(
            f"{quantity.value} reading {value} {quantity.set_units} is outside the instrument "
            f"range {lo}–{hi} {quantity.set_units}; check the instrument and its zero"
        )
    return value


def plausible(quantity: Quantity, set_value: float, value: float) -> float:
    """Refuse a reading no correctable pen can show at this set point (typo, wrong units).

    The window is what the calibration storage can still correct: ±20 % gain plus, for depth,
    ±0.5 mm offset. Outside it the pen needs repair, or the reading is wrong.
    """
    gain = L.CAL_GAIN_PPM_LIMIT / 1_000_000
    offset = L.CAL_OFFSET_UM_LIMIT / 1000 if quantity is Quantity.DEPTH else 0.0
    slack = set_value * gain + offset
    lo, hi = set_value - slack, set_value + slack
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ReadingOutOfRange(
            f"{quantity.value} reading {value:g} {quantity.set_units} at set point "
            f"{set_value:g} is outside the plausible {lo:.3g}–{hi:.3g} {quantity.set_units}; "
            "check the units, the fixture and the instrument zero"
        )
    return value


def check_instruments(
    used: Iterable[Instrument], today: dt.date, override_reason: str = ""
) -> list[InstrumentRef]:
    """References for the record. Refused: an instrument without its own calibration (no
    uncertainty can be stated), and an overdue one unless an override is given."""
    refs = []
    for instrument in used:
        ref = instrument.info.ref(instrument.quantity, today, override_reason.strip())
        if ref.calibration is None:
            raise InstrumentRefused(
                f"{ref.role} instrument {ref.model} s/n {ref.serial} has no calibration data "
                "(certificate number and date, expanded uncertainty and k, resolution), so no "
                "uncertainty can be stated; add it to the station file's equipment register "
                "(an instrument entry: micropen cal station --template shows one)"
            )
        if ref.overdue and not ref.override_reason:
            raise InstrumentRefused(
                f"{ref.role} instrument {ref.model} s/n {ref.serial} was due for calibration "
                f"on {ref.cal_due} (today {today}); use a calibrated instrument or give "
                "--override-instrument-due REASON (recorded on the certificate)"
            )
        refs.append(ref)
    return refs


async def close_instruments(instruments: Iterable[Instrument]) -> None:
    for instrument in instruments:
        with contextlib.suppress(InstrumentError, OSError):
            await instrument.aclose()


# --- the simulator's bench ------------------------------------------------------------------------
class SimBenchInstrument:
    """One of the in-process simulator's instruments (``pen.bench.gauge``/``.tachometer``).

    It reads the simulated unit's true physical state through a channel that is not the pen
    protocol, as a dial indicator on a fixture reads a real pen.
    """

    def __init__(self, bench: Any, quantity: Quantity) -> None:
        self._channel = bench.gauge if quantity is Quantity.DEPTH else bench.tachometer
        self.quantity = quantity
        model, serial = str(self._channel.model), str(self._channel.serial)
        due = _EPOCH + dt.timedelta(days=int(self._channel.cal_due_day))
        self.info = InstrumentInfo(
            "sim-bench",
            str(getattr(self._channel, "manufacturer", "micropen simulator")),
            model,
            serial,
            due,
            "sim",
            calibration=simulated_calibration(model, serial, due),
            simulated=True,
        )

    async def read(self, set_value: float) -> float:
        try:
            value = float(self._channel.read())
        except (OSError, RuntimeError) as exc:
            raise InstrumentDisconnected(f"simulated bench {self.quantity.value}: {exc}") from exc
        return check_range(self.quantity, value)

    async def aclose(self) -> None:
        return None


# --- the technician -------------------------------------------------------------------------------
class ManualInstrument:
    """Readings typed by the technician from a handheld gauge or tachometer.

    Each answer is checked (a number, inside the instrument's range, inside the window a
    correctable pen can show at that set point); a bad one is asked again with the reason, up
    to :data:`MANUAL_ATTEMPTS` times. ``q`` aborts the calibration.
    """

    def __init__(self, info: InstrumentInfo, quantity: Quantity, prompt: Prompt) -> None:
        self.info = info
        self.quantity = quantity
        self._prompt = prompt

    async def read(self, set_value: float) -> float:
        quantity, units = self.quantity, self.quantity.set_units
        what = "needle depth" if quantity is Quantity.DEPTH else "stroke rate"
        question = f"{what} at set point {set_value:g} {units}: enter the reading in {units}"
        reason = ""
        for _ in range(MANUAL_ATTEMPTS):
            answer = (await ask(self._prompt, reason + question)).strip()
            if answer.lower() in ("q", "quit", "abort"):
                raise InstrumentError("the technician aborted the calibration at a prompt")
            try:
                value = float(answer)
            except ValueError:
                reason = f"{answer!r} is not a number; "
                continue
            try:
                return plausible(quantity, set_value, check_range(quantity, value))
            except ReadingOutOfRange as exc:
                reason = f"{exc}. "
        raise ReadingOutOfRange(
            f"no valid {what} reading at {set_value:g} {units} after {MANUAL_ATTEMPTS} tries "
            f"(last: {reason.strip()})"
        )

    async def aclose(self) -> None:
        return None

    @classmethod
    async def from_prompts(
        cls, quantity: Quantity, prompt: Prompt, today: dt.date, register: Register | None = None
    ) -> ManualInstrument:
        """Ask the technician for the instrument's identity and calibration due date, and —
        unless the equipment register holds them — its calibration certificate's data."""
        name = "depth gauge" if quantity is Quantity.DEPTH else "tachometer"
        manufacturer = (await ask(prompt, f"{name} manufacturer")).strip()
        model = (await ask(prompt, f"{name} model")).strip()
        serial = (await ask(prompt, f"{name} serial number")).strip()
        if not model or not serial:
            raise InvalidInput(
                f"the {name} needs a model and a serial number for traceability; enter them "
                "as printed on the instrument"
            )
        due = await ask_date(prompt, f"{name} calibration due date (YYYY-MM-DD)", today)
        info = InstrumentInfo("manual", manufacturer or "-", model, serial, due)
        info = info.registered(register or {})
        if info.calibration is None:
            calibration = await ask_calibration(prompt, name, quantity, today)
            info = dataclasses.replace(info, calibration=calibration)
        return cls(info, quantity, prompt)


# --- SCPI over TCP or serial ----------------------------------------------------------------------
class LineChannel(Protocol):
    description: str

    async def query(self, command: str) -> str: ...

    async def aclose(self) -> None: ...


class TcpChannel:
    """One SCPI connection over TCP (asyncio streams), one answer line per query line."""

    def __init__(self, host: str, port: int, timeout: float = SCPI_TIMEOUT_S) -> None:
        self.description = f"scpi+tcp://{host}:{port}"
        self._host, self._port, self._timeout = host, port, timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        except (OSError, TimeoutError) as exc:
            raise InstrumentDisconnected(
                f"cannot reach the instrument at {self.description} ({exc}); check it is on "
                "and the host and port"
            ) from exc
        set_nodelay(self._writer.get_extra_info("socket"))

    async def query(self, command: str) -> str:
        if self._reader is None or self._writer is None:
            raise InstrumentDisconnected(f"{self.description} is closed")
        try:
            async with asyncio.timeout(self._timeout):
                self._writer.write(command.encode("ascii") + b"\n")
                await self._writer.drain()
                line = await self._reader.readline()
        except (OSError, TimeoutError) as exc:
            raise InstrumentDisconnected(
                f"{self.description} did not answer {command!r} within {self._timeout} s "
                f"({exc or 'timeout'}); check the instrument and its cable"
            ) from exc
        if not line.endswith(b"\n"):
            raise InstrumentDisconnected(
                f"{self.description} closed the connection during {command!r}; reconnect the "
                "instrument and repeat the calibration"
            )
        return line.decode("ascii", "replace").strip()

    async def aclose(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class SerialChannel:
    """A SCPI instrument on a serial port (pyserial, any of its URLs). Blocking calls run in a
    worker thread with a read timeout, so each ends within ``timeout`` seconds."""

    def __init__(
        self,
        port: str,
        *,
        baud: int = 9600,
        parity: str = "N",
        timeout: float = SCPI_TIMEOUT_S,
        terminator: bytes = b"\n",
    ) -> None:
        self.description = f"scpi+serial://{port}?baud={baud}"
        self._port, self._baud, self._parity = port, baud, parity
        self._timeout, self._term = timeout, terminator
        self._serial: Any = None

    async def open(self) -> None:
        import serial  # pyserial: already a runtime dependency

        try:
            self._serial = await asyncio.to_thread(
                serial.serial_for_url,
                self._port,
                baudrate=self._baud,
                parity=self._parity,
                bytesize=8,
                stopbits=1,
                timeout=self._timeout,
            )
        except (OSError, ValueError, serial.SerialException) as exc:
            raise InstrumentDisconnected(
                f"cannot open {self.description} ({exc}); check the cable, the port name "
                "(prefer /dev/serial/by-id/...) and that you may open it (dialout group)"
            ) from exc
        set_nodelay_on_port(self._serial)  # a socket:// URL is TCP

    async def query(self, command: str) -> str:
        if self._serial is None:
            raise InstrumentDisconnected(f"{self.description} is closed")
        try:
            line: bytes = await asyncio.to_thread(self._query_blocking, command)
        except OSError as exc:
            raise InstrumentDisconnected(
                f"{self.description} failed during {command!r} ({exc}); check the cable"
            ) from exc
        if not line.endswith(self._term[-1:]):
            raise InstrumentDisconnected(
                f"{self.description} did not answer {command!r} within {self._timeout} s; "
                "check it is on, and the baud rate, parity and terminator"
            )
        return line.decode("ascii", "replace").strip()

    def _query_blocking(self, command: str) -> bytes:
        import serial

        try:
            self._serial.write(command.encode("ascii") + self._term)
            self._serial.flush()
            answer: bytes = self._serial.read_until(self._term[-1:])
            return answer
        except serial.SerialException as exc:
            raise OSError(str(exc)) from exc

    async def aclose(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            await asyncio.to_thread(port.close)


class ScpiInstrument:
    """One quantity of a SCPI bench, identified with ``*IDN?`` and ``SYST:CAL:DUE?``."""

    _MEASURE: ClassVar[dict[Quantity, str]] = {
        Quantity.DEPTH: "MEAS:DEPTH?",
        Quantity.RATE: "MEAS:RATE?",
    }

    def __init__(self, channel: LineChannel, info: InstrumentInfo, quantity: Quantity) -> None:
        self._channel = channel
        self.info = info
        self.quantity = quantity

    @classmethod
    async def connect(
        cls, channel: LineChannel, quantity: Quantity, *, due: dt.date | None = None
    ) -> ScpiInstrument:
        # one line, answers joined by ';': an instrument without INST:SEL either says nothing
        # for it or answers an error first, so the identity is always the last two fields
        answer = await channel.query(f"INST:SEL {quantity.name};*IDN?;SYST:CAL:DUE?")
        fields = answer.split(";")
        idn = fields[-2].split(",") if len(fields) >= 2 else []
        if len(idn) < 3:
            raise InstrumentError(
                f"{channel.description} answered {answer!r} to *IDN?;SYST:CAL:DUE?, not "
                "'MANUFACTURER,MODEL,SERIAL,FIRMWARE;YYYY-MM-DD'; is it a SCPI instrument?"
            )
        if due is None:
            try:
                due = dt.date.fromisoformat(fields[-1].strip())
            except ValueError:
                raise InstrumentError(
                    f"{channel.description} answered SYST:CAL:DUE? with {fields[-1]!r}, not a "
                    "date; give its due date on the URL (?due=YYYY-MM-DD)"
                ) from None
        manufacturer, model, serial = (f.strip() for f in idn[:3])
        simulated = is_simulated_instrument(manufacturer)
        calibration = simulated_calibration(model, serial, due) if simulated else None
        info = InstrumentInfo(
            "scpi", manufacturer, model, serial, due, channel.description, calibration, simulated
        )
        return cls(channel, info, quantity)

    async def read(self, set_value: float) -> float:
        command = self._MEASURE[self.quantity]
        text = await self._channel.query(command)
        try:
            value = float(text)
        except ValueError:
            raise ReadingOutOfRange(
                f"{self.info.model} answered {command} with {text!r}, not a number; check it "
                "is in measuring mode"
            ) from None
        return check_range(self.quantity, value)

    async def aclose(self) -> None:
        await self._channel.aclose()


# --- from a --gauge spec --------------------------------------------------------------------------
async def open_instruments(
    spec: str,
    quantities: Iterable[Quantity],
    *,
    bench: Any = None,
    prompt: Prompt | None = None,
    today: dt.date,
    register: Register | None = None,
) -> dict[Quantity, Instrument]:
    """Open the instruments a ``--gauge`` value names, each with its own calibration from
    the equipment ``register`` where it holds the serial. InvalidInput for a bad spec."""
    spec, wanted, register = spec.strip(), list(quantities), register or {}
    if spec == "sim":
        if bench is None:
            raise InvalidInput(
                "--gauge sim needs the in-process simulator (--pen sim://...); for another pen "
                "give the bench URL (scpi+tcp://HOST:PORT) or use --gauge manual"
            )
        return {q: _registered(SimBenchInstrument(bench, q), register) for q in wanted}
    if spec == "manual":
        if prompt is None:
            raise InvalidInput("--gauge manual needs a terminal to prompt on; run it interactively")
        return {q: await ManualInstrument.from_prompts(q, prompt, today, register) for q in wanted}
    parts = urlsplit(spec)
    options = dict(parse_qsl(parts.query))
    if parts.scheme == "scpi+tcp":
        _only(spec, options, {"due", "measure", "timeout"})
        if not parts.hostname or parts.port is None:
            raise InvalidInput(f"instrument URL {spec!r} needs a host and a port: scpi+tcp://H:P")
        factory: Callable[[], Any] = functools.partial(
            TcpChannel, parts.hostname, parts.port, _number(spec, options, "timeout")
        )
    elif parts.scheme == "scpi+serial":
        _only(spec, options, {"due", "measure", "timeout", "baud", "parity", "term"})
        path = parts.path or parts.netloc
        if not path:
            raise InvalidInput(f"instrument URL {spec!r} needs a port: scpi+serial:///dev/ttyUSB0")
        term = b"\r\n" if _choice(spec, options, "term", ("lf", "crlf")) == "crlf" else b"\n"
        factory = functools.partial(
            SerialChannel,
            path,
            baud=int(_number(spec, options, "baud", 9600)),
            parity=_choice(spec, options, "parity", ("N", "E", "O")),
            timeout=_number(spec, options, "timeout"),
            terminator=term,
        )
    else:
        raise InvalidInput(
            f"unknown instrument {spec!r}; valid: {', '.join(INSTRUMENT_SPECS)} "
            "(see docs/calibration.md)"
        )
    opened = await _open_scpi(spec, options, wanted, factory)
    return {q: _registered(i, register) for q, i in opened.items()}


def _registered(instrument: Any, register: Register) -> Any:
    """The instrument, its info completed from the register (Sim/Scpi instruments keep
    their info in a plain attribute)."""
    instrument.info = instrument.info.registered(register)
    return instrument


def check_spec(spec: str) -> None:
    """Refuse a malformed ``--gauge`` value before anything is opened (InvalidInput)."""
    spec = spec.strip()
    if spec in ("sim", "manual"):
        return
    parts = urlsplit(spec)
    options = dict(parse_qsl(parts.query))
    if parts.scheme == "scpi+tcp":
        _only(spec, options, {"due", "measure", "timeout"})
        if not parts.hostname or parts.port is None:
            raise InvalidInput(f"instrument URL {spec!r} needs a host and a port: scpi+tcp://H:P")
    elif parts.scheme == "scpi+serial":
        _only(spec, options, {"due", "measure", "timeout", "baud", "parity", "term"})
        if not (parts.path or parts.netloc):
            raise InvalidInput(f"instrument URL {spec!r} needs a port: scpi+serial:///dev/ttyUSB0")
        _number(spec, options, "baud", 9600)
        _choice(spec, options, "parity", ("N", "E", "O"))
        _choice(spec, options, "term", ("lf", "crlf"))
    else:
        raise InvalidInput(
            f"unknown instrument {spec!r}; valid: {', '.join(INSTRUMENT_SPECS)} "
            "(see docs/calibration.md)"
        )
    _number(spec, options, "timeout")
    _measure_and_due(spec, options)


async def _open_scpi(
    spec: str, options: dict[str, str], wanted: list[Quantity], factory: Callable[[], Any]
) -> dict[Quantity, Instrument]:
    provided, due = _measure_and_due(spec, options)
    missing = [q.value for q in wanted if q not in provided]
    if missing:
        raise InvalidInput(
            f"instrument {spec!r} does not measure {', '.join(missing)} (measure="
            f"{options.get('measure')}); add it to measure= or use another instrument"
        )
    opened: dict[Quantity, Instrument] = {}
    try:
        for quantity in wanted:  # one connection per quantity: each has its own identity
            channel = factory()
            await channel.open()
            try:
                opened[quantity] = await ScpiInstrument.connect(channel, quantity, due=due)
            except BaseException:
                await channel.aclose()
                raise
    except BaseException:
        await close_instruments(opened.values())
        raise
    return opened


def _measure_and_due(spec: str, options: dict[str, str]) -> tuple[set[Quantity], dt.date | None]:
    try:
        provided = {Quantity(q.strip()) for q in options.get("measure", "depth,rate").split(",")}
        due = dt.date.fromisoformat(options["due"]) if "due" in options else None
    except ValueError as exc:
        raise InvalidInput(
            f"instrument URL {spec!r}: {exc}; use measure=depth,rate and due=YYYY-MM-DD"
        ) from None
    return provided, due


def _only(spec: str, options: dict[str, str], allowed: set[str]) -> None:
    unknown = set(options) - allowed
    if unknown:
        raise InvalidInput(
            f"instrument URL {spec!r} has unknown option(s) {', '.join(sorted(unknown))}; "
            f"valid: {', '.join(sorted(allowed))}"
        )


def _number(
    spec: str, options: dict[str, str], name: str, default: float = SCPI_TIMEOUT_S
) -> float:
    try:
        value = float(options.get(name, default))
    except ValueError:
        raise InvalidInput(
            f"instrument URL {spec!r}: {name}={options[name]!r} is not a number"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidInput(f"instrument URL {spec!r}: {name}={value} must be a number > 0")
    return value


def _choice(spec: str, options: dict[str, str], name: str, valid: tuple[str, ...]) -> str:
    value = options.get(name, valid[0])
    if value not in valid:
        raise InvalidInput(f"instrument URL {spec!r}: {name}={value!r}; valid: {', '.join(valid)}")
    return value
