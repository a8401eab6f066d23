"""The faulty-line link benchmark measures what it claims (no speed is asserted here: figures
belong in docs/performance.md, not in timed tests)."""

from __future__ import annotations

from micropen.tools.bench_link import SWEEP_COLUMNS, measure_faulty_link, sweep_table


def test_a_short_run_through_the_faulty_proxy_reports_every_figure() -> None:
    figures = measure_faulty_link(0.05, 1e-4, 0.05, commands=150, telemetry_hz=200, seed=4)
    assert (figures["loss"], figures["duplicate"], figures["corrupt_bytes"]) == (0.05, 0.05, 1e-4)
    assert figures["commands"] == figures["answered"] == 150
    assert figures["timeouts"] == figures["errors"] == 0
    assert figures["commands_per_s"] > 0 and figures["telemetry_received"] > 0
    assert 0 < figures["latency_p50_ms"] <= figures["latency_p99_ms"] <= figures["latency_max_ms"]
    header, rows = sweep_table({"sweep": [figures]})
    assert header == list(SWEEP_COLUMNS.values()) and rows[0][0] == "5 %"
    assert rows[0][list(SWEEP_COLUMNS).index("timeouts")] == "0"
