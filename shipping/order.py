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
MAX_QUANTITY: Final = 10_000
RUN_ID_PREFIX: Final = "order-"


def _whole(char_class: str, repeat: str, *, guard: str = "") -> str:
    r"""A pattern that the WHOLE string must match, in Python's ``re`` and in ECMA-262.

    Python's ``$`` also matches before a final newline, so ``^[A-Z]{2}$`` accepts
    ``"DE\n"``; the lookahead ``(?!\n)`` closes that gap (in ECMA-262, where ``$`` is the
    end, it is a no-op), so Airflow's Params, :func:`parse_order` and a browser agree.
    ``guard`` is a lookahead placed after ``^``.
    """
    return f"^{guard}{char_class}{repeat}$(?!\\n)"


# Identifiers end up in an HTTP header (the idempotency key) and in Airflow's run id:
# printable ASCII only, and no ".." (Airflow refuses it in a run id: path traversal).
ORDER_ID_PATTERN: Final = _whole("[A-Za-z0-9_.:-]", "{1,64}", guard=r"(?!.*\.\.)")
LINE_ID_PATTERN: Final = _whole("[A-Za-z0-9_.-]", "{1,64}")
COUNTRY_PATTERN: Final = _whole("[A-Z]", "{2}")
# Free text: any character but control characters (C0, DEL): a NUL cannot be stored in
# PostgreSQL, and a newline or tab in a SKU or an address is a typo, not data. The
# lengths are minLength / maxLength's job.
TEXT_PATTERN: Final = _whole("[^\\u0000-\\u001f\\u007f]", "*")
#: The longest reason an operator's amendment keeps (the amend forms' limit too).
MAX_REASON_LENGTH: Final = 500


def _text(min_length: int, max_length: int) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": min_length,
        "maxLength": max_length,
        "pattern": TEXT_PATTERN,
    }


_ADDRESS_FIELD: Final = _text(1, 200)

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
            "description": "1-64 characters of A-Z a-z 0-9 _ . : -, without '..'",
        },
        "customer_id": _text(1, 64),
        "ship_to": {
            "type": "object",
            "required": ["name", "line1", "city", "postal_code", "country"],
            "additionalProperties": False,
            "properties": {
                "name": _ADDRESS_FIELD,
                "line1": _ADDRESS_FIELD,
                "line2": _text(0, 200),
                "city": _ADDRESS_FIELD,
                "postal_code": _text(1, 20),
                "country": {
                    "type": "string",
                    "pattern": COUNTRY_PATTERN,
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
                    "line_id": {"type": "string", "pattern": LINE_ID_PATTERN},
                    "sku": _text(1, 64),
                    # JSON has one number type: 2.0 is the integer 2 (JSON Schema agrees),
                    # and parse_order hands the warehouse the int.
                    "quantity": {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY},
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


_PATTERN_MEANING: Final = {
    ORDER_ID_PATTERN: "1-64 characters of A-Z a-z 0-9 _ . : -, without '..'",
    LINE_ID_PATTERN: "1-64 characters of A-Z a-z 0-9 _ . -",
    COUNTRY_PATTERN: "an ISO 3166-1 alpha-2 code (two capital letters)",
    TEXT_PATTERN: "text without control characters (newline, tab, NUL, ...)",
}


#: Longest value quoted whole in an error; a longer one is described (a 1001-line order's
#: items would otherwise be quoted line by line in its refusal).
_QUOTED_MAX: Final = 80


def _shown(instance: object) -> str:
    """``instance`` as an error quotes it: whole if short, else described."""
    text = repr(instance)
    if len(text) <= _QUOTED_MAX:
        return text
    if isinstance(instance, list):
        return f"a list of {len(instance)} items"
    if isinstance(instance, dict):
        return f"an object of {len(instance)} fields"
    if isinstance(instance, str):
        return f"{text[: _QUOTED_MAX - 20]}... ({len(instance)} characters)"
    return f"{text[: _QUOTED_MAX - 3]}..."


def _format_error(error: jsonschema.ValidationError) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    message = error.message.replace(repr(error.instance), _shown(error.instance))
    if error.validator == "pattern":
        pattern = str(error.validator_value)
        meaning = _PATTERN_MEANING.get(pattern)
        message = f"{_shown(error.instance)} is not {meaning or f'matching {pattern!r}'}"
    return f"order{where}: {message}"


_VALIDATOR: Final = jsonschema.Draft202012Validator(ORDER_SCHEMA)


def schema_errors(doc: object) -> list[str]:
    """Every JSON-schema violation of ``doc``, one clear message each, in document order."""
    errors = sorted(_VALIDATOR.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    return [_format_error(e) for e in errors]


def rule_errors(doc: Mapping[str, Any]) -> list[str]:
    """Violations of the rules a JSON schema cannot say, for a schema-valid ``doc``.

    Line ids must be unique within the order, and every string must be valid Unicode (a
    lone surrogate, which JSON's ``\\ud800`` escape can carry, cannot be stored or sent).
    """
    errors = [f"{where}: not valid Unicode (a lone surrogate)" for where in _lone_surrogates(doc)]
    seen: set[str] = set()
    duplicates: list[str] = []
    for item in doc["items"]:
        line_id = item["line_id"]
        if line_id in seen and line_id not in duplicates:
            duplicates.append(line_id)
        seen.add(line_id)
    if duplicates:
        errors.append(f"order.items: duplicate line_id {', '.join(map(repr, duplicates))}")
    return errors


def _lone_surrogates(value: object, where: str = "order") -> list[str]:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return [where]
        return []
    if isinstance(value, Mapping):
        return [w for k, v in value.items() for w in _lone_surrogates(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [w for i, v in enumerate(value) for w in _lone_surrogates(v, f"{where}[{i}]")]
    return []


_LINE_VALIDATOR: Final = jsonschema.Draft202012Validator(
    ORDER_SCHEMA["properties"]["items"]["items"]
)


def line_errors(line: object) -> list[str]:
    """Every schema violation of one order line (``{"line_id", "sku", "quantity"}``)."""
    errors = sorted(
        _LINE_VALIDATOR.iter_errors(line), key=lambda e: [str(p) for p in e.absolute_path]
    )
    return [_format_error(e).replace("order", "line", 1) for e in errors]


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
        items=tuple(
            # A schema-valid quantity may be an integral float (2.0): the int is the value.
            OrderLine(line_id=item["line_id"], sku=item["sku"], quantity=int(item["quantity"]))
            for item in doc["items"]
        ),
    )


def idempotency_key(order_id: str, line_id: str, revision: int = 0) -> str:
    """The warehouse Idempotency-Key of a line: ``<order_id>:<line_id>``.

    Never the map index, try number or task instance id: those change between retries,
    clears and re-expansions, and the key must not. Only an operator's fix changes what a
    line ships, and with it the line's revision: revision N > 0 ships under
    ``<order_id>:<line_id>#N`` (a line id has no ``#``), after the previous key was voided.
    """
    if revision < 0:
        raise ValueError(f"revision {revision} must be >= 0")
    base = f"{order_id}:{line_id}"
    return base if revision == 0 else f"{base}#{revision}"


def run_id_for(order_id: str) -> str:
    """The Airflow dag_run_id of an order: ``order-<order_id>``."""
    return f"{RUN_ID_PREFIX}{order_id}"


def content_hash(value: object) -> str:
    """SHA-256 of a JSON value in canonical form (sorted keys, no spaces)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # surrogatepass: a refused order with a lone surrogate still gets a digest.
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
