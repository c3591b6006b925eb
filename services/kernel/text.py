"""Text the CRM keeps and shows: one cleaning function for every way in and out.

People and other systems type the CRM's text, and a model or a browser reads it. Characters that cannot be
seen are the usual ways to make text display differently from what it says (bidirectional overrides reorder
it, zero-width and filler characters hide words, tag characters carry a hidden message). `clean_text` drops
them: on the write path the input types (services.kernel.schemas) store text cleaned, so every front end
returns clean text; the MCP server cleans what it shows a model with the same function, which also covers
rows written before.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Line breaks in all their spellings, written as "\n": CR LF and CR, vertical tab, form feed, next line (NEL),
# and the line and paragraph separators U+2028 and U+2029 (which also end a JavaScript string literal).
_LINE_BREAK = re.compile("\r\n|[\r\x0b\x0c\x85\u2028\u2029]")

# Line breaks and tabs are text; every other control (Cc), format (Cf: bidi embeddings, overrides and isolates,
# zero-width characters, word joiners, tag characters, the BOM), private-use (Co) and surrogate (Cs)
# character is not.
_KEEP = frozenset("\n\t")
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs"})

# Unicode's default-ignorable code points outside those categories: invisible by definition, yet letters or
# marks. The combining grapheme joiner U+034F; the Hangul fillers U+115F, U+1160, U+3164, U+FFA0; the Khmer
# inherent vowels U+17B4, U+17B5 (deprecated); U+2065 and U+FFF0-U+FFF8 (reserved); the variation selectors
# U+FE00-U+FE0F; and the tags block U+E0000-U+E0FFF with the variation selectors supplement U+E0100-U+E01EF.
# (The Mongolian free variation selectors U+180B-U+180D, U+180F stay: the script's letters need them.)
_INVISIBLE = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u2065\u3164\ufe00-\ufe0f\uffa0\ufff0-\ufff8\U000e0000-\U000e0fff]"
)


# What of the above ASCII text can hold once its line breaks are "\n": the C0 controls but tab and newline, and
# DEL. Most of the CRM's text is ASCII, and is cleaned by this one pattern rather than a character at a time.
_ASCII_DROPPED = re.compile("[\x00-\x08\x0b-\x1f\x7f]")


@lru_cache(maxsize=8192)
def _dropped(char: str) -> bool:
    return char not in _KEEP and (
        unicodedata.category(char) in _DROPPED_CATEGORIES or _INVISIBLE.match(char) is not None
    )


def clean_text(text: str, *, single_line: bool = False) -> str:
    """`text` without control, bidirectional-override and invisible characters, its line breaks written "\\n".

    Multi-line text (notes, addresses) keeps its line breaks and tabs. Single-line text (names, titles,
    subjects) keeps none: runs of whitespace, line breaks included, become one space, and the ends are
    trimmed."""
    text = _LINE_BREAK.sub("\n", text)
    if text.isascii():
        kept = _ASCII_DROPPED.sub("", text)
    else:
        kept = "".join(char for char in text if not _dropped(char))
    return " ".join(kept.split()) if single_line else kept
