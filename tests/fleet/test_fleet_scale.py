"""Ten simulated pens at 100 Hz for 60 s through one authenticated broker: nothing lost.

The only long test of the fleet suite (60 s of wall time, by design: a minute of streaming is
what shows a slow leak or a stall that a few seconds hide). Each bridge logs in as its pen and
the broker enforces the ACL, as in a deployment; one watcher receives everything.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _fleet_helpers import WATCHER, FleetBroker

from micropen.tools.bench_fleet import run_fleet

BRIDGES, HZ, SECONDS = 10, 100, 60.0


@pytest.mark.slow
async def test_ten_pens_at_100_hz_for_a_minute_arrive_without_gaps(
    fleet_broker: FleetBroker, tmp_path: Path
) -> None:
    run = await run_fleet(
        fleet_broker.config(WATCHER),
        fleet_broker.config,
        bridges=BRIDGES,
        seconds=SECONDS,
        hz=HZ,
        site="scale",
        queue_dir=tmp_path / "queue",
        first_seed=11,
    )
    figures = run.figures()
    assert len(run.streams) == BRIDGES, "every pen's telemetry arrived"
    assert run.gaps() == {serial: 0 for serial in run.streams}, "no sequence gaps"
    assert figures["duplicates"] == 0
    assert figures["samples_received"] == figures["samples_published"]
    assert figures["samples_decimated"] == 0
    expected = BRIDGES * HZ * SECONDS
    assert 0.95 * expected <= figures["samples_received"] <= 1.05 * expected, figures
    for serial, sent in run.sent.items():
        assert sent["telemetry_dropped"] == 0 and sent["connects"] == 1, (serial, sent)
    assert figures["latency_ms_p99"] < 1000, figures


def test_measure_fleet_reports_the_documented_figures() -> None:
    from micropen.host.fleet.mosquitto import find_mosquitto
    from micropen.tools.bench_fleet import measure_broker, measure_fleet

    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not installed (apt-get install mosquitto; CI installs it)")
    figures = measure_fleet(bridges=2, seconds=1.0, hz=50)
    assert figures["sequence_gaps"] == 0 and figures["duplicates"] == 0
    assert figures["samples_received"] == figures["samples_published"] > 50
    assert 0 < figures["latency_ms_p50"] <= figures["latency_ms_p99"] <= figures["latency_ms_max"]
    assert figures["messages_per_s"] > 10
    broker = measure_broker(messages=300)
    assert broker["messages"] == 300 and broker["client_messages_per_s"] > 0
