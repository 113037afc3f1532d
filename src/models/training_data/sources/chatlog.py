"""Conversation files other than Discord exports: plain-text logs, JSONL, Persona-Chat CSV.

Plain text (`.txt`, `.log`): one turn per `Name: text` line, optionally preceded by a time
(`[2024-05-01 18:02] Name: text` or `2024-05-01T18:02:11 Name: text`). A line that does not
start with a name continues the previous turn. A line of three or more `-`, `=` or `*`, or two
blank lines in a row, starts a new conversation; a `# Title` line names the next one.

JSONL (`.jsonl`): one conversation per line, either ours
`{"id", "title", "turns": [{"speaker", "text", "emotion"?, "timestamp"?}], "meta"?}` or
OpenAI-style `{"messages": [{"role", "content", "name"?}]}`.

CSV (`.csv`) in the Synthetic-Persona-Chat layout: columns `user 1 personas`,
`user 2 personas` and `Best Generated Conversation` (`User 1: ...` / `User 2: ...` lines);
the personas go into `meta`.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from models import limits
from models.training_data.sources.common import ConversationFilter, conversation_record, make_turn
from models.training_data.speakers import speaker_id
from models.training_data.textio import detect_encoding

__all__ = ["iter_chatlog_records", "iter_jsonl_records", "iter_persona_chat_records"]

_LINE = re.compile(
    r"^(?:\[?(?P<ts>\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)\]?\s*(?:-\s*)?)?"
    r"(?P<name>[^\s:][^:\n]{0,39}?):\s+(?P<text>.*)$"
)
_SEPARATOR = re.compile(r"^\s*(?:-{3,}|={3,}|\*{3,})\s*$")
_PERSONA_TURN = re.compile(r"^\s*(User [12]):\s*(.*)$")


def _iso(ts: str) -> str:
    return ts.replace(" ", "T", 1) if ts else ""


class _Builder:
    def __init__(self, rel: str, source: str, flt: ConversationFilter, fmt: str) -> None:
        self.rel, self.source, self.flt, self.fmt = rel, source, flt, fmt
        self.turns: list[dict[str, Any]] = []
        self.title, self.start_line, self.count = "", 0, 0

    def add(self, name: str, text: str, ts: str, line: int) -> None:
        if not self.turns:
            self.start_line = line
        anon = self.flt.anonymize
        self.turns.append(make_turn(anon(name), speaker_id("name", name), anon(text), timestamp=ts))

    def finish(self) -> dict[str, Any] | None:
        kept = [t for t in self.turns if t["text"].strip() and self.flt.keep_time(t["timestamp"])]
        title, self.turns, self.title = self.title, [], ""
        if not kept:
            return None
        self.count += 1
        return conversation_record(
            kept,
            conversation_id=f"{self.fmt}:{self.rel}:{self.count - 1}",
            title=title or Path(self.rel).stem,
            source=self.source,
            file=self.rel,
            position=f"line:{self.start_line}",
            fmt=self.fmt,
        )


def iter_chatlog_records(path: Path, rel: str, *, source: str, flt: ConversationFilter) -> Iterator[dict[str, Any]]:
    """Conversations of a plain-text `Name: text` log (streamed line by line)."""
    builder = _Builder(rel, source, flt, "chatlog")
    blank_run = 0
    with path.open(encoding=detect_encoding(path), errors="replace") as f:
        for n, raw in enumerate(f, start=1):
            line = raw.rstrip("\n").rstrip()
            if not line.strip():
                blank_run += 1
                if blank_run == 2 and (rec := builder.finish()) is not None:
                    yield rec
                continue
            blank_run = 0
            if _SEPARATOR.match(line):
                if (rec := builder.finish()) is not None:
                    yield rec
                continue
            if line.startswith("#") and not builder.turns:
                builder.title = line.lstrip("#").strip()
                continue
            m = _LINE.match(line)
            if m:
                builder.add(m.group("name").strip(), m.group("text").strip(), _iso(m.group("ts") or ""), n)
            elif builder.turns:
                builder.turns[-1]["text"] += "\n" + builder.flt.anonymize(line.strip())
            else:
                flt.report.skip("line_without_speaker")
    if (rec := builder.finish()) is not None:
        yield rec


def _jsonl_turns(obj: dict[str, Any], flt: ConversationFilter) -> list[dict[str, Any]]:
    turns = []
    anon = flt.anonymize
    for t in obj.get("turns") or []:
        if isinstance(t, dict) and str(t.get("text", "")).strip():
            name = str(t.get("speaker") or "unknown")
            turns.append(
                make_turn(
                    anon(name),
                    speaker_id("name", name),
                    anon(str(t["text"]).strip()),
                    timestamp=str(t.get("timestamp") or ""),
                    emotion=str(t.get("emotion") or ""),
                )
            )
    for m in obj.get("messages") or []:
        if isinstance(m, dict) and str(m.get("content", "")).strip() and m.get("role") != "system":
            name = str(m.get("name") or m.get("role") or "unknown")
            turns.append(make_turn(anon(name), speaker_id("name", name), anon(str(m["content"]).strip())))
    return turns


def iter_jsonl_records(path: Path, rel: str, *, source: str, flt: ConversationFilter) -> Iterator[dict[str, Any]]:
    """Conversations of a JSONL file (one conversation object per line)."""
    with path.open(encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = limits.loads_line(line, f"{rel} line {n}")
            except limits.LimitError as exc:
                flt.report.problem(rel, f"line {n}", str(exc))
                continue
            except json.JSONDecodeError as exc:
                flt.report.problem(rel, f"line {n}, column {exc.colno}", f"malformed JSON ({exc.msg})")
                continue
            if not isinstance(obj, dict):
                flt.report.problem(rel, f"line {n}", "expected a JSON object per line")
                continue
            turns = [t for t in _jsonl_turns(obj, flt) if flt.keep_time(t["timestamp"])]
            if not turns:
                flt.report.skip("empty_conversation")
                continue
            meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
            for key in ("characters", "genre", "topic"):
                if key in obj:
                    meta = meta | {key: obj[key]}
            yield conversation_record(
                turns,
                conversation_id=str(obj.get("id") or f"jsonl:{rel}:{n}"),
                title=str(obj.get("title") or ""),
                source=source,
                file=rel,
                position=f"line:{n}",
                fmt="jsonl",
                meta=meta,
            )


def is_persona_chat_csv(path: Path) -> bool:
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        header = f.readline().lower()
    return "best generated conversation" in header


def iter_persona_chat_records(
    path: Path, rel: str, *, source: str, flt: ConversationFilter
) -> Iterator[dict[str, Any]]:
    """Conversations of a Synthetic-Persona-Chat CSV (speakers `User 1` and `User 2`)."""
    csv.field_size_limit(1 << 24)
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        for n, row in enumerate(csv.DictReader(f), start=1):
            convo = row.get("Best Generated Conversation") or ""
            turns = []
            for line in convo.split("\n"):
                m = _PERSONA_TURN.match(line)
                if m and m.group(2).strip():
                    name = m.group(1)
                    turns.append(make_turn(name, speaker_id("persona_chat", name), flt.anonymize(m.group(2).strip())))
                elif turns and line.strip():
                    turns[-1]["text"] += " " + line.strip()
            if len(turns) < 2:
                flt.report.skip("empty_conversation")
                continue
            personas = {k: [p for p in (row.get(f"{k} personas") or "").split("\n") if p] for k in ("user 1", "user 2")}
            yield conversation_record(
                turns,
                conversation_id=f"persona_chat:{rel}:{n}",
                title="",
                source=source,
                file=rel,
                position=f"row:{n}",
                fmt="persona_chat",
                meta={"personas": personas},
            )
