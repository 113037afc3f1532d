"""What importers read from strangers' files, bounded in one place (issue 16).

A companion imports character cards shared online, Discord exports, EPUBs and update catalogs
by design, so every importer checks sizes, counts and nesting *before* it reads, decompresses
or parses, and refuses with an error that names the file and the limit:

============================  ==========  ====================================================
limit                         default     where it applies
============================  ==========  ====================================================
``card_file_bytes``           64 MiB      a card file (PNG, JSON, CHARX) as read from disk
``card_json_bytes``           16 MiB      the card JSON once decoded (PNG text chunk, CHARX
                                          ``card.json``)
``png_text_bytes``            16 MiB      one decompressed ``zTXt``/``iTXt`` chunk (only the
                                          ``chara``/``ccv3`` keywords are decompressed at all)
``zip_members``               2,000       members of a CHARX or EPUB
``zip_member_bytes``          64 MiB      one member, uncompressed
``zip_total_bytes``           256 MiB     all members together, uncompressed
``json_depth``                64          nesting of any JSON we parse from outside (cards,
                                          chat logs, Discord exports, catalogs)
``card_field_chars``          200,000     one text field of a card (description, greeting, ...)
``lorebook_entries``          5,000       entries of a card's lorebook
``config_bytes``              4 MiB       ``COMPANION_HOME/config.yaml``
============================  ==========  ====================================================

Change them for a process with ``models.limits.configure(card_field_chars=500_000)`` (or by
assigning a new ``ImportLimits`` to ``models.limits.LIMITS``); every check reads the current value.
The regex budget of lorebooks lives with the lorebook (``models.personality.lorebook``), the
fetch deadline with updates (``updates.timeout``).
"""

from __future__ import annotations

import re
import zipfile
import zlib
from dataclasses import dataclass, fields, replace
from typing import IO, Any

from models.errors import DataError

__all__ = [
    "LIMITS",
    "ImportLimits",
    "LimitError",
    "bounded_events",
    "check_json_depth",
    "check_zip",
    "configure",
    "inflate",
    "json_depth",
    "loads_bounded",
    "loads_line",
    "read_member",
]

MiB = 1 << 20


@dataclass(frozen=True)
class ImportLimits:
    """Sizes, counts and depths importers accept (see the module docstring)."""

    card_file_bytes: int = 64 * MiB
    card_json_bytes: int = 16 * MiB
    png_text_bytes: int = 16 * MiB
    zip_members: int = 2_000
    zip_member_bytes: int = 64 * MiB
    zip_total_bytes: int = 256 * MiB
    json_depth: int = 64
    card_field_chars: int = 200_000
    lorebook_entries: int = 5_000
    config_bytes: int = 4 * MiB


LIMITS = ImportLimits()


class LimitError(DataError):
    """A file is over one of the import limits; the message names the file and the limit."""


def configure(**changes: int) -> ImportLimits:
    """Change limits for this process (e.g. `configure(zip_total_bytes=1 << 30)`); returns them."""
    global LIMITS
    known = {f.name for f in fields(ImportLimits)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"unknown import limit(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for name, value in changes.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    LIMITS = replace(LIMITS, **changes)
    return LIMITS


def _size(n: int) -> str:
    return f"{n / MiB:.0f} MiB" if n >= MiB else f"{n:,} bytes"


def _refuse(source: str, what: str, limit_name: str, limit: int, unit: str = "bytes") -> LimitError:
    shown = _size(limit) if unit == "bytes" else f"{limit:,} {unit}"
    return LimitError(
        f"{source}: {what} is over the limit of {shown} (models.limits: {limit_name}); refused before reading it whole"
    )


def inflate(data: bytes, limit: int, source: str, what: str, limit_name: str = "png_text_bytes") -> bytes:
    """zlib-decompress `data`, stopping as soon as the output would pass `limit` bytes."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise LimitError(f"{source}: {what} is not valid zlib data ({exc})") from None
    if len(out) > limit or d.unconsumed_tail:
        raise _refuse(source, f"{what} (decompressed)", limit_name, limit)
    return out


def check_zip(z: zipfile.ZipFile, source: str, limits: ImportLimits | None = None) -> list[zipfile.ZipInfo]:
    """The members of `z`, once their count and declared sizes are within the limits.

    Declared sizes bound what `zipfile` will produce (it stops a member at its declared size and
    fails its CRC), so checking them before reading bounds memory; `read_member` checks again."""
    lim = limits or LIMITS
    members = [i for i in z.infolist() if not i.is_dir()]
    if len(members) > lim.zip_members:
        raise _refuse(source, f"a zip of {len(members):,} members", "zip_members", lim.zip_members, "members")
    total = 0
    for info in members:
        if info.file_size > lim.zip_member_bytes:
            raise _refuse(source, f"member {info.filename!r} ({_size(info.file_size)})", "zip_member_bytes",
                          lim.zip_member_bytes)  # fmt: skip
        total += info.file_size
        if total > lim.zip_total_bytes:
            raise _refuse(source, "the zip's members together", "zip_total_bytes", lim.zip_total_bytes)
    return members


def read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo | str, source: str, limit: int, limit_name: str) -> bytes:
    """One member, read incrementally and refused as soon as it passes `limit` bytes."""
    name = info.filename if isinstance(info, zipfile.ZipInfo) else info
    with z.open(info) as f:
        data = _read_capped(f, limit)
    if len(data) > limit:
        raise _refuse(source, f"member {name!r}", limit_name, limit)
    return data


def _read_capped(f: IO[bytes], limit: int) -> bytes:
    chunks, got = [], 0
    while got <= limit:
        block = f.read(min(1 * MiB, limit + 1 - got))
        if not block:
            break
        chunks.append(block)
        got += len(block)
    return b"".join(chunks)


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(text: str | bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (strings are skipped), computed
    without parsing: linear time, no recursion."""
    import numpy as np

    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    stripped = _STRING.sub("", raw).encode("ascii", "ignore")
    b = np.frombuffer(stripped, dtype=np.uint8)
    if not len(b):
        return 0
    step = ((b == 0x5B) | (b == 0x7B)).astype(np.int32) - ((b == 0x5D) | (b == 0x7D)).astype(np.int32)
    return int(np.cumsum(step).max(initial=0))


def check_json_depth(text: str | bytes, source: str, limits: ImportLimits | None = None) -> None:
    lim = limits or LIMITS
    depth = json_depth(text)
    if depth > lim.json_depth:
        raise LimitError(
            f"{source}: JSON nested {depth:,} levels deep, over the limit of {lim.json_depth} "
            "(models.limits: json_depth); refused before parsing"
        )


def loads_bounded(text: str | bytes, source: str, limits: ImportLimits | None = None) -> Any:
    """`json.loads` after the depth check (a RecursionError can no longer escape)."""
    import json

    check_json_depth(text, source, limits)
    return json.loads(text)


def loads_line(line: str, source: str, limits: ImportLimits | None = None) -> Any:
    """`json.loads` of one JSONL line; the depth check runs only when the line has more brackets
    than the limit allows (so ordinary lines cost one count)."""
    import json

    lim = limits or LIMITS
    if line.count("[") + line.count("{") > lim.json_depth:
        check_json_depth(line, source, lim)
    return json.loads(line)


_OPEN = frozenset({"start_map", "start_array"})
_CLOSE = frozenset({"end_map", "end_array"})


def bounded_events(events: Any, source: str, limits: ImportLimits | None = None) -> Any:
    """Pass `ijson` events through, refusing as soon as nesting passes `json_depth` (a streaming
    parser's per-event paths grow with depth, so an 80 KB file nested 40 k deep used to reach
    gigabytes). Works on `ijson.parse` (prefix, event, value) and `basic_parse` (event, value)."""
    lim = limits or LIMITS
    depth = 0
    for item in events:
        event = item[-2]
        if event in _OPEN:
            depth += 1
            if depth > lim.json_depth:
                raise LimitError(
                    f"{source}: JSON nested deeper than {lim.json_depth} levels (models.limits: json_depth); "
                    "refused while reading"
                )
        elif event in _CLOSE:
            depth -= 1
        yield item
