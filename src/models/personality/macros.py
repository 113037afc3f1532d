"""Card macros: `{{char}}`, `{{user}}`, `<BOT>`, `<USER>` and the V3 curly-brace set.

Case-insensitive, expanded last (after the prompt is assembled):

* `{{char}}`, `<BOT>`, `<char>` → the character's nickname or name; `{{user}}`, `<USER>` → the user
* `{{random:A,B,C}}` a new pick each time; `{{pick:A,B,C}}` a stable pick for the same text
  (`\\,` escapes a comma); `{{roll:N}}` / `{{roll:dN}}` 1..N
* `{{// comment}}`, `{{hidden_key:X}}` removed; `{{comment: X}}` removed from prompts
* `{{reverse:X}}` X reversed; `{{original}}` the app's own prompt (system prompt fields only)
"""

from __future__ import annotations

import random
import re
import zlib

__all__ = ["expand_macros", "strip_for_matching"]

_CHAR = re.compile(r"\{\{char\}\}|<bot>|<char>", re.IGNORECASE)
_USER = re.compile(r"\{\{user\}\}|<user>", re.IGNORECASE)
_CALL = re.compile(r"\{\{\s*(random|pick|roll|reverse|comment|hidden_key)\s*:(.*?)\}\}", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"\{\{//.*?\}\}", re.DOTALL)
_ORIGINAL = re.compile(r"\{\{original\}\}", re.IGNORECASE)


def _options(arg: str) -> list[str]:
    parts = re.split(r"(?<!\\),", arg)
    return [p.replace("\\,", ",").strip() for p in parts]


def expand_macros(
    text: str,
    *,
    char: str,
    user: str,
    original: str = "",
    rng: random.Random | None = None,
) -> str:
    """`text` with every macro expanded (see the module docstring)."""
    if not text or ("{" not in text and "<" not in text):
        return text
    rng = rng or random.Random()
    text = _COMMENT.sub("", text)

    def call(m: re.Match[str]) -> str:
        kind, arg = m.group(1).lower(), m.group(2)
        if kind == "random":
            return rng.choice(_options(arg))
        if kind == "pick":
            opts = _options(arg)
            return opts[zlib.crc32(text.encode("utf-8")) % len(opts)]
        if kind == "roll":  # ASCII digits only ("²" passes isdigit()), and a die of at most 6 digits
            digits = arg.strip().lower().lstrip("d")
            if re.fullmatch(r"[0-9]{1,6}", digits) and int(digits) > 0:
                return str(rng.randint(1, int(digits)))
            return m.group(0)
        if kind == "reverse":
            return arg[::-1]
        return ""  # comment, hidden_key

    text = _CALL.sub(call, text)
    text = _ORIGINAL.sub(lambda _m: original, text)
    text = _CHAR.sub(lambda _m: char, text)
    return _USER.sub(lambda _m: user, text)


def strip_for_matching(text: str) -> str:
    """Text as lorebook keys see it: comments removed, hidden keys kept as plain words."""
    text = _COMMENT.sub("", text)
    return re.sub(r"\{\{\s*hidden_key\s*:(.*?)\}\}", r"\1", text, flags=re.IGNORECASE | re.DOTALL)
