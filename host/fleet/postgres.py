"""A throw-away PostgreSQL cluster on 127.0.0.1, for the tests and the ingest benchmark.

``initdb`` refuses to run as root, so when this process is root the cluster's commands run as
an unprivileged user (``nobody`` unless told) through ``runuser``, in a folder of its own under
the system temp folder (a root-only pytest folder is not reachable by that user). Otherwise
they run as the current user. The server listens on a free loopback port and on a unix socket
in its folder; authentication is ``trust`` for the one local superuser ``micropen``: a test
fixture, never a deployment (docs/fleet.md "PostgreSQL setup" has that).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from .errors import FleetError
from .mosquitto import free_port

__all__ = ["LocalPostgres", "find_postgres"]

SUPERUSER = "micropen"


def find_postgres() -> Path | None:
    """The folder with initdb, pg_ctl and postgres (PATH, then Debian's versioned folders)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True):
        if os.access(os.path.join(folder, "initdb"), os.X_OK):
            return Path(folder)
    return None


def _version(folder: str) -> int:
    try:
        return int(Path(folder).parent.name)
    except ValueError:
        return 0


class LocalPostgres:
    """One PostgreSQL server in a temp folder. ``with LocalPostgres() as pg: pg.dsn("x")``."""

    def __init__(self, *, user: str = "nobody", fsync: bool = True) -> None:
        bindir = find_postgres()
        if bindir is None:
            raise FleetError(
                "PostgreSQL is not installed; install it (apt-get install postgresql) or give "
                "--db postgresql://… of an existing server"
            )
        self.bindir = bindir
        self.fsync = fsync
        self._as: list[str] = []
        self.root = Path(tempfile.mkdtemp(prefix="micropen-pg-"))
        if os.geteuid() == 0:
            entry = pwd.getpwnam(user)
            os.chmod(self.root, 0o755)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._as = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", user, "--"]
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = free_port()
        self._initdb()

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        command = [*self._as, *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise FleetError(
                f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr.strip()[-800:]}"
                f"\n{self.log_tail()}"
            )

    def _initdb(self) -> None:
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
            "--auth=trust", "-E", "UTF8", "--locale=C", "--no-instructions",
            *([] if self.fsync else ["-N"]),
        )  # fmt: skip
        options = [
            f"port = {self.port}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.root}'",
            "max_connections = 100",
            "shared_buffers = 32MB",
        ]
        if not self.fsync:  # tests: a clean shutdown keeps everything; a crash may not
            options += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# micropen LocalPostgres\n" + "\n".join(options) + "\n")

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def start(self, timeout: float = 30.0) -> None:
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path),
            "-w", "-t", str(int(timeout)), "start", timeout=timeout + 5,
        )  # fmt: skip

    def stop(self, timeout: float = 30.0, mode: str = "fast") -> None:
        """Stop the server (``fast``: clean shutdown; ``immediate``: as a crash would)."""
        if not (self.data / "postmaster.pid").exists():
            return
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
            "-t", str(int(timeout)), "stop", timeout=timeout + 5,
        )  # fmt: skip

    def restart(self, timeout: float = 30.0) -> None:
        self.stop(timeout)
        self.start(timeout)

    def create_database(self, name: str) -> str:
        """A new empty database; its DSN."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def cleanup(self) -> None:
        """Stop the server and delete its folder."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no postgres log)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()
