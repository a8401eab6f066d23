"""A real mosquitto broker for the fleet tests.

Generated config: password file (``mosquitto_passwd -b``), the fleet ACL (pen bridges log in as
their serial and may write only under their own topics at the sites of the test roster;
watchers read-only; an operator may also write ``cmd/operator``), ``allow_anonymous false``,
client ids replaced by usernames, the documented size limits, persistence in a tmp folder, a
plain listener, a TLS listener and a mutual-TLS listener with a CA and certificates made here.
The fixture waits for every port to accept connections (retry with a deadline) and reaps the
broker at teardown.
Tests skip only when the mosquitto binary is absent (CI installs it: .ci/run).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _fleet_certs import make_pki
from _fleet_helpers import (
    ADMIN,
    ARCHIVERS,
    OPERATOR,
    PEN_SERIALS,
    TEST_SITES,
    WATCHER,
    FleetBroker,
    password,
)
from _fleet_pg import fleet_db, pg_cluster  # noqa: F401  (PostgreSQL fixtures)

from micropen.host.fleet.mosquitto import LocalMosquitto, TLSFiles, find_mosquitto, fleet_acl


def _start_broker(folder: Path) -> FleetBroker:
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not installed (apt-get install mosquitto; CI installs it)")
    pki = make_pki(folder / "pki")
    pens = [*PEN_SERIALS, "PEN-A", "PEN-B"]
    users = {u: password(u) for u in [ADMIN, WATCHER, OPERATOR, *ARCHIVERS, *pens]}
    broker = LocalMosquitto(
        folder / "broker",
        users=users,
        acl=fleet_acl(
            pens=[(site, serial) for serial in pens for site in TEST_SITES],
            admins=[ADMIN],
            operators=[OPERATOR],
            watchers=[WATCHER, *ARCHIVERS],
        ),
        tls=[
            TLSFiles(pki.ca, pki.server_cert, pki.server_key),
            TLSFiles(pki.ca, pki.server_cert, pki.server_key, require_certificate=True),
        ],
    )
    broker.start()
    return FleetBroker(broker, pki)


@pytest.fixture(scope="session")
def fleet_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetBroker]:
    """One broker for the session (per xdist worker)."""
    broker = _start_broker(tmp_path_factory.mktemp("fleet-broker"))
    yield broker
    broker.mosquitto.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[FleetBroker]:
    """A broker of its own, for tests that stop and restart it."""
    broker = _start_broker(tmp_path)
    yield broker
    broker.mosquitto.stop()
