"""Storage records of the warehouse (SQLAlchemy 2): shipments and idempotency keys.

Exactly-once lives here, in the database, so it holds across server processes:

- ``idempotency_keys`` holds one row per ``(scope, idempotency_key)`` under a unique
  constraint. A request claims its key by INSERTing an ``in_flight`` row that carries a
  random claim token and a lease.
- A request whose INSERT hits the constraint reads the row: ``completed`` with the same
  fingerprint is a replay, with another fingerprint a mismatch; ``in_flight`` with a live
  lease is in flight; an expired lease (its request crashed) is taken over by a
  compare-and-set UPDATE on the old claim token, so only one request can take it.
- :meth:`Storage.complete` inserts the shipment and stores the response in ONE
  transaction whose UPDATE matches only while the claim token is still the caller's: a
  request whose claim was taken over commits nothing.
- A refused request releases its claim (DELETE by claim token): nothing stays stored
  under the key, so the same key succeeds once the cause is fixed.
- ``shipments`` holds at most one shipment per ``(scope, idempotency_key)``: a unique
  index, kept for good. Retention purges stored responses, never shipments, so a key
  whose response was purged is still answered from its shipment (:meth:`Storage.shipment_for_key`).
- :meth:`Storage.void` turns a key into a ``voided`` tombstone, for good (retention never
  purges it), and cancels its shipment in the same transaction. It clears the claim token,
  so an in-flight request's completion matches nothing and rolls its shipment back; a
  voided key is never claimed or taken over again.
- The scope is the client's id, not its token: a client's tokens can rotate without
  resetting its keys. :meth:`Storage.migrate` moves rows of the older, per-token scopes
  (the SHA-256 of a token) to their client, and refuses to go on while rows remain under
  a per-token scope that no token it was given maps to.

Every transaction starts with its write, and reads run outside transactions: SQLite then
takes its write lock up front (waiting on ``busy_timeout``) instead of failing to upgrade
a read lock. Works on SQLite files and on PostgreSQL (psycopg2). The schema comes from the
Alembic revisions of :mod:`warehouse_mock.migrations`; the models here must match them.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast

import sqlalchemy as sa
from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
    select,
    update,
)
from sqlalchemy.engine import CursorResult, Dialect, Engine, Result, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

logger = logging.getLogger(__name__)

IN_FLIGHT: Final = "in_flight"
COMPLETED: Final = "completed"
VOIDED: Final = "voided"
SHIPMENT_CREATED: Final = "created"
SHIPMENT_CANCELLED: Final = "cancelled"
SQLITE_BUSY_TIMEOUT_SECONDS: Final = 30
_SCHEMA_LOCK_ID: Final = 0x5748_4D4F  # "WHMO": serialises migrations on PostgreSQL
_CLAIM_ATTEMPTS: Final = 5
# A scope of the per-token era: the SHA-256 of a token, in hex.
_LEGACY_SCOPE: Final = re.compile(r"[0-9a-f]{64}")


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend (SQLite stores it naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store ``value`` in UTC; naive datetimes are refused."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Read a stored value back as an aware UTC datetime."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Base of the warehouse's tables."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: UTCDateTime()}


class ShipmentRecord(Base):
    """A shipment, kept for good (retention applies to stored responses only)."""

    __tablename__ = "shipments"
    # An index rather than a table constraint: the baseline migration adds it to databases
    # made before it existed.
    __table_args__ = (
        Index("uq_shipments_scope_idempotency_key", "scope", "idempotency_key", unique=True),
    )

    shipment_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    scope: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    order_id: Mapped[str] = mapped_column(String(64), index=True)
    line_id: Mapped[str] = mapped_column(String(64))
    sku: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int]
    ship_to: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    cancelled_at: Mapped[datetime | None]


class IdempotencyRecord(Base):
    """The claim on an idempotency key, then the response stored under it."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("scope", "idempotency_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    claim_token: Mapped[str | None] = mapped_column(String(32))
    lease_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    completed_at: Mapped[datetime | None] = mapped_column(index=True)
    response_status: Mapped[int | None]
    response_body: Mapped[str | None] = mapped_column(Text)
    shipment_id: Mapped[str | None] = mapped_column(
        ForeignKey("shipments.shipment_id"), unique=True
    )
    voided_at: Mapped[datetime | None]
    void_reason: Mapped[str | None] = mapped_column(String(500))


@dataclass(frozen=True)
class Claim:
    """This request holds the key: it may create the shipment.

    Attributes:
        scope: The client scope of the key.
        idempotency_key: The key.
        token: The claim token that :meth:`Storage.complete` and :meth:`Storage.release`
            match on.
        took_over: The claim was taken over from a request whose lease expired.
    """

    scope: str
    idempotency_key: str
    token: str
    took_over: bool = False


@dataclass(frozen=True)
class Replay:
    """The key completed with the same body: answer the stored response."""

    status_code: int
    body: str
    shipment_id: str


@dataclass(frozen=True)
class Mismatch:
    """The key is (or was) used with another body."""


@dataclass(frozen=True)
class InFlight:
    """Another request holds the key and its lease has not expired."""

    lease_expires_at: datetime | None


@dataclass(frozen=True)
class Voided:
    """The key was voided: nothing is ever created under it again."""

    voided_at: datetime | None


ClaimResult = Claim | Replay | Mismatch | InFlight | Voided


@dataclass(frozen=True)
class VoidOutcome:
    """A voided key and what became of its shipment.

    Attributes:
        idempotency_key: The key.
        voided_at: When it was first voided.
        reason: Why, as given by the first void.
        shipment: The shipment made under the key (now cancelled), or None.
        first: This call voided the key (False: it was voided already).
    """

    idempotency_key: str
    voided_at: datetime
    reason: str
    shipment: ShipmentRecord | None
    first: bool


class ClaimLost(Exception):
    """The claim was taken over (its lease expired) before the work committed."""


class KeyVoided(Exception):
    """The key was voided while the request held its claim; nothing was written."""


class ShipmentExists(Exception):
    """A shipment exists under the key already; nothing was written."""


class ScopeMergeError(RuntimeError):
    """Rows of a client's older per-token scopes cannot be merged into the client's scope."""


class LegacyScopeError(RuntimeError):
    """Rows remain under a per-token scope that no configured or retired token maps to."""


@dataclass(frozen=True, kw_only=True)
class NewShipment:
    """The fields of a shipment to insert."""

    shipment_id: str
    order_id: str
    line_id: str
    sku: str
    quantity: int
    ship_to: dict[str, Any]
    status: str
    created_at: datetime


def _rowcount(result: Result[Any]) -> int:
    """Rows matched by an UPDATE or DELETE (``session.execute`` types them as a plain Result)."""
    return int(cast(CursorResult[Any], result).rowcount)


def _table(model: type[Base]) -> sa.Table:
    return cast(sa.Table, model.__table__)


def create_db_engine(database_url: str) -> Engine:
    """An engine for ``database_url`` tuned for concurrent requests.

    SQLite gets WAL (readers do not block the writer), a busy timeout (writers queue
    instead of failing) and foreign keys; PostgreSQL gets pre-ping for restarted servers.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            pool_size=10,
            max_overflow=30,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=30)


class Storage:
    """The warehouse database: schema, claims, shipments and stored responses.

    Args:
        database_url: SQLAlchemy URL of the database.
    """

    def __init__(self, database_url: str) -> None:
        self.engine = create_db_engine(database_url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(
        self,
        token_scopes: Mapping[str, str] | None = None,
        *,
        client_ids: Collection[str] | None = None,
    ) -> None:
        """Upgrade the schema to the latest revision and move per-token rows to their client.

        Runs in one transaction, under an advisory lock on PostgreSQL: several processes
        may start together, the first upgrades and the others then find nothing to do.

        Args:
            token_scopes: Per-token scopes (the SHA-256 of a client's current or retired
                token) mapped to the client's id: their shipments and keys move to the
                client's scope, so a database made before scopes were per client keeps
                its idempotency.
            client_ids: The configured clients. When given, rows left under a per-token
                scope that ``token_scopes`` does not map are an error rather than
                invisible to every client.

        Raises:
            ScopeMergeError: A client used one key under two of its tokens before, so its
                scopes cannot merge; the message names the key.
            LegacyScopeError: Rows remain under a per-token scope no token maps to.
        """
        # Imported here: the migrations' env.py imports this module's models.
        from warehouse_mock.migrations import upgrade_to_head

        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Two processes starting together would race on the DDL.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _SCHEMA_LOCK_ID})
            upgrade_to_head(conn)
            for old, new in (token_scopes or {}).items():
                self._merge_scope(conn, old, new)
            if client_ids is not None:
                self._refuse_orphaned_scopes(conn, set(client_ids))

    @staticmethod
    def _merge_scope(conn: sa.Connection, old: str, new: str) -> None:
        if old == new:
            return
        for table in (_table(ShipmentRecord), _table(IdempotencyRecord)):
            try:
                with conn.begin_nested():
                    moved = conn.execute(
                        update(table).where(table.c.scope == old).values(scope=new)
                    ).rowcount
            except IntegrityError:
                raise ScopeMergeError(
                    f"client {new!r} used the same Idempotency-Key under two of its tokens "
                    f"before keys were scoped per client ({table.name}); resolve by hand"
                ) from None
            if moved:
                logger.warning("moved %d %s rows to the scope of client %r", moved, table.name, new)

    @staticmethod
    def _refuse_orphaned_scopes(conn: sa.Connection, client_ids: set[str]) -> None:
        """Raise while rows remain under a per-token scope; warn about removed clients."""
        counts: dict[str, int] = {}
        for table in (_table(ShipmentRecord), _table(IdempotencyRecord)):
            query = select(table.c.scope, sa.func.count()).group_by(table.c.scope)
            for scope, count in conn.execute(query):
                if scope not in client_ids:
                    counts[scope] = counts.get(scope, 0) + int(count)
        legacy = {s: n for s, n in counts.items() if _LEGACY_SCOPE.fullmatch(s)}
        for scope, count in counts.items():
            if scope not in legacy:
                logger.warning(
                    "%d rows belong to client %r, which is no longer configured: they stay, "
                    "invisible to every client until it is configured again",
                    count,
                    scope,
                )
        if legacy:
            listed = ", ".join(f"{s[:12]}... ({n} rows)" for s, n in sorted(legacy.items()))
            raise LegacyScopeError(
                f"{sum(legacy.values())} rows are stored under per-token scopes of tokens that "
                f"are neither configured nor retired: {listed}. They were made before keys "
                "were scoped per client, with tokens rotated out since; left alone, their "
                "keys would ship again. Fix: set WAREHOUSE_RETIRED_TOKENS to the old tokens, "
                'for example {"default": ["<old token>"]}, and start again: their rows move '
                "to that client."
            )

    def dispose(self) -> None:
        """Close the connection pool."""
        self.engine.dispose()

    def ping(self) -> None:
        """Run a trivial query; raises if the database is unreachable."""
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def claim(
        self,
        *,
        scope: str,
        idempotency_key: str,
        fingerprint: str,
        lease_seconds: float,
        now: datetime,
    ) -> ClaimResult:
        """Claim ``idempotency_key`` for a request, or say why not.

        Args:
            scope: The client scope (a digest of its token).
            idempotency_key: The key from the request.
            fingerprint: Digest of the canonical request body.
            lease_seconds: How long the claim blocks the key if never completed.
            now: The current time (aware).

        Returns:
            :class:`Claim` when this request may proceed, else :class:`Voided`,
            :class:`Replay`, :class:`Mismatch` or :class:`InFlight`.
        """
        lease_expires_at = now + timedelta(seconds=lease_seconds)
        for _ in range(_CLAIM_ATTEMPTS):
            token = secrets.token_hex(16)
            try:
                with self._sessions.begin() as session:
                    session.add(
                        IdempotencyRecord(
                            scope=scope,
                            idempotency_key=idempotency_key,
                            fingerprint=fingerprint,
                            state=IN_FLIGHT,
                            claim_token=token,
                            lease_expires_at=lease_expires_at,
                            created_at=now,
                        )
                    )
                return Claim(scope, idempotency_key, token)
            except IntegrityError:
                pass  # the key exists: see what holds it

            with self._sessions() as session:
                record = session.scalars(
                    select(IdempotencyRecord).where(
                        IdempotencyRecord.scope == scope,
                        IdempotencyRecord.idempotency_key == idempotency_key,
                    )
                ).one_or_none()
            if record is None:
                continue  # released or purged since our INSERT: claim again
            if record.state == VOIDED:
                return Voided(record.voided_at)
            if record.state == COMPLETED:
                if record.fingerprint != fingerprint:
                    return Mismatch()
                status, body, shipment_id = (
                    record.response_status,
                    record.response_body,
                    record.shipment_id,
                )
                if status is None or body is None or shipment_id is None:
                    raise RuntimeError(f"completed idempotency key {record.id} has no response")
                return Replay(status, body, shipment_id)
            if record.lease_expires_at is not None and record.lease_expires_at > now:
                if record.fingerprint != fingerprint:
                    return Mismatch()
                return InFlight(record.lease_expires_at)
            if self._take_over(record, token, fingerprint, lease_expires_at, now):
                return Claim(scope, idempotency_key, token, took_over=True)
            # Another request changed the row first (took it over or completed it): look again.
        return InFlight(None)

    def _take_over(
        self,
        record: IdempotencyRecord,
        token: str,
        fingerprint: str,
        lease_expires_at: datetime,
        now: datetime,
    ) -> bool:
        """Compare-and-set the expired claim of ``record`` to ``token``."""
        with self._sessions.begin() as session:
            result = session.execute(
                update(IdempotencyRecord)
                .where(
                    IdempotencyRecord.id == record.id,
                    IdempotencyRecord.state == IN_FLIGHT,
                    IdempotencyRecord.claim_token == record.claim_token,
                    IdempotencyRecord.lease_expires_at <= now,
                )
                .values(
                    claim_token=token,
                    fingerprint=fingerprint,
                    lease_expires_at=lease_expires_at,
                    created_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            return _rowcount(result) == 1

    def complete(
        self,
        *,
        claim: Claim,
        shipment: NewShipment,
        response_status: int,
        response_body: str,
        now: datetime,
    ) -> None:
        """Insert the shipment and store its response, in one transaction.

        Raises:
            KeyVoided: The key was voided meanwhile; nothing was written.
            ClaimLost: The claim is no longer ours; nothing was written.
            ShipmentExists: A shipment exists under the key already; nothing was written.
        """
        try:
            self._complete(
                claim=claim,
                shipment=shipment,
                response_status=response_status,
                response_body=response_body,
                now=now,
            )
        except ClaimLost:
            if self._is_voided(claim.scope, claim.idempotency_key):
                raise KeyVoided(claim.idempotency_key) from None
            raise
        except IntegrityError as exc:
            if self._is_voided(claim.scope, claim.idempotency_key):
                raise KeyVoided(claim.idempotency_key) from None
            if self.shipment_for_key(claim.scope, claim.idempotency_key) is None:
                raise
            raise ShipmentExists(claim.idempotency_key) from exc

    def _is_voided(self, scope: str, idempotency_key: str) -> bool:
        record = self.key_record(scope, idempotency_key)
        return record is not None and record.state == VOIDED

    def key_record(self, scope: str, idempotency_key: str) -> IdempotencyRecord | None:
        """The row of ``idempotency_key`` in ``scope`` (claim, stored response or
        tombstone), or None."""
        with self._sessions() as session:
            return session.scalars(
                select(IdempotencyRecord).where(
                    IdempotencyRecord.scope == scope,
                    IdempotencyRecord.idempotency_key == idempotency_key,
                )
            ).one_or_none()

    def _complete(
        self,
        *,
        claim: Claim,
        shipment: NewShipment,
        response_status: int,
        response_body: str,
        now: datetime,
    ) -> None:
        with self._sessions.begin() as session:
            session.add(
                ShipmentRecord(
                    shipment_id=shipment.shipment_id,
                    scope=claim.scope,
                    idempotency_key=claim.idempotency_key,
                    order_id=shipment.order_id,
                    line_id=shipment.line_id,
                    sku=shipment.sku,
                    quantity=shipment.quantity,
                    ship_to=shipment.ship_to,
                    status=shipment.status,
                    created_at=shipment.created_at,
                )
            )
            session.flush()
            result = session.execute(
                update(IdempotencyRecord)
                .where(
                    IdempotencyRecord.scope == claim.scope,
                    IdempotencyRecord.idempotency_key == claim.idempotency_key,
                    IdempotencyRecord.state == IN_FLIGHT,
                    IdempotencyRecord.claim_token == claim.token,
                )
                .values(
                    state=COMPLETED,
                    claim_token=None,
                    lease_expires_at=None,
                    completed_at=now,
                    response_status=response_status,
                    response_body=response_body,
                    shipment_id=shipment.shipment_id,
                )
                .execution_options(synchronize_session=False)
            )
            if _rowcount(result) != 1:
                # Taken over or voided: rolls the shipment back too.
                raise ClaimLost(claim.idempotency_key)

    def void(self, *, scope: str, idempotency_key: str, reason: str, now: datetime) -> VoidOutcome:
        """Void ``idempotency_key`` for good and cancel its shipment, if any.

        One transaction sets the key's row to ``voided`` (clearing any claim token, so an
        in-flight request's completion matches nothing and rolls back) or, when the key
        has no row, inserts the tombstone; and it cancels the shipment under the key. A
        claim INSERT racing the tombstone's INSERT meets the unique constraint: if the
        claim wins, the next round voids its row. Voiding a voided key changes nothing.

        Args:
            scope: The client scope.
            idempotency_key: The key to void.
            reason: Why, kept with the tombstone.
            now: The current time (aware).

        Returns:
            The tombstone (the first void's time and reason) and the shipment, if any.
        """
        for _ in range(_CLAIM_ATTEMPTS):
            try:
                with self._sessions.begin() as session:
                    result = session.execute(
                        update(IdempotencyRecord)
                        .where(
                            IdempotencyRecord.scope == scope,
                            IdempotencyRecord.idempotency_key == idempotency_key,
                            IdempotencyRecord.state != VOIDED,
                        )
                        .values(
                            state=VOIDED,
                            claim_token=None,
                            lease_expires_at=None,
                            voided_at=now,
                            void_reason=reason,
                        )
                        .execution_options(synchronize_session=False)
                    )
                    if _rowcount(result) == 0:
                        # No row, or voided already: the INSERT tells which.
                        session.add(
                            IdempotencyRecord(
                                scope=scope,
                                idempotency_key=idempotency_key,
                                fingerprint="",
                                state=VOIDED,
                                created_at=now,
                                voided_at=now,
                                void_reason=reason,
                            )
                        )
                        session.flush()
                    # A shipment may exist with no key row left (its response was purged).
                    session.execute(
                        update(ShipmentRecord)
                        .where(
                            ShipmentRecord.scope == scope,
                            ShipmentRecord.idempotency_key == idempotency_key,
                            ShipmentRecord.status != SHIPMENT_CANCELLED,
                        )
                        .values(status=SHIPMENT_CANCELLED, cancelled_at=now)
                        .execution_options(synchronize_session=False)
                    )
                first = True
            except IntegrityError:
                first = False  # voided already, or a claim committed in between
            record = self.key_record(scope, idempotency_key)
            if record is None or record.state != VOIDED:
                continue  # a claim won the INSERT: void its row in the next round
            if record.voided_at is None or record.void_reason is None:
                raise RuntimeError(f"voided idempotency key {record.id} has no time or reason")
            logger.warning(
                "key %r voided%s: %s",
                idempotency_key,
                "" if first else " (already)",
                record.void_reason,
            )
            return VoidOutcome(
                idempotency_key=idempotency_key,
                voided_at=record.voided_at,
                reason=record.void_reason,
                shipment=self.shipment_for_key(scope, idempotency_key),
                first=first,
            )
        raise RuntimeError(f"could not void key {idempotency_key!r}: it kept changing")

    def release(self, *, claim: Claim) -> bool:
        """Drop an unfinished claim so the key is free again; False if it was not ours."""
        with self._sessions.begin() as session:
            result = session.execute(
                sa.delete(IdempotencyRecord)
                .where(
                    IdempotencyRecord.scope == claim.scope,
                    IdempotencyRecord.idempotency_key == claim.idempotency_key,
                    IdempotencyRecord.state == IN_FLIGHT,
                    IdempotencyRecord.claim_token == claim.token,
                )
                .execution_options(synchronize_session=False)
            )
            return _rowcount(result) == 1

    def get_shipment(self, shipment_id: str) -> ShipmentRecord | None:
        """The shipment ``shipment_id``, or None."""
        with self._sessions() as session:
            return session.get(ShipmentRecord, shipment_id)

    def shipment_for_key(self, scope: str, idempotency_key: str) -> ShipmentRecord | None:
        """The shipment created under ``idempotency_key`` in ``scope``, or None."""
        with self._sessions() as session:
            return session.scalars(
                select(ShipmentRecord).where(
                    ShipmentRecord.scope == scope,
                    ShipmentRecord.idempotency_key == idempotency_key,
                )
            ).one_or_none()

    def find_shipments(
        self,
        *,
        scope: str | None,
        order_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> list[ShipmentRecord]:
        """The shipments matching every filter given, oldest first.

        Args:
            scope: Only this client's shipments; None for every client's (admin).
            order_id: Only this order's.
            idempotency_key: Only the one created under this key.
        """
        query = select(ShipmentRecord)
        if scope is not None:
            query = query.where(ShipmentRecord.scope == scope)
        if order_id is not None:
            query = query.where(ShipmentRecord.order_id == order_id)
        if idempotency_key is not None:
            query = query.where(ShipmentRecord.idempotency_key == idempotency_key)
        with self._sessions() as session:
            return list(
                session.scalars(
                    query.order_by(ShipmentRecord.created_at, ShipmentRecord.shipment_id)
                )
            )

    def purge_expired(self, *, older_than: datetime) -> int:
        """Delete stored responses completed before ``older_than``, and claims abandoned
        before it; shipments and voided keys stay. Returns how many keys were freed."""
        with self._sessions.begin() as session:
            result = session.execute(
                sa.delete(IdempotencyRecord)
                .where(
                    sa.or_(
                        sa.and_(
                            IdempotencyRecord.state == COMPLETED,
                            IdempotencyRecord.completed_at < older_than,
                        ),
                        sa.and_(
                            IdempotencyRecord.state == IN_FLIGHT,
                            IdempotencyRecord.lease_expires_at < older_than,
                        ),
                    )
                )
                .execution_options(synchronize_session=False)
            )
            return _rowcount(result)
