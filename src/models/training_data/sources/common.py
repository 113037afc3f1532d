"""Building blocks shared by the conversation sources: turns, records, time filtering."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from models.training_data.reports import CollectionReport
from models.training_data.schema import dumps_meta, sha256_text
from models.training_data.timeperiod import TimeRange, parse_timestamp

__all__ = ["ConversationFilter", "conversation_record", "make_turn"]


def make_turn(
    speaker: str,
    speaker_id: str,
    text: str,
    *,
    timestamp: str = "",
    message_id: str = "",
    reply_to: str = "",
    edited: bool = False,
    emotion: str = "",
) -> dict[str, Any]:
    return {
        "speaker": speaker,
        "speaker_id": speaker_id,
        "text": text,
        "timestamp": timestamp,
        "message_id": message_id,
        "reply_to": reply_to,
        "edited": edited,
        "emotion": emotion,
    }


def conversation_record(
    turns: list[dict[str, Any]],
    *,
    conversation_id: str,
    title: str,
    source: str,
    file: str,
    position: str,
    fmt: str,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    participants: list[str] = []
    for t in turns:
        if t["speaker"] not in participants:
            participants.append(t["speaker"])
    stamps = [t["timestamp"] for t in turns if t["timestamp"]]
    body = "\n".join(f"{t['speaker']}: {t['text']}" for t in turns)
    return {
        "conversation_id": conversation_id,
        "title": title,
        "turns": turns,
        "participants": participants,
        "start_time": min(stamps) if stamps else "",
        "end_time": max(stamps) if stamps else "",
        "format": fmt,
        "source": source,
        "file": file,
        "position": position,
        "sha256": sha256_text(body),
        "meta": dumps_meta(meta),
    }


class ConversationFilter:
    """Applies `time_period`, the bot rule and the anonymization hook to turns as they are read.

    Turns without a timestamp cannot be placed in time: they are kept (and counted in the
    report as `undated`) unless `undated="drop"`.
    """

    def __init__(
        self,
        period: TimeRange,
        report: CollectionReport,
        *,
        include_bots: bool = False,
        undated: str = "keep",
        anonymize: Callable[[str], str] | None = None,
    ) -> None:
        self.period, self.report = period, report
        self.include_bots, self.undated = include_bots, undated
        self.anonymize = anonymize or (lambda s: s)

    def keep_time(self, timestamp: str) -> bool:
        if self.period.unbounded:
            return True
        if not timestamp:
            self.report.skip("undated_kept" if self.undated == "keep" else "undated_dropped")
            return self.undated == "keep"
        try:
            moment = parse_timestamp(timestamp)
        except Exception:
            self.report.skip("bad_timestamp")
            return False
        if not self.period.contains(moment):
            self.report.skip("outside_time_period")
            return False
        return True

    def keep_author(self, is_bot: bool) -> bool:
        if is_bot and not self.include_bots:
            self.report.skip("bot")
            return False
        return True
