"""The ``shipping`` command: post orders, follow them, and resolve failed lines.

``submit ORDER.json [--watch]``, ``status ORDER_ID [--json]``, and the operator commands
``retry``, ``watch``, ``fix``, ``cancel`` and ``reconcile`` (``shipping COMMAND --help``
says each one's exit codes).

Where the commands find Airflow, the ledger and the warehouse: :mod:`.common`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import requests
import sqlalchemy.exc

from shipping.errors import LedgerError, WarehouseError
from shipping.ops.airflow_api import AirflowApiError
from shipping.ops.cli.common import (
    EXIT_DRIFT_OR_TIMEOUT,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_OPERATOR,
    EXIT_READER_GONE,
    EXIT_REFUSED,
    CliError,
)
from shipping.ops.cli.corrections import amend, reconcile
from shipping.ops.cli.orders import retry, status, submit
from shipping.ops.cli.watching import Progress, progress, watch
from shipping.ops.render import render_status
from shipping.ops.settings import SettingsError
from shipping.terminal import SafeStream

__all__ = [
    "EXIT_DRIFT_OR_TIMEOUT",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_OPERATOR",
    "EXIT_READER_GONE",
    "EXIT_REFUSED",
    "CliError",
    "Progress",
    "amend",
    "main",
    "progress",
    "reconcile",
    "render_status",
    "retry",
    "status",
    "submit",
    "watch",
]

_EPILOG = {
    "submit": "exit codes: 0 accepted or already accepted, 1 Airflow unreachable, 2 refused, "
    "3 accepted before but its run failed at intake (prints `shipping retry ORDER_ID`); "
    "with --watch, those of watch",
    "status": "exit codes: 0 shown, 1 unknown order or ledger unreachable, 3 not in the "
    "ledger because its run failed at intake (prints `shipping retry ORDER_ID`)",
    "retry": "exit codes: 0 retried or nothing to retry, 1 unknown order or line, or "
    "Airflow unreachable. Clears the failed lines and the reducer; with no failed line, a "
    "failed reducer alone; for an order whose run failed at intake, register_order and "
    "everything after it",
    "watch": "exit codes: 0 done, 1 unknown order or unreachable, 3 needs an operator "
    "(prints the command to run), 4 timeout",
    "fix": "exit codes: 0 fixed and retried, 1 unknown order or line, or unreachable, "
    "2 refused (with the reason)",
    "cancel": "exit codes: 0 cancelled and retried, 1 unknown order or line, or unreachable, "
    "2 refused (with the reason)",
    "reconcile": "exit codes: 0 clean, 1 unknown order or unreachable, 4 drift found "
    "(after --repair: drift left)",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shipping", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_, epilog=_EPILOG[name])

    p = command("submit", "post an order (a JSON file) to Airflow")
    p.add_argument("order", type=Path, help="the order as JSON")
    p.add_argument("--watch", action="store_true", help="then follow it (as `watch`)")
    p.add_argument("--timeout", type=float, default=600.0, help="for --watch (default 600 s)")
    p = command("status", "show an order, its lines, runs and corrections")
    p.add_argument("order_id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command("retry", "clear an order's failed lines and its reducer, so it finalizes")
    p.add_argument("order_id")
    p.add_argument(
        "--line",
        action="append",
        default=[],
        metavar="LINE_ID",
        help="only this line (repeatable; default: every failed line)",
    )
    p = command("watch", "follow an order live until it is done or needs an operator")
    p.add_argument("order_id")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    p = command("fix", "correct a failed line's SKU and/or quantity, then retry it")
    p.add_argument("order_id")
    p.add_argument("--line", required=True, metavar="LINE_ID")
    p.add_argument("--sku")
    p.add_argument("--quantity", type=int)
    p.add_argument("--reason", required=True)
    p = command("cancel", "cancel a failed line (never posted again), then let the order finalize")
    p.add_argument("order_id")
    p.add_argument("--line", required=True, metavar="LINE_ID")
    p.add_argument("--reason", required=True)
    p = command("reconcile", "compare the ledger with the warehouse")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("order_id", nargs="?")
    target.add_argument("--all", action="store_true", help="every order in the ledger")
    p.add_argument(
        "--repair", action="store_true", help="adopt warehouse shipments into the ledger where safe"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "submit":
        return submit(args.order, watch_timeout=args.timeout if args.watch else None)
    if args.command == "status":
        return status(args.order_id, as_json=args.json)
    if args.command == "retry":
        return retry(args.order_id, args.line)
    if args.command == "watch":
        return watch(args.order_id, timeout=args.timeout)
    if args.command == "fix":
        return amend(
            args.order_id,
            args.line,
            action="FIX",
            reason=args.reason,
            sku=args.sku,
            quantity=args.quantity,
        )
    if args.command == "cancel":
        return amend(args.order_id, args.line, action="CANCEL", reason=args.reason)
    return reconcile(args.order_id, repair=args.repair, as_json=args.json)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``shipping`` command."""
    args = _parser().parse_args(argv)
    # Text from the ledger and the warehouse is shown, never obeyed by the terminal.
    sys.stdout, sys.stderr = SafeStream.wrap(sys.stdout), SafeStream.wrap(sys.stderr)
    # The command reports for itself; the libraries' own warnings would only repeat it.
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    try:
        return _run(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except (SettingsError, AirflowApiError, requests.RequestException) as exc:
        print(f"error: Airflow: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except WarehouseError as exc:
        print(f"error: warehouse: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except sqlalchemy.exc.OperationalError as exc:
        print(f"error: cannot reach the ledger: {exc.orig}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except LedgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except BrokenPipeError:
        # The reader stopped early (`shipping status ORDER | head`): not a failure to report.
        # Whatever is still buffered goes nowhere, so the flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_READER_GONE
