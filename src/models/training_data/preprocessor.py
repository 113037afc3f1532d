"""`DataPreprocessor`: clean, anonymize, tokenize and cut data into training examples.

    preprocessor = DataPreprocessor()
    chunks = preprocessor.preprocess_writing_data(raw_data=writing, tokenization="gpt2", max_length=512)
    windows = preprocessor.preprocess_conversation_data(raw_data=chats, context_window=10)

Writing: each document is cleaned (`cleaning.clean_text`: NFC, whitespace, Gutenberg
boilerplate, hard wraps), passed through the anonymization hook, tokenized, followed by the
end-of-text token and cut into windows of `max_length` tokens overlapping by `stride`; with
`packing=True` documents share windows (`chunking`). Conversations: windows of
`context_window` turns with the imitated speaker as the assistant (`windows`), rendered
through the tokenizer folder's chat template, with an `assistant_mask` marking the tokens a
trainer should learn (assistant replies and their end token). Input is read and output written
a batch at a time, so any size streams. Each call leaves a `PreprocessReport` in
`last_report`; it states that the anonymization step is a pass-through until the privacy work
fills it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from datasets import Dataset

from models.errors import DataError
from models.training_data.anonymize import Anonymizer, anonymization_report, default_anonymizer
from models.training_data.chunking import Piece, StreamPacker, check_window, window_spans
from models.training_data.cleaning import clean_text
from models.training_data.dataset_io import RecordSink
from models.training_data.inputs import as_dataset, iter_rows
from models.training_data.reports import PreprocessReport
from models.training_data.schema import WINDOW_FEATURES, WRITING_CHUNK_FEATURES, sha256_text
from models.training_data.tokenization import TokenizerHandle, load_tokenizer
from models.training_data.windows import conversation_windows

__all__ = ["DataPreprocessor"]

_BATCH = 64
# Characters per tokenizer call: an `Encoding` costs ~100 bytes per token, so this bounds memory.
_BATCH_CHARS = 1_000_000


def _named_characters(convo: dict[str, Any]) -> list[str] | None:
    """The `characters` a conversation's meta names (our JSONL format), if any."""
    import json

    try:
        meta = json.loads(convo.get("meta") or "{}")
    except ValueError:
        return None
    names = meta.get("characters") if isinstance(meta, dict) else None
    return [str(n) for n in names] if isinstance(names, list) and names else None


class DataPreprocessor:
    """Turns collected records into token windows ready for training."""

    def __init__(self, *, anonymizer: Anonymizer | None = None, clean: bool = True) -> None:
        self.anonymizer = anonymizer or default_anonymizer()
        self.clean = clean
        self.last_report: PreprocessReport | None = None

    # ------------------------------------------------------------------ writing

    def preprocess_writing_data(
        self,
        raw_data: Any,
        tokenization: str = "gpt2",
        max_length: int = 512,
        *,
        stride: int = 0,
        packing: bool = False,
        min_tokens: int = 1,
    ) -> Dataset:
        """Token windows of prose (see the module docstring); `raw_data` needs a `text` column."""
        check_window(max_length, stride)
        started = time.perf_counter()
        data = as_dataset(raw_data, "writing")
        if "text" not in data.column_names:
            raise DataError(f"writing data needs a 'text' column; it has {', '.join(data.column_names)}")
        tok = load_tokenizer(tokenization)
        report = PreprocessReport(
            "writing", len(data), tokenizer=tok.name, max_length=max_length, stride=stride, packing=packing
        )
        report.anonymization = anonymization_report(self.anonymizer)
        sink = RecordSink(WRITING_CHUNK_FEATURES, "writing-chunks")
        packer = StreamPacker(max_length, stride) if packing else None
        counter = itertools.count()
        for piece in self._pieces(iter_rows(data), tok, report):
            if packer is None:
                rows: Iterable[dict[str, Any]] = self._split(piece, max_length, stride)
            else:
                rows = (self._chunk_row(o["input_ids"], o["text"], o["meta"], next(counter)) for o in packer.add(piece))
            for row in rows:
                if row["length"] < min_tokens:
                    report.skip("shorter_than_min_tokens")
                    continue
                report.tokens += row["length"]
                sink.add(row)
        if packer is not None:
            for out in packer.finish():
                row = self._chunk_row(out["input_ids"], out["text"], out["meta"], next(counter))
                report.tokens += row["length"]
                sink.add(row)
        return self._finish(sink, report, started)

    def _pieces(
        self, rows: Iterable[dict[str, Any]], tok: TokenizerHandle, report: PreprocessReport
    ) -> Iterator[Piece]:
        batch: list[tuple[str, dict[str, Any]]] = []
        size = 0

        def flush() -> Iterator[Piece]:
            encoded = tok.encode_batch([t for t, _ in batch])
            for (text, meta), (ids, offsets) in zip(batch, encoded, strict=True):
                n_text = len(ids)
                if tok.eos_id is not None:
                    ids.append(tok.eos_id)
                yield Piece(ids, offsets, text, meta, n_text)
            batch.clear()

        for row in rows:
            text = str(row.get("text") or "")
            text = clean_text(text) if self.clean else text
            text = self.anonymizer.anonymize(text)
            if not text.strip():
                report.skip("empty_after_cleaning")
                continue
            meta = {k: row.get(k, "") for k in ("genre", "title", "source", "file", "position")}
            meta["doc_sha256"] = str(row.get("sha256") or sha256_text(text))
            batch.append((text, meta))
            size += len(text)
            if len(batch) >= _BATCH or size >= _BATCH_CHARS:
                yield from flush()
                size = 0
        if batch:
            yield from flush()

    @staticmethod
    def _chunk_row(ids: list[int], text: str, meta: dict[str, Any], index: int) -> dict[str, Any]:
        position = str(meta.get("position") or "")
        if meta.get("token_start"):  # a packed window that starts inside a document
            position = f"{position}+token:{meta['token_start']}" if position else f"token:{meta['token_start']}"
        return {
            "text": text,
            "input_ids": ids,
            "length": len(ids),
            "genre": str(meta.get("genre") or ""),
            "title": str(meta.get("title") or ""),
            "chunk_index": index,
            "doc_sha256": str(meta.get("doc_sha256") or ""),
            "source": str(meta.get("source") or ""),
            "file": str(meta.get("file") or ""),
            "position": position,
            "sha256": sha256_text(text),
        }

    def _split(self, piece: Piece, max_length: int, stride: int) -> Iterator[dict[str, Any]]:
        for i, (start, end) in enumerate(window_spans(len(piece.ids), max_length, stride)):
            text = piece.text_of(start, end)
            meta = dict(piece.meta)
            if start:
                meta["position"] = f"{meta['position']}+token:{start}" if meta.get("position") else f"token:{start}"
            yield self._chunk_row(piece.ids[start:end], text, meta, i)

    # ------------------------------------------------------------------ conversations

    def preprocess_conversation_data(
        self,
        raw_data: Any,
        context_window: int = 10,
        *,
        tokenization: str = "gpt2",
        max_length: int = 512,
        target_speakers: Sequence[str] | str | None = None,
        window_stride: int | None = None,
        system_prompt: str | None = None,
    ) -> Dataset:
        """Chat-template windows of conversations (see the module docstring).

        `target_speakers`: names or speaker ids to imitate; by default the characters a
        conversation names in its meta (the shipped companion conversations), else every
        participant. `system_prompt` may use `{speaker}` and `{title}`.
        """
        if not isinstance(context_window, int) or context_window < 2:
            raise DataError(f"context_window must be at least 2 turns, got {context_window!r}")
        check_window(max_length, 0)
        started = time.perf_counter()
        data = as_dataset(raw_data, "conversations")
        if "turns" not in data.column_names:
            raise DataError(f"conversation data needs a 'turns' column; it has {', '.join(data.column_names)}")
        tok = load_tokenizer(tokenization)
        report = PreprocessReport("conversations", len(data), tokenizer=tok.name, max_length=max_length)
        report.anonymization = anonymization_report(self.anonymizer)
        targets = [target_speakers] if isinstance(target_speakers, str) else target_speakers
        sink = RecordSink(WINDOW_FEATURES, "conversation-windows")
        from models.training_data.rendering import render_window

        for convo in iter_rows(data):
            turns = [
                t | {"text": self._clean_turn(t.get("text", "")), "speaker": self._anon(t)} for t in convo["turns"]
            ]
            made = 0
            who = targets if targets is not None else _named_characters(convo)
            for window in conversation_windows(turns, context_window, target_speakers=who, window_stride=window_stride):
                row = render_window(window, convo, tok, max_length, system_prompt)
                if row is None:
                    report.skip("too_long_to_render")
                    continue
                report.truncated += int(row["truncated"])
                report.tokens += row["length"]
                sink.add(row)
                made += 1
            if not made:
                report.skip("conversation_without_window")
        return self._finish(sink, report, started)

    def _clean_turn(self, text: Any) -> str:
        from models.training_data.cleaning import normalize_text

        text = normalize_text(str(text or "")) if self.clean else str(text or "")
        return self.anonymizer.anonymize(text)

    def _anon(self, turn: dict[str, Any]) -> str:
        return self.anonymizer.anonymize(str(turn.get("speaker") or ""))

    # ------------------------------------------------------------------ plumbing

    def _finish(self, sink: RecordSink, report: PreprocessReport, started: float) -> Dataset:
        ds = sink.finish()
        report.records_out = len(ds)
        report.seconds = round(time.perf_counter() - started, 3)
        self.last_report = report
        return ds
