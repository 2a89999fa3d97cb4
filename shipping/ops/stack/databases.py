"""The stack's state on a fresh start: credentials, the three databases (each owned by a
role of its own, :mod:`shipping.ops.dbroles`), the ledger's tables."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

from shipping.connections import TOKEN_VAR
from shipping.contract import AIRFLOW_DATABASE, LEDGER_DATABASE, WAREHOUSE_DATABASE
from shipping.ops import dbroles, localpg
from shipping.ops.stack.common import HOST
from shipping.ops.stack.credentials import generated_notice
from shipping.ops.stack.programs import own_redis_url
from shipping.ops.state import StackState

if TYPE_CHECKING:
    from shipping.ops.stack.core import Stack


def prepare(stack: Stack, embedded_url: str | None) -> StackState:
    """Credentials, the three databases and the ledger's tables."""
    previous = stack.state()
    generated: list[str] = []

    def credential(var: str, old: str | None) -> str:
        if stack.env.get(var):
            return stack.env[var]
        if old:
            return old
        generated.append(var)
        return secrets.token_urlsafe(18)

    admin_password = credential(
        "AIRFLOW_ADMIN_PASSWORD", previous.admin_password if previous else None
    )
    api_token = credential(TOKEN_VAR, previous.warehouse_api_token if previous else None)
    admin_token = credential(
        "WAREHOUSE_ADMIN_TOKEN", previous.warehouse_admin_token if previous else None
    )

    server = embedded_url or stack.env["SHIPPING_POSTGRES_URL"]
    own_ledger = not stack.env.get("SHIPPING_LEDGER_URL")
    # Each database owned by a role of its own, which its service connects as.
    databases = dbroles.ensure_service_databases(
        server,
        stack.dir,
        (AIRFLOW_DATABASE, WAREHOUSE_DATABASE, *([LEDGER_DATABASE] if own_ledger else [])),
        prefix=stack.db_prefix,
        own_server=embedded_url is not None,
    )
    if not own_ledger:
        # The ledger on a server of its own (workers on other machines reach it, and
        # only it): the database is created there if missing.
        ledger_url = make_url(stack.env["SHIPPING_LEDGER_URL"])
        ledger_server = ledger_url.set(database="postgres")
        localpg.ensure_database(
            ledger_server.render_as_string(hide_password=False), str(ledger_url.database)
        )
    else:
        ledger_url = make_url(databases.urls[LEDGER_DATABASE])

    from shipping.ledger import Ledger

    ledger = Ledger.from_url(ledger_url.render_as_string(hide_password=False))
    ledger.create_schema()
    ledger.engine.dispose()

    for var in generated:
        value = {
            "AIRFLOW_ADMIN_PASSWORD": admin_password,
            "WAREHOUSE_API_TOKEN": api_token,
            "WAREHOUSE_ADMIN_TOKEN": admin_token,
        }[var]
        stack.echo(generated_notice(var, value, stack.dir / "state.json"))
    executor = stack.executor
    return StackState(
        executor=executor.kind,
        celery_workers=executor.workers if executor.celery else 0,
        celery_concurrency=executor.concurrency if executor.celery else 0,
        broker_url=(executor.redis_url or own_redis_url(stack)) if executor.celery else "",
        embedded_redis=executor.celery and executor.redis_url is None,
        airflow_url=f"http://{HOST}:{stack.ports.airflow}",
        warehouse_url=f"http://{HOST}:{stack.ports.warehouse}",
        admin_password=admin_password,
        warehouse_api_token=api_token,
        warehouse_admin_token=admin_token,
        ledger_url=ledger_url.render_as_string(hide_password=False),
        postgres_url=server,
        embedded_postgres=embedded_url is not None,
        airflow_database_url=databases.urls[AIRFLOW_DATABASE],
        warehouse_database_url=databases.urls[WAREHOUSE_DATABASE],
        database_roles=databases.roles,
        redis_server=stack.redis_server.binary if stack.redis_server else "",
        redis_version=stack.redis_server.version if stack.redis_server else "",
        redis_reason=stack.redis_server.reason if stack.redis_server else "",
    )
