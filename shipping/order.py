"""The order: its JSON schema, its validation and its typed model.

``ORDER_SCHEMA`` is the one source of truth for the order's shape: the ``order_intake``
DAG builds its Params from it (so Airflow's REST API refuses a bad order with HTTP 400),
and :func:`parse_order` validates against the same schema before checking the rules a
JSON schema cannot say (unique ``line_id``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

import jsonschema

MAX_ITEMS: Final = 1000  # below Airflow's max_map_length (1024)
ORDER_ID_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,64}$"
RUN_ID_PREFIX: Final = "order-"

_ADDRESS_FIELD: Final = {"type": "string", "minLength": 1, "maxLength": 200}

ORDER_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Order",
    "type": "object",
    "required": ["order_id", "customer_id", "ship_to", "items"],
    "additionalProperties": False,
    "properties": {
        "order_id": {
            "type": "string",
            "pattern": ORDER_ID_PATTERN,
            "description": "1-64 characters of A-Z a-z 0-9 _ . : -",
        },
        "customer_id": {"type": "string", "minLength": 1, "maxLength": 64},
        "ship_to": {
            "type": "object",
            "required": ["name", "line1", "city", "postal_code", "country"],
            "additionalProperties": False,
            "properties": {
                "name": _ADDRESS_FIELD,
                "line1": _ADDRESS_FIELD,
                "line2": {"type": "string", "maxLength": 200},
                "city": _ADDRESS_FIELD,
                "postal_code": {"type": "string", "minLength": 1, "maxLength": 20},
                "country": {
                    "type": "string",
                    "pattern": "^[A-Z]{2}$",
                    "description": "ISO 3166-1 alpha-2 code",
                },
            },
        },
        "items": {
            "type": "array",
            # An empty list would skip the fan-out and the reducer: refuse it up front.
            "minItems": 1,
            "maxItems": MAX_ITEMS,
            "items": {
                "type": "object",
                "required": ["line_id", "sku", "quantity"],
                "additionalProperties": False,
                "properties": {
                    "line_id": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,64}$"},
                    "sku": {"type": "string", "minLength": 1, "maxLength": 64},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": 10000},
                },
            },
        },
    },
}


class InvalidOrder(ValueError):
    """An order that breaks the schema or a business rule; final, never retried.

    Attributes:
        errors: One human-readable message per problem found.
    """

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("invalid order: " + "; ".join(errors))


@dataclass(frozen=True)
class ShipTo:
    """Where an order goes."""

    name: str
    line1: str
    city: str
    postal_code: str
    country: str
    line2: str | None = None

    def to_dict(self) -> dict[str, str]:
        """The address as JSON, without absent optional fields."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class OrderLine:
    """One line of an order: one shipment at the warehouse."""

    line_id: str
    sku: str
    quantity: int


@dataclass(frozen=True)
class Order:
    """A validated order."""

    order_id: str
    customer_id: str
    ship_to: ShipTo
    items: tuple[OrderLine, ...]

    @property
    def run_id(self) -> str:
        """The Airflow dag_run_id this order is posted under."""
        return run_id_for(self.order_id)

    def to_dict(self) -> dict[str, Any]:
        """The order as the JSON document it was parsed from (canonical form)."""
        return {
            "order_id": self.order_id,
            "customer_id": self.customer_id,
            "ship_to": self.ship_to.to_dict(),
            "items": [asdict(line) for line in self.items],
        }

    def content_hash(self) -> str:
        """A digest of the order's content, equal for equal JSON values."""
        return content_hash(self.to_dict())


def _format_error(error: jsonschema.ValidationError) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return f"order{where}: {error.message}"


_VALIDATOR: Final = jsonschema.Draft202012Validator(ORDER_SCHEMA)


def schema_errors(doc: object) -> list[str]:
    """Every JSON-schema violation of ``doc``, one clear message each, in document order."""
    errors = sorted(_VALIDATOR.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    return [_format_error(e) for e in errors]


def rule_errors(doc: Mapping[str, Any]) -> list[str]:
    """Violations of the rules a JSON schema cannot say, for a schema-valid ``doc``."""
    seen: set[str] = set()
    duplicates: list[str] = []
    for item in doc["items"]:
        line_id = item["line_id"]
        if line_id in seen and line_id not in duplicates:
            duplicates.append(line_id)
        seen.add(line_id)
    if duplicates:
        return [f"order.items: duplicate line_id {', '.join(map(repr, duplicates))}"]
    return []


def parse_order(doc: object) -> Order:
    """Validate an order document and build the typed model.

    Raises:
        InvalidOrder: With every problem found: schema problems first; the business rules
            are checked only on a schema-valid document.
    """
    errors = schema_errors(doc)
    if errors:
        raise InvalidOrder(errors)
    assert isinstance(doc, Mapping)
    errors = rule_errors(doc)
    if errors:
        raise InvalidOrder(errors)
    return Order(
        order_id=doc["order_id"],
        customer_id=doc["customer_id"],
        ship_to=ShipTo(**doc["ship_to"]),
        items=tuple(OrderLine(**item) for item in doc["items"]),
    )


def idempotency_key(order_id: str, line_id: str) -> str:
    """The warehouse Idempotency-Key of a line: ``<order_id>:<line_id>``.

    Never the map index, try number or task instance id: those change between retries,
    clears and re-expansions, and the key must not.
    """
    return f"{order_id}:{line_id}"


def run_id_for(order_id: str) -> str:
    """The Airflow dag_run_id of an order: ``order-<order_id>``."""
    return f"{RUN_ID_PREFIX}{order_id}"


def content_hash(value: object) -> str:
    """SHA-256 of a JSON value in canonical form (sorted keys, no spaces)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
