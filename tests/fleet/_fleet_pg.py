"""A real PostgreSQL for the fleet ingest tests: one cluster per test session (per xdist
worker), one fresh database per test. Skipped, with the reason, only when the PostgreSQL
binaries cannot be found (CI installs them: .ci/run)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from micropen.host.fleet.postgres import LocalPostgres, find_postgres

_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[LocalPostgres]:
    if find_postgres() is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    cluster = LocalPostgres(fsync=False)  # a clean shutdown keeps every commit; tests need no more
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def fleet_db(pg_cluster: LocalPostgres) -> str:
    """The DSN of a new, empty database of its own."""
    return pg_cluster.create_database(f"fleet_test_{next(_numbers)}")
