"""The ``shipping`` command: post orders to Airflow and show where they are.

``shipping submit ORDER.json`` posts an order over Airflow's REST API and says what
happened: accepted, already accepted (the same order again), or refused with the reason
(a schema error, or another order under the same id). ``shipping status ORDER_ID
[--json]`` shows the order and each line from the ledger.

With the local stack up (``make up``) both need no settings: they read the stack's
state. Otherwise ``SHIPPING_AIRFLOW_URL``, ``AIRFLOW_ADMIN_PASSWORD`` and
``SHIPPING_LEDGER_URL`` say where to go.

Exit codes: 0 done, 1 unknown order or Airflow unreachable, 2 order refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import requests
import sqlalchemy.exc

from shipping.airflow_api import AirflowApiError, AirflowClient, TriggerStatus
from shipping.order import InvalidOrder, content_hash, parse_order
from shipping.settings import DAG_ID, ClientSettings, SettingsError
from shipping.stack import load_state

EXIT_OK, EXIT_NOT_FOUND, EXIT_REFUSED = 0, 1, 2


class CliError(Exception):
    """A failure to report on stderr with an exit code."""

    def __init__(self, message: str, code: int = EXIT_NOT_FOUND) -> None:
        super().__init__(message)
        self.code = code


def _airflow() -> AirflowClient:
    state = load_state()
    env = dict(os.environ)
    if state is not None and "SHIPPING_AIRFLOW_URL" not in env:
        env["SHIPPING_AIRFLOW_URL"] = state.airflow_url
    settings = ClientSettings.from_env(
        env, fallback_password=state.admin_password if state else None
    )
    try:
        return AirflowClient(settings.airflow_url, settings.username, settings.password)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def _ledger_url() -> str:
    url = os.environ.get("SHIPPING_LEDGER_URL")
    if url:
        return url
    state = load_state()
    if state is None:
        raise CliError("no ledger: set SHIPPING_LEDGER_URL or start the stack (make up)")
    return state.ledger_url


def submit(path: Path) -> int:
    """Post the order in ``path``; print the outcome; return the exit code."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path}: {exc}", EXIT_REFUSED) from exc
    try:
        order = parse_order(doc)
    except InvalidOrder as exc:
        raise CliError("order refused:\n  " + "\n  ".join(exc.errors), EXIT_REFUSED) from exc
    with _airflow() as api:
        outcome = api.trigger(DAG_ID, order.run_id, doc)
    if outcome.status is TriggerStatus.ACCEPTED:
        print(f"order {order.order_id} accepted as run {order.run_id}")
        return EXIT_OK
    if outcome.status is TriggerStatus.REFUSED:
        # Airflow appends the whole JSON schema to the reason; its first line says it all.
        reason = (outcome.reason or "").split("\n\n", 1)[0]
        raise CliError(f"order {order.order_id} refused by Airflow: {reason}", EXIT_REFUSED)
    existing = (outcome.run or {}).get("conf") or {}
    if _same_order(existing, order.content_hash()):
        state = (outcome.run or {}).get("state")
        print(f"order {order.order_id} was already accepted as run {order.run_id} ({state})")
        return EXIT_OK
    raise CliError(
        f"order {order.order_id} refused: an order with this id was already accepted "
        "with different content (use a new order_id)",
        EXIT_REFUSED,
    )


def _same_order(conf: Any, digest: str) -> bool:
    """Whether a run's conf is the order with content ``digest`` (2.0 and 2 alike)."""
    try:
        return parse_order(conf).content_hash() == digest
    except InvalidOrder:
        return content_hash(conf) == digest


def status(order_id: str, *, as_json: bool) -> int:
    """Print the order and its lines from the ledger; return the exit code."""
    from shipping.ledger import Ledger

    ledger = Ledger.from_url(_ledger_url())
    try:
        found = ledger.get_order(order_id)
    finally:
        ledger.engine.dispose()
    if found is None:
        raise CliError(f"unknown order {order_id!r}")
    doc = found.to_json()
    if as_json:
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    print(render_status(doc))
    return EXIT_OK


def render_status(doc: dict[str, Any]) -> str:
    """The order (its JSON form) and a table of its lines, for a terminal."""
    lines = doc["lines"]
    shipped = sum(1 for line in lines if line["state"] == "SHIPPED")
    out = [f"order {doc['order_id']}: {doc['state']} ({shipped}/{len(lines)} lines shipped)"]
    if doc.get("reason"):
        out.append(f"reason: {doc['reason']}")
    if doc.get("run_id"):
        out.append(f"run: {doc['run_id']}")
    for run in doc.get("other_runs", []):
        out.append(f"other run: {run['run_id']} ({run['role']}: {run['reason']})")
    header = ("line", "sku", "qty", "state", "attempts", "shipment", "last error")
    rows = [
        (
            line["line_id"],
            line["sku"],
            str(line["quantity"]),
            line["state"],
            str(line["attempts"]),
            line["shipment_id"] or "-",
            _last_error(line),
        )
        for line in lines
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(out)


def _last_error(line: dict[str, Any]) -> str:
    error = str(line["last_error"] or "")
    if not error:
        return "-"
    # A shipped line keeps the error it met on the way, as history.
    prefix = "recovered from: " if line["state"] == "SHIPPED" else ""
    return (prefix + error)[:72]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``shipping`` command."""
    parser = argparse.ArgumentParser(prog="shipping", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_submit = sub.add_parser("submit", help="post an order (a JSON file) to Airflow")
    p_submit.add_argument("order", type=Path, help="the order as JSON")
    p_status = sub.add_parser("status", help="show an order and its lines")
    p_status.add_argument("order_id")
    p_status.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    try:
        if args.command == "submit":
            return submit(args.order)
        return status(args.order_id, as_json=args.json)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except (SettingsError, AirflowApiError, requests.RequestException) as exc:
        print(f"error: Airflow: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except sqlalchemy.exc.OperationalError as exc:
        print(f"error: cannot reach the ledger: {exc.orig}", file=sys.stderr)
        return EXIT_NOT_FOUND


if __name__ == "__main__":
    sys.exit(main())
