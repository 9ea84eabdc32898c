"""Database engine and sessions (SQLAlchemy 2.0). One engine per app; sessions are short-lived."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, sessionmaker


class Base(DeclarativeBase):
    """Declarative base of every table the service owns."""


def normalise_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever driver the URL names (``postgresql://`` included)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, connect_timeout_s: int = 3) -> Engine:
    url = normalise_url(url)
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        _configure_sqlite(engine)
        return engine
    connect_args: dict[str, object] = {}
    if backend == "postgresql":
        # A writer never waits on the audit chain-head lock for longer than this: the
        # request gets 503 rather than hanging behind a stuck transaction.
        connect_args = {"connect_timeout": connect_timeout_s, "options": "-c lock_timeout=5000"}
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        pool_timeout=connect_timeout_s,
        connect_args=connect_args,
    )


def _configure_sqlite(engine: Engine) -> None:
    """WAL, a busy timeout, and BEGIN IMMEDIATE so that writers serialise instead of failing.

    pysqlite opens transactions lazily and only as readers; the audit chain needs the write
    lock before it reads the chain head (SQLAlchemy docs, "Serializable isolation /
    Savepoints / Transactional DDL" for pysqlite).
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        if conn.get_execution_options().get(SNAPSHOT_OPTION):
            conn.exec_driver_sql("BEGIN")  # a reader: WAL gives it a snapshot, no write lock
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_sessionmaker(engine: Engine) -> sessionmaker:
    return sessionmaker(bind=engine, expire_on_commit=False)


SNAPSHOT_OPTION = "wardround_snapshot"


def make_snapshot_sessionmaker(engine: Engine) -> sessionmaker:
    """Read-only sessions whose statements all see one snapshot of the database.

    PostgreSQL: ``REPEATABLE READ, READ ONLY`` transactions. SQLite: a deferred ``BEGIN``
    (in WAL mode a reader keeps the snapshot of its first read until it ends, and takes
    no write lock, so readers never hold up the audit writers).
    """
    options: dict[str, object] = {SNAPSHOT_OPTION: True}
    if engine.dialect.name == "postgresql":
        options |= {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    return sessionmaker(bind=engine.execution_options(**options), expire_on_commit=False)
