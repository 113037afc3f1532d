"""Chat examples for fine-tuning: from whatever data a user has, to padded batches.

A character's training data arrives in one of the pipeline's shapes (see
`models.training_data.schema`) or as plain rows:

* character rows (`CHARACTER_FEATURES`): `context` (what was said to the character), `text`
  (the character's line), `emotion`; kinds `dialogue`, `greeting`, `example` become examples,
  descriptions do not;
* conversations (`CONVERSATION_FEATURES`): `turns` with `speaker`; the character's turns become
  assistant replies to the turns before them;
* preprocessed windows (`WINDOW_FEATURES`): `messages`, or `input_ids` + `assistant_mask`
  already tokenized; those ids are checked against the base model's tokenizer first;
* plain rows: `{"messages": [...]}` in OpenAI form, or `{"prompt"/"context", "text"/"response"}`.

Each example is rendered through the base model's chat template with the character's system
prompt; loss falls on the reply tokens only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from models.errors import DataError
from models.training.loop import IGNORE_INDEX

__all__ = [
    "ChatExample",
    "EncodedExample",
    "ExampleBatches",
    "encode_chat_examples",
    "examples_from_rows",
    "split_heldout",
]

_LINE_KINDS = {"dialogue", "greeting", "example", "line", ""}


@dataclass
class ChatExample:
    """One chat whose last message is the reply the model should learn to write."""

    messages: list[dict[str, str]]
    emotion: str | None = None
    source: str = ""

    @property
    def reply(self) -> str:
        return self.messages[-1]["content"]


@dataclass
class EncodedExample:
    ids: list[int]
    labels: list[int]
    key: str  # the reply's hash: the held-out split is by reply, so a line is never on both sides


def _same_character(row: Mapping[str, Any], names: set[str]) -> bool:
    who = {str(row.get(k) or "").strip().lower() for k in ("character", "name", "speaker")}
    who.discard("")
    return not who or bool(who & names)


def _turn_role(speaker: str, names: set[str]) -> str:
    return "assistant" if speaker.strip().lower() in names else "user"


def examples_from_rows(
    rows: Iterable[Mapping[str, Any]], character_names: Sequence[str], *, context_turns: int = 4
) -> tuple[list[ChatExample], list[dict[str, Any]]]:
    """Chat examples (without a system message) from data rows; also the pre-tokenized rows
    (`input_ids` + `assistant_mask`) as they are, for `encode_chat_examples` to check and use."""
    names = {n.strip().lower() for n in character_names if n and n.strip()}
    out: list[ChatExample] = []
    tokenized: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        where = str(row.get("file") or row.get("source") or f"row {i}")
        if row.get("input_ids") is not None and row.get("assistant_mask") is not None:
            tokenized.append(dict(row))
            continue
        msgs = row.get("messages")
        if msgs:
            conv = [{"role": str(m["role"]), "content": str(m["content"])} for m in msgs if m.get("content")]
            if conv and conv[-1]["role"] == "assistant":
                emo = (msgs[-1].get("emotion") or None) if isinstance(msgs[-1], Mapping) else None
                out.append(ChatExample(conv, emo, where))
            continue
        turns = row.get("turns")
        if turns:
            conv = []
            for t in turns:
                text = str(t.get("text") or "").strip()
                if not text:
                    continue
                role = _turn_role(str(t.get("speaker") or ""), names)
                if role == "assistant" and conv:
                    ctx = [m for m in conv[-context_turns:]]
                    out.append(
                        ChatExample([*ctx, {"role": "assistant", "content": text}], t.get("emotion") or None, where)
                    )
                conv.append({"role": role, "content": text})
            continue
        text = str(row.get("text") or row.get("response") or "").strip()
        kind = str(row.get("kind") or "")
        if not text or kind not in _LINE_KINDS or not _same_character(row, names):
            continue
        context = str(row.get("context") or row.get("prompt") or "").strip()
        msgs_ = [{"role": "user", "content": context}] if context else [{"role": "user", "content": "Hello!"}]
        out.append(ChatExample([*msgs_, {"role": "assistant", "content": text}], row.get("emotion") or None, where))
    return out, tokenized


def _key(text: str) -> str:
    return hashlib.sha256(text.strip().lower().encode()).hexdigest()


def split_heldout(keys: Sequence[str], fraction: float, seed: int) -> set[str]:
    """The held-out keys: each distinct key is held out when a seeded hash of it falls in the
    first `fraction` of the range (at least one held out, never all). Each key decides alone, so
    a line that changes between runs moves only itself: the anonymizer gives names fresh
    pseudonyms each run, and with a shuffle of all the keys one such line reshuffled the whole
    split, so a character's base perplexity on "its held-out lines" moved from 109 to 141."""
    distinct = sorted(set(keys))
    if len(distinct) < 2:
        raise DataError(f"need at least 2 distinct training lines to hold one out for evaluation, got {len(distinct)}")

    def point(key: str) -> float:
        return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2.0**64

    held = {k for k in distinct if point(k) < fraction}
    if not held:
        held = {min(distinct, key=point)}
    if len(held) == len(distinct):
        held.discard(max(distinct, key=point))
    return held


def _check_tokenized(codec: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Refuse ids made by another tokenizer: out-of-range ids, or texts that do not re-encode to them."""
    vocab = codec.vocab_size
    mismatched = 0
    sample = rows[:8]
    for row in rows:
        ids = row["input_ids"]
        if ids and (max(ids) >= vocab or min(ids) < 0):
            raise DataError(
                f"{row.get('file') or 'dataset'}: token id {max(ids)} is outside the base model's vocabulary "
                f"of {vocab}: the data was tokenized for a different tokenizer; re-run the preprocessor with "
                "tokenization set to the base model"
            )
    for row in sample:
        text = row.get("text")
        if text and codec.encode(str(text)) != list(row["input_ids"]):
            mismatched += 1
    if sample and mismatched > len(sample) // 2:
        raise DataError(
            f"{mismatched} of {len(sample)} sampled rows do not re-encode to their input_ids with the base model's "
            "tokenizer: the data was tokenized for a different tokenizer; re-run the preprocessor with "
            "tokenization set to the base model"
        )


def encode_chat_examples(
    codec: Any,
    examples: Sequence[ChatExample],
    tokenized: Sequence[Mapping[str, Any]],
    seq_len: int,
    *,
    system: dict[str, str] | None,
    emotion_tokens: bool,
) -> tuple[list[EncodedExample], int]:
    """Token ids and reply-only labels; returns them and how many examples were too long."""
    _check_tokenized(codec, tokenized)
    out: list[EncodedExample] = []
    skipped = 0
    for ex in examples:
        msgs = [system, *ex.messages] if system else list(ex.messages)
        emotion = ex.emotion if emotion_tokens else None
        if emotion:  # the template writes an assistant message's control token before its text
            msgs[-1] = {**msgs[-1], "emotion": emotion}
        head = codec.render_chat(msgs[:-1], add_generation_prompt=True, emotion=emotion)
        full = codec.render_chat(msgs, add_generation_prompt=False)
        prefix = codec.encode(head, add_bos=True)
        ids = codec.encode(full, add_bos=True)
        if ids[: len(prefix)] != prefix or len(ids) <= len(prefix):
            skipped += 1
            continue
        labels = [IGNORE_INDEX] * len(prefix) + ids[len(prefix) :]
        if len(ids) - len(prefix) > seq_len // 2:
            skipped += 1
            continue
        out.append(EncodedExample(ids[-seq_len:], labels[-seq_len:], _key(ex.reply)))
    for row in tokenized:
        ids = list(row["input_ids"])[-seq_len:]
        mask = list(row["assistant_mask"])[-seq_len:]
        labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=True)]
        if all(v == IGNORE_INDEX for v in labels):
            skipped += 1
            continue
        out.append(EncodedExample(ids, labels, _key(str(row.get("assistant_text") or row.get("text") or ids))))
    return out, skipped


def data_hash(encoded: Sequence[EncodedExample]) -> str:
    """sha256 over the exact token sequences trained on (order-independent)."""
    h = hashlib.sha256()
    for row in sorted(json.dumps([e.ids, e.labels]) for e in encoded):
        h.update(row.encode())
    return h.hexdigest()


def pad_rows(pad_id: int, rows: Sequence[tuple[Sequence[int], Sequence[int]]]) -> dict[str, torch.Tensor]:
    """`(ids, labels)` rows as one right-padded batch: `input_ids`, `labels` (IGNORE_INDEX in the
    padding) and `attention_mask`. Every recipe's batch source pads through this."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (x, y) in enumerate(rows):
        ids[r, : len(x)], labels[r, : len(y)], mask[r, : len(x)] = torch.tensor(x), torch.tensor(y), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class ExampleBatches:
    """A `BatchSource` over encoded examples, right-padded, in seeded epochs.

    Global position `p = step * size + i` is example `perm_e[p mod n]` of epoch `e = p // n`, with
    `perm_e` a permutation seeded by `(seed, e)`: every example is seen once per epoch, and the
    batch of any step is known without replaying the steps before it (exact resume).
    """

    def __init__(self, train: Sequence[EncodedExample], heldout: Sequence[EncodedExample], pad_id: int, seed: int):
        if not train:
            raise DataError("no training examples left after holding out the evaluation lines")
        if not heldout:
            raise DataError("no held-out examples to evaluate on")
        self.train, self.heldout = list(train), list(heldout)
        self.pad_id, self.seed = pad_id, seed
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(len(self.train), generator=g).tolist()
        return self._perms[epoch]

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, -(-len(self.train) // batch_size))

    def _pad(self, rows: Sequence[EncodedExample]) -> dict[str, torch.Tensor]:
        return pad_rows(self.pad_id, [(r.ids, r.labels) for r in rows])

    def global_batch(self, step: int, size: int) -> dict[str, torch.Tensor]:
        n = len(self.train)
        picks = [self._perm(p // n)[p % n] for p in range(step * size, (step + 1) * size)]
        return self._pad([self.train[i] for i in picks])

    def eval_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        for i in range(0, len(self.heldout), 16):
            yield self._pad(self.heldout[i : i + 16])
