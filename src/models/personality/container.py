"""Where character cards travel: PNG `tEXt` chunks and CHARX zips (bytes in, bytes out).

* PNG (and APNG): the card JSON, UTF-8 then base64, in a `tEXt` chunk named `chara` (V1/V2)
  or `ccv3` (V3). Readers match keywords case-insensitively and also accept `iTXt`/`zTXt`;
  `ccv3` wins when both exist. Writers put the text chunks right after `IHDR` and keep every
  other chunk (the avatar image) as it was.
* CHARX: a ZIP with `card.json` at its root and assets addressed as `embeded://path`.

Nothing here knows what a card means; `models.personality.card` does.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import struct
import zipfile
import zlib
from typing import Any

from models import limits
from models.errors import CardError

__all__ = [
    "PNG_SIGNATURE",
    "default_avatar",
    "png_card_payloads",
    "read_charx",
    "write_charx",
    "write_png_card",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
log = logging.getLogger(__name__)
_CARD_KEYS = ("chara", "ccv3")


def _chunks(data: bytes, source: str) -> list[tuple[bytes, bytes]]:
    if not data.startswith(PNG_SIGNATURE):
        raise CardError("png", "not a PNG file (bad signature)", source=source)
    pos, out = len(PNG_SIGNATURE), []
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        end = pos + 8 + length
        if end + 4 > len(data):
            raise CardError("png", f"chunk {ctype!r} at byte {pos} runs past the end of the file", source=source)
        body = data[pos + 8 : end]
        (crc,) = struct.unpack(">I", data[end : end + 4])
        if crc != zlib.crc32(ctype + body) & 0xFFFFFFFF and ctype in (b"tEXt", b"iTXt", b"zTXt"):
            log.warning("%s: the %s chunk at byte %d fails its CRC (the file is damaged); read anyway", source,
                        ctype.decode("latin-1"), pos)  # fmt: skip
        out.append((ctype, body))
        pos = end + 4
        if ctype == b"IEND":
            break
    return out


def _keyword(body: bytes) -> str | None:
    """The keyword of a text chunk (read before anything is decompressed)."""
    if b"\0" not in body[:80]:
        return None
    return body.split(b"\0", 1)[0].decode("latin-1").lower()


def _text_of(ctype: bytes, body: bytes, source: str = "png", decode: bool = True) -> tuple[str, str] | None:
    """`(keyword, text)` of a text chunk; compressed text is inflated only for card keywords and
    within `models.limits` (`png_text_bytes`)."""
    keyword = _keyword(body)
    if keyword is None:
        return None
    if not decode or keyword not in _CARD_KEYS:
        return keyword, ""
    rest = body.split(b"\0", 1)[1]
    limit = limits.LIMITS.png_text_bytes
    what = f"the {keyword!r} {ctype.decode('latin-1')} chunk"
    if ctype == b"tEXt":
        return keyword, rest.decode("latin-1")
    if ctype == b"zTXt":
        return keyword, limits.inflate(rest[1:], limit, source, what).decode("latin-1")
    if ctype == b"iTXt":
        compressed = rest[:1] == b"\x01"
        text = rest[2:].split(b"\0", 2)[-1]
        return keyword, (limits.inflate(text, limit, source, what) if compressed else text).decode("utf-8")
    return None


def png_card_payloads(data: bytes, source: str = "png") -> dict[str, Any]:
    """The decoded card JSON objects found in a PNG, by keyword (`chara`, `ccv3`)."""
    found: dict[str, Any] = {}
    for ctype, body in _chunks(data, source):
        if ctype not in (b"tEXt", b"iTXt", b"zTXt"):
            continue
        keyword = _keyword(body)
        if keyword is None or keyword not in _CARD_KEYS or keyword in found:
            continue
        text = _text_of(ctype, body, source)
        if text is None:
            continue
        payload = text[1]
        if len(payload) * 3 // 4 > limits.LIMITS.card_json_bytes:
            raise limits.LimitError(
                f"{source}: the {keyword!r} card text is over the limit of "
                f"{limits.LIMITS.card_json_bytes >> 20} MiB (models.limits: card_json_bytes)"
            )
        try:
            raw = base64.b64decode(payload.strip(), validate=False).decode("utf-8")
            found[keyword] = limits.loads_bounded(raw, f"{source} ({keyword})")
        except limits.LimitError:
            raise
        except (ValueError, UnicodeDecodeError) as exc:
            raise CardError(keyword, f"the {keyword!r} text chunk is not base64 JSON ({exc})", source=source) from None
    return found


def _chunk(ctype: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(ctype + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", crc)


def _encode(obj: Any) -> bytes:
    return base64.b64encode(json.dumps(obj, ensure_ascii=False).encode("utf-8"))


def write_png_card(image: bytes, payloads: dict[str, Any], source: str = "png") -> bytes:
    """`image` with its card chunks replaced by `payloads` (keyword → JSON object), in order."""
    chunks = _chunks(image, source)
    kept = []
    for ctype, body in chunks:
        keyword = _keyword(body) if ctype in (b"tEXt", b"iTXt", b"zTXt") else None
        if keyword in _CARD_KEYS:
            continue
        kept.append((ctype, body))
    if not kept or kept[0][0] != b"IHDR":
        raise CardError("png", "the image has no IHDR chunk first", source=source)
    new = [(b"tEXt", key.encode("latin-1") + b"\0" + _encode(obj)) for key, obj in payloads.items()]
    ordered = kept[:1] + new + kept[1:]
    if ordered[-1][0] != b"IEND":
        ordered.append((b"IEND", b""))
    return PNG_SIGNATURE + b"".join(_chunk(t, b) for t, b in ordered)


def default_avatar(name: str, size: int = 64) -> bytes:
    """A small generated avatar (a soft disc on a tinted square), so every card can be a PNG."""
    seed = zlib.crc32(name.encode("utf-8"))
    bg = ((seed >> 16) & 0x7F) + 96, ((seed >> 8) & 0x7F) + 96, (seed & 0x7F) + 96
    fg = tuple(255 - c // 3 for c in bg)
    rows = []
    c, r2 = (size - 1) / 2, (size * 0.32) ** 2
    for y in range(size):
        row = bytearray([0])
        for x in range(size):
            row += bytes(fg if (x - c) ** 2 + (y - c) ** 2 <= r2 else bg)
        rows.append(bytes(row))
    ihdr = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"".join(rows), 9)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def read_charx(data: bytes, source: str = "charx") -> tuple[Any, dict[str, bytes]]:
    """`(card.json object, {path: bytes} of the other members)` of a CHARX zip."""
    lim = limits.LIMITS
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = limits.check_zip(z, source)  # count and total size, before reading anything
            if "card.json" not in {i.filename for i in members}:
                raise CardError("card.json", "a CHARX file needs card.json at the root of the zip", source=source)
            assets: dict[str, bytes] = {}
            for info in members:
                name = info.filename
                if name == "card.json" or name.startswith("/") or ".." in name.split("/") or "\\" in name:
                    continue  # absolute or escaping member names are never kept (nor re-exported)
                assets[name] = limits.read_member(z, info, source, lim.zip_member_bytes, "zip_member_bytes")
            raw = limits.read_member(z, "card.json", source, lim.card_json_bytes, "card_json_bytes")
            card = limits.loads_bounded(raw.decode("utf-8"), f"{source} (card.json)")
    except zipfile.BadZipFile as exc:
        raise CardError("charx", f"not a zip file ({exc})", source=source) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CardError("card.json", f"not UTF-8 JSON ({exc})", source=source) from None
    return card, assets


def write_charx(card: Any, assets: dict[str, bytes] | None = None) -> bytes:
    """A CHARX zip holding `card.json` (pretty JSON) and `assets` (`path → bytes`)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("card.json", json.dumps(card, indent=2, ensure_ascii=False) + "\n")
        for path, blob in sorted((assets or {}).items()):
            z.writestr(path, blob)
    return buf.getvalue()
