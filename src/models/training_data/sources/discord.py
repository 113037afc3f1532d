"""DiscordChatExporter (DCE) JSON exports → conversation records.

Follows the layout in `shared/data/discord/SCHEMA.md`: one JSON document per channel or
thread (`guild`, `channel`, `dateRange`, `exportedAt`, `messages`, `messageCount`). Files are
streamed with `ijson`, so a multi-GB export is read in bounded memory.

* A conversation is one channel or thread, split into sessions where no one wrote for
  `session_gap_hours` (default 6 h), and at most `max_turns` turns per record.
* Kept message types: `Default` and `Reply` (and their numeric forms `0` and `19`); joins, pins,
  calls, renames and other system messages are skipped. Bots and webhooks (`isBot`) are
  skipped unless `include_bots`.
* Text: mentions become `@name` (users, from the message's `mentions`), `#channel` and
  `@role`; custom emoji `<:name:id>` become `:name:`; URLs become `[link]`; attachments,
  stickers and embeds become placeholders (`[image]`, `[file]`, `[sticker]`, `[embed: title]`);
  a forwarded message becomes `[forwarded message]` (quoted, not the author's own words).
  Messages with no text of their own (attachment-only) are dropped.
* Edited messages keep their final text and `edited=True`; replies keep `reply_to`.
* Speakers: `author.nickname` (falling back to `name`) as the label and a pseudonymous
  `speaker_id` (see `speakers.py`); account ids never appear in text.
* A malformed or truncated file is reported with its name and position (line and column
  when the file is small enough to re-read, else the byte offset) and the messages before the
  damage are kept; the other files are read as usual.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from models import limits
from models.training_data.reports import CollectionReport
from models.training_data.sources.common import ConversationFilter, conversation_record, make_turn
from models.training_data.speakers import speaker_id
from models.training_data.timeperiod import parse_timestamp

__all__ = ["clean_discord_content", "is_discord_export", "iter_discord_records"]

KEPT_TYPES = {"Default", "Reply", "0", "19"}
_USER_MENTION = re.compile(r"<@!?(\d+)>")
_CHANNEL_MENTION = re.compile(r"<#\d+>")
_ROLE_MENTION = re.compile(r"<@&\d+>")
_CUSTOM_EMOJI = re.compile(r"<a?:(\w+):\d+>")
_URL = re.compile(r"https?://\S+")
_IMAGE_EXT = {"png", "jpg", "jpeg", "gif", "webp", "bmp", "heic"}
_AUDIO_VIDEO_EXT = {"mp3", "ogg", "wav", "m4a", "mp4", "mov", "webm", "mkv"}
_EXACT_POSITION_LIMIT = 64 << 20


class _CountingReader:
    """A binary file wrapper that remembers how many bytes were handed to the parser."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.pos = f, 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.pos += len(data)
        return data


def is_discord_export(path: Path) -> bool:
    """Whether a JSON file starts like a DCE export (a top-level object with `guild`/`channel`)."""
    with path.open("rb") as f:
        head = f.read(4096).decode("utf-8", errors="replace")
    return head.lstrip().startswith("{") and ('"guild"' in head or '"channel"' in head)


def _placeholder(attachment: dict[str, Any]) -> str:
    ext = str(attachment.get("fileName", "")).rsplit(".", 1)[-1].lower()
    if ext in _IMAGE_EXT:
        return "[image]"
    if ext in _AUDIO_VIDEO_EXT:
        return "[media]"
    return "[file]"


def clean_discord_content(message: dict[str, Any]) -> tuple[str, bool]:
    """The message as training text, and whether it had words of its own (not just placeholders)."""
    names = {}
    for user in message.get("mentions") or []:
        if isinstance(user, dict) and user.get("id"):
            names[str(user["id"])] = user.get("nickname") or user.get("name") or "user"
    text = str(message.get("content") or "")
    text = _USER_MENTION.sub(lambda m: "@" + names.get(m.group(1), "user"), text)
    text = _ROLE_MENTION.sub("@role", text)
    text = _CHANNEL_MENTION.sub("#channel", text)
    text = _CUSTOM_EMOJI.sub(r":\1:", text)
    text = _URL.sub("[link]", text).strip()
    own_words = bool(re.search(r"\w", re.sub(r"\[link\]|:\w+:|@\w+|#channel", "", text)))
    extras = [_placeholder(a) for a in message.get("attachments") or [] if isinstance(a, dict)]
    extras += ["[sticker]" for _ in message.get("stickers") or []]
    for embed in message.get("embeds") or []:
        title = str(embed.get("title") or "").strip() if isinstance(embed, dict) else ""
        extras.append(f"[embed: {title}]" if title else "[embed]")
    if message.get("forwardedMessage") or (message.get("reference") or {}).get("type") == "Forward":
        extras.append("[forwarded message]")
    if extras:
        text = (text + " " + " ".join(extras)).strip()
    return text, own_words


def _position_of_error(path: Path, reader: _CountingReader, count: int, last_id: str) -> str:
    where = f"byte {reader.pos}"
    if path.stat().st_size <= _EXACT_POSITION_LIMIT:
        try:
            json.loads(path.read_bytes().decode("utf-8", errors="replace"))
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno}, column {exc.colno}"
    after = f" (after message {count}, id {last_id})" if count else " (before the first message)"
    return where + after


def _header(path: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The `guild` and `channel` objects, read from the start of the file (stops at `messages`)."""
    import ijson

    found: dict[str, dict[str, Any]] = {}
    with path.open("rb") as f:
        events = limits.bounded_events(ijson.parse(f), path.name)
        try:
            for prefix, event, value in events:
                if prefix == "" and event == "map_key" and value == "messages":
                    break
                if prefix in ("guild", "channel") and event == "start_map":
                    builder = ijson.ObjectBuilder()
                    builder.event(event, value)
                    for inner_prefix, inner_event, inner_value in events:
                        builder.event(inner_event, inner_value)
                        if inner_prefix == prefix and inner_event == "end_map":
                            break
                    found[prefix] = builder.value
        except (ijson.JSONError, limits.LimitError):
            pass  # reported with its position by the message pass
    channel = found.get("channel")
    return (found.get("guild") or {}, channel) if isinstance(channel, dict) else None


class _Sessions:
    """Groups one channel's messages into sessions as they stream by, in either time direction.

    DCE writes oldest first unless the user asked for reverse order; the direction is taken
    from the first two messages with different times, and a reverse session is turned around
    before it is emitted. Messages against the direction are kept in file order and counted.
    """

    def __init__(self, gap: timedelta | None, max_turns: int, report: CollectionReport) -> None:
        self.gap, self.max_turns, self.report = gap, max_turns, report
        self.turns: list[dict[str, Any]] = []
        self.last: Any = None
        self.direction = 0

    def add(self, turn: dict[str, Any], moment: Any) -> list[dict[str, Any]] | None:
        done = None
        if self.last is not None:
            delta = moment - self.last
            if not self.direction and delta:
                self.direction = 1 if delta > timedelta(0) else -1
            elif self.direction and delta * self.direction < timedelta(0):
                self.report.skip("out_of_order_kept")
            split = self.gap is not None and abs(delta) > self.gap
            if self.turns and (split or len(self.turns) >= self.max_turns):
                done = self.flush()
        self.turns.append(turn)
        self.last = moment
        return done

    def flush(self) -> list[dict[str, Any]]:
        turns, self.turns = self.turns, []
        return turns[::-1] if self.direction < 0 else turns


def _turn_of(message: dict[str, Any], flt: ConversationFilter) -> tuple[dict[str, Any], Any] | None:
    report = flt.report
    if str(message.get("type", "Default")) not in KEPT_TYPES:
        report.skip("system_message")
        return None
    author = message.get("author")
    if not isinstance(author, dict) or "timestamp" not in message:
        report.skip("malformed_message")
        return None
    if not flt.keep_author(bool(author.get("isBot"))):
        return None
    stamp = str(message.get("timestamp") or "")
    if not flt.keep_time(stamp):
        return None
    text, own = clean_discord_content(message)
    if not own:
        report.skip("no_text_of_its_own")
        return None
    label = str(author.get("nickname") or author.get("name") or "unknown")
    ref = message.get("reference") or {}
    turn = make_turn(
        flt.anonymize(label),
        speaker_id("discord", str(author.get("id") or label)),
        flt.anonymize(text),
        timestamp=stamp,
        message_id=str(message.get("id") or ""),
        reply_to=str(ref.get("messageId") or "") if ref.get("type", "Default") == "Default" else "",
        edited=bool(message.get("timestampEdited")),
    )
    return turn, parse_timestamp(stamp)


def _messages(reader: Any, source: str) -> Iterator[Any]:
    """The items of the top-level `messages` array, built from depth-bounded events."""
    import ijson

    events = limits.bounded_events(ijson.parse(reader, use_float=True), source)
    for prefix, event, value in events:
        if prefix != "messages.item" or event not in ("start_map", "start_array"):
            continue
        builder = ijson.ObjectBuilder()
        builder.event(event, value)
        for inner_prefix, inner_event, inner_value in events:
            builder.event(inner_event, inner_value)
            if inner_prefix == "messages.item" and inner_event in ("end_map", "end_array"):
                break
        yield builder.value


def _iter_messages(path: Path, rel: str, report: CollectionReport) -> Iterator[dict[str, Any]]:
    import ijson

    count, last_id = 0, ""
    with path.open("rb") as raw:
        reader = _CountingReader(raw)
        try:
            for message in _messages(reader, rel):
                if isinstance(message, dict):
                    count += 1
                    last_id = str(message.get("id", ""))
                    yield message
        except limits.LimitError as exc:
            kept = f"; the {count} messages before it were kept" if count else ""
            report.problem(rel, f"byte {reader.pos}", f"{exc}{kept}")
        except (ijson.JSONError, UnicodeDecodeError) as exc:
            position = _position_of_error(path, reader, count, last_id)
            kind = "truncated" if "incomplete" in str(exc).lower() or "premature" in str(exc).lower() else "malformed"
            kept = f"; the {count} messages before it were kept" if count else ""
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            report.problem(rel, position, f"{kind} JSON ({detail}){kept}")


def iter_discord_records(
    path: Path,
    rel: str,
    *,
    source: str,
    flt: ConversationFilter,
    session_gap_hours: float | None = 6.0,
    max_turns: int = 500,
) -> Iterator[dict[str, Any]]:
    """Conversation records of one export file."""
    report = flt.report
    header = _header(path)
    if header is None:
        report.problem(rel, "top level", "not a DiscordChatExporter JSON export (no 'channel' object)")
        return
    guild, channel = header
    kind = str(channel.get("type") or "")
    title = f"{guild.get('name') or 'Discord'} / #{channel.get('name') or channel.get('id')}"
    if "Thread" in kind and channel.get("category"):
        title += f" (thread in #{channel['category']})"
    meta = {"platform": "discord", "channel_type": kind, "guild": guild.get("name", "")}
    gap = timedelta(hours=session_gap_hours) if session_gap_hours else None
    sessions = _Sessions(gap, max_turns, report)
    n = 0

    def record(turns: list[dict[str, Any]]) -> dict[str, Any]:
        return conversation_record(
            turns,
            conversation_id=f"discord:{channel.get('id')}:{n}",
            title=title,
            source=source,
            file=rel,
            position=f"message:{turns[0]['message_id']}",
            fmt="discord",
            meta=meta,
        )

    for message in _iter_messages(path, rel, report):
        made = _turn_of(message, flt)
        if made is None:
            continue
        done = sessions.add(*made)
        if done:
            yield record(done)
            n += 1
    if sessions.turns:
        yield record(sessions.flush())
