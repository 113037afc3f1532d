"""Fixtures for the training-data tests: Discord exports built from SCHEMA.md, EPUBs, a local server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

NOW = datetime(2024, 5, 20, 12, 0, tzinfo=UTC)


def user(uid: str, name: str, nickname: str | None = None, bot: bool = False) -> dict[str, Any]:
    """A DCE user object (with roles)."""
    return {
        "id": uid,
        "name": name,
        "discriminator": "0000",
        "nickname": nickname or name,
        "color": None,
        "isBot": bot,
        "roles": [],
        "avatarUrl": f"https://cdn.example/avatars/{uid}.png",
    }


ADA = user("700000000000000001", "inkwell_ada", "Ada")
MOSS = user("700000000000000003", "mossy.pages", "Moss")
BEN = user("700000000000000004", "ben.writes", "Ben")
BOT = user("700000000000000002", "PromptBot", bot=True)


def message(
    mid: str,
    author: dict[str, Any],
    content: str,
    when: datetime,
    *,
    kind: str = "Default",
    edited: datetime | None = None,
    reply_to: str | None = None,
    attachments: list[dict[str, Any]] | None = None,
    embeds: list[dict[str, Any]] | None = None,
    stickers: list[dict[str, Any]] | None = None,
    mentions: list[dict[str, Any]] | None = None,
    forwarded: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A DCE message object, keys in the exporter's order (optional objects omitted when absent)."""
    msg: dict[str, Any] = {
        "id": mid,
        "type": kind,
        "timestamp": when.isoformat(timespec="milliseconds"),
        "timestampEdited": edited.isoformat() if edited else None,
        "callEndedTimestamp": None,
        "isPinned": False,
        "content": content,
        "author": author,
        "attachments": attachments or [],
        "embeds": embeds or [],
        "stickers": stickers or [],
        "reactions": [],
        "mentions": mentions or [],
    }
    if reply_to:
        msg["reference"] = {"type": "Default", "messageId": reply_to, "channelId": "1", "guildId": "2"}
    if forwarded:
        msg["reference"] = {"type": "Forward", "messageId": None, "channelId": None, "guildId": None}
        msg["forwardedMessage"] = forwarded
    msg["inlineEmojis"] = []
    return msg


def export(channel: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "guild": {
            "id": "900000000000000001",
            "name": "Quill & Lantern Writers",
            "iconUrl": "https://cdn.example/i.png",
        },
        "channel": channel,
        "dateRange": {"after": None, "before": None},
        "exportedAt": NOW.isoformat(),
        "messages": messages,
        "messageCount": len(messages),
    }


def channel(cid: str, name: str, kind: str = "GuildTextChat", parent: str | None = "Workshop") -> dict[str, Any]:
    return {"id": cid, "type": kind, "categoryId": "100", "category": parent, "name": name, "topic": None}


def workshop_export() -> dict[str, Any]:
    """A channel with a join, a bot prompt, an edit, a reply, mentions, attachments, embeds, a sticker."""
    t0 = NOW - timedelta(days=3)
    msgs = [
        message("1001", MOSS, "Joined the server.", t0, kind="GuildMemberJoin"),
        message("1002", BOT, "Today's prompt: a lighthouse keeper finds a letter.", t0 + timedelta(minutes=1)),
        message(
            "1003", ADA, "Okay this one got me. Draft attached, I'm nervous about the ending <:quill:555>",
            t0 + timedelta(minutes=5), edited=t0 + timedelta(minutes=7),
            attachments=[{"id": "1", "url": "a.docx", "fileName": "lighthouse_draft.docx", "fileSizeBytes": 9}],
        ),
        message(
            "1004", MOSS, "<@700000000000000001> the last line gave me chills. Maybe cut the second paragraph?",
            t0 + timedelta(minutes=9), kind="Reply", reply_to="1003", mentions=[ADA],
        ),
        message("1005", ADA, "", t0 + timedelta(minutes=10),
                attachments=[{"id": "2", "url": "p.png", "fileName": "sketch.png", "fileSizeBytes": 5}]),
        message(
            "1006", BEN, "Here's the article I mentioned https://example.com/craft about endings",
            t0 + timedelta(minutes=12),
            embeds=[{"title": "On Endings", "url": "https://example.com/craft", "timestamp": None,
                     "description": "", "images": [], "fields": [], "inlineEmojis": []}],
        ),
        message("1007", ADA, "thank you both, rewriting tonight", t0 + timedelta(minutes=15),
                stickers=[{"id": "9", "name": "heart", "format": "Png", "sourceUrl": "s.png"}]),
        message("1008", BEN, "", t0 + timedelta(minutes=16),
                forwarded={"timestamp": t0.isoformat(), "timestampEdited": None, "content": "someone else's words",
                           "attachments": [], "embeds": [], "stickers": []}),
        message("1009", MOSS, "Pinned a message.", t0 + timedelta(minutes=17), kind="ChannelPinnedMessage"),
        # a second session, ten hours later
        message("1010", BEN, "Morning! Did anyone finish the lighthouse prompt?", t0 + timedelta(hours=10)),
        message("1011", ADA, "I kept the cut. It reads much better now.", t0 + timedelta(hours=10, minutes=2)),
    ]  # fmt: skip
    return export(channel("900000000000000101", "daily-prompts"), msgs)


def thread_export() -> dict[str, Any]:
    t0 = NOW - timedelta(days=40)
    msgs = [
        message("2001", BEN, "Thread for critique of chapter one, be honest please.", t0),
        message("2002", ADA, "The opening is lovely but the dialogue feels stiff.", t0 + timedelta(minutes=3)),
        message("2003", BEN, "Which lines? I'd love specifics.", t0 + timedelta(minutes=5), kind="Reply",
                reply_to="2002"),
    ]  # fmt: skip
    return export(channel("900000000000000201", "chapter-one", "GuildPublicThread", "daily-prompts"), msgs)


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def discord_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "discord"
    write_json(
        folder / "Quill & Lantern Writers - Workshop - daily-prompts [900000000000000101].json", workshop_export()
    )
    write_json(folder / "threads" / "chapter-one [900000000000000201].json", thread_export())
    return folder


def make_epub(path: Path, *, title: str, author: str, subject: str, chapters: list[str]) -> Path:
    """A real EPUB 3 written with ebooklib."""
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier(f"id-{path.stem}")
    book.set_title(title)
    book.set_language("en")
    book.add_author(author)
    book.add_metadata("DC", "subject", subject)
    items = []
    for i, body in enumerate(chapters):
        ch = epub.EpubHtml(title=f"Chapter {i + 1}", file_name=f"chap_{i + 1}.xhtml", lang="en")
        paras = "".join(f"<p>{p}</p>" for p in body.split("\n\n"))
        ch.content = f"<html><head><title>c</title></head><body><h1>Chapter {i + 1}</h1>{paras}</body></html>"
        book.add_item(ch)
        items.append(ch)
    book.toc = tuple(items)
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *items]
    epub.write_epub(str(path), book)
    return path


class _Handler(BaseHTTPRequestHandler):
    books: ClassVar[dict[str, bytes]] = {}
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        body = self.books.get(self.path)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def book_server() -> Iterator[tuple[str, type[_Handler]]]:
    """A loopback HTTP server laid out like Project Gutenberg's cache (tests only, 127.0.0.1)."""
    handler = type("Handler", (_Handler,), {"books": {}, "hits": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
