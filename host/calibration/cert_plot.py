"""The certificate's plot: error against set point, as-found and as-left, with each point's
expanded uncertainty as an error bar and the tolerance limits as dashed bands.

Why a picture on a certificate: a reviewer sees at a glance where a unit was, where it was
left, and how close each point came to its limit — the same facts as the table, in a form
that makes a trend (a gain error, an offset) obvious.
"""

from __future__ import annotations

from reportlab.graphics.charts.legends import LineLegend
from reportlab.graphics.charts.lineplots import LinePlot
from reportlab.graphics.shapes import Drawing, Line, String
from reportlab.graphics.widgets.markers import makeMarker
from reportlab.lib import colors
from reportlab.lib.units import mm

from .cert_layout import CONTENT_WIDTH, FONT, Palette
from .measurements import Limit, Quantity, Stage
from .record import CalibrationRecord, PointResult

__all__ = ["error_plot"]

_HEIGHT = 60 * mm
_STAGES = ((Stage.AS_FOUND, Palette.FOUND), (Stage.AS_LEFT, Palette.LEFT))


def error_plot(record: CalibrationRecord, quantity: Quantity, limits: tuple[Limit, ...]) -> Drawing:
    """Error (error units) against set point (set units), both limit bands drawn."""
    drawing = Drawing(CONTENT_WIDTH, _HEIGHT)
    stages = [
        (stage, colour, sorted(record.stage_points(stage, quantity), key=lambda p: p.set_value))
        for stage, colour in _STAGES
    ]
    stages = [s for s in stages if s[2]]
    plot = _axes(stages, quantity, limits)
    drawing.add(plot)
    for _, colour, points in stages:
        _error_bars(drawing, plot, points, colour)
    for limit, dash in zip(limits, ((4, 2), (1, 2)), strict=False):
        _limit_band(drawing, plot, limit, dash)
    _labels(drawing, plot, quantity)
    legend = LineLegend()
    legend.x, legend.y = plot.x + plot.width + 4 * mm, plot.y + 12 * mm
    legend.fontName, legend.fontSize = FONT, 7
    legend.colorNamePairs = [(colour, f"{stage.label} ± U") for stage, colour, _ in stages]
    drawing.add(legend)
    return drawing


def _axes(
    stages: list[tuple[Stage, colors.Color, list[PointResult]]],
    quantity: Quantity,
    limits: tuple[Limit, ...],
) -> LinePlot:
    xs = [p.set_value for _, _, points in stages for p in points] or [0.0, 1.0]
    reach = [abs(p.error) + (p.expanded or 0.0) for _, _, points in stages for p in points]
    span = max([max(limit.tolerance for limit in limits) * 1.25, *(r * 1.15 for r in reach)])
    lo, hi = min(xs), max(xs)
    pad = (hi - lo) * 0.05 or 1.0
    plot = LinePlot()
    plot.x, plot.y, plot.width, plot.height = 18 * mm, 10 * mm, 124 * mm, _HEIGHT - 16 * mm
    plot.data = [[(p.set_value, p.error) for p in points] for _, _, points in stages] or [
        [(lo, 0.0)]
    ]
    plot.xValueAxis.valueMin, plot.xValueAxis.valueMax = lo - pad, hi + pad
    plot.yValueAxis.valueMin, plot.yValueAxis.valueMax = -span, span
    for axis in (plot.xValueAxis, plot.yValueAxis):
        axis.labels.fontName, axis.labels.fontSize = FONT, 6.5
    plot.yValueAxis.labelTextFormat = "%+.3f" if quantity is Quantity.DEPTH else "%+.1f"
    plot.xValueAxis.labelTextFormat = "%g"
    plot.xValueAxis.valueSteps = sorted(set(xs))
    plot.yValueAxis.visibleGrid = True
    plot.yValueAxis.gridStrokeColor = Palette.GRID
    for i, (_, colour, _) in enumerate(stages):
        plot.lines[i].strokeColor = colour
        plot.lines[i].strokeWidth = 1.1
        plot.lines[i].symbol = makeMarker("FilledCircle", size=3.5, fillColor=colour)
    return plot


def _y(plot: LinePlot, value: float) -> float:
    lo, hi = plot.yValueAxis.valueMin, plot.yValueAxis.valueMax
    return float(plot.y + plot.height * (value - lo) / (hi - lo))


def _x(plot: LinePlot, value: float) -> float:
    lo, hi = plot.xValueAxis.valueMin, plot.xValueAxis.valueMax
    return float(plot.x + plot.width * (value - lo) / (hi - lo))


def _error_bars(
    drawing: Drawing, plot: LinePlot, points: list[PointResult], colour: colors.Color
) -> None:
    for p in points:
        if not p.expanded:
            continue
        x, low, high = (
            _x(plot, p.set_value),
            _y(plot, p.error - p.expanded),
            _y(plot, p.error + p.expanded),
        )
        drawing.add(Line(x, low, x, high, strokeColor=colour, strokeWidth=0.8))
        for y in (low, high):
            drawing.add(Line(x - 1.5, y, x + 1.5, y, strokeColor=colour, strokeWidth=0.8))


def _limit_band(drawing: Drawing, plot: LinePlot, limit: Limit, dash: tuple[int, int]) -> None:
    for sign in (1, -1):
        y = _y(plot, sign * limit.tolerance)
        drawing.add(
            Line(plot.x, y, plot.x + plot.width, y, strokeColor=colors.grey,
                 strokeDashArray=dash, strokeWidth=0.7)
        )  # fmt: skip
    drawing.add(
        String(
            plot.x + plot.width + 2,
            _y(plot, limit.tolerance) - 2,
            f"±{limit.tolerance:g} {limit.units} {limit.name}",
            fontName=FONT,
            fontSize=6,
            fillColor=colors.grey,
        )
    )


def _labels(drawing: Drawing, plot: LinePlot, quantity: Quantity) -> None:
    drawing.add(
        String(plot.x + plot.width / 2, 1 * mm, f"set point ({quantity.set_units})",
               fontName=FONT, fontSize=7, textAnchor="middle")
    )  # fmt: skip
    unit = "mm" if quantity is Quantity.DEPTH else "% of the set rate"
    drawing.add(
        String(2 * mm, plot.y + plot.height + 2 * mm, f"error ({unit})", fontName=FONT, fontSize=7)
    )
