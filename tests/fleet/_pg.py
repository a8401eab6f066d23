"""A real PostgreSQL for the registry tests: an unprivileged throwaway cluster (interim; the
ingest tests' fixture replaces it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


def _as_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "nobody", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[str]:
    if BIN is None or not (BIN / "initdb").exists():
        pytest.skip("PostgreSQL server binaries not found (apt install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="mp-pg-"))
    root.chmod(0o777)
    data = root / "data"
    subprocess.run(
        _as_user([str(BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8"]),
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    opts = f"-k {root} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
    subprocess.run(
        _as_user([str(BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"),
                  "-w", "-t", "30", "start"]),
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    try:
        yield f"postgresql://postgres@/postgres?host={root}"
    finally:
        subprocess.run(
            _as_user([str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_db(pg_cluster: str) -> str:
    """A fresh database with the fleet schema."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_cluster, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = pg_cluster.replace("/postgres?", f"/{name}?")
    sql = Path(__file__).parents[2] / "host/fleet/migrations/0002_cartridge_registry.sql"
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.read_text())
    return dsn
