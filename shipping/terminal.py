"""Text for a terminal: what comes from the ledger or the warehouse is shown, not obeyed.

An amendment's reason, a warehouse error's detail, a SKU: any of them may hold escape
sequences (``ESC [ 2 J`` clears the screen, OSC 8 writes links, OSC 52 the clipboard) or
bidirectional controls that make a line read otherwise than it is. The ``shipping``
command writes everything through :class:`SafeStream`, so each such character is shown as
a visible escape (``\\x1b``, ``\\u202e``) instead of reaching the terminal. JSON output is
unaffected (``json.dumps`` escapes control characters itself and bidi controls are kept
as data, escaped by ``ensure_ascii``).
"""

from __future__ import annotations

import re
from typing import Any, Final, TextIO, cast

#: C0 controls but newline and tab, DEL, C1 controls, and the bidirectional controls.
_UNSAFE: Final = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def terminal_safe(text: str) -> str:
    """``text`` with every control and bidi character replaced by its visible escape."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class SafeStream:
    """A text stream that writes :func:`terminal_safe` text to the stream it wraps.

    Args:
        stream: Where the text goes (``sys.stdout``, ``sys.stderr``).
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    @classmethod
    def wrap(cls, stream: TextIO) -> TextIO:
        """``stream`` made safe, typed as the stream it stands for."""
        return stream if isinstance(stream, cls) else cast(TextIO, cls(stream))

    def write(self, text: str) -> int:
        """Write ``text``, made safe; returns the length of ``text`` (what print expects)."""
        self._stream.write(terminal_safe(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
