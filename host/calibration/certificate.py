"""The printable calibration certificate (PDF, reportlab) and the JSON export.

One A4 page per record (a second when notes run long): the unit, the procedure and who ran it,
the reference instruments with their due dates (and any override), as-found and as-left per
point with the limits and verdicts, a plot of error against set point before and after, the
correction written to the pen, the outcome and the next due date, and signature lines.
reportlab is used because it writes PDF itself (no browser, no LaTeX) and is maintained.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from reportlab.graphics.charts.legends import LineLegend
from reportlab.graphics.charts.lineplots import LinePlot
from reportlab.graphics.shapes import Drawing, Line, String
from reportlab.graphics.widgets.markers import makeMarker
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import (
    Flowable,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from .measurements import (
    DEPTH_ACCEPTANCE,
    DEPTH_AS_LEFT,
    RATE_ACCEPTANCE,
    RATE_AS_LEFT,
    Limit,
    Quantity,
    Stage,
    Verdict,
)
from .record import CalibrationRecord, Outcome, PointResult

__all__ = ["certificate_name", "write_certificate", "write_json"]

_OUTCOME_COLOURS = {
    Outcome.PASS: colors.HexColor("#1b7f3b"),
    Outcome.FAIL: colors.HexColor("#b00020"),
    Outcome.INCOMPLETE: colors.HexColor("#b26a00"),
}
_VERDICT_COLOURS = {
    Verdict.PASS: colors.HexColor("#1b7f3b"),
    Verdict.MARGINAL: colors.HexColor("#b26a00"),
    Verdict.FAIL: colors.HexColor("#b00020"),
}
_FOUND_COLOUR = colors.HexColor("#c0392b")
_LEFT_COLOUR = colors.HexColor("#1f5fa8")
_GRID = colors.HexColor("#d0d0d0")
_HEAD = colors.HexColor("#eef1f5")


def certificate_name(record: CalibrationRecord, suffix: str) -> str:
    """``cal-<serial>-<UTC date-time>-<id>.<suffix>``: sorts by pen, then time."""
    stamp = record.started_at.strftime("%Y%m%dT%H%M%SZ")
    return f"cal-{record.pen.serial}-{stamp}-{record.record_id[:8]}.{suffix}"


def write_json(record: CalibrationRecord, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / certificate_name(record, "json")
    path.write_text(json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def write_certificate(record: CalibrationRecord, out_dir: Path) -> Path:
    """Write the PDF certificate; returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / certificate_name(record, "pdf")
    doc = SimpleDocTemplate(
        str(path),
        pagesize=A4,
        leftMargin=16 * mm,
        rightMargin=16 * mm,
        topMargin=14 * mm,
        bottomMargin=14 * mm,
        title=f"Calibration certificate {record.pen.serial}",
        author=record.technician or "micropen",
        subject=f"micropen calibration {record.record_id}",
    )
    doc.build(_story(record), onFirstPage=_footer(record), onLaterPages=_footer(record))
    return path


# --- layout ---------------------------------------------------------------------------------------
def _styles() -> dict[str, ParagraphStyle]:
    base = getSampleStyleSheet()
    return {
        "title": ParagraphStyle("t", parent=base["Title"], fontSize=17, spaceAfter=2),
        "h": ParagraphStyle("h", parent=base["Heading3"], spaceBefore=6, spaceAfter=3),
        "body": ParagraphStyle("b", parent=base["BodyText"], fontSize=8.5, leading=10.5),
        "small": ParagraphStyle("s", parent=base["BodyText"], fontSize=7.5, leading=9),
    }


def _story(record: CalibrationRecord) -> list[Flowable]:
    st = _styles()
    colour = _OUTCOME_COLOURS[record.outcome].hexval()[2:]
    story: list[Flowable] = [
        Paragraph("Calibration certificate", st["title"]),
        Paragraph(
            f"micropen 12-needle pen &nbsp;·&nbsp; record {record.record_id} &nbsp;·&nbsp; "
            f"outcome <font color='#{colour}'><b>{record.outcome.value.upper()}</b></font>"
            + ("" if record.outcome is not Outcome.INCOMPLETE else f": {_esc(record.reason)}"),
            st["body"],
        ),
        Spacer(1, 4 * mm),
        _kv_table(_identity_rows(record)),
        Paragraph("Reference instruments", st["h"]),
        _instrument_table(record, st),
    ]
    for quantity in record.quantities():
        points = [p for p in record.points if p.quantity is quantity]
        if not points:
            continue
        title = "Needle depth" if quantity is Quantity.DEPTH else "Stroke rate"
        story.append(
            KeepTogether(
                [
                    Paragraph(f"{title}: error against set point", st["h"]),
                    _points_table(record, quantity),
                    Spacer(1, 2 * mm),
                    _plot(record, quantity),
                ]
            )
        )
    story += [Paragraph("Correction", st["h"]), _correction_table(record, st)]
    if record.notes:
        story.append(Paragraph("Notes", st["h"]))
        story += [Paragraph("· " + _esc(n), st["small"]) for n in record.notes]
    story += [Spacer(1, 6 * mm), _signatures()]
    return story


def _identity_rows(record: CalibrationRecord) -> list[tuple[str, str, str, str]]:
    ambient = (
        f"{record.ambient_c:.1f} °C ({record.ambient_source})"
        if record.ambient_c is not None
        else "not recorded"
    )
    finished = record.finished_at.strftime("%Y-%m-%d %H:%M UTC") if record.finished_at else "-"
    due = (
        (record.finished_at + timedelta(days=record.interval_days)).date().isoformat()
        if record.finished_at and record.outcome is Outcome.PASS
        else "not renewed"
    )
    return [
        ("Pen serial", record.pen.serial, "Procedure", record.procedure),
        ("Model", record.pen.model, "Started", record.started_at.strftime("%Y-%m-%d %H:%M UTC")),
        ("Firmware", record.pen.firmware, "Finished", finished),
        ("Protocol", f"v{record.pen.protocol_version}", "Technician", record.technician or "-"),
        ("Pen URL", record.pen.url, "Station", record.station or "-"),
        ("Software", f"micropen {record.software_version}", "Ambient", ambient),
        ("Interval", f"{record.interval_days} days", "Next due", due),
    ]


def _kv_table(rows: list[tuple[str, str, str, str]]) -> Table:
    table = Table(rows, colWidths=[24 * mm, 64 * mm, 24 * mm, 66 * mm])
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), "Helvetica", 8.5),
                ("FONT", (0, 0), (0, -1), "Helvetica-Bold", 8.5),
                ("FONT", (2, 0), (2, -1), "Helvetica-Bold", 8.5),
                ("LINEBELOW", (0, 0), (-1, -1), 0.25, _GRID),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
                ("TOPPADDING", (0, 0), (-1, -1), 2),
            ]
        )
    )
    return table


def _grid_table(rows: list[list[Any]], widths: list[float], extra: list[Any]) -> Table:
    table = Table(rows, colWidths=widths, repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), "Helvetica", 8),
                ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8),
                ("BACKGROUND", (0, 0), (-1, 0), _HEAD),
                ("GRID", (0, 0), (-1, -1), 0.25, _GRID),
                ("ALIGN", (1, 1), (-1, -1), "RIGHT"),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
                ("TOPPADDING", (0, 0), (-1, -1), 2),
                *extra,
            ]
        )
    )
    return table


def _instrument_table(record: CalibrationRecord, st: dict[str, ParagraphStyle]) -> Flowable:
    if not record.instruments:
        return Paragraph("none recorded (the procedure stopped before choosing them)", st["body"])
    rows: list[list[Any]] = [["Measures", "Manufacturer", "Model", "Serial", "Cal. due", "Note"]]
    for inst in record.instruments:
        note = f"OVERDUE, override: {inst.override_reason}" if inst.overdue else inst.kind
        rows.append(
            [
                inst.role,
                inst.manufacturer,
                inst.model,
                inst.serial,
                inst.cal_due.isoformat(),
                Paragraph(_esc(note), st["small"]),
            ]
        )
    widths = [18 * mm, 30 * mm, 32 * mm, 30 * mm, 20 * mm, 48 * mm]
    extra = [("ALIGN", (0, 0), (-1, -1), "LEFT")]
    return _grid_table(rows, widths, extra)


def _limits(quantity: Quantity) -> tuple[Limit, Limit]:
    if quantity is Quantity.DEPTH:
        return DEPTH_ACCEPTANCE, DEPTH_AS_LEFT
    return RATE_ACCEPTANCE, RATE_AS_LEFT


def _points_table(record: CalibrationRecord, quantity: Quantity) -> Table:
    found = {p.set_value: p for p in record.stage_points(Stage.AS_FOUND, quantity)}
    left = {p.set_value: p for p in record.stage_points(Stage.AS_LEFT, quantity)}
    unit = "mm" if quantity is Quantity.DEPTH else "/s"
    eunit = quantity.error_units
    digits = 3 if quantity is Quantity.DEPTH else 2
    acceptance, as_left = _limits(quantity)
    rows: list[list[Any]] = [
        [
            f"Set ({unit})",
            "As-found mean",
            f"Error ({eunit})",
            "Verdict",
            "As-left mean",
            f"Error ({eunit})",
            "Verdict",
        ]
    ]
    extra: list[Any] = []

    def cells(point: PointResult | None, column: int, row: int) -> list[str]:
        if point is None:
            return ["-", "-", "-"]
        extra.append(("TEXTCOLOR", (column, row), (column, row), _VERDICT_COLOURS[point.verdict]))
        return [f"{point.mean:.{digits}f}", f"{point.error:+.{digits}f}", point.verdict.value]

    for row, set_value in enumerate(sorted(set(found) | set(left)), start=1):
        rows.append(
            [
                f"{set_value:g}",
                *cells(found.get(set_value), 3, row),
                *cells(left.get(set_value), 6, row),
            ]
        )
    rows.append(
        ["Limit", "", acceptance.describe(), "", "", as_left.describe(), ""],
    )
    extra.append(("FONT", (0, len(rows) - 1), (-1, len(rows) - 1), "Helvetica-Oblique", 7.5))
    widths = [20 * mm, 26 * mm, 28 * mm, 20 * mm, 26 * mm, 38 * mm, 20 * mm]
    return _grid_table(rows, widths, extra)


def _plot(record: CalibrationRecord, quantity: Quantity) -> Drawing:
    """Error against set point: as-found and as-left, with both limit bands."""
    width, height = 178 * mm, 62 * mm
    drawing = Drawing(width, height)
    series = []
    series_colours = []
    names = []
    for stage, colour, name in (
        (Stage.AS_FOUND, _FOUND_COLOUR, "as-found"),
        (Stage.AS_LEFT, _LEFT_COLOUR, "as-left"),
    ):
        points = sorted((p.set_value, p.error) for p in record.stage_points(stage, quantity))
        if points:
            series.append(points)
            series_colours.append(colour)
            names.append(name)
    acceptance, as_left = _limits(quantity)
    xs = [x for s in series for x, _ in s] or [0.0, 1.0]
    ys = [abs(y) for s in series for _, y in s]
    span = max([acceptance.tolerance * 1.25, *(y * 1.15 for y in ys)])
    x_lo, x_hi = min(xs), max(xs)
    pad = (x_hi - x_lo) * 0.05 or 1.0
    plot = LinePlot()
    plot.x, plot.y, plot.width, plot.height = 16 * mm, 10 * mm, 128 * mm, height - 16 * mm
    plot.data = series or [[(x_lo, 0.0)]]
    plot.xValueAxis.valueMin, plot.xValueAxis.valueMax = x_lo - pad, x_hi + pad
    plot.yValueAxis.valueMin, plot.yValueAxis.valueMax = -span, span
    plot.xValueAxis.labels.fontSize = plot.yValueAxis.labels.fontSize = 7
    plot.yValueAxis.labelTextFormat = "%+.2f" if quantity is Quantity.DEPTH else "%+.1f"
    plot.xValueAxis.labelTextFormat = "%g"
    plot.xValueAxis.valueSteps = sorted(set(xs))
    plot.yValueAxis.visibleGrid = True
    plot.yValueAxis.gridStrokeColor = _GRID
    for i, colour in enumerate(series_colours):
        plot.lines[i].strokeColor = colour
        plot.lines[i].strokeWidth = 1.2
        plot.lines[i].symbol = makeMarker("FilledCircle", size=4, fillColor=colour)
    drawing.add(plot)
    for tol, dash, label in (
        (acceptance.tolerance, (4, 2), "acceptance"),
        (as_left.tolerance, (1, 2), "as-left"),
    ):
        for sign in (1, -1):
            y = plot.y + plot.height * (sign * tol + span) / (2 * span)
            drawing.add(
                Line(
                    plot.x,
                    y,
                    plot.x + plot.width,
                    y,
                    strokeColor=colors.grey,
                    strokeDashArray=dash,
                    strokeWidth=0.7,
                )
            )
        y_top = plot.y + plot.height * (tol + span) / (2 * span)
        drawing.add(
            String(
                plot.x + plot.width + 2,
                y_top - 2,
                f"±{tol:g} {label}",
                fontSize=6.5,
                fillColor=colors.grey,
            )
        )
    unit = quantity.set_units
    drawing.add(
        String(
            plot.x + plot.width / 2,
            1 * mm,
            f"set point ({unit})",
            fontSize=7.5,
            textAnchor="middle",
        )
    )
    drawing.add(
        String(
            2 * mm, plot.y + plot.height + 2 * mm, f"error ({quantity.error_units})", fontSize=7.5
        )
    )
    legend = LineLegend()
    legend.x, legend.y = plot.x + plot.width + 4 * mm, plot.y + 14 * mm
    legend.fontSize = 7.5
    legend.colorNamePairs = list(zip(series_colours, names, strict=True))
    drawing.add(legend)
    return drawing


def _correction_table(record: CalibrationRecord, st: dict[str, ParagraphStyle]) -> Flowable:
    rows: list[list[Any]] = [
        ["", "Depth gain (ppm)", "Depth offset (µm)", "Rate gain (ppm)", "Counter", "CRC"]
    ]
    for label, bank in (("Before", record.cal_before), ("After", record.cal_after)):
        if bank is None:
            rows.append([label, "-", "-", "-", "-", "-"])
            continue
        v = bank.values
        rows.append(
            [
                label,
                f"{v.depth_gain_ppm:+d}",
                f"{v.depth_offset_um:+d}",
                f"{v.rate_gain_ppm:+d}",
                str(bank.counter),
                f"{bank.crc:08x}",
            ]
        )
    fits = "; ".join(
        f"{f.quantity.value}: measured = {f.slope:.5f} × set {f.intercept:+.4f} "
        f"(max residual {f.max_residual:.4f})"
        for f in record.fits
    )
    state = (
        "New calibration committed and verified as-left"
        if record.committed
        else "No new calibration is in force (see the notes)"
    )
    widths = [18 * mm, 32 * mm, 32 * mm, 32 * mm, 26 * mm, 38 * mm]
    return KeepTogether(
        [
            _grid_table(rows, widths, []),
            Spacer(1, 1.5 * mm),
            Paragraph(
                _esc(f"Least-squares fit, pen units: {fits or 'none'}. {state}."), st["small"]
            ),
        ]
    )


def _signatures() -> Table:
    line = "_" * 34
    table = Table(
        [["Technician", line, "Date", "_" * 16], ["Reviewed by", line, "Date", "_" * 16]],
        colWidths=[24 * mm, 74 * mm, 14 * mm, 40 * mm],
    )
    table.setStyle(
        TableStyle(
            [("FONT", (0, 0), (-1, -1), "Helvetica", 8.5), ("TOPPADDING", (0, 0), (-1, -1), 7)]
        )
    )
    return table


def _footer(record: CalibrationRecord) -> Any:
    def draw(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7)
        canvas.setFillColor(colors.grey)
        canvas.drawString(
            16 * mm,
            8 * mm,
            f"{record.pen.serial} · record {record.record_id} · micropen "
            f"{record.software_version} · page {doc.page}",
        )
        canvas.restoreState()

    return draw


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
