"""The ledger's tables, their migrations (Alembic, in ``migrations/``) and its engines."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite

from shipping.ledger.models import Amendment, LineState, OrderState, RunRole, TryOutcome

logger = logging.getLogger(__name__)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """An aware UTC datetime on every dialect (SQLite stores it naive, in UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the ledger's clock must return timezone-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _state_type(enum: type[StrEnum], name: str) -> sa.Enum:
    # VARCHAR plus a CHECK rather than a native PostgreSQL enum: adding a state later is
    # then a plain constraint change on both dialects.
    return sa.Enum(
        enum,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        validate_strings=True,
        values_callable=lambda members: [m.value for m in members],
    )


metadata: Final = sa.MetaData(
    naming_convention={
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    }
)

_JSON: Final = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)

orders: Final = sa.Table(
    "orders",
    metadata,
    sa.Column("order_id", sa.String(64), primary_key=True),
    sa.Column("customer_id", sa.String(64), nullable=False),
    sa.Column("ship_to", _JSON, nullable=True),  # None for rejected orders
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("state", _state_type(OrderState, "order_state"), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("shipped_at", UTCDateTime, nullable=True),
    sa.Column("owner_run_id", sa.String(250), nullable=True),
)

order_runs: Final = sa.Table(
    "order_runs",
    metadata,
    sa.Column(
        "order_id",
        sa.String(64),
        sa.ForeignKey(orders.c.order_id, ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("role", _state_type(RunRole, "run_role"), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
)

order_lines: Final = sa.Table(
    "order_lines",
    metadata,
    sa.Column(
        "order_id",
        sa.String(64),
        sa.ForeignKey(orders.c.order_id, ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("line_id", sa.String(64), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("idempotency_key", sa.String(255), nullable=False, unique=True),
    sa.Column("state", _state_type(LineState, "line_state"), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("shipment_id", sa.String(255), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # The last error's class name and finality (shipping.errors.classify): operators'
    # commands read the family from them, never from the message.
    sa.Column("error_class", sa.String(64), nullable=True),
    sa.Column("error_final", sa.Boolean, nullable=True),
    # The fence: each fix adds one to the revision and moves the line to a new key; the
    # old key waits in void_key until the warehouse confirms it voided.
    sa.Column("revision", sa.Integer, nullable=False, server_default="0"),
    sa.Column("void_key", sa.String(255), nullable=True),
    sa.UniqueConstraint("order_id", "position"),
    sa.CheckConstraint("quantity > 0", name="quantity_positive"),
    sa.CheckConstraint("attempts >= 0", name="attempts_not_negative"),
)

line_tries: Final = sa.Table(
    "line_tries",
    metadata,
    sa.Column("order_id", sa.String(64), primary_key=True),
    sa.Column("line_id", sa.String(64), primary_key=True),
    sa.Column("try_number", sa.Integer, primary_key=True),
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("outcome", _state_type(TryOutcome, "try_outcome"), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.ForeignKeyConstraint(
        ["order_id", "line_id"],
        [order_lines.c.order_id, order_lines.c.line_id],
        ondelete="CASCADE",
    ),
    sa.CheckConstraint("requests >= 0", name="requests_not_negative"),
)

line_amendments: Final = sa.Table(
    "line_amendments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.String(64), nullable=False),
    sa.Column("line_id", sa.String(64), nullable=False),
    sa.Column("action", _state_type(Amendment, "amendment"), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("old_sku", sa.String(64), nullable=False),
    sa.Column("old_quantity", sa.Integer, nullable=False),
    sa.Column("new_sku", sa.String(64), nullable=True),
    sa.Column("new_quantity", sa.Integer, nullable=True),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.Column("void_key", sa.String(255), nullable=True),
    sa.Column("voided_shipment_id", sa.String(255), nullable=True),
    sa.Column("voided_at", UTCDateTime, nullable=True),
    sa.ForeignKeyConstraint(
        ["order_id", "line_id"],
        [order_lines.c.order_id, order_lines.c.line_id],
        ondelete="CASCADE",
    ),
    sa.Index(None, "order_id", "line_id"),
)

# Serializes concurrent migrations on PostgreSQL (any constant shared by callers).
_SCHEMA_LOCK_KEY: Final = 0x5348495050494E47  # "SHIPPING"
_MIGRATIONS: Final = Path(__file__).with_name("migrations")


def create_schema(engine: sa.Engine) -> None:
    """Bring the ledger's database to the latest schema (Alembic ``upgrade head``).

    Safe to call again and concurrently: on PostgreSQL an advisory lock serializes
    callers, and every migration runs in the caller's one transaction. A database made
    before migrations (no ``alembic_version`` table) is taken from where it stands: the
    first revision creates what is missing.

    Args:
        engine: An engine on the ledger's database.
    """
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # A SQLite table is changed by copying it: with foreign keys on, dropping the
            # old copy would cascade into the tables that refer to it. The pragma only
            # takes effect outside a transaction, so it is set before SQLAlchemy begins.
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = OFF")  # type: ignore[union-attr]
        try:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
        finally:
            if conn.dialect.name == "sqlite":
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = ON")  # type: ignore[union-attr]


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy emit BEGIN itself (see _on_sqlite_begin) instead of pysqlite's own
    # implicit, deferred transactions.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys = ON")
        # WAL lets readers run beside the writer; NORMAL sync is durable enough with WAL.
        # The mode belongs to the file and persists, so only the first connection sets it.
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:
                cursor.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError:
                # A new file with several first connections at once: another one is
                # switching it; this connection follows the file's mode.
                logger.debug("SQLite journal mode left to a concurrent connection")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _on_sqlite_begin(conn: sa.Connection) -> None:
    # Take the write lock at BEGIN: a deferred transaction that reads and then writes fails
    # with SQLITE_BUSY at once when another writer got in between, without waiting.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def engine_from_url(url: str | sa.URL, **kwargs: Any) -> sa.Engine:
    """An engine for the ledger on a ``sqlite:///`` or ``postgresql+psycopg2://`` URL.

    SQLite gets foreign keys, WAL and transactions that take the write lock up front, so
    concurrent writers wait for each other (up to the busy timeout) instead of failing.

    Args:
        url: The database URL.
        **kwargs: Passed on to :func:`sqlalchemy.create_engine`.

    Raises:
        ValueError: The URL names a database the ledger does not support.
    """
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        # Wait up to 30 s for another writer's lock instead of failing at once.
        kwargs["connect_args"] = {"timeout": 30, **kwargs.get("connect_args", {})}
        engine = sa.create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
    elif backend == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        engine = sa.create_engine(parsed, **kwargs)
    else:
        raise ValueError(
            f"ledger database URL {parsed.render_as_string()!r}: "
            f"unsupported backend {backend!r} (use sqlite or postgresql)"
        )
    return engine


def upsert(conn: sa.Connection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can say ON CONFLICT, in the dialect of ``conn``."""
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"the ledger runs on PostgreSQL and SQLite, not {name}")
