"""Text cleaning shared by every source: Unicode, whitespace, hard wraps, Gutenberg boilerplate.

* `normalize_text`: Unicode NFC (so "é" is one code point whatever the file used), `\\r\\n` and
  `\\r` → `\\n`, zero-width and control characters removed (tabs and newlines kept), trailing
  spaces dropped, runs of blank lines collapsed to one.
* `unwrap_paragraphs`: joins the lines of hard-wrapped paragraphs (Project Gutenberg wraps at
  about 70 columns) so a paragraph is one line, but keeps line breaks where they carry meaning
  (verse, play dialogue, lists): a paragraph is unwrapped only when it looks wrapped, i.e. all
  but its last line are long (≥ 45 characters) and end inside a sentence or a word run.
* `strip_gutenberg`: removes the Project Gutenberg header and licence footer (the
  `*** START OF ... ***` / `*** END OF ... ***` markers, and the older `*END*THE SMALL PRINT!`
  and `End of the Project Gutenberg EBook` forms), "Produced by" credits and `[Illustration]`
  placeholders.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "GUTENBERG_END",
    "GUTENBERG_START",
    "clean_text",
    "normalize_text",
    "strip_gutenberg",
    "strip_gutenberg_end",
    "strip_gutenberg_start",
    "unwrap_paragraphs",
]

GUTENBERG_START = re.compile(
    r"^\s*\*{3}\s*START OF (?:THE |THIS )?PROJECT GUTENBERG[^\n]*$|^\s*\*END\*THE SMALL PRINT![^\n]*$",
    re.IGNORECASE | re.MULTILINE,
)
GUTENBERG_END = re.compile(
    r"^\s*\*{3}\s*END OF (?:THE |THIS )?PROJECT GUTENBERG[^\n]*$"
    r"|^\s*End of (?:the )?Project Gutenberg(?:'s)? (?:E-?book|E-?text|Etext)[^\n]*$",
    re.IGNORECASE | re.MULTILINE,
)
_CREDITS = re.compile(r"^\s*(?:Produced by|This e-?book was produced by|E-?text prepared by)\b", re.IGNORECASE)
_ILLUSTRATION = re.compile(r"\[Illustration[^\]]*\]", re.IGNORECASE)
# Control and format characters except tab and newline (zero-width spaces, BOMs, bidi marks ...).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200d\u2060\ufeff]")
_TRAILING = re.compile(r"[ \t]+\n")
_BLANKS = re.compile(r"\n\s*\n(?:\s*\n)+")
_PARA_SPLIT = re.compile(r"\n[ \t]*\n")
_WRAP_MIN = 45


def normalize_text(text: str) -> str:
    """NFC, one newline convention, no control characters, no trailing spaces, ≤ 1 blank line."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _TRAILING.sub("\n", text)
    return _BLANKS.sub("\n\n", text).strip()


def _looks_wrapped(lines: list[str]) -> bool:
    if len(lines) < 2:
        return False
    body = lines[:-1]
    long_enough = sum(len(line) >= _WRAP_MIN for line in body)
    return long_enough >= max(1, int(0.8 * len(body)))


def unwrap_paragraphs(text: str) -> str:
    """Join hard-wrapped lines inside paragraphs; keep verse and short-line blocks as they are."""
    out = []
    for para in _PARA_SPLIT.split(text):
        lines = [line.strip() for line in para.split("\n") if line.strip()]
        if not lines:
            continue
        out.append(" ".join(lines) if _looks_wrapped(lines) else "\n".join(lines))
    return "\n\n".join(out)


def strip_gutenberg_start(text: str) -> tuple[str, bool]:
    """Drop everything up to and including a start marker; (text, whether one was found)."""
    m = GUTENBERG_START.search(text)
    if m is None:
        return text, False
    return text[m.end() :], True


def strip_gutenberg_end(text: str) -> tuple[str, bool]:
    """Drop an end marker and everything after it; (text, whether one was found)."""
    m = GUTENBERG_END.search(text)
    if m is None:
        return text, False
    return text[: m.start()], True


def strip_gutenberg(text: str) -> str:
    """Header, footer, credits and illustration placeholders of a Project Gutenberg text."""
    text, _ = strip_gutenberg_start(text)
    text, _ = strip_gutenberg_end(text)
    paras = _PARA_SPLIT.split(text.strip("\n"))
    head = [p for p in paras[:5] if not _CREDITS.match(p)]
    text = "\n\n".join(head + paras[5:])
    return _ILLUSTRATION.sub("", text)


def clean_text(text: str, *, unwrap: bool = True, gutenberg: bool = True) -> str:
    """The full cleaning of a prose document (see the module docstring)."""
    if gutenberg:
        text = strip_gutenberg(text.replace("\r\n", "\n"))
    text = normalize_text(text)
    return unwrap_paragraphs(text) if unwrap else text
