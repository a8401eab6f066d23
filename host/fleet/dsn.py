"""The fleet database's URL, checked the same way wherever one is given (``--db``,
``MICROPEN_REGISTRY``): a ``postgresql://`` URL without a password in it — a password in a URL
ends up in logs, shell histories and ``ps``; libpq reads it from ``PGPASSWORD`` or ``~/.pgpass``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .errors import BrokerConfigError

__all__ = ["check_dsn"]


def check_dsn(dsn: str, what: str = "--db") -> str:
    """``dsn`` when usable; BrokerConfigError (an InvalidInput: exit 2) naming ``what``."""
    try:
        parts = urlsplit(dsn)
        parts.port  # noqa: B018 - parsing the port raises for a bad one
    except ValueError as exc:
        raise BrokerConfigError(f"{what} {dsn!r}: {exc}; use postgresql://USER@HOST/DB") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise BrokerConfigError(
            f"{what} {dsn!r} is not a postgresql:// URL; use postgresql://USER@HOST:PORT/DB"
        )
    if parts.password is not None:
        raise BrokerConfigError(
            f"do not put the database password in {what} (it ends up in logs and `ps`); use "
            "PGPASSWORD or a ~/.pgpass file"
        )
    return dsn
