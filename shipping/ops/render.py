"""How an order looks on a terminal: ``shipping status`` and the demo's result."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def render_status(doc: dict[str, Any]) -> str:
    """The order (its JSON form) and a table of its lines, for a terminal."""
    lines = doc["lines"]
    shipped = sum(1 for line in lines if line["state"] == "SHIPPED")
    head = f"order {doc['order_id']}: {doc['state']} ({shipped}/{len(lines)} lines shipped"
    if doc.get("cancelled_lines"):
        head += f", {doc['cancelled_lines']} cancelled"
    out = [head + ")"]
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
    out.extend(_table(header, rows))
    for amendment in doc.get("amendments", []):
        new = amendment["new"]
        if new is not None:
            change = (
                f"{amendment['old']['sku']} x{amendment['old']['quantity']} -> "
                f"{new['sku']} x{new['quantity']}"
            )
        else:
            change = "cancelled" if amendment["action"] == "CANCEL" else "voided"
        out.append(
            f"{amendment['action'].lower()} of line {amendment['line_id']} by "
            f"{amendment['by']} at {amendment['at']}: {change} ({amendment['reason']})"
            f"{_void(amendment.get('void'))}"
        )
    return "\n".join(out)


def _void(void: dict[str, Any] | None) -> str:
    """What an amendment's void of the line's old key came to."""
    if not void or not void.get("key"):
        return ""
    if not void.get("voided_at"):
        return f"; key {void['key']}: void pending (the line's next try does it)"
    cancelled = void.get("cancelled_shipment_id")
    return f"; key {void['key']} voided" + (
        f", shipment {cancelled} cancelled" if cancelled else ""
    )


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def _last_error(line: dict[str, Any]) -> str:
    error = str(line["last_error"] or "")
    if not error:
        return "-"
    # A shipped line keeps the error it met on the way, as history.
    prefix = "recovered from: " if line["state"] in ("SHIPPED", "CANCELLED") else ""
    return (prefix + error)[:72]
