"""The mock warehouse: an HTTP service that ships order lines exactly once.

It honours ``Idempotency-Key`` the way public APIs do (the IETF Idempotency-Key draft,
Stripe): a repeated key with the same JSON body replays the stored response, with another
body it is refused, and while the first request runs it answers 409. The claims and the
stored responses live in the service's own database (SQLite file or PostgreSQL), so the
rules hold across several server processes.

Retention: a stored response is replayed for ``WAREHOUSE_RETENTION_HOURS`` (default 48,
never less than 24) after its request completed; older ones are purged lazily (at
startup and at most once a minute while serving), after which the key is free again.
Shipments themselves are kept for good, and so are voided keys (``POST /v1/voids``): a
voided key answers 410 for ever.

Modules: :mod:`~warehouse_mock.settings` (environment), :mod:`~warehouse_mock.schemas`
(wire), :mod:`~warehouse_mock.storage` (database records), :mod:`~warehouse_mock.faults`
(fault injection), :mod:`~warehouse_mock.service` (the workflow),
:mod:`~warehouse_mock.migrations` (the schema's Alembic revisions),
:mod:`~warehouse_mock.app` (HTTP), :mod:`~warehouse_mock.testing` (a server in a thread).
"""
