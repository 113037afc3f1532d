"""The base recipe's data: the corpus, its held-out split, and windows over its tokens.

`build_corpus` gathers public-domain fiction (Project Gutenberg books, tiny Shakespeare) as
plain text and permissively licensed dialogue (Synthetic-Persona-Chat, CC BY 4.0; the
ChatterBot corpus, BSD-3) rendered through our chat template. The last 2% of every text is held
out (`_split_text`, at a paragraph break), the same cut for every recipe that reads the books
(`book_texts`), so held-out text is never trained on. `TokenWindows` serves random fixed-length
windows of the token stream to the training loop, exactly resumable.
"""

from __future__ import annotations

import csv
import random
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.errors import DataError
from models.tokens import EOS, ROLE_TOKENS, TURN_END

__all__ = ["Corpus", "TokenWindows", "book_texts", "book_token_ids", "build_corpus", "encode_documents"]


def _split_text(text: str, heldout_fraction: float) -> tuple[str, str]:
    """`text` as (training part, held-out tail): the last `heldout_fraction`, moved back to the
    paragraph break before it where there is one."""
    cut = int(len(text) * (1 - heldout_fraction))
    cut = text.rfind("\n\n", 0, cut) if text.rfind("\n\n", 0, cut) > 0 else cut
    return text[:cut], text[cut:]


_ILLUSTRATION = re.compile(r"\[Illustration[^\]]*\]", re.S)


def _clean_book(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = _ILLUSTRATION.sub("", text)
    # Unwrap hard-wrapped paragraphs: single newlines inside a paragraph become spaces.
    paras = [re.sub(r"\s*\n\s*", " ", p).strip() for p in re.split(r"\n\s*\n", text)]
    return "\n\n".join(p for p in paras if p)


def _chat(turns: list[tuple[str, str]], system: str | None = None) -> str:
    parts = []
    if system:
        parts.append(f"{ROLE_TOKENS['system']}{system.strip()}{TURN_END}\n")
    parts += [f"{ROLE_TOKENS[r]}{t.strip()}{TURN_END}\n" for r, t in turns if t.strip()]
    return "".join(parts)


def _persona_chats(path: Path) -> Iterator[str]:
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            convo = row.get("Best Generated Conversation", "")
            persona = " ".join(row.get("user 2 personas", "").split("\n"))
            turns = []
            for line in convo.split("\n"):
                m = re.match(r"\s*User ([12]):\s*(.*)", line)
                if m:
                    turns.append(("user" if m.group(1) == "1" else "assistant", m.group(2)))
            if turns:
                yield _chat(turns, system=f"You are a friendly person. {persona}")


def _chatterbot(folder: Path) -> Iterator[str]:
    import yaml

    for f in sorted(folder.glob("*.yml")):
        doc = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        for convo in doc.get("conversations", []) or []:
            lines = [str(x) for x in convo if isinstance(x, str | int | float)]
            if len(lines) >= 2:
                yield _chat([("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(lines)])


@dataclass
class Corpus:
    train: list[str]
    heldout: list[str]
    sources: list[dict[str, Any]]


def build_corpus(data_dir: Path, heldout_fraction: float = 0.02, dialogue_repeat: int = 2) -> Corpus:
    """Gather the training documents from a `shared/data`-shaped folder.

    Books and Shakespeare: the last `heldout_fraction` of each text is held out. Dialogue:
    every 20th conversation is held out; the rest is repeated `dialogue_repeat` times so chat
    is not drowned by the much larger book corpus.
    """
    train_docs: list[str] = []
    held: list[str] = []
    sources: list[dict[str, Any]] = []

    def add_text(name: str, text: str, licence: str) -> None:
        train_part, held_part = _split_text(text, heldout_fraction)
        train_docs.append(train_part)
        held.append(held_part)
        sources.append({"source": name, "bytes": len(text.encode()), "licence": licence})

    books = data_dir / "books"
    for f in sorted(books.glob("*.txt")):
        add_text(f"books/{f.name}", _clean_book(f.read_text(encoding="utf-8")), "public domain (US)")
    shakespeare = data_dir / "tinyshakespeare" / "input.txt"
    if shakespeare.exists():
        add_text("tinyshakespeare/input.txt", shakespeare.read_text(encoding="utf-8"), "public domain")
    chats: list[tuple[str, str]] = []
    spc = data_dir / "dialogue" / "synthetic_persona_chat" / "Synthetic-Persona-Chat_valid.csv"
    if spc.exists():
        chats += [("dialogue/synthetic_persona_chat", c) for c in _persona_chats(spc)]
    cb = data_dir / "dialogue" / "chatterbot_corpus_en"
    if cb.exists():
        chats += [("dialogue/chatterbot_corpus_en", c) for c in _chatterbot(cb)]
    per_source: dict[str, int] = {}
    for i, (src, c) in enumerate(chats):
        per_source[src] = per_source.get(src, 0) + len(c.encode())
        if i % 20 == 0:
            held.append(c)
        else:
            train_docs.extend([c] * dialogue_repeat)
    licences = {
        "dialogue/synthetic_persona_chat": "CC BY 4.0",
        "dialogue/chatterbot_corpus_en": "BSD-3-Clause",
    }
    sources += [{"source": s, "bytes": b, "licence": licences[s]} for s, b in per_source.items()]
    if not train_docs:
        raise DataError(
            f"no training text found under {data_dir}: expected books/*.txt, tinyshakespeare/ or "
            "dialogue/ (the layout of the project's shared data folder)"
        )
    rng = random.Random(0)
    rng.shuffle(train_docs)
    return Corpus(train_docs, held, sources)


class TokenWindows:
    """A `BatchSource` of random fixed-length windows over one token stream (nanoGPT-style).

    The windows of step `s` depend only on `(seed, s)`, so a resumed run is exact.
    """

    def __init__(
        self,
        train_ids: np.ndarray,
        heldout_ids: np.ndarray,
        seq_len: int,
        seed: int,
        eval_batch: int = 16,
        eval_windows: int = 128,
    ) -> None:
        if len(train_ids) <= seq_len + 1:
            raise DataError(f"training data has {len(train_ids)} tokens, fewer than one window of {seq_len}")
        if len(heldout_ids) <= seq_len + 1:
            raise DataError(f"held-out data has {len(heldout_ids)} tokens, fewer than one window of {seq_len}")
        self.train = torch.from_numpy(train_ids.astype(np.int64))
        self.heldout = torch.from_numpy(heldout_ids.astype(np.int64))
        self.seq_len, self.seed = seq_len, seed
        self.eval_batch, self.eval_windows = eval_batch, eval_windows

    def global_batch(self, step: int, size: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        starts = torch.randint(0, len(self.train) - self.seq_len, (size,), generator=g)
        x = torch.stack([self.train[s : s + self.seq_len] for s in starts.tolist()])
        return {"input_ids": x, "labels": x.clone()}

    def eval_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        n = min(self.eval_windows, (len(self.heldout) - 1) // self.seq_len)
        stride = max(self.seq_len, (len(self.heldout) - self.seq_len) // max(1, n))
        starts = [i * stride for i in range(n)]
        for i in range(0, len(starts), self.eval_batch):
            x = torch.stack([self.heldout[s : s + self.seq_len] for s in starts[i : i + self.eval_batch]])
            yield {"input_ids": x, "labels": x.clone()}


def encode_documents(tok: Any, docs: list[str]) -> np.ndarray:
    """One uint16 token stream of `docs`, each ended by the end-of-text token."""
    eos = tok.token_to_id(EOS)
    out: list[np.ndarray] = []
    for i in range(0, len(docs), 256):
        for enc in tok.encode_batch(docs[i : i + 256]):
            out.append(np.asarray([*enc.ids, eos], dtype=np.uint16))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.uint16)


def book_texts(data_dir: str | Path, split: str, heldout_fraction: float = 0.02) -> list[str]:
    """The cleaned books of `data_dir/books` cut as `build_corpus` cuts them: `"train"` is the first
    98% of each book, `"heldout"` the rest (so held-out text is never trained on by any recipe)."""
    out = []
    for f in sorted((Path(data_dir) / "books").glob("*.txt")):
        train_part, held_part = _split_text(_clean_book(f.read_text(encoding="utf-8")), heldout_fraction)
        out.append(train_part if split == "train" else held_part)
    return out


def book_token_ids(codec: Any, data_dir: str | Path, split: str) -> np.ndarray:
    """One token stream of the books' `split`, documents separated by the end-of-text token."""
    sep = codec.prefix_ids
    ids: list[int] = []
    for text in book_texts(data_dir, split):
        ids += sep + codec.encode(text)
    return np.asarray(ids, dtype=np.uint16)
