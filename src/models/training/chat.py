"""The chat recipe: the embedded chat model that answers the last message (`companion train chat`).

Issue 18. Where `companion train emotion-control` taught single replies to a one-turn context,
this recipe trains on whole human conversations rendered through the model's own chat template,
with the loss on every assistant turn (each window of a conversation teaches ten replies, not one):

* **Topical-Chat** (CDLA-Sharing 1.0; Gopalakrishnan et al. 2019): human-human chat; each turn
  carries its writer's own sentiment, which becomes that turn's `<|emotion:X|>` tag (mapped onto
  our labels, `TOPICAL_SENTIMENT`); the emotion classifier overrides it only where it is sure.
  Each conversation is used twice, once from each speaker's side.
* **Synthetic-Persona-Chat** (CC BY 4.0): rendered as a *card* would be (the system message
  `models.personality.prompt` builds: "You are NAME, talking with USER. Stay in character." then
  the description), with the persona as the description, so a card's facts reach the reply.
  Windows in which the assistant uses a fact of its own persona that the other speaker did not
  say (content-word overlap) are drawn `grounded_weight` times as often: plain fine-tuning barely
  learns to use the persona (shared/NOTES.md: 18% vs 16% against a different one).
* **GoEmotions** comments (CC BY 4.0) top up the labels human chat rarely shows (romantic,
  caring, fear, anger): many writers' phrasings, each as the reply to a random chat turn. No
  phrasebook sentences; "be careful"/"take care" replies are left out (the safety-nag habit).
  With `repeated_fact_conversations` set, Topical-Chat turns that state one of its reading sets'
  much-repeated facts are context only (`chat_data.repeated_facts`), so that trivia is not
  learnt as the answer to everything.
* **Books** (public domain): a share of each batch is plain 512-token windows of fiction, so the
  model keeps writing prose and keeps its full context.

Every source keeps a dev split (`split_of`: a stable hash of the conversation id), which the
recipe never trains on and `bench/replies.py` measures on.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.engines.codec import TextCodec
from models.errors import DataError
from models.personality.emotion import default_classifier
from models.training.chat_data import (
    TOPICAL_SENTIMENT,
    ChatData,
    ChatDataSettings,
    ChatEncoder,
    Conversation,
    build_chat_data,
    content_words,
    persona_chat_conversations,
    split_of,
    topical_chat_conversations,
    uses_persona,
)
from models.training.control import finish_run
from models.training.corpus import book_token_ids
from models.training.examples import pad_rows
from models.training.loop import TrainSettings, train

__all__ = [
    "TOPICAL_SENTIMENT",
    "ChatData",
    "ChatDataSettings",
    "ChatEncoder",
    "ChatSequences",
    "Conversation",
    "build_chat_data",
    "content_words",
    "persona_chat_conversations",
    "split_of",
    "topical_chat_conversations",
    "train_chat",
    "uses_persona",
]


class ChatSequences:
    """A `BatchSource`: each batch is `book_share` plain book windows, the rest chat windows drawn
    by weight; right-padded. Deterministic in `(seed, step)`, so a resumed run is exact."""

    def __init__(
        self,
        train_rows: ChatData,
        dev_rows: ChatData,
        book_ids: np.ndarray | None,
        pad_id: int,
        seq_len: int,
        seed: int,
        book_share: float = 0.15,
        eval_rows: int = 320,
    ) -> None:
        if not train_rows.rows:
            raise DataError("no chat windows to train on")
        self.train, self.pad_id, self.seq_len, self.seed = train_rows.rows, pad_id, seq_len, seed
        self.weights = torch.tensor(train_rows.weights, dtype=torch.float)
        rng = random.Random(seed)
        held = list(dev_rows.rows)
        rng.shuffle(held)
        self.held = held[:eval_rows]
        self.books = torch.from_numpy(book_ids.astype(np.int64)) if book_ids is not None and len(book_ids) else None
        self.book_share = book_share if self.books is not None else 0.0

    def global_batch(self, step: int, size: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        n_books = round(size * self.book_share)
        picks = torch.multinomial(self.weights, size - n_books, replacement=True, generator=g).tolist()
        rows = [self.train[i] for i in picks]
        if n_books and self.books is not None:
            starts = torch.randint(0, len(self.books) - self.seq_len, (n_books,), generator=g).tolist()
            for s in starts:
                x = self.books[s : s + self.seq_len].tolist()
                rows.append((x, x))
        return pad_rows(self.pad_id, rows)

    def eval_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        for i in range(0, len(self.held), 16):
            yield pad_rows(self.pad_id, self.held[i : i + 16])


# ----------------------------------------------------------------------------- recipe


def train_chat(
    base_folder: str | Path,
    output_folder: str | Path,
    run_dir: str | Path,
    data_dir: str | Path,
    *,
    settings: TrainSettings | None = None,
    data_settings: ChatDataSettings | None = None,
    classifier: Any = None,
    threads: int | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune `base_folder` into the chat model; export to `output_folder`; the report."""
    from transformers import LlamaForCausalLM

    if threads:
        torch.set_num_threads(threads)
    t0 = time.time()
    s = data_settings or ChatDataSettings()
    base_folder, out, run, data_dir = Path(base_folder), Path(output_folder), Path(run_dir), Path(data_dir)
    clf = classifier or default_classifier()
    codec = TextCodec(base_folder)
    if not codec.has_emotion_tokens:
        raise DataError(f"{base_folder}: the tokenizer has no emotion tokens")
    train_data, _ = build_chat_data(codec, clf, data_dir, "train", s)
    dev_data, _ = build_chat_data(codec, clf, data_dir, "dev", s)
    books = book_token_ids(codec, data_dir, "train") if s.book_share > 0 else None
    source = ChatSequences(train_data, dev_data, books, codec.pad_id or 0, s.seq_len, s.seed, s.book_share)
    settings = settings or TrainSettings(
        max_steps=800, batch_size=16, micro_batch_size=16, lr=1e-3, warmup_steps=40, eval_every=100,
        checkpoint_every=50, max_minutes=80.0, seed=s.seed, log_every=10,
    )  # fmt: skip
    run.mkdir(parents=True, exist_ok=True)
    model = LlamaForCausalLM.from_pretrained(str(base_folder), dtype=torch.float32)
    result = train(model, source, settings, run, resume=resume, progress=progress, description="chat model")
    report = {
        "recipe": "companion train chat",
        "base_model": str(base_folder),
        "examples": len(train_data.rows),
        "dev_windows": len(dev_data.rows),
        "grounded_windows": train_data.grounded_windows,
        "repeated_facts_skipped": train_data.facts_skipped,
        "emotion_counts": dict(train_data.emotions.most_common()),
        "sources": dict(train_data.sources),
        "data_sha256": hashlib.sha256(json.dumps(train_data.rows[:2000]).encode()).hexdigest(),
        "data_settings": asdict(s),
    }
    return finish_run(model, base_folder, out, run, report, settings, result, t0)
