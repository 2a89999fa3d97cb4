"""Tests for the order schema, its validation and the idempotency key."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import jsonschema
import pytest

from shipping.ops.state import PROJECT_ROOT
from shipping.order import (
    MAX_ITEMS,
    ORDER_SCHEMA,
    InvalidOrder,
    _text,
    _whole,
    content_hash,
    idempotency_key,
    line_errors,
    parse_order,
    run_id_for,
)


def valid_order() -> dict[str, Any]:
    """The documented example order (docs/cli.md), so the example stays valid."""
    doc: dict[str, Any] = json.loads(
        (PROJECT_ROOT / "docs" / "examples" / "order.json").read_text()
    )
    return doc


def test_valid_order_parses_into_the_typed_model() -> None:
    """A valid order becomes an Order with its lines in posted order."""
    order = parse_order(valid_order())
    assert order.order_id == "ORD-1001"
    assert [line.line_id for line in order.items] == ["1", "2"]
    assert order.items[0].quantity == 2
    assert order.ship_to.country == "DE"


def test_parsed_order_round_trips_to_the_same_document() -> None:
    """to_dict gives back the posted document."""
    assert parse_order(valid_order()).to_dict() == valid_order()


def test_order_of_max_items_is_valid() -> None:
    """An order of exactly MAX_ITEMS lines is accepted."""
    doc = valid_order()
    doc["items"] = [{"line_id": str(i), "sku": "S", "quantity": 1} for i in range(MAX_ITEMS)]
    assert len(parse_order(doc).items) == MAX_ITEMS


def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = doc
    for part in path[:-1]:
        target = target[part]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("order_id",), "", "order.order_id: '' is not 1-64 characters of"),
        (("order_id",), "ORD 1", "order.order_id: 'ORD 1' is not 1-64 characters of"),
        (("order_id",), "ORD-1\n", "order.order_id: 'ORD-1\\n' is not 1-64 characters of"),
        (("order_id",), "ORD..1", "order.order_id: 'ORD..1' is not 1-64 characters of"),
        (("items", 0, "line_id"), "1\n", "order.items[0].line_id: '1\\n' is not 1-64 characters"),
        (("order_id",), "x" * 65, "order.order_id:"),
        (("order_id",), _DELETE, "order: 'order_id' is a required property"),
        (("customer_id",), 42, "order.customer_id: 42 is not of type 'string'"),
        (("ship_to", "country"), "Germany", "order.ship_to.country: 'Germany' is not an ISO"),
        (("ship_to", "country"), "DE\n", "order.ship_to.country: 'DE\\n' is not an ISO"),
        (("ship_to", "name"), "A\x00", "order.ship_to.name: 'A\\x00' is not text without control"),
        (("items", 0, "sku"), "MUG\tRED", "order.items[0].sku: 'MUG\\tRED' is not text without"),
        (("items", 0, "quantity"), 2.5, "order.items[0].quantity: 2.5 is not of type 'integer'"),
        (("items", 0, "quantity"), True, "order.items[0].quantity: True is not of type 'integer'"),
        (("ship_to", "city"), _DELETE, "order.ship_to: 'city' is a required property"),
        (("items",), [], "order.items: [] should be non-empty"),
        (("items", 0, "quantity"), 0, "order.items[0].quantity: 0 is less than the minimum of 1"),
        (("items", 1, "quantity"), 10001, "order.items[1].quantity: 10001 is greater than"),
        (("items", 0, "quantity"), "2", "order.items[0].quantity: '2' is not of type 'integer'"),
        (("items", 0, "sku"), "", "order.items[0].sku: '' should be non-empty"),
        (("items", 0, "sku"), "S" * 65, "order.items[0].sku:"),
        (("items", 0, "line_id"), _DELETE, "order.items[0]: 'line_id' is a required property"),
        (("items", 0, "colour"), "red", "order.items[0]: Additional properties are not allowed"),
        (("coupon",), "FREE", "order: Additional properties are not allowed ('coupon'"),
    ],
)
def test_each_invalid_shape_gets_its_own_clear_message(
    path: tuple[Any, ...], value: Any, message: str
) -> None:
    """Every schema violation is reported with where it is and what is wrong."""
    doc = valid_order()
    _set(doc, path, value)
    with pytest.raises(InvalidOrder) as excinfo:
        parse_order(doc)
    assert len(excinfo.value.errors) == 1
    assert excinfo.value.errors[0].startswith(message)


def test_too_many_items_are_refused() -> None:
    """More than MAX_ITEMS lines is refused (Airflow's max_map_length is 1024)."""
    doc = valid_order()
    doc["items"] = [{"line_id": str(i), "sku": "S", "quantity": 1} for i in range(MAX_ITEMS + 1)]
    with pytest.raises(InvalidOrder) as excinfo:
        parse_order(doc)
    assert excinfo.value.errors == [f"order.items: a list of {MAX_ITEMS + 1} items is too long"]


def test_a_long_value_is_described_in_its_refusal_not_quoted_whole() -> None:
    """An over-long name is shortened in the message; short values are still quoted whole."""
    doc = valid_order()
    doc["ship_to"]["name"] = "A" * 5000
    doc["ship_to"]["country"] = "germany"
    with pytest.raises(InvalidOrder) as excinfo:
        parse_order(doc)
    bad_country, long_name = sorted(excinfo.value.errors)
    assert bad_country.startswith("order.ship_to.country: 'germany' is not an ISO 3166-1")
    assert long_name.startswith("order.ship_to.name: 'AAAA")
    assert long_name.endswith("... (5000 characters) is too long")
    assert len(long_name) < 150


def test_a_document_that_is_not_an_object_is_refused() -> None:
    """A JSON list is not an order."""
    with pytest.raises(InvalidOrder, match="is not of type 'object'"):
        parse_order([1, 2])


def test_every_schema_problem_is_reported_at_once() -> None:
    """Several problems give several messages, not just the first."""
    doc = valid_order()
    doc["items"][0]["quantity"] = 0
    doc["ship_to"]["country"] = "de"
    with pytest.raises(InvalidOrder) as excinfo:
        parse_order(doc)
    assert len(excinfo.value.errors) == 2


def test_duplicate_line_ids_are_refused_naming_the_line() -> None:
    """A rule the schema cannot say: line ids are unique within an order."""
    doc = valid_order()
    doc["items"][1]["line_id"] = "1"
    with pytest.raises(InvalidOrder) as excinfo:
        parse_order(doc)
    assert excinfo.value.errors == ["order.items: duplicate line_id '1'"]


def test_idempotency_key_is_order_id_and_line_id() -> None:
    """The key is `<order_id>:<line_id>`, nothing that changes between retries."""
    assert idempotency_key("ORD-1001", "2") == "ORD-1001:2"


def test_run_id_is_prefixed_order_id() -> None:
    """Each order is one dag run named `order-<order_id>`."""
    assert run_id_for("ORD-1001") == "order-ORD-1001"


def test_content_hash_ignores_key_order() -> None:
    """Equal JSON values hash equal whatever their key order."""
    doc = valid_order()
    shuffled = dict(reversed(list(copy.deepcopy(doc).items())))
    assert content_hash(doc) == content_hash(shuffled)
    assert parse_order(doc).content_hash() == content_hash(doc)


def test_content_hash_changes_with_content() -> None:
    """A different quantity gives a different hash."""
    doc = valid_order()
    other = copy.deepcopy(doc)
    other["items"][0]["quantity"] = 3
    assert content_hash(doc) != content_hash(other)


def test_schema_refuses_unknown_top_level_fields() -> None:
    """Airflow accepts undeclared conf keys silently; the schema must not."""
    assert ORDER_SCHEMA["additionalProperties"] is False


def test_an_integral_float_quantity_is_that_integer() -> None:
    """JSON's 2.0 is the integer 2: accepted, and the warehouse gets the int."""
    doc = valid_order()
    doc["items"][0]["quantity"] = 2.0
    order = parse_order(doc)
    assert type(order.items[0].quantity) is int
    assert order.content_hash() == parse_order(valid_order()).content_hash()


def test_a_lone_surrogate_is_refused_by_the_rules_with_its_place() -> None:
    """A string JSON can carry but no database or HTTP body can: refused, naming the field."""
    doc = valid_order()
    doc["ship_to"]["city"] = "Berlin\ud800"
    with pytest.raises(InvalidOrder, match=r"order\.ship_to\.city: not valid Unicode"):
        parse_order(doc)


def test_a_whole_string_pattern_accepts_the_value_and_refuses_a_trailing_newline() -> None:
    """_whole anchors both ends: Python's "$" alone would let "DE\\n" through."""
    pattern = _whole("[A-Z]", "{2}")
    assert [bool(re.search(pattern, v)) for v in ("DE", "DE\n", "DEU", "xDE")] == [
        True,
        False,
        False,
        False,
    ]


@pytest.mark.parametrize(
    ("value", "valid"),
    [("abc", True), ("a", True), ("", False), ("abcd", False), ("a\tb", False), (5, False)],
)
def test_a_text_field_takes_strings_within_its_lengths_without_control_characters(
    value: object, valid: bool
) -> None:
    """_text(1, 3): a string of 1 to 3 characters, none of them a control character."""
    assert jsonschema.Draft202012Validator(_text(1, 3)).is_valid(value) is valid


def test_an_invalid_orders_message_lists_every_problem() -> None:
    """str(InvalidOrder) is what a task log shows: every problem, separated by "; "."""
    assert str(InvalidOrder(["order.a: bad", "order.b: worse"])) == (
        "invalid order: order.a: bad; order.b: worse"
    )


def test_a_value_of_exactly_the_quoted_length_is_quoted_whole() -> None:
    """A name whose quoted form is 80 characters long is still quoted, not described."""
    doc = valid_order()
    doc["ship_to"]["name"] = name = "A" * 76 + "\t"  # quoted: 2 quotes, 76 A's, "\\t"
    with pytest.raises(InvalidOrder) as excinfo:
        parse_order(doc)
    assert excinfo.value.errors == [
        f"order.ship_to.name: {name!r} is not text without control characters "
        "(newline, tab, NUL, ...)"
    ]


def test_a_long_string_is_shown_by_its_first_sixty_characters_and_its_length() -> None:
    """A 5000-character name is cut to 60 characters of its quoted form, then counted."""
    doc = valid_order()
    doc["ship_to"]["name"] = "A" * 5000
    with pytest.raises(InvalidOrder) as excinfo:
        parse_order(doc)
    assert excinfo.value.errors == [
        f"order.ship_to.name: '{'A' * 59}... (5000 characters) is too long"
    ]


def test_a_long_number_is_cut_to_seventy_seven_characters() -> None:
    """A quantity of 100 digits is quoted by its first 77 digits and an ellipsis."""
    doc = valid_order()
    doc["items"][0]["quantity"] = 10**99
    with pytest.raises(InvalidOrder) as excinfo:
        parse_order(doc)
    assert excinfo.value.errors == [
        f"order.items[0].quantity: {'1' + '0' * 76}... is greater than the maximum of 10000"
    ]


def test_a_lines_errors_come_in_field_order() -> None:
    """line_errors sorts by where each problem is: line_id, quantity, sku."""
    errors = line_errors({"line_id": "1\n", "sku": "", "quantity": 0})
    assert [e.split(":", 1)[0] for e in errors] == ["line.line_id", "line.quantity", "line.sku"]


def test_a_lines_error_renames_only_its_own_place() -> None:
    """Only the leading "order" becomes "line": a quoted value with "order" in it stays."""
    assert line_errors({"line_id": "1", "sku": "border\t", "quantity": 1}) == [
        "line.sku: 'border\\t' is not text without control characters (newline, tab, NUL, ...)"
    ]


def test_a_lone_surrogate_in_a_line_is_refused_naming_the_line() -> None:
    """A lone surrogate inside the items list is found and placed by its index."""
    doc = valid_order()
    doc["items"][1]["sku"] = "TEE\udfff"
    with pytest.raises(InvalidOrder) as excinfo:
        parse_order(doc)
    assert excinfo.value.errors == ["order.items[1].sku: not valid Unicode (a lone surrogate)"]


def test_every_duplicate_line_id_is_named_once() -> None:
    """Two ids used twice are both named, in the order they were seen, once each."""
    doc = valid_order()
    doc["items"] = [{"line_id": i, "sku": "S", "quantity": 1} for i in ("2", "1", "2", "1", "2")]
    with pytest.raises(InvalidOrder) as excinfo:
        parse_order(doc)
    assert excinfo.value.errors == ["order.items: duplicate line_id '2', '1'"]


def test_schema_problems_are_listed_by_where_they_are() -> None:
    """Problems come sorted by their place in the document, whatever its depth."""
    doc = valid_order()
    doc["customer_id"] = 42
    doc["ship_to"]["country"] = "de"
    doc["items"][0]["quantity"] = 0
    with pytest.raises(InvalidOrder) as excinfo:
        parse_order(doc)
    assert [e.split(":", 1)[0] for e in excinfo.value.errors] == [
        "order.customer_id",
        "order.items[0].quantity",
        "order.ship_to.country",
    ]


def test_the_content_hash_of_a_fixed_document_never_changes() -> None:
    """Ledgers store the digest and compare later registrations with it: its canonical form
    (sorted keys, no spaces, UTF-8 text unescaped) is fixed across releases."""
    digest = content_hash({"b": "Straße", "a": [1, 2]})
    assert digest == "77cb203fb2de4c77fe49d2897722fbb700c67482a9ce8ec3eec18cf50488344b"
