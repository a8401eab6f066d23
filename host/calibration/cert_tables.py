"""The certificate's tables: instruments, results, the uncertainty budget, readings, correction.

Each table states its units in its header or its cells, so no number on the certificate
stands without one (depth in mm, budget terms for depth in µm, stroke rate in strokes/s and
its errors in % of the set rate, calibration values in ppm and µm, CRCs in hexadecimal).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, Paragraph, Table, TableStyle

from .cert_layout import BOLD, CONTENT_WIDTH, FONT, ITALIC, Palette, esc
from .measurements import Limit, Quantity, Stage, Verdict
from .record import BankSnapshot, CalibrationRecord, PointResult
from .uncertainty import PointUncertainty, report_decimals

__all__ = [
    "Styles",
    "budget_points_table",
    "budget_sources_table",
    "correction_table",
    "instruments_table",
    "kv_table",
    "points_table",
    "readings_table",
]

Styles = dict[str, ParagraphStyle]
VERDICT_COLOURS = {
    Verdict.PASS: Palette.PASS,
    Verdict.CONDITIONAL_PASS: Palette.CONDITIONAL,
    Verdict.CONDITIONAL_FAIL: Palette.CONDITIONAL,
    Verdict.FAIL: Palette.FAIL,
}
_BUDGET_KEYS = ("repeatability", "reference", "resolution", "temperature")
_BUDGET_NAMES = {
    "repeatability": "u(rep)",
    "reference": "u(ref)",
    "resolution": "u(res)",
    "temperature": "u(temp)",
}


def kv_table(rows: Sequence[tuple[str, str]], st: Styles, label_width: float = 38 * mm) -> Table:
    """Label: value rows, the values as wrapping paragraphs."""
    data = [
        [Paragraph(f"<b>{esc(k)}</b>", st["cell"]), Paragraph(esc(v), st["cell"])] for k, v in rows
    ]
    table = Table(data, colWidths=[label_width, CONTENT_WIDTH - label_width])
    table.setStyle(
        TableStyle(
            [
                ("LINEBELOW", (0, 0), (-1, -1), 0.25, Palette.GRID),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
                ("TOPPADDING", (0, 0), (-1, -1), 1.5),
            ]
        )
    )
    return table


def grid(rows: list[list[Any]], widths: Sequence[float], extra: Sequence[Any] = ()) -> Table:
    table = Table(rows, colWidths=list(widths), repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), FONT, 7.2),
                ("FONT", (0, 0), (-1, 0), BOLD, 7.2),
                ("BACKGROUND", (0, 0), (-1, 0), Palette.HEAD),
                ("GRID", (0, 0), (-1, -1), 0.25, Palette.GRID),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ("ALIGN", (0, 1), (-1, -1), "RIGHT"),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
                ("TOPPADDING", (0, 0), (-1, -1), 1.5),
                ("LEFTPADDING", (0, 0), (-1, -1), 3),
                ("RIGHTPADDING", (0, 0), (-1, -1), 3),
                *extra,
            ]
        )
    )
    return table


def _head(texts: Sequence[str], st: Styles) -> list[Paragraph]:
    return [Paragraph(f"<b>{esc(t)}</b>", st["cell"]) for t in texts]


# --- reference instruments ------------------------------------------------------------------------
def instruments_table(record: CalibrationRecord, st: Styles) -> Flowable:
    if not record.instruments:
        return Paragraph("None recorded (the procedure stopped before choosing them).", st["body"])
    rows: list[list[Any]] = [
        _head(
            ["Quantity", "Instrument", "Serial", "Own calibration: certificate, by",
             "Calibrated", "Due", "U (k)", "Resolution"],
            st,
        )
    ]  # fmt: skip
    for inst in record.instruments:
        quantity = Quantity(inst.role)
        units = quantity.set_units
        cal = inst.calibration
        due = inst.cal_due.isoformat() + (
            f" OVERDUE, used under override: {inst.override_reason}" if inst.overdue else ""
        )
        rows.append(
            [
                Paragraph(quantity.label.lower(), st["cell"]),
                Paragraph(esc(f"{inst.manufacturer} {inst.model}"), st["cell"]),
                Paragraph(esc(inst.serial), st["cell"]),
                Paragraph(
                    esc(f"{cal.certificate}, {cal.calibrated_by}" if cal else "not recorded"),
                    st["cell"],
                ),
                Paragraph(cal.calibrated_on.isoformat() if cal else "-", st["cell"]),
                Paragraph(esc(due), st["cell"]),
                Paragraph(esc(cal.describe(units, label=False) if cal else "-"), st["cell"]),
                Paragraph(f"{cal.resolution:g} {units}" if cal else "-", st["cell"]),
            ]
        )
    widths = [16, 24, 20, 35, 18, 20, 27, 18]
    return grid(rows, [w * mm for w in widths], [("ALIGN", (0, 0), (-1, -1), "LEFT")])


# --- results ------------------------------------------------------------------------------------
def points_table(record: CalibrationRecord, quantity: Quantity, limits: tuple[Limit, Limit],
                 st: Styles) -> Table:  # fmt: skip
    """Set point; per stage: mean, error ± U, statement; the tolerance limits last."""
    found = {p.set_value: p for p in record.stage_points(Stage.AS_FOUND, quantity)}
    left = {p.set_value: p for p in record.stage_points(Stage.AS_LEFT, quantity)}
    su, eu = quantity.set_units, ("mm" if quantity is Quantity.DEPTH else "% of set")
    rows: list[list[Any]] = [
        _head(
            [f"Set ({su})", f"As-found mean ({su})", f"Error ± U ({eu})", "Statement",
             f"As-left mean ({su})", f"Error ± U ({eu})", "Statement"],
            st,
        )
    ]  # fmt: skip
    extra: list[Any] = []
    for row, value in enumerate(sorted(set(found) | set(left)), start=1):
        cells = [f"{value:g}"]
        for column, point in ((3, found.get(value)), (6, left.get(value))):
            cells += _point_cells(point)
            if point is not None:
                colour = VERDICT_COLOURS[point.verdict]
                extra.append(("TEXTCOLOR", (column, row), (column, row), colour))
        rows.append(cells)
    acceptance, as_left = limits
    rows.append(["Tolerance limit", "", f"±{acceptance.tolerance:g} {acceptance.units}", "",
                 "", f"±{as_left.tolerance:g} {as_left.units}", ""])  # fmt: skip
    last = len(rows) - 1
    extra += [("FONT", (0, last), (-1, last), ITALIC, 7), ("ALIGN", (3, 1), (3, -1), "CENTER"),
              ("ALIGN", (6, 1), (6, -1), "CENTER")]  # fmt: skip
    return grid(rows, [w * mm for w in (22, 25, 30, 25, 25, 30, 21)], extra)


def _point_cells(point: PointResult | None) -> list[str]:
    if point is None:
        return ["-", "-", "-"]
    budget = point.uncertainty
    decimals = budget.decimals if budget else 3
    mean_decimals = _mean_decimals(point)
    spread = f" ± {budget.expanded:.{decimals}f}" if budget else " (U not evaluated)"
    return [f"{point.mean:.{mean_decimals}f}", f"{point.error:+.{decimals}f}{spread}",
            point.verdict.label]  # fmt: skip


def _mean_decimals(point: PointResult) -> int:
    """The mean to the decimal place of U in the set's units."""
    if point.expanded is None:
        return 3 if point.quantity is Quantity.DEPTH else 2
    expanded = point.expanded
    if point.quantity is Quantity.RATE:
        expanded = expanded / 100 * point.set_value
    return report_decimals(expanded)


# --- uncertainty budget ---------------------------------------------------------------------------
def budget_sources_table(record: CalibrationRecord, quantity: Quantity, st: Styles) -> Flowable:
    """The inputs of the model: type, distribution, divisor, sensitivity and what each is."""
    sample = next((p.uncertainty for p in record.points if p.quantity is quantity and
                   p.uncertainty), None)  # fmt: skip
    if sample is None:
        return Paragraph("Not evaluated (record format 1).", st["body"])
    units = "1" if quantity is Quantity.DEPTH else "100/set, % per (stroke/s)"
    rows: list[list[Any]] = [
        _head(["Input", "Type", "Distribution", "Divisor", "Sensitivity", "What it is"], st)
    ]
    for c in sample.contributions:
        divisor = {"A": "√n", "B": "k" if c.distribution == "normal" else "√3"}[c.kind]
        rows.append(
            [
                _BUDGET_NAMES.get(c.key, c.key),
                c.kind,
                c.distribution,
                f"{divisor} = {c.divisor:.3g}" if divisor != "k" else "k of its certificate",
                Paragraph(esc(units), st["cell"]),
                Paragraph(esc(_source_text(c.key, c.source)), st["cell"]),
            ]
        )
    widths = [15, 10, 22, 27, 30, 74]
    return grid(rows, [w * mm for w in widths], [("ALIGN", (0, 0), (-1, -1), "LEFT")])


def _source_text(key: str, source: str) -> str:
    if key == "reference":
        return "reference instrument calibration: U/k from its certificate (listed above)"
    return source


def budget_points_table(record: CalibrationRecord, quantity: Quantity, st: Styles) -> Flowable:
    """Every point's standard uncertainties, u_c, degrees of freedom, k and U."""
    points = [p for p in record.points if p.quantity is quantity and p.uncertainty]
    if not points:
        return Paragraph("Not evaluated.", st["body"])
    depth = quantity is Quantity.DEPTH
    unit, scale = ("µm", 1000.0) if depth else ("% of set", 1.0)
    keys = [k for k in _BUDGET_KEYS if any(_term(p.uncertainty, k) is not None for p in points)]
    rows: list[list[Any]] = [
        _head(
            ["Stage", f"Set ({quantity.set_units})",
             *(f"{_BUDGET_NAMES[k]} ({unit})" for k in keys),
             f"u_c ({unit})", "dof", "k", f"U ({unit})"],
            st,
        )
    ]  # fmt: skip
    for p in points:
        budget = p.uncertainty
        assert budget is not None
        rows.append(
            [
                p.stage.label,
                f"{p.set_value:g}",
                *(_fixed(_term(budget, k), scale) for k in keys),
                _fixed(budget.combined, scale),
                "∞" if budget.dof_effective is None else f"{math.floor(budget.dof_effective)}",
                f"{budget.coverage_factor:.2f}",
                f"{budget.expanded * scale:.{_decimals(budget, scale)}f}",
            ]
        )
    width = CONTENT_WIDTH / len(rows[0])
    return grid(rows, [width] * len(rows[0]), [("ALIGN", (0, 1), (0, -1), "LEFT")])


def _term(budget: PointUncertainty | None, key: str) -> float | None:
    term = budget.contribution(key) if budget else None
    return term.contribution if term else None


def _fixed(value: float | None, scale: float) -> str:
    """Two significant digits, never in exponent notation."""
    if value is None:
        return "-"
    value *= scale
    if value == 0:
        return "0"
    return f"{value:.{max(0, 1 - math.floor(math.log10(abs(value))))}f}"


def _decimals(budget: PointUncertainty, scale: float) -> int:
    return max(0, budget.decimals - round(math.log10(scale)))


# --- readings -----------------------------------------------------------------------------------
def readings_table(record: CalibrationRecord, st: Styles) -> Flowable:
    """Every individual reading, as the instrument gave it."""
    if not record.points:
        return Paragraph("No readings were taken.", st["body"])
    rows: list[list[Any]] = [_head(["Quantity", "Stage", "Set", "n", "Readings"], st)]
    for p in record.points:
        text = "  ".join(f"{r:g}" for r in p.readings)
        rows.append(
            [
                p.quantity.value,
                p.stage.label,
                f"{p.set_value:g} {p.units}",
                str(len(p.readings)),
                Paragraph(f"{esc(text)} <i>({p.units})</i>", st["cell"]),
            ]
        )
    widths = [17, 16, 22, 7, CONTENT_WIDTH / mm - 62]
    return grid(rows, [w * mm for w in widths], [("ALIGN", (0, 0), (-1, -1), "LEFT")])


# --- correction ---------------------------------------------------------------------------------
def correction_table(record: CalibrationRecord, st: Styles) -> Table:
    rows: list[list[Any]] = [
        _head(["Calibration bank", "Depth gain (ppm)", "Depth offset (µm)", "Rate gain (ppm)",
               "Counter", "Valid", "CRC-32"], st)
    ]  # fmt: skip
    for label, bank in (("Before", record.cal_before), ("After", record.cal_after)):
        rows.append([label, *_bank_cells(bank)])
    return grid(rows, [w * mm for w in (26, 26, 26, 26, 22, 16, 36)])


def _bank_cells(bank: BankSnapshot | None) -> list[str]:
    if bank is None:
        return ["-"] * 6
    v = bank.values
    return [
        f"{v.depth_gain_ppm:+d}",
        f"{v.depth_offset_um:+d}",
        f"{v.rate_gain_ppm:+d}",
        str(bank.counter),
        "yes" if bank.valid else "no",
        f"0x{bank.crc:08X}",
    ]
