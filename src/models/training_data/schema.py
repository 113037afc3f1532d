"""Column layouts (Arrow features) of every dataset the pipeline makes, and record helpers.

Every record carries provenance: `source` (the source name or path as given), `file` (path
relative to the source folder), `position` (where in the file: `char:<offset>`,
`line:<n>`, `row:<n>`, `item:<n>`, `message:<id>`) and `sha256` (of the record's text). Extra,
source-specific facts go into `meta` as a JSON object string.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from datasets import Features, Sequence, Value

__all__ = [
    "CHARACTER_FEATURES",
    "CONVERSATION_FEATURES",
    "PROVENANCE",
    "TURN",
    "WINDOW_FEATURES",
    "WRITING_CHUNK_FEATURES",
    "WRITING_FEATURES",
    "dumps_meta",
    "sha256_text",
]

PROVENANCE = {
    "source": Value("string"),
    "file": Value("string"),
    "position": Value("string"),
    "sha256": Value("string"),
}

#: Collected prose: one row per document (a long book is cut into ~1 MB parts).
WRITING_FEATURES = Features(
    {
        "text": Value("string"),
        "title": Value("string"),
        "author": Value("string"),
        "genre": Value("string"),
        "format": Value("string"),
        "part": Value("int32"),
        **PROVENANCE,
        "meta": Value("string"),
    }
)

TURN = {
    "speaker": Value("string"),
    "speaker_id": Value("string"),
    "text": Value("string"),
    "timestamp": Value("string"),
    "message_id": Value("string"),
    "reply_to": Value("string"),
    "edited": Value("bool"),
    "emotion": Value("string"),
}

#: Collected conversations: one row per conversation (a channel, a thread, or a chat session).
CONVERSATION_FEATURES = Features(
    {
        "conversation_id": Value("string"),
        "title": Value("string"),
        "turns": [TURN],
        "participants": Sequence(Value("string")),
        "start_time": Value("string"),
        "end_time": Value("string"),
        "format": Value("string"),
        **PROVENANCE,
        "meta": Value("string"),
    }
)

#: Collected character data: one row per line (dialogue, greeting, example) or description.
CHARACTER_FEATURES = Features(
    {
        "character": Value("string"),
        "name": Value("string"),
        "kind": Value("string"),
        "context": Value("string"),
        "text": Value("string"),
        "emotion": Value("string"),
        **PROVENANCE,
        "meta": Value("string"),
    }
)

#: Preprocessed prose: token windows of at most `max_length` with the text they cover.
WRITING_CHUNK_FEATURES = Features(
    {
        "text": Value("string"),
        "input_ids": Sequence(Value("int32")),
        "length": Value("int32"),
        "genre": Value("string"),
        "title": Value("string"),
        "chunk_index": Value("int32"),
        "doc_sha256": Value("string"),
        **PROVENANCE,
    }
)

#: Preprocessed conversations: windows of turns rendered through the chat template.
WINDOW_FEATURES = Features(
    {
        "text": Value("string"),
        "messages": [{"role": Value("string"), "content": Value("string"), "emotion": Value("string")}],
        "input_ids": Sequence(Value("int32")),
        "assistant_mask": Sequence(Value("int8")),
        "length": Value("int32"),
        "assistant_text": Value("string"),
        "conversation_id": Value("string"),
        "title": Value("string"),
        "speaker": Value("string"),
        "speaker_id": Value("string"),
        "n_turns": Value("int32"),
        "truncated": Value("bool"),
        **PROVENANCE,
    }
)


def sha256_text(text: str) -> str:
    """Hex sha256 of UTF-8 text: the content hash every record carries."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def dumps_meta(meta: dict[str, Any] | None) -> str:
    """`meta` as compact, key-sorted JSON ("{}" when empty)."""
    return json.dumps(meta or {}, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
