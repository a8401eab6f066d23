"""Instruments behind one interface: identity, due dates, typed readings and their checks."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from _cal_helpers import GAUGE_CAL, TACHO_CAL

from micropen.host.calibration import (
    InstrumentError,
    InstrumentRefused,
    ManualInstrument,
    Quantity,
    ReadingOutOfRange,
    ReferenceCalibration,
    check_instruments,
    check_spec,
    open_instruments,
)
from micropen.host.calibration.instruments import InstrumentInfo, plausible
from micropen.host.calibration.station import RegisteredInstrument
from micropen.host.connection import AsyncPen
from micropen.host.errors import InvalidInput

TODAY = date(2025, 11, 26)


def scripted(*answers: str) -> tuple[list[str], object]:
    asked: list[str] = []
    queue = iter(answers)

    def prompt(question: str) -> str:
        asked.append(question)
        return next(queue)

    return asked, prompt


async def test_manual_readings_are_checked_and_reasked() -> None:
    asked, prompt = scripted("abc", "0.9", "12", "0.52")
    gauge = ManualInstrument(
        InstrumentInfo("manual", "Mitutoyo", "543", "S1", TODAY), Quantity.DEPTH, prompt
    )
    assert await gauge.read(0.25) == 0.52
    assert "set point 0.25 mm" in asked[0]
    assert asked[1].startswith("'abc' is not a number")
    assert "outside the plausible" in asked[2]  # 0.9 mm at 0.25 mm: not a correctable pen
    assert "outside the instrument range" in asked[3]


async def test_manual_gives_up_after_five_bad_answers_and_q_aborts() -> None:
    _, prompt = scripted(*["x"] * 5)
    tacho = ManualInstrument(
        InstrumentInfo("manual", "Extech", "461920", "T9", TODAY), Quantity.RATE, prompt
    )
    with pytest.raises(ReadingOutOfRange, match="after 5 tries"):
        await tacho.read(110)
    _, prompt = scripted("q")
    tacho = ManualInstrument(tacho.info, Quantity.RATE, prompt)
    with pytest.raises(InstrumentError, match="aborted"):
        await tacho.read(110)


IDENTITY = ("Mitutoyo", "543-790", "A123", "26/11/2026", "2026-11-26")
CERTIFICATE = ("DKD-K-1-2025-0042", "Example Metrology", "2025-03-01", "0.002", "", "0.001")


async def test_manual_identity_and_its_calibration_are_prompted() -> None:
    asked, prompt = scripted(*IDENTITY, *CERTIFICATE)
    gauge = await ManualInstrument.from_prompts(Quantity.DEPTH, prompt, TODAY)
    calibration = ReferenceCalibration(
        "DKD-K-1-2025-0042", date(2025, 3, 1), "Example Metrology", 0.002, 2.0, 0.001
    )  # an empty k answer is the usual k = 2
    assert gauge.info == InstrumentInfo(
        "manual", "Mitutoyo", "543-790", "A123", date(2026, 11, 26), calibration=calibration
    )
    assert len(asked) == 11  # the unparseable date was asked again
    assert "expanded uncertainty U from its certificate, mm" in asked[8]
    _, prompt = scripted("", "", "")
    with pytest.raises(InvalidInput, match="model and a serial"):
        await ManualInstrument.from_prompts(Quantity.RATE, prompt, TODAY)


async def test_a_registered_instrument_is_not_asked_for_its_calibration() -> None:
    register = {"A123": RegisteredInstrument("A123", "543-790", GAUGE_CAL)}
    asked, prompt = scripted(*IDENTITY)
    gauge = await ManualInstrument.from_prompts(Quantity.DEPTH, prompt, TODAY, register)
    assert gauge.info.calibration == GAUGE_CAL and len(asked) == 5
    _, prompt = scripted("Mitutoyo", "OTHER-1", "A123", "2026-11-26")
    with pytest.raises(InvalidInput, match="register has s/n A123 as model 543-790"):
        await ManualInstrument.from_prompts(Quantity.DEPTH, prompt, TODAY, register)


async def test_a_zero_uncertainty_from_the_technician_is_refused() -> None:
    _, prompt = scripted(*IDENTITY, "C-1", "Lab", "2025-03-01", "0", "2", "0.001")
    with pytest.raises(InvalidInput, match="expanded uncertainty is zero"):
        await ManualInstrument.from_prompts(Quantity.DEPTH, prompt, TODAY)


def test_plausible_window_follows_the_storage_limits() -> None:
    assert plausible(Quantity.DEPTH, 2.5, 3.4) == 3.4  # +20 % gain and +0.5 mm offset
    with pytest.raises(ReadingOutOfRange):
        plausible(Quantity.DEPTH, 2.5, 3.6)
    assert plausible(Quantity.RATE, 100, 119.0) == 119.0
    with pytest.raises(ReadingOutOfRange, match="strokes/s"):
        plausible(Quantity.RATE, 100, 121.0)


def test_an_instrument_without_its_calibration_is_refused() -> None:
    unknown = ManualInstrument(InstrumentInfo("manual", "M", "G", "1", TODAY), Quantity.DEPTH, str)
    with pytest.raises(InstrumentRefused, match="no calibration data") as info:
        check_instruments([unknown], TODAY)
    assert "station file's equipment register" in str(info.value)


def test_overdue_instruments_refused_unless_overridden_with_a_reason() -> None:
    ok = ManualInstrument(
        InstrumentInfo("manual", "M", "G", "1", TODAY, calibration=GAUGE_CAL), Quantity.DEPTH, str
    )
    late = ManualInstrument(
        InstrumentInfo("manual", "M", "T", "2", TODAY - timedelta(days=1), calibration=TACHO_CAL),
        Quantity.RATE,
        str,
    )
    assert [r.overdue for r in check_instruments([ok], TODAY)] == [False]
    with pytest.raises(InstrumentRefused, match="due for calibration on 2025-11-25") as info:
        check_instruments([ok, late], TODAY)
    assert isinstance(info.value, InvalidInput)  # bad input: CLI exit 2
    with pytest.raises(InstrumentRefused):
        check_instruments([late], TODAY, "   ")  # a blank reason is no reason
    refs = check_instruments([ok, late], TODAY, "lab recal booked for Monday")
    assert [(r.overdue, r.override_reason) for r in refs] == [
        (False, ""),
        (True, "lab recal booked for Monday"),
    ]


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("bogus://x", "unknown instrument"),
        ("scpi+tcp://nohost", "host and a port"),
        ("scpi+serial://", "needs a port"),
        ("scpi+serial:///dev/ttyUSB0?baud=fast", "not a number"),
        ("scpi+serial:///dev/ttyUSB0?parity=X", "parity"),
        ("scpi+tcp://h:1?measure=torque", "measure=depth,rate"),
        ("scpi+tcp://h:1?due=soon", "due=YYYY-MM-DD"),
        ("scpi+tcp://h:1?timeout=0", "> 0"),
    ],
)
def test_bad_gauge_specs_are_refused_before_anything_opens(spec: str, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        check_spec(spec)


def test_good_gauge_specs_pass() -> None:
    for spec in (
        "sim",
        "manual",
        "scpi+tcp://10.0.0.5:5025?measure=depth&due=2026-01-31",
        "scpi+serial:///dev/ttyUSB0?baud=9600&parity=N&term=crlf&timeout=1.5",
    ):
        check_spec(spec)


async def test_sim_gauge_needs_the_in_process_simulator() -> None:
    with pytest.raises(InvalidInput, match="in-process simulator"):
        await open_instruments("sim", [Quantity.DEPTH], bench=None, today=TODAY)
    with pytest.raises(InvalidInput, match="terminal"):
        await open_instruments("manual", [Quantity.DEPTH], prompt=None, today=TODAY)


async def test_the_register_is_the_authority_over_an_instruments_own_declaration(
    sim_pen: AsyncPen,
) -> None:
    register = {"DG-000003": RegisteredInstrument("DG-000003", "SIM-DG-1", GAUGE_CAL)}
    opened = await open_instruments(
        "sim", [Quantity.DEPTH, Quantity.RATE], bench=sim_pen.bench, today=TODAY,
        register=register,
    )  # fmt: skip
    assert opened[Quantity.DEPTH].info.calibration == GAUGE_CAL
    declared = opened[Quantity.RATE].info.calibration  # not registered: its own declaration
    assert declared is not None and declared.certificate == "SIM-TA-000003"
    assert all(i.info.simulated for i in opened.values())
