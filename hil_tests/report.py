"""The HIL run's record and its three renderings: JUnit XML, a human summary and JSON.

The record is built from pytest's own test reports (so it works under pytest-xdist, where the
reports arrive at the controller) plus what each worker learnt about its pen. Measurements are
OpenHTF-style: a name, a value, a unit and inclusive limits, judged PASS or FAIL; they travel in
``user_properties`` and appear as ``<property>`` elements of their test case in the JUnit XML.
"""

from __future__ import annotations

import json
import platform
import socket
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "LINK_PROPERTY",
    "MEASURE_PROPERTY",
    "HilRecord",
    "Measurement",
    "TestResult",
    "format_summary",
    "load_summary",
    "rich_summary",
    "write_reports",
]

MEASURE_PROPERTY = "hil_measure"
LINK_PROPERTY = "hil_link"
JUNIT_NAME = "junit.xml"
SUMMARY_TEXT = "summary.txt"
SUMMARY_JSON = "summary.json"


@dataclass(frozen=True)
class Measurement:
    """One measured figure against its limits (inclusive; None: unbounded on that side)."""

    name: str
    value: float
    unit: str
    low: float | None
    high: float | None

    @property
    def passed(self) -> bool:
        return (self.low is None or self.value >= self.low) and (
            self.high is None or self.value <= self.high
        )

    def limits(self) -> str:
        low = "-∞" if self.low is None else f"{self.low:g}"
        high = "+∞" if self.high is None else f"{self.high:g}"
        return f"[{low}, {high}]"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def describe(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return f"{self.value:.4g} {self.unit} {self.limits()} {verdict}"


@dataclass
class TestResult:
    """One test's outcome over its phases (setup, call, teardown)."""

    nodeid: str
    outcome: str = "passed"  # passed | failed | error | skipped | xfailed | xpassed
    duration_s: float = 0.0
    message: str = ""
    measurements: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)

    def absorb(self, when: str, outcome: str, duration: float, message: str) -> None:
        self.duration_s += duration
        if outcome == "failed":
            self.outcome = "failed" if when == "call" else "error"
            self.message = self.message or message
        elif outcome == "skipped" and self.outcome == "passed":
            self.outcome = "skipped"
            self.message = message


@dataclass
class HilRecord:
    """A whole run: header (pen, station), every test, link statistics."""

    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    finished: str = ""
    duration_s: float = 0.0
    pens: list[dict[str, Any]] = field(default_factory=list)
    tests: dict[str, TestResult] = field(default_factory=dict)
    link_statistics: list[dict[str, Any]] = field(default_factory=list)

    def result(self, nodeid: str) -> TestResult:
        return self.tests.setdefault(nodeid, TestResult(nodeid))

    def totals(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for test in self.tests.values():
            counts[test.outcome] = counts.get(test.outcome, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "finished": self.finished,
            "duration_s": round(self.duration_s, 3),
            "station": _station(),
            "pens": self.pens,
            "totals": self.totals(),
            "tests": [asdict(t) for t in self.tests.values()],
            "link_statistics": self.link_statistics,
        }


def _station() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        micropen = version("micropen")
    except PackageNotFoundError:  # pragma: no cover - a bare checkout
        micropen = "unknown"
    return {
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "micropen": micropen,
    }


# ------------------------------------------------------------------------------- writers
def write_reports(record: HilRecord, directory: Path) -> dict[str, Path]:
    """Write junit.xml, summary.txt and summary.json into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    data = record.to_dict()
    paths = {
        "junit": directory / JUNIT_NAME,
        "text": directory / SUMMARY_TEXT,
        "json": directory / SUMMARY_JSON,
    }
    _junit(data).write(paths["junit"], encoding="utf-8", xml_declaration=True)
    paths["text"].write_text(format_summary(data), encoding="utf-8")
    paths["json"].write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    return paths


def load_summary(directory: Path) -> dict[str, Any]:
    return json.loads((directory / SUMMARY_JSON).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _junit(data: dict[str, Any]) -> ET.ElementTree:
    totals = data["totals"]
    suites = ET.Element("testsuites")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="micropen-hil",
        tests=str(len(data["tests"])),
        failures=str(totals.get("failed", 0)),
        errors=str(totals.get("error", 0)),
        skipped=str(totals.get("skipped", 0) + totals.get("xfailed", 0)),
        time=f"{data['duration_s']:.3f}",
        timestamp=data["started"],
        hostname=data["station"]["hostname"],
    )
    props = ET.SubElement(suite, "properties")
    for i, pen in enumerate(data["pens"]):
        for key, value in pen.items():
            ET.SubElement(props, "property", name=f"pen{i}.{key}", value=_text(value))
    for key, value in data["station"].items():
        ET.SubElement(props, "property", name=f"station.{key}", value=str(value))
    for test in data["tests"]:
        _junit_case(suite, test)
    return ET.ElementTree(suites)


def _junit_case(suite: ET.Element, test: dict[str, Any]) -> None:
    path, _, name = test["nodeid"].rpartition("::")
    classname = path.replace("/", ".").removesuffix(".py").replace(".py::", ".")
    case = ET.SubElement(
        suite, "testcase", classname=classname, name=name, time=f"{test['duration_s']:.3f}"
    )
    if test["measurements"] or test["links"]:
        props = ET.SubElement(case, "properties")
        for m in test["measurements"]:
            ET.SubElement(props, "property", name=f"measure.{m['name']}", value=_measure_text(m))
        for i, link in enumerate(test["links"]):
            ET.SubElement(props, "property", name=f"link{i}", value=json.dumps(link))
    outcome, message = test["outcome"], test["message"]
    first = message.splitlines()[0] if message else ""
    if outcome == "failed":
        ET.SubElement(case, "failure", message=first).text = message
    elif outcome == "error":
        ET.SubElement(case, "error", message=first).text = message
    elif outcome in ("skipped", "xfailed"):
        ET.SubElement(case, "skipped", message=first)


def _text(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _measure_text(m: dict[str, Any]) -> str:
    return Measurement(m["name"], m["value"], m["unit"], m["low"], m["high"]).describe()


# ------------------------------------------------------------------------------- human text
def _pen_lines(data: dict[str, Any]) -> list[str]:
    lines = []
    seen = set()
    for pen in data["pens"]:
        key = (pen.get("serial"), pen.get("boot_id"), pen.get("url"))
        if key in seen:
            continue
        seen.add(key)
        lines.append(
            f"pen: {pen['model']}  serial {pen['serial']}  firmware {pen['firmware']}  "
            f"hw rev {pen['hardware_revision']}  protocol {pen['protocol_version']} "
            f"(schema {pen['schema_hash']})  at {pen['url']}"
        )
        lines.append(
            f"     capabilities: {', '.join(pen['capabilities']) or 'none'}; destructive "
            f"tests {'allowed' if pen['destructive_allowed'] else 'not allowed'}"
            + ("; simulator started by the suite" if pen["simulator_started_by_suite"] else "")
        )
    return lines or ["pen: (no connection was made)"]


def format_summary(data: dict[str, Any]) -> str:
    """The human summary: header, one line per test and measurement, link statistics."""
    st = data["station"]
    totals = ", ".join(f"{n} {k}" for k, n in sorted(data["totals"].items())) or "no tests"
    out = [
        f"micropen hardware-in-the-loop report — {data['started']}",
        *_pen_lines(data),
        f"station: {st['hostname']}  python {st['python']}  micropen {st['micropen']}",
        f"result: {totals} in {data['duration_s']:.1f} s",
        "",
    ]
    for test in data["tests"]:
        out.append(f"{test['outcome'].upper():8} {test['duration_s']:7.2f}s  {test['nodeid']}")
        for m in test["measurements"]:
            out.append(f"{'':19}{m['name']}: {_measure_text(m)}")
        if test["outcome"] in ("failed", "error", "skipped") and test["message"]:
            out.append(f"{'':19}{test['message'].splitlines()[-1][:160]}")
        for link in test["links"]:
            out.append(f"{'':19}link: {_link_text(link)}")
    if data["link_statistics"]:
        out += ["", "link statistics (host side, per session connection):"]
        for stats in data["link_statistics"]:
            out.append("  " + _link_text(stats))
    return "\n".join(out) + "\n"


_LINK_KEYS = (
    "frames_sent",
    "frames_received",
    "retransmits",
    "timeouts",
    "duplicates",
    "crc_failures",
    "cobs_failures",
    "reconnects",
    "late_replies",
    "bytes",
    "frames",
    "dropped",
    "corrupted",
    "duplicated",
    "delayed",
)


def _link_text(stats: dict[str, Any]) -> str:
    parts = []
    for key, value in stats.items():
        if isinstance(value, dict):
            inner = " ".join(f"{k}={v}" for k, v in value.items() if k in _LINK_KEYS)
            if inner:
                parts.append(f"{key}: {inner}")
        elif key in _LINK_KEYS or key in ("name", "worker"):
            parts.append(f"{key}={value}")
    return "; ".join(parts)


# ------------------------------------------------------------------------------- rich
def rich_summary(data: dict[str, Any]) -> list[Any]:
    """Renderables for ``micropen hil``: the header, then a table of every measurement and of
    every test that did not pass (passed tests without measurements are only counted)."""
    from rich.table import Table
    from rich.text import Text

    header = Text("\n".join(_pen_lines(data)))
    table = Table(title="micropen HIL", title_justify="left")
    for column in ("test", "outcome", "measurement", "value", "limits", ""):
        table.add_column(column, overflow="fold")
    styles = {"passed": "green", "failed": "red", "error": "red", "skipped": "yellow"}
    quiet = 0
    for test in data["tests"]:
        if test["outcome"] == "passed" and not test["measurements"]:
            quiet += 1
            continue
        name = test["nodeid"].rpartition("::")[2]
        outcome = Text(test["outcome"], style=styles.get(test["outcome"], ""))
        if not test["measurements"]:
            reason = test["message"].splitlines()[-1][:120] if test["message"] else ""
            table.add_row(name, outcome, "", reason, "", "")
        for i, m in enumerate(test["measurements"]):
            verdict = Measurement(m["name"], m["value"], m["unit"], m["low"], m["high"])
            table.add_row(
                name if i == 0 else "",
                outcome if i == 0 else "",
                m["name"],
                f"{m['value']:.4g} {m['unit']}",
                verdict.limits(),
                Text("PASS", "green") if verdict.passed else Text("FAIL", "red"),
            )
    totals = ", ".join(f"{n} {k}" for k, n in sorted(data["totals"].items())) or "no tests"
    footer = f"{totals} in {data['duration_s']:.1f} s"
    if quiet:
        footer += f" ({quiet} passed tests without measurements not listed)"
    return [header, table, Text(footer)]
