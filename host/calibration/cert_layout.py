"""The certificate's page furniture: fonts, styles, header, footer, "page n of N", watermark.

Why its own module: what repeats on every page is what ISO/IEC 17025 §7.8.2.1 d) asks for —
every page identified as part of one certificate (its number, page n of N) — and, for a
simulated calibration, the SIMULATION watermark that must be on every page, so that no page
of it can pass for a real certificate on its own. "Page n of N" needs N, which is known only
when the last page is laid out: :func:`numbered_canvas` keeps each page until the document is
saved, then stamps them (the usual reportlab recipe).

Fonts: Bitstream Vera, which reportlab ships, so the certificate looks the same on every
machine and has the signs it needs (µ ± ≤ √ − °), unlike the PDF core fonts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import reportlab
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

__all__ = [
    "BOLD",
    "CONTENT_WIDTH",
    "FONT",
    "ITALIC",
    "MARGIN",
    "PAGE",
    "PageDecor",
    "Palette",
    "esc",
    "numbered_canvas",
    "register_fonts",
    "styles",
]

PAGE = A4
MARGIN = 16 * mm
CONTENT_WIDTH = PAGE[0] - 2 * MARGIN
FONT, BOLD, ITALIC = "Vera", "Vera-Bold", "Vera-Italic"


class Palette:
    PASS = colors.HexColor("#1b7f3b")
    CONDITIONAL = colors.HexColor("#b26a00")
    FAIL = colors.HexColor("#b00020")
    FOUND = colors.HexColor("#c0392b")
    LEFT = colors.HexColor("#1f5fa8")
    GRID = colors.HexColor("#d0d0d0")
    HEAD = colors.HexColor("#eef1f5")
    MUTED = colors.HexColor("#555555")
    WATERMARK = colors.Color(0.75, 0.1, 0.1, alpha=0.13)


@functools.cache
def register_fonts() -> None:
    """Vera from reportlab's own font folder, as one family (bold and italic for <b>, <i>)."""
    folder = Path(reportlab.__file__).parent / "fonts"
    for name, file in (
        (FONT, "Vera.ttf"),
        (BOLD, "VeraBd.ttf"),
        (ITALIC, "VeraIt.ttf"),
        ("Vera-BoldItalic", "VeraBI.ttf"),
    ):
        pdfmetrics.registerFont(TTFont(name, str(folder / file)))
    pdfmetrics.registerFontFamily(
        FONT, normal=FONT, bold=BOLD, italic=ITALIC, boldItalic="Vera-BoldItalic"
    )


def styles() -> dict[str, ParagraphStyle]:
    register_fonts()
    base = getSampleStyleSheet()
    body = ParagraphStyle("b", parent=base["BodyText"], fontName=FONT, fontSize=8, leading=10)
    return {
        "title": ParagraphStyle(
            "t", parent=base["Title"], fontName=BOLD, fontSize=16, leading=19, spaceAfter=1
        ),
        "h": ParagraphStyle(  # a heading never ends a page: it goes with what follows
            "h",
            parent=base["Heading3"],
            fontName=BOLD,
            fontSize=10,
            spaceBefore=7,
            spaceAfter=3,
            keepWithNext=1,
        ),
        "body": body,
        "small": ParagraphStyle("s", parent=body, fontSize=7, leading=8.6),
        "cell": ParagraphStyle("c", parent=body, fontSize=7.2, leading=8.6),
        "lab": ParagraphStyle("l", parent=body, fontName=BOLD, fontSize=10, leading=12),
        "alert": ParagraphStyle("a", parent=body, textColor=Palette.FAIL, fontName=BOLD),
        "centre": ParagraphStyle("m", parent=body, alignment=1, textColor=Palette.MUTED),
    }


@dataclass(frozen=True)
class PageDecor:
    """What every page shows besides its content."""

    certificate: str  # the certificate number
    issued: str  # the date of issue
    lab: str  # the issuing laboratory ("" : not configured)
    footer: str  # record id, software version
    simulated: bool


def numbered_canvas(decor: PageDecor) -> type[Canvas]:
    """A canvas class that draws the header, footer and watermark on every page, with
    "page n of N" once N is known."""

    class NumberedCanvas(Canvas):  # type: ignore[misc]  # reportlab is untyped
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pages: list[dict[str, Any]] = []

        def showPage(self) -> None:  # reportlab's name
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self._pages)
            for number, state in enumerate(self._pages, start=1):
                self.__dict__.update(state)
                _furniture(self, decor, number, total)
                super().showPage()
            super().save()

    return NumberedCanvas


def watermark(canvas: Canvas, decor: PageDecor) -> None:
    """Under the page's content (drawn first): the diagonal SIMULATION mark."""
    if not decor.simulated:
        return
    canvas.saveState()
    canvas.setFillColor(Palette.WATERMARK)
    canvas.setFont(BOLD, 96)
    canvas.translate(PAGE[0] / 2, PAGE[1] / 2)
    canvas.rotate(55)
    canvas.drawCentredString(0, -30, "SIMULATION")
    canvas.restoreState()


def _furniture(canvas: Canvas, decor: PageDecor, number: int, total: int) -> None:
    width, height = PAGE
    top, bottom = height - 9 * mm, 8 * mm
    canvas.saveState()
    canvas.setFont(BOLD, 7.5)
    canvas.setFillColor(colors.black if decor.lab else Palette.FAIL)
    canvas.drawString(MARGIN, top, decor.lab or "ISSUING LABORATORY NOT CONFIGURED")
    canvas.setFillColor(colors.black)
    canvas.drawRightString(
        width - MARGIN,
        top,
        f"Calibration certificate {decor.certificate}  ·  issued {decor.issued}",
    )
    canvas.setStrokeColor(Palette.GRID)
    canvas.line(MARGIN, top - 2 * mm, width - MARGIN, top - 2 * mm)
    if decor.simulated:
        canvas.setFillColor(Palette.FAIL)
        canvas.setFont(BOLD, 7.5)
        canvas.drawCentredString(
            width / 2, top - 5.5 * mm, "SIMULATION — not a calibration of a real device"
        )
    canvas.setFillColor(Palette.MUTED)
    canvas.setFont(FONT, 6.5)
    canvas.line(MARGIN, bottom + 3.5 * mm, width - MARGIN, bottom + 3.5 * mm)
    canvas.drawString(MARGIN, bottom, decor.footer)
    canvas.setFont(BOLD, 7.5)
    canvas.setFillColor(colors.black)
    canvas.drawRightString(width - MARGIN, bottom, f"Page {number} of {total}")
    canvas.restoreState()


def esc(text: str) -> str:
    """Text for a reportlab Paragraph (which reads a little XML)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
