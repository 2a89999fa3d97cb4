"""Tests for the storage records: claims, take-over, completion, release and purge.

Each test runs on a SQLite file and on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from warehouse_mock.storage import (
    SHIPMENT_CANCELLED,
    VOIDED,
    Claim,
    ClaimLost,
    ClaimResult,
    InFlight,
    KeyVoided,
    LegacyScopeError,
    Mismatch,
    NewShipment,
    Replay,
    ShipmentExists,
    Storage,
    Voided,
)

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
SCOPE = "a" * 64
KEY = "ORD-1:1"
FINGERPRINT = "f" * 64


def claim_at(
    storage: Storage, now: datetime, *, fingerprint: str = FINGERPRINT, lease: float = 30
) -> ClaimResult:
    """Claim the test key at ``now``."""
    return storage.claim(
        scope=SCOPE,
        idempotency_key=KEY,
        fingerprint=fingerprint,
        lease_seconds=lease,
        now=now,
    )


def complete(storage: Storage, claim: Claim, now: datetime, shipment_id: str = "shp_1") -> None:
    """Complete ``claim`` with a shipment and a stored 201."""
    storage.complete(
        claim=claim,
        shipment=NewShipment(
            shipment_id=shipment_id,
            order_id="ORD-1",
            line_id="1",
            sku="MUG",
            quantity=1,
            ship_to={"name": "A"},
            status="created",
            created_at=now,
        ),
        response_status=201,
        response_body=f'{{"shipment_id": "{shipment_id}"}}',
        now=now,
    )


def test_first_claim_of_a_key_is_granted(storage: Storage) -> None:
    """An unused key is claimed by the first request."""
    result = claim_at(storage, NOW)
    assert isinstance(result, Claim)
    assert not result.took_over


def test_live_claim_blocks_the_key(storage: Storage) -> None:
    """While the first claim's lease runs, the same request is in flight."""
    claim_at(storage, NOW)
    assert isinstance(claim_at(storage, NOW + timedelta(seconds=29)), InFlight)


def test_completed_key_with_the_same_fingerprint_replays(storage: Storage) -> None:
    """A completed key answers the stored status, body and shipment."""
    claim = claim_at(storage, NOW)
    assert isinstance(claim, Claim)
    complete(storage, claim, NOW)
    assert claim_at(storage, NOW) == Replay(201, '{"shipment_id": "shp_1"}', "shp_1")


@pytest.mark.parametrize("completed", [True, False])
def test_other_fingerprint_is_a_mismatch(storage: Storage, completed: bool) -> None:
    """A key used with another body is a mismatch, whether it completed or is in flight."""
    claim = claim_at(storage, NOW)
    assert isinstance(claim, Claim)
    if completed:
        complete(storage, claim, NOW)
    assert isinstance(claim_at(storage, NOW, fingerprint="0" * 64), Mismatch)


def test_expired_claim_is_taken_over_once(storage: Storage) -> None:
    """After the lease expires one request takes the claim; the next finds it in flight."""
    first = claim_at(storage, NOW, lease=30)
    assert isinstance(first, Claim)
    later = NOW + timedelta(seconds=31)
    second = claim_at(storage, later)
    assert isinstance(second, Claim)
    assert second.took_over
    assert second.token != first.token
    assert isinstance(claim_at(storage, later), InFlight)


def test_completion_after_losing_the_claim_commits_nothing(storage: Storage) -> None:
    """A request whose claim was taken over cannot commit a shipment."""
    first = claim_at(storage, NOW, lease=1)
    assert isinstance(first, Claim)
    claim_at(storage, NOW + timedelta(seconds=5))
    with pytest.raises(ClaimLost):
        complete(storage, first, NOW + timedelta(seconds=6))
    assert storage.get_shipment("shp_1") is None


def test_shipment_and_response_commit_together(storage: Storage) -> None:
    """Completion stores the shipment with the response that names it."""
    claim = claim_at(storage, NOW)
    assert isinstance(claim, Claim)
    complete(storage, claim, NOW)
    shipment = storage.get_shipment("shp_1")
    assert shipment is not None
    assert (shipment.order_id, shipment.idempotency_key, shipment.scope) == ("ORD-1", KEY, SCOPE)


def test_released_claim_frees_the_key(storage: Storage) -> None:
    """A refused request releases its claim; the key is then claimed afresh."""
    claim = claim_at(storage, NOW)
    assert isinstance(claim, Claim)
    assert storage.release(claim=claim)
    again = claim_at(storage, NOW, fingerprint="0" * 64)
    assert isinstance(again, Claim)
    assert not again.took_over


def test_purge_deletes_only_responses_older_than_the_cutoff(storage: Storage) -> None:
    """Purging frees keys completed before the cutoff and keeps the younger ones."""
    old = claim_at(storage, NOW - timedelta(hours=49))
    assert isinstance(old, Claim)
    complete(storage, old, NOW - timedelta(hours=49))
    young = storage.claim(
        scope=SCOPE, idempotency_key="ORD-2:1", fingerprint=FINGERPRINT, lease_seconds=30, now=NOW
    )
    assert isinstance(young, Claim)
    complete(storage, young, NOW - timedelta(hours=47), shipment_id="shp_2")

    assert storage.purge_expired(older_than=NOW - timedelta(hours=48)) == 1
    assert isinstance(claim_at(storage, NOW), Claim)  # the old key is free again
    assert storage.get_shipment("shp_1") is not None  # its shipment stays


def test_purge_deletes_claims_abandoned_before_the_cutoff(storage: Storage) -> None:
    """A claim whose request crashed long ago is purged too."""
    claim_at(storage, NOW - timedelta(hours=100))
    assert storage.purge_expired(older_than=NOW - timedelta(hours=48)) == 1


def test_timestamps_come_back_as_aware_utc(storage: Storage) -> None:
    """Datetimes round-trip as the same aware UTC instant on every backend."""
    claim = claim_at(storage, NOW)
    assert isinstance(claim, Claim)
    complete(storage, claim, NOW)
    shipment = storage.get_shipment("shp_1")
    assert shipment is not None
    assert shipment.created_at == NOW
    assert shipment.created_at.tzinfo is not None


def test_migrating_again_is_idempotent(storage: Storage) -> None:
    """Migrating again (a restart) keeps the data."""
    claim = claim_at(storage, NOW)
    assert isinstance(claim, Claim)
    complete(storage, claim, NOW)
    storage.migrate()
    assert storage.get_shipment("shp_1") is not None


def test_two_shipments_under_one_key_cannot_exist(storage: Storage) -> None:
    """The database itself refuses a second shipment row under a key, even past retention."""
    first = claim_at(storage, NOW)
    assert isinstance(first, Claim)
    complete(storage, first, NOW)
    storage.purge_expired(older_than=NOW + timedelta(days=365))  # the stored response is gone
    second = claim_at(storage, NOW + timedelta(days=366))
    assert isinstance(second, Claim)
    with pytest.raises(ShipmentExists):
        complete(storage, second, NOW + timedelta(days=366), shipment_id="shp_2")
    assert [s.shipment_id for s in storage.find_shipments(scope=SCOPE, order_id="ORD-1")] == [
        "shp_1"
    ]


def test_shipment_for_key_is_kept_after_its_response_is_purged(storage: Storage) -> None:
    """Retention frees the stored response, never the shipment found by its key."""
    claim = claim_at(storage, NOW)
    assert isinstance(claim, Claim)
    complete(storage, claim, NOW)
    storage.purge_expired(older_than=NOW + timedelta(days=365))
    found = storage.shipment_for_key(SCOPE, KEY)
    assert found is not None
    assert found.shipment_id == "shp_1"
    assert storage.shipment_for_key("b" * 64, KEY) is None


def test_migration_moves_per_token_scopes_to_their_client(storage: Storage) -> None:
    """A database from before per-client scopes keeps its keys and shipments for the client."""
    claim = claim_at(storage, NOW)
    assert isinstance(claim, Claim)
    complete(storage, claim, NOW)
    storage.migrate({SCOPE: "default"})
    assert storage.shipment_for_key("default", KEY) is not None
    assert isinstance(
        storage.claim(
            scope="default",
            idempotency_key=KEY,
            fingerprint=FINGERPRINT,
            lease_seconds=30,
            now=NOW,
        ),
        Replay,
    )


def void(storage: Storage, now: datetime, reason: str = "operator cancel") -> None:
    """Void the test key at ``now``."""
    storage.void(scope=SCOPE, idempotency_key=KEY, reason=reason, now=now)


def test_voiding_an_unused_key_leaves_a_tombstone_no_claim_passes(storage: Storage) -> None:
    """A key voided before any request is refused to every later claim, whatever the body."""
    outcome = storage.void(scope=SCOPE, idempotency_key=KEY, reason="never ship", now=NOW)
    assert (outcome.voided_at, outcome.reason, outcome.shipment, outcome.first) == (
        NOW,
        "never ship",
        None,
        True,
    )
    assert claim_at(storage, NOW) == Voided(NOW)
    assert claim_at(storage, NOW, fingerprint="0" * 64) == Voided(NOW)


def test_voiding_a_completed_key_cancels_its_shipment(storage: Storage) -> None:
    """The shipment under a voided key turns cancelled; the stored 201 no longer replays."""
    claim = claim_at(storage, NOW)
    assert isinstance(claim, Claim)
    complete(storage, claim, NOW)
    later = NOW + timedelta(minutes=5)
    outcome = storage.void(scope=SCOPE, idempotency_key=KEY, reason="fix", now=later)
    assert outcome.shipment is not None
    assert (outcome.shipment.shipment_id, outcome.shipment.status) == ("shp_1", SHIPMENT_CANCELLED)
    shipment = storage.get_shipment("shp_1")
    assert shipment is not None
    assert (shipment.status, shipment.cancelled_at) == (SHIPMENT_CANCELLED, later)
    assert isinstance(claim_at(storage, later), Voided)


def test_voiding_an_in_flight_key_makes_its_completion_commit_nothing(storage: Storage) -> None:
    """The request holding the claim when the key is voided cannot create its shipment."""
    claim = claim_at(storage, NOW)
    assert isinstance(claim, Claim)
    void(storage, NOW)
    with pytest.raises(KeyVoided):
        complete(storage, claim, NOW)
    assert storage.get_shipment("shp_1") is None
    assert storage.shipment_for_key(SCOPE, KEY) is None
    assert not storage.release(claim=claim)  # nothing of the claim is left to release


def test_voided_key_whose_lease_expired_is_never_taken_over(storage: Storage) -> None:
    """An expired-lease takeover never revives a voided key."""
    claim_at(storage, NOW, lease=1)
    void(storage, NOW)
    assert isinstance(claim_at(storage, NOW + timedelta(hours=1)), Voided)


def test_voiding_a_key_whose_response_was_purged_cancels_its_shipment(storage: Storage) -> None:
    """Past retention the key has no row, but its shipment is still found and cancelled."""
    claim = claim_at(storage, NOW)
    assert isinstance(claim, Claim)
    complete(storage, claim, NOW)
    storage.purge_expired(older_than=NOW + timedelta(days=365))
    outcome = storage.void(
        scope=SCOPE, idempotency_key=KEY, reason="late", now=NOW + timedelta(days=366)
    )
    assert outcome.shipment is not None
    assert outcome.shipment.status == SHIPMENT_CANCELLED


def test_voiding_again_keeps_the_first_time_and_reason(storage: Storage) -> None:
    """A repeated void answers the first tombstone and changes nothing."""
    void(storage, NOW, reason="first")
    outcome = storage.void(
        scope=SCOPE, idempotency_key=KEY, reason="second", now=NOW + timedelta(hours=1)
    )
    assert (outcome.voided_at, outcome.reason, outcome.first) == (NOW, "first", False)


def test_voided_keys_survive_every_purge(storage: Storage) -> None:
    """Retention never removes a tombstone, however old."""
    void(storage, NOW - timedelta(days=1000))
    assert storage.purge_expired(older_than=NOW + timedelta(days=1000)) == 0
    record = storage.key_record(SCOPE, KEY)
    assert record is not None
    assert record.state == VOIDED


def test_a_void_is_scoped_to_its_client(storage: Storage) -> None:
    """Voiding a key in one scope leaves the same key of another client alone."""
    storage.void(scope="b" * 64, idempotency_key=KEY, reason="other client", now=NOW)
    assert isinstance(claim_at(storage, NOW), Claim)


def test_start_is_refused_while_rows_remain_under_an_unmapped_per_token_scope(
    storage: Storage,
) -> None:
    """Rows under a per-token scope no token maps to stop the migration, named with the fix."""
    claim = claim_at(storage, NOW)  # SCOPE looks like the SHA-256 of a token
    assert isinstance(claim, Claim)
    complete(storage, claim, NOW)
    with pytest.raises(LegacyScopeError, match="WAREHOUSE_RETIRED_TOKENS") as caught:
        storage.migrate(client_ids=["default"])
    assert SCOPE[:12] in str(caught.value)
    assert storage.shipment_for_key(SCOPE, KEY) is not None  # nothing moved or lost


def test_rows_of_a_mapped_per_token_scope_move_and_start_goes_on(storage: Storage) -> None:
    """Given the (retired) token's scope, the rows move to the client and no error remains."""
    claim = claim_at(storage, NOW)
    assert isinstance(claim, Claim)
    complete(storage, claim, NOW)
    storage.migrate({SCOPE: "default"}, client_ids=["default"])
    assert storage.shipment_for_key("default", KEY) is not None
    assert storage.shipment_for_key(SCOPE, KEY) is None


def test_rows_of_a_client_no_longer_configured_only_warn(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    """A removed client's rows (a client id, not a token digest) stay and are logged."""
    storage.void(scope="old-shop", idempotency_key=KEY, reason="x", now=NOW)
    storage.migrate(client_ids=["default"])
    assert "'old-shop'" in caplog.text


def test_a_void_racing_a_claim_and_its_completion_always_wins(storage: Storage) -> None:
    """Whichever of a claim's INSERT, its completion and a void's INSERT commits first, every
    key ends voided with no live shipment."""
    keys = [f"ORD-race:{i}" for i in range(20)]
    errors: list[BaseException] = []

    def ship(key: str, barrier: threading.Barrier) -> None:
        barrier.wait()
        claim = storage.claim(
            scope=SCOPE, idempotency_key=key, fingerprint=FINGERPRINT, lease_seconds=30, now=NOW
        )
        if isinstance(claim, Claim):
            with contextlib.suppress(KeyVoided):
                complete(storage, claim, NOW, shipment_id=f"shp_{key}")

    def cancel(key: str, barrier: threading.Barrier) -> None:
        barrier.wait()
        storage.void(scope=SCOPE, idempotency_key=key, reason="race", now=NOW)

    def run(
        target: Callable[[str, threading.Barrier], None], key: str, b: threading.Barrier
    ) -> None:
        try:
            target(key, b)
        except BaseException as exc:  # reported below
            errors.append(exc)

    for key in keys:
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=run, args=(t, key, barrier)) for t in (ship, cancel)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    for key in keys:
        record = storage.key_record(SCOPE, key)
        assert record is not None
        assert record.state == VOIDED
        shipment = storage.shipment_for_key(SCOPE, key)
        assert shipment is None or shipment.status == SHIPMENT_CANCELLED
