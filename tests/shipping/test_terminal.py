"""Text from the ledger reaches a terminal shown, never obeyed."""

from __future__ import annotations

import io
import json
import sys

import pytest

from shipping.ops import cli
from shipping.ops.render import render_status
from shipping.terminal import SafeStream, terminal_safe

HOSTILE = {
    "clear screen": "\x1b[2J",
    "OSC 52 clipboard": "\x1b]52;c;ZWNobyBoaQ==\x07",
    "carriage return overwrite": "ok\rFAILED",
    "C1 CSI": "\x9b31m",
    "right-to-left override": "\u202egnp.exe",
    "first strong isolate": "\u2068x\u2069",
    "NUL": "a\x00b",
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_control_and_bidi_characters_are_shown_escaped(text: str) -> None:
    """No control or bidi character survives; each shows as its escape."""
    safe = terminal_safe(text)
    assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in safe)
    assert not any(ch in safe for ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    assert safe != text


def test_newlines_tabs_and_plain_unicode_pass_unchanged() -> None:
    """Line breaks, tabs and ordinary letters (any script) are left alone."""
    text = "Zoë\tБерлин\n東京 ✓"
    assert terminal_safe(text) == text


def test_a_safe_stream_writes_escaped_text_and_counts_what_it_was_given() -> None:
    """print() through the stream writes the escaped text."""
    sink = io.StringIO()
    print("reason: \x1b[2Jgone", file=SafeStream.wrap(sink))
    assert sink.getvalue() == "reason: \\x1b[2Jgone\n"


def status_with_reason(reason: str) -> dict[str, object]:
    return {
        "order_id": "O-1",
        "state": "SHIPPING",
        "reason": None,
        "run_id": "order-O-1",
        "other_runs": [],
        "cancelled_lines": 0,
        "lines": [
            {
                "line_id": "1",
                "sku": "MUG",
                "quantity": 1,
                "state": "CANCELLING",
                "attempts": 1,
                "shipment_id": None,
                "last_error": "SkuRefused: \x1b]8;;http://evil\x07click\x1b]8;;\x07",
            }
        ],
        "amendments": [
            {
                "line_id": "1",
                "action": "CANCEL",
                "by": "ada",
                "reason": reason,
                "at": "2026-12-07T00:00:00+00:00",
                "old": {"sku": "MUG", "quantity": 1},
                "new": None,
                "void": {"key": "O-1:1", "cancelled_shipment_id": None, "voided_at": None},
            }
        ],
    }


def test_shipping_status_shows_an_amendments_escape_sequences_escaped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`shipping status` prints a hostile reason and error detail escaped, never raw."""
    doc = status_with_reason("gone\x1b[2J\u202eevil")
    monkeypatch.setattr(cli, "_run", lambda args: sys.stdout.write(render_status(doc)) and 0)
    assert cli.main(["status", "O-1"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\u202e" not in out
    assert "gone\\x1b[2J\\u202eevil" in out
    assert "void pending" in out


def test_json_output_keeps_the_data_and_escapes_it_itself() -> None:
    """--json prints JSON: control characters are escaped by the encoder, data kept."""
    doc = status_with_reason("gone\x1b[2J")
    text = json.dumps(doc)
    assert "\x1b" not in text
    assert json.loads(text)["amendments"][0]["reason"] == "gone\x1b[2J"
