"""Issue 16: strangers' files reach bounded memory and time, with clear errors, and one bad file
does not stop the others.

Each crafted file is built here. The import runs in a subprocess limited to 1 GiB of address
space (`RLIMIT_AS`) and a wall-time limit, through the same command a user runs. Before the
fix: a 4 MB CHARX of 64 members of 63 MiB zeros validated "ok" at 4.2 GB RSS, a PNG's zTXt chunk
was inflated whatever its keyword and size, an EPUB member of gigabytes was read whole, a card
nested 100 k deep ended in a RecursionError traceback, and a Discord export nested 40 k deep
reached 3.8 GB.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

MiB = 1 << 20
_RUNNER = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
sys.argv = ["companion", *sys.argv[1:]]
from companion.cli import main
main()
"""


def companion(*args: str, timeout: float = 60) -> tuple[int, str, float]:
    """Run the CLI under a 1 GiB address-space limit; returns (exit code, output, seconds)."""
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-c", _RUNNER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )
    return r.returncode, r.stdout + r.stderr, time.monotonic() - t0


# --- crafting -------------------------------------------------------------------------------------


def _deflate_zeros(n: int) -> tuple[bytes, int]:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block, crc, out = b"\0" * MiB, 0, []
    left = n
    while left:
        piece = block[: min(MiB, left)]
        crc = zlib.crc32(piece, crc)
        out.append(c.compress(piece))
        left -= len(piece)
    out.append(c.flush())
    return b"".join(out), crc


def raw_zip(members: list[tuple[str, bytes | int]]) -> bytes:
    """A zip written by hand: a member is bytes, or an int n for n zero bytes (deflated once and
    reused, so hundreds of MiB of zeros cost a second to build)."""
    cache: dict[int, tuple[bytes, int]] = {}
    body, central = bytearray(), bytearray()
    for name, payload in members:
        if isinstance(payload, int):
            if payload not in cache:
                cache[payload] = _deflate_zeros(payload)
            data, crc = cache[payload]
            size = payload
        else:
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            data, crc, size = c.compress(payload) + c.flush(), zlib.crc32(payload), len(payload)
        raw = name.encode()
        offset = len(body)
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), size, len(raw), 0)
        body += raw + data
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data), size, len(raw), 0, 0, 0, 0, 0,
            offset,
        )  # fmt: skip
        central += raw
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(body), 0)
    return bytes(body + central + end)


CARD = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Ok", "first_mes": "Hello."}}


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def png(*chunks: bytes) -> bytes:
    from models.personality.container import PNG_SIGNATURE

    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    idat = _chunk(b"IDAT", zlib.compress(b"\0\0\0\0"))
    return PNG_SIGNATURE + ihdr + b"".join(chunks) + idat + _chunk(b"IEND", b"")


def _ztxt(keyword: bytes, zeros: int) -> bytes:
    data, _ = _deflate_zeros(zeros)
    return _chunk(b"zTXt", keyword + b"\0\0" + b"\x78\x9c" + data)  # zlib header + raw deflate


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# --- cards ----------------------------------------------------------------------------------------


def test_card_bombs_are_refused_quickly_in_bounded_memory(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(CARD))
    files = {
        "members.charx": raw_zip(
            [("card.json", json.dumps(CARD).encode()), *[(f"a{i}.bin", 60 * MiB) for i in range(6)]]
        ),
        "count.charx": raw_zip([("card.json", json.dumps(CARD).encode()), *[(f"x/{i}", b"x") for i in range(3000)]]),
        "cardjson.charx": raw_zip([("card.json", 20 * MiB)]),
        "ztxt.png": png(_ztxt(b"chara", 40 * MiB)),
        "deep.json": _nested(100_000).encode(),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    paths = [str(tmp_path / n) for n in files] + [str(good)]
    code, out, seconds = companion("cards", "validate", *paths)
    assert code == 1 and seconds < 30, out
    assert "zip_total_bytes" in out and "zip_members" in out and "card_json_bytes" in out
    assert "png_text_bytes" in out and "json_depth" in out
    assert "ok    " in out and "good.json" in out  # the file after the bad ones was still checked
    assert "Traceback" not in out and "RecursionError" not in out


def test_other_keywords_are_never_inflated_and_the_card_still_loads(tmp_path: Path) -> None:
    payload = base64.b64encode(json.dumps(CARD).encode())
    path = tmp_path / "avatar.png"
    path.write_bytes(png(_ztxt(b"comment", 300 * MiB), _chunk(b"tEXt", b"chara\0" + payload)))
    code, out, seconds = companion("cards", "validate", str(path))
    assert code == 0 and "ok" in out and seconds < 30, out


def test_import_refuses_a_bomb_and_writes_nothing(tmp_path: Path, companion_home: Path) -> None:
    path = tmp_path / "bomb.charx"
    path.write_bytes(raw_zip([("card.json", json.dumps(CARD).encode()), ("big.bin", 100 * MiB)]))
    env_home = {"COMPANION_HOME": str(companion_home)}
    os.environ.update(env_home)
    code, out, _ = companion("cards", "import", str(path))
    assert code != 0 and "zip_member_bytes" in out and "Traceback" not in out, out
    assert not list((companion_home).rglob("persona.json"))


# --- data collection ------------------------------------------------------------------------------


def test_collection_reports_bad_files_and_keeps_the_rest(tmp_path: Path) -> None:
    books = tmp_path / "books"
    books.mkdir()
    (books / "bomb.epub").write_bytes(raw_zip([("mimetype", b"application/epub+zip"), ("OEBPS/big.xhtml", 80 * MiB)]))
    (books / "fine.txt").write_text("It was a bright cold day in April. " * 200)
    code, out, seconds = companion("data", "collect", "writing", str(books), timeout=120)
    assert code == 0 and seconds < 90, out
    assert "zip_member_bytes" in out and "bomb.epub" in out, out

    chats = tmp_path / "discord"
    chats.mkdir()
    (chats / "deep.json").write_text('{"guild": {}, "channel": {}, "messages": [' + _nested(40_000) + "]}")
    (chats / "deep2.json").write_text('{"guild": ' + _nested(100_000) + "}")
    code, out, seconds = companion("data", "collect", "conversations", str(chats), timeout=120)
    assert seconds < 90 and "Traceback" not in out, out
    assert "json_depth" in out or "nested" in out, out


def test_a_deep_chat_log_line_is_reported_and_skipped(tmp_path: Path) -> None:
    from models.limits import LimitError, loads_line

    with pytest.raises(LimitError, match="json_depth"):
        loads_line(_nested(100_000), "chat.jsonl line 2")
    assert loads_line('{"a": [1, [2, [3]]]}', "ok") == {"a": [1, [2, [3]]]}


def test_an_epub_with_entity_declarations_is_a_clear_problem(tmp_path: Path) -> None:
    """Issue 16 item 5: an OPF holding entity expansions reported "TypeError: 'NoneType' object is
    not iterable"; now it is reported as an unreadable package and the other books are kept."""
    books = tmp_path / "books"
    books.mkdir()
    container = (
        b'<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
        b'<rootfiles><rootfile full-path="content.opf" media-type="application/oebps-package+xml"/></rootfiles>'
        b"</container>"
    )
    opf = (
        b'<?xml version="1.0"?><!DOCTYPE package [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
        b'<package xmlns="http://www.idpf.org/2007/opf" version="2.0"><metadata>&b;</metadata></package>'
    )
    (books / "entities.epub").write_bytes(
        raw_zip([("mimetype", b"application/epub+zip"), ("META-INF/container.xml", container), ("content.opf", opf)])
    )
    (books / "fine.txt").write_text("The rain had stopped by the time she reached the pier. " * 100)
    code, out, _ = companion("data", "collect", "writing", str(books), timeout=120)
    assert code == 0 and "entities.epub" in out and "NoneType" not in out, out
