"""Text from files (track ids from file names, titles from tags, paths) printed so that it cannot disturb the output.

A file named "a<newline>b.ogg" gives the track id "a\nb", which a table prints as two rows that look like two
tracks; a tag holding ANSI escape sequences would recolour or rewrite the terminal; a right-to-left override
(U+202E) reverses what follows. `visible` shows every such character as its Python escape (`\n`, `\x1b`,
`\u202e`), so the text stays on its line and says what it holds, and escapes rich markup ("[bold]") as well.
The JSON outputs (`--json`) carry the text unchanged.
"""

from __future__ import annotations

import unicodedata

from rich.markup import escape

__all__ = ["visible"]

# Unicode's bidirectional embedding, override and isolate controls (UAX #9): invisible, they reorder what follows.
_BIDI_CONTROLS = frozenset(map(chr, (*range(0x202A, 0x202F), *range(0x2066, 0x206A))))
# C0/C1 controls (newline, tab, escape, ...), and the line and paragraph separators, which also break lines.
_BREAKING_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def visible(text: str | None) -> str:
    """`text` for a rich table or line: control characters as escapes (see the module docstring), markup escaped."""
    if not text:
        return ""
    shown = "".join(
        char.encode("unicode_escape").decode("ascii")
        if char in _BIDI_CONTROLS or unicodedata.category(char) in _BREAKING_CATEGORIES
        else char
        for char in text
    )
    return escape(shown)
