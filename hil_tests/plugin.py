"""pytest plugin of the micropen hardware-in-the-loop suite.

One suite, any pen (as labgrid and pytest-embedded do it: only the options differ)::

    pytest hil_tests                                   # starts the simulator on a pty
    pytest hil_tests --pen /dev/serial/by-id/usb-…     # a pen on a bench
    micropen hil --pen socket://bench-7:5000 -k hazard # the same, from an installed package

Options: ``--pen URL``; ``--allow-destructive`` / ``--no-destructive`` (default: allowed on a
pen that reports the SIMULATOR capability, which is disposable, refused on any other);
``--hil-report DIR`` (default ``hil-report``); ``--hil-seed`` and ``--hil-sim-query`` for the
simulator the suite starts. Markers: ``hil_destructive``; ``hil_needs(Capability.X, …)``.
Fixtures: ``pen`` (the session's connection, brought to a known state before each test),
``runnable_pen`` (the same, with a cartridge a run may use), ``hil_context``, ``hil_measure``
and ``hil_link_stats`` (both go into the reports).

Under pytest-xdist every worker starts its own simulator and opens its own connection (the
session fixtures are per worker); the controller collects the test reports and the workers'
pen identities and writes the reports once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from micropen.host import Pen
from micropen.host.errors import HostError
from micropen.protocol.messages import Capability

from .report import (
    LINK_PROPERTY,
    MEASURE_PROPERTY,
    HilRecord,
    Measurement,
    format_summary,
    write_reports,
)
from .target import (
    HilContext,
    SimProcess,
    capability_names,
    ensure_cartridge,
    make_ready,
    worker_name,
)

__all__ = ["HIL_DIR", "Target"]

HIL_DIR = Path(__file__).resolve().parent
WORKER_KEY = "micropen_hil"
MARKERS = (
    "hil_destructive: changes the pen for good (calibration written, cartridge consumed); "
    "runs with --allow-destructive, or on a simulator unless --no-destructive",
    "hil_needs(*capabilities): skip unless the pen reports every one of these Capability flags",
    "slow: takes more than a few seconds; still runs in CI",
)


@dataclass
class Target:
    """Where the pen under test is, and the simulator process when the suite started one."""

    url: str
    sim: SimProcess | None = None


_STATE = pytest.StashKey["_Reporter"]()


# ------------------------------------------------------------------------------- options
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("micropen-hil", "micropen hardware-in-the-loop suite")
    group.addoption(
        "--pen",
        dest="hil_pen",
        default=None,
        metavar="URL",
        help="pen under test: /dev/ttyACM0, /dev/serial/by-id/…, socket://HOST:PORT, "
        "rfc2217://…, usb://…; default: start the simulator on a pty",
    )
    group.addoption(
        "--allow-destructive",
        action="store_const",
        const=True,
        dest="hil_destructive",
        default=None,
        help="run tests that write calibration or consume cartridges (default: only on a "
        "simulator)",
    )
    group.addoption(
        "--no-destructive",
        action="store_const",
        const=False,
        dest="hil_destructive",
        help="skip destructive tests even on a simulator",
    )
    group.addoption(
        "--hil-report",
        dest="hil_report",
        default="hil-report",
        metavar="DIR",
        help="where junit.xml, summary.txt and summary.json go (default: ./hil-report)",
    )
    group.addoption("--hil-seed", dest="hil_seed", type=int, default=7, help="simulator seed")
    group.addoption(
        "--hil-sim-query", dest="hil_sim_query", default="", help="simulator options (SimConfig)"
    )


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("hil_pen") and not os.environ.get("MICROPEN_HOME"):
        # the simulator's conformance sessions stay out of this machine's treatment log; on a
        # bench (--pen) they are recorded there, as purpose "conformance"
        home = tempfile.mkdtemp(prefix="micropen-hil-")
        os.environ["MICROPEN_HOME"] = home
        config.add_cleanup(lambda: _forget_home(home))
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    reporter = _Reporter(config)
    config.stash[_STATE] = reporter
    config.pluginmanager.register(reporter, "micropen-hil-reporter")


def _forget_home(home: str) -> None:
    if os.environ.get("MICROPEN_HOME") == home:
        del os.environ["MICROPEN_HOME"]
    shutil.rmtree(home, ignore_errors=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    reporter = config.stash.get(_STATE, None)
    if reporter is not None:
        config.pluginmanager.unregister(reporter)


def _is_hil_path(path: Path | str) -> bool:
    try:
        return Path(path).resolve().is_relative_to(HIL_DIR)
    except OSError:
        return False


# ------------------------------------------------------------------------------- collecting
class _Reporter:
    """Collects the HIL tests' reports (at the xdist controller, or in the only process) and
    writes the reports at the end; on a worker it only passes its pen's identity on."""

    def __init__(self, config: pytest.Config) -> None:
        self.record = HilRecord()
        self.report_dir = Path(config.getoption("hil_report"))
        self.worker = hasattr(config, "workerinput")
        self.root = Path(config.rootpath)
        self.t0 = time.monotonic()
        self._config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.worker or not _is_hil_path(self.root / report.location[0]):
            return
        result = self.record.result(report.nodeid)
        result.absorb(report.when, report.outcome, report.duration, _message(report))
        if hasattr(report, "wasxfail"):
            result.outcome = "xfailed" if report.skipped else "xpassed"
        props = list(report.user_properties)
        if props:
            result.measurements = [dict(v) for k, v in props if k == MEASURE_PROPERTY]  # type: ignore[call-overload]
            result.links = [dict(v) for k, v in props if k == LINK_PROPERTY]  # type: ignore[call-overload]

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist controller: a worker finished; take what it learnt about its pen."""
        output = getattr(node, "workeroutput", {}).get(WORKER_KEY)
        if output:
            self.record.pens += output.get("pens", [])
            self.record.link_statistics += output.get("link_statistics", [])

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        record = self.record
        if self.worker:
            session.config.workeroutput[WORKER_KEY] = {  # type: ignore[attr-defined]
                "pens": record.pens,
                "link_statistics": record.link_statistics,
            }
            return
        if not record.tests:
            return  # no HIL test in this run (e.g. only tests/): write nothing
        record.finished = datetime.now(UTC).isoformat(timespec="seconds")
        record.duration_s = time.monotonic() - self.t0
        write_reports(record, self.report_dir)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.worker or not self.record.tests:
            return
        data = self.record.to_dict()
        terminalreporter.section("micropen HIL")
        for line in format_summary(data).splitlines()[1:4]:
            terminalreporter.write_line(line)
        for test in data["tests"]:
            name = test["nodeid"].rpartition("::")[2]
            for m in test["measurements"]:
                verdict = Measurement(m["name"], m["value"], m["unit"], m["low"], m["high"])
                terminalreporter.write_line(f"  {name}: {m['name']} = {verdict.describe()}")
        terminalreporter.write_line(f"reports: {self.report_dir}/ (junit.xml, summary.txt)")


def _message(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if report.failed:
        lines = report.longreprtext.strip().splitlines()
        errors = [line for line in lines if line.startswith("E ")]
        return "\n".join((errors or lines)[-12:])
    return ""


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def hil_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The pen URL under test; starts (and finally stops) a simulator when none was given."""
    config = request.config
    url = config.getoption("hil_pen")
    if url:
        yield Target(url)
        return
    log = config.stash[_STATE].report_dir / f"simulator-{worker_name()}.log"
    sim = SimProcess(config.getoption("hil_seed"), config.getoption("hil_sim_query"), log)
    path = sim.start()
    try:
        yield Target(path, sim)
    finally:
        sim.stop()


@pytest.fixture(scope="session")
def hil_context(request: pytest.FixtureRequest, hil_target: Target) -> Iterator[HilContext]:
    """The session's connection to the pen and what the suite learnt about it at start."""
    reporter = request.config.stash[_STATE]
    ctx = HilContext(
        hil_target.url,
        allow_destructive=request.config.getoption("hil_destructive"),
        sim=hil_target.sim,
    )
    reporter.record.pens.append({**ctx.describe(), "worker": worker_name()})
    try:
        yield ctx
    finally:
        with contextlib.suppress(HostError):
            ctx.pen().stop()
        ctx.close()
        for stats in ctx.link_stats:
            reporter.record.link_statistics.append({"worker": worker_name(), **_plain(stats)})


def _plain(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in stats.items()}


@pytest.fixture(autouse=True)
def _hil_gate(request: pytest.FixtureRequest) -> None:
    """Skip, with the reason, a HIL test the pen cannot give what it needs."""
    if not _is_hil_path(request.node.path):
        return
    ctx: HilContext = request.getfixturevalue("hil_context")
    for mark in request.node.iter_markers("hil_needs"):
        wanted = Capability(0)
        for cap in mark.args:
            wanted |= cap if isinstance(cap, Capability) else Capability[str(cap)]
        missing = wanted & ~ctx.capabilities
        if missing:
            pytest.skip(
                f"the pen does not report {', '.join(capability_names(missing))} "
                f"(it reports {', '.join(capability_names(ctx.capabilities)) or 'nothing'})"
            )
    if request.node.get_closest_marker("hil_destructive") and not ctx.allow_destructive:
        pytest.skip(
            "destructive (writes calibration or consumes a cartridge): run with "
            "--allow-destructive on a bench pen set aside for it"
        )


@pytest.fixture
def pen(hil_context: HilContext) -> Iterator[Pen]:
    """The pen, stopped, fault-free, retracted, with default watchdog and no telemetry."""
    connection = hil_context.pen()
    make_ready(hil_context, connection)
    yield connection
    if hil_context._pen is connection:  # the test kept the connection: leave the pen safe
        with contextlib.suppress(HostError):
            connection.stop()


@pytest.fixture
def runnable_pen(hil_context: HilContext, pen: Pen) -> Pen:
    """The ready pen with a cartridge a run may use (a simulated bay gets a fresh one)."""
    if ensure_cartridge(hil_context, pen) is None:
        pytest.skip("the pen has no usable cartridge: mount a new one and run again")
    return pen


@pytest.fixture
def hil_measure(request: pytest.FixtureRequest) -> Callable[..., Measurement]:
    """``hil_measure(name, value, unit, low, high)``: record a figure against its limits
    (it goes into the reports) and fail the test when it is outside them."""

    def measure(
        name: str,
        value: float,
        unit: str,
        low: float | None = None,
        high: float | None = None,
        *,
        check: bool = True,
    ) -> Measurement:
        m = Measurement(name, round(float(value), 6) + 0.0, unit, low, high)  # no "-0"
        request.node.user_properties.append((MEASURE_PROPERTY, m.to_dict()))
        if check:
            assert m.passed, f"{name} = {m.describe()}"
        return m

    return measure


@pytest.fixture
def hil_link_stats(request: pytest.FixtureRequest) -> Callable[[str, dict[str, Any]], None]:
    """``hil_link_stats(name, stats)``: attach link statistics to this test's report."""

    def record(name: str, stats: dict[str, Any]) -> None:
        request.node.user_properties.append((LINK_PROPERTY, {"name": name, **_plain(stats)}))

    return record
