"""Engine, sessions and the column types shared by every table."""
from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal

from sqlalchemy import DateTime, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.types import TypeDecorator
from sqlmodel import create_engine

from models.settings import get_settings


class UtcDateTime(TypeDecorator):
    """Stores aware datetimes as UTC and gives them back aware (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: time must be tz-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # Transactions are begun by _sqlite_begin_immediate, not by the driver.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets readers (the API, the UI) go on while a batch writes; busy_timeout queues writers.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    # A mass cancellation touches several indexes per claim: keep them in memory (64 MiB page cache).
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def _sqlite_begin_immediate(conn) -> None:
    # A step reads a claim, then writes it. A deferred SQLite transaction that read before another
    # writer committed cannot upgrade to a write (SQLITE_BUSY at once); IMMEDIATE queues writers up
    # front, and readers still go on under WAL.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


# A dead or unreachable server must fail a request in seconds, not hang it: libpq's connect
# timeout (it counts whole seconds, at least 2) and how long a request waits for a pooled connection.
PG_CONNECT_TIMEOUT_S = 3
POOL_TIMEOUT_S = 5


def make_engine(url: str | None = None, **kwargs) -> Engine:
    url = url or get_settings().database_url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"check_same_thread": False})
    if url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S, **kwargs.get("connect_args", {})}
        kwargs.setdefault("pool_timeout", POOL_TIMEOUT_S)
        # A server restarted under a running API leaves dead pooled connections: test each on checkout.
        kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
    return engine


@lru_cache(maxsize=8)
def get_engine(url: str | None = None) -> Engine:
    return make_engine(url)


# --- database trouble, told apart once for the API (status codes) and the CLI (one line) ------------

DbTrouble = Literal["unavailable", "conflict", "invalid"]

# PostgreSQL SQLSTATEs of a write that lost a race: serialization_failure, deadlock_detected, lock_not_available.
_PG_CONFLICT_STATES = {"40001", "40P01", "55P03"}
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")


def db_trouble(exc: BaseException) -> DbTrouble | None:
    """What a database exception means for the caller, or None when it is a bug of ours.

    - "conflict": another writer got there first (a unique index, a lock, a serialization failure):
      the request may be repeated; nothing was written.
    - "invalid": the database refused a value (an integer out of range, a NUL in text).
    - "unavailable": the database cannot be reached or used right now (refused or timed-out
      connection, dropped connection, pool exhausted, unopenable SQLite file).
    """
    if isinstance(exc, OverflowError):  # sqlite3: an integer beyond 64 bits, before any SQL runs
        return "invalid"
    if isinstance(exc, (sa_exc.DisconnectionError, sa_exc.TimeoutError)):
        return "unavailable"
    if isinstance(exc, sa_exc.IntegrityError):
        return "conflict"
    if isinstance(exc, sa_exc.DataError):
        return "invalid"
    if isinstance(exc, sa_exc.DBAPIError):
        if getattr(exc.orig, "sqlstate", None) in _PG_CONFLICT_STATES:
            return "conflict"
        if any(marker in str(exc.orig).lower() for marker in _SQLITE_BUSY):
            return "conflict"
        if exc.connection_invalidated or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return "unavailable"
    return None


def safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return "<invalid database URL>"
