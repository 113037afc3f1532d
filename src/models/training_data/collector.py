"""`DataCollector`: gathers writing, conversations and character data into `datasets.Dataset`s.

    collector = DataCollector()
    writing = collector.collect_writing_samples(source="Book_Collection", genres=["fantasy", "romance"])
    chats = collector.collect_conversation_data(source="discord_logs", time_period="last_30_days")
    lines = collector.collect_character_data(source="characters", characters=["luna"])

A source is a named entry of the config's `data_sources:` (built-in: `Book_Collection`,
`discord_logs`, `characters`, `user_data`), `gutenberg:<id>`, the seed's
`models/training_data/...` paths, or a file or folder. Records are streamed into Arrow files
(bounded memory) and carry provenance (source, file, position, sha256). Every call leaves its
`CollectionReport` in `collector.last_report`: files read, records, what was skipped and why,
problems by file and position, and whether a source's fallback was used.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from datasets import Dataset

from models.errors import DataError
from models.training_data.anonymize import Anonymizer, anonymization_report, default_anonymizer
from models.training_data.dataset_io import RecordSink
from models.training_data.datasource import DataSourceConfig
from models.training_data.locations import resolve_location, resolve_training_data
from models.training_data.reports import CollectionReport
from models.training_data.schema import CHARACTER_FEATURES, CONVERSATION_FEATURES, WRITING_FEATURES
from models.training_data.sources import books, cards, chatlog, discord, gutenberg
from models.training_data.sources.common import ConversationFilter
from models.training_data.timeperiod import parse_time_period

__all__ = ["DataCollector", "ProgressCallback"]

#: Called after each file with (files done, files in total, the file's path).
ProgressCallback = Callable[[int, int, str], None]
_CONVERSATION_SUFFIXES = {".json", ".jsonl", ".txt", ".log", ".csv"}


@dataclass
class _Source:
    name: str
    kind: str
    path: Path | None
    fmt: str = "auto"
    gutenberg_ids: tuple[int, ...] = ()


def _genre_matches(genre: str, wanted: set[str]) -> bool:
    """`science-fantasy` matches `fantasy`; `mystery, romance` matches either."""
    words = {genre} | {w for w in genre.replace(",", " ").replace(";", " ").replace("/", " ").split()}
    words |= {part for w in list(words) for part in w.split("-")}
    return bool(words & wanted)


class DataCollector:
    """Collects training data from named sources, folders, exports and Project Gutenberg."""

    def __init__(
        self,
        *,
        gutenberg_url: str | None = None,
        anonymizer: Anonymizer | None = None,
        strict: bool = False,
        now: datetime | None = None,
        segment_chars: int = 1_000_000,
        progress: ProgressCallback | None = None,
        config_path: str | Path | None = None,
    ) -> None:
        self.gutenberg_url = gutenberg_url
        self.anonymizer = anonymizer or default_anonymizer()
        self.strict = strict
        self.now = now
        self.segment_chars = segment_chars
        self.progress = progress
        self.config_path = config_path
        self.last_report: CollectionReport | None = None

    # ------------------------------------------------------------------ sources

    def data_sources(self) -> dict[str, DataSourceConfig]:
        """The configured data sources (built-in config + COMPANION_HOME/config.yaml)."""
        from models.config import load_effective_config

        return dict(load_effective_config(self.config_path).config.data_sources)

    def _lookup(self, name: str) -> DataSourceConfig | None:
        sources = self.data_sources()
        if name in sources:
            return sources[name]
        folded = {k.lower(): v for k, v in sources.items()}
        return folded.get(name.lower())

    def _resolve(self, source: str | Path, kind: str, report: CollectionReport) -> _Source:
        text = str(source)
        if text.startswith("gutenberg:"):
            if kind != "writing":
                raise DataError(f"{text!r} is a book; collect it with collect_writing_samples")
            return _Source(text, kind, None, "text", tuple(gutenberg.parse_gutenberg_source(text)))
        cfg = self._lookup(text)
        if cfg is None:
            try:
                found = resolve_training_data(text)
            except DataError:
                known = sorted(self.data_sources())
                close = difflib.get_close_matches(text, known, n=1, cutoff=0.6)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise DataError(
                    f"unknown data source {text!r}: not a configured data source ({', '.join(known) or 'none'}) "
                    f"nor an existing path.{hint}"
                ) from None
            report.resolved = str(found.path)
            return _Source(text, kind, found.path)
        if cfg.type != kind:
            raise DataError(f"data source {text!r} holds {cfg.type}, not {kind}; use it with the matching collect_*")
        if cfg.path.startswith("gutenberg:"):
            return _Source(text, kind, None, "text", tuple(gutenberg.parse_gutenberg_source(cfg.path)))
        path = resolve_location(cfg.path, cfg.base_dir)
        if not self._files(path, kind, cfg.format) and cfg.fallback:
            fallback = resolve_location(cfg.fallback, cfg.base_dir)
            report.used_fallback = True
            report.note(
                f"{text}: {path} has no readable files, so the fallback {cfg.fallback!r} is used; "
                f"put your files in {path} to use them instead",
                warn=True,
            )
            path = fallback
        if not path.exists():
            raise DataError(f"data source {text!r} points to {path}, which does not exist")
        report.resolved = str(path)
        return _Source(text, kind, path, cfg.format)

    def _files(self, path: Path, kind: str, fmt: str = "auto") -> list[Path]:
        if not path.exists():
            return []
        if kind == "writing":
            return books.list_writing_files(path)
        if path.is_file():
            return [path]
        if kind == "characters":
            suffixes = {".json", ".png", ".charx", ".jsonl"}
        else:
            suffixes = {".json"} if fmt == "discord" else _CONVERSATION_SUFFIXES
        return sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
        )

    # ------------------------------------------------------------------ plumbing

    def _finish(self, sink: RecordSink, report: CollectionReport, started: float) -> Dataset:
        ds = sink.finish()
        report.records = len(ds)
        report.seconds = round(time.perf_counter() - started, 3)
        self.last_report = report
        if self.strict and report.problems:
            raise DataError(f"{len(report.problems)} problem(s) while collecting: {report.problems[0]}")
        if not len(ds):
            report.note(f"no records were collected from {report.source!r}")
        return ds

    def _tick(self, done: int, total: int, name: str) -> None:
        if self.progress is not None:
            self.progress(done, total, name)

    # ------------------------------------------------------------------ writing

    def collect_writing_samples(
        self, source: str | Path = "Book_Collection", genres: Sequence[str] | None = None
    ) -> Dataset:
        """Prose documents from `source`, keeping only `genres` when given (DataError if none match)."""
        started = time.perf_counter()
        report = CollectionReport("writing", str(source))
        src = self._resolve(source, "writing", report)
        wanted = {g.strip().lower() for g in genres or [] if g.strip()}
        report.filters = {"genres": sorted(wanted) or None}
        sink = RecordSink(WRITING_FEATURES, "writing")
        seen_genres: dict[str, int] = {}
        for rec in self._writing_records(src, report):
            seen_genres[rec["genre"]] = seen_genres.get(rec["genre"], 0) + 1
            if wanted and not _genre_matches(rec["genre"], wanted):
                report.skip("genre_not_requested")
                continue
            sink.add(rec)
        ds = self._finish(sink, report, started)
        if wanted:
            matched = {g for g in wanted if any(_genre_matches(s, {g}) for s in seen_genres)}
            for g in sorted(wanted - matched):
                report.note(f"no document of genre {g!r} in {source!r}")
            if not matched:
                available = ", ".join(f"{g} ({n})" for g, n in sorted(seen_genres.items())) or "no documents at all"
                raise DataError(f"no document in {source!r} has genre {', '.join(sorted(wanted))}; found: {available}")
        return ds

    def _writing_records(self, src: _Source, report: CollectionReport) -> Iterator[dict[str, Any]]:
        if src.gutenberg_ids:
            for i, book_id in enumerate(src.gutenberg_ids):
                path = gutenberg.fetch_gutenberg(book_id, base_url=self.gutenberg_url)
                header = gutenberg.book_header(path)
                for rec in books.iter_writing_records(
                    path, source=src.name, report=report, segment_chars=self.segment_chars
                ):
                    rec["title"] = header.get("title") or rec["title"]
                    rec["author"] = header.get("author") or rec["author"]
                    yield rec
                self._tick(i + 1, len(src.gutenberg_ids), f"gutenberg:{book_id}")
            return
        root = src.path
        if root is None:  # pragma: no cover - _resolve always sets a path or book ids
            raise DataError(f"data source {src.name!r} has no path")
        total = len(books.list_writing_files(root))
        done, current = 0, None
        for rec in books.iter_writing_records(root, source=src.name, report=report, segment_chars=self.segment_chars):
            if rec["file"] != current:
                if current is not None:
                    done += 1
                    self._tick(done, total, current)
                current = rec["file"]
            yield rec
        self._tick(total, total, current or "")

    # ------------------------------------------------------------------ conversations

    def collect_conversation_data(
        self,
        source: str | Path = "discord_logs",
        time_period: str | None = "all",
        *,
        include_bots: bool = False,
        undated: str = "keep",
        session_gap_hours: float | None = 6.0,
        max_turns: int = 500,
    ) -> Dataset:
        """Conversations from Discord exports, chat logs, JSONL or Persona-Chat CSV files.

        `time_period`: see `models.training_data.timeperiod` (`last_30_days`, `all`, ISO ranges).
        Turns without a time (plain logs, the shipped samples) are kept unless `undated="drop"`.
        """
        if undated not in ("keep", "drop"):
            raise DataError(f"undated must be 'keep' or 'drop', got {undated!r}")
        started = time.perf_counter()
        report = CollectionReport("conversations", str(source))
        period = parse_time_period(time_period, self.now)
        report.filters = {"time_period": period.to_json(), "include_bots": include_bots, "undated": undated}
        report.filters["anonymization"] = anonymization_report(self.anonymizer)
        src = self._resolve(source, "conversations", report)
        flt = ConversationFilter(
            period, report, include_bots=include_bots, undated=undated, anonymize=self.anonymizer.anonymize
        )
        sink = RecordSink(CONVERSATION_FEATURES, "conversations")
        files = self._files(src.path, "conversations", src.fmt) if src.path else []
        for i, path in enumerate(files):
            rel = path.name if src.path is None or src.path.is_file() else path.relative_to(src.path).as_posix()
            report.files_seen += 1
            before = len(report.problems)
            sink.extend(self._conversation_file(path, rel, src, flt, session_gap_hours, max_turns))
            if len(report.problems) == before:
                report.files_read += 1
                report.bytes_read += path.stat().st_size
            self._tick(i + 1, len(files), rel)
        if report.skipped.get("undated_kept") and not period.unbounded:
            report.note(
                f"{report.skipped['undated_kept']} turns have no time, so time_period {period.label!r} "
                "cannot apply to them; they were kept (undated='drop' leaves them out)"
            )
        return self._finish(sink, report, started)

    def _conversation_file(
        self, path: Path, rel: str, src: _Source, flt: ConversationFilter, gap: float | None, max_turns: int
    ) -> Iterable[dict[str, Any]]:
        suffix = path.suffix.lower()
        fmt = src.fmt
        try:
            if fmt == "discord" or (fmt == "auto" and suffix == ".json"):
                if fmt == "auto" and not discord.is_discord_export(path):
                    flt.report.problem(rel, "top level", "JSON file is not a DiscordChatExporter export")
                    return []
                return discord.iter_discord_records(
                    path, rel, source=src.name, flt=flt, session_gap_hours=gap, max_turns=max_turns
                )
            if fmt == "jsonl" or (fmt == "auto" and suffix == ".jsonl"):
                return chatlog.iter_jsonl_records(path, rel, source=src.name, flt=flt)
            if fmt == "persona_chat" or (fmt == "auto" and suffix == ".csv"):
                if not chatlog.is_persona_chat_csv(path):
                    flt.report.problem(rel, "line 1", "CSV without a 'Best Generated Conversation' column")
                    return []
                return chatlog.iter_persona_chat_records(path, rel, source=src.name, flt=flt)
            return chatlog.iter_chatlog_records(path, rel, source=src.name, flt=flt)
        except OSError as exc:
            flt.report.problem(rel, "", f"cannot be read ({exc})")
            return []

    # ------------------------------------------------------------------ characters

    def collect_character_data(
        self,
        source: str | Path = "characters",
        characters: Sequence[str] | None = None,
        *,
        user_name: str = "User",
    ) -> Dataset:
        """Dialogue lines, greetings, examples and descriptions from cards, sheets and dialogue files."""
        started = time.perf_counter()
        report = CollectionReport("characters", str(source))
        src = self._resolve(source, "characters", report)
        wanted = {c.strip().lower() for c in characters or [] if c.strip()}
        report.filters = {"characters": sorted(wanted) or None}
        sink = RecordSink(CHARACTER_FEATURES, "characters")
        found: set[str] = set()
        if src.path is not None:
            for row in cards.iter_character_records(src.path, source=src.name, report=report, user_name=user_name):
                found.add(row["character"])
                if wanted and row["character"].lower() not in wanted and row["name"].lower() not in wanted:
                    report.skip("character_not_requested")
                    continue
                sink.add(row)
        ds = self._finish(sink, report, started)
        if wanted and not len(ds):
            raise DataError(
                f"no character {', '.join(sorted(wanted))} in {source!r}; found: {', '.join(sorted(found))}"
            )
        return ds


def load_training_data(path: str | Path, *, character: str | None = None, **options: Any) -> Dataset:
    """The data a training path names, collected into a Dataset (for recipes and the CLI).

    `models/training_data/personality_data` → character rows (only `character`'s when given);
    `models/training_data/user_data` → the sample user's writing; a saved dataset folder →
    that dataset; a folder of conversations or prose → collected by content.
    """
    from models.training_data.dataset_io import load_dataset

    found = resolve_training_data(path)
    collector = DataCollector(**options)
    if found.kind == "dataset":
        return load_dataset(found.path)
    if found.kind == "characters":
        return collector.collect_character_data(found.path, [character] if character else None)
    if found.kind == "conversations":
        return collector.collect_conversation_data(found.path)
    if found.kind == "user":
        return collector.collect_writing_samples(found.path / "writing")
    if found.kind == "files" and not books.list_writing_files(found.path):
        return collector.collect_conversation_data(found.path)
    return collector.collect_writing_samples(found.path)
