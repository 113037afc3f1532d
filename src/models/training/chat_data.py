"""The chat recipe's data: conversations, their windows and encoding (`models.training.chat`).

Sources (what each contributes is described in `models.training.chat`): Topical-Chat and
Synthetic-Persona-Chat conversations seen from each speaker's side, card-style system messages,
GoEmotions comments for rare emotions. `split_of` keeps one conversation in ten of every source
(a stable hash of its id) as a dev split; `windows` cuts a conversation into `seq_len`-token
windows in which every assistant turn is a training target exactly once.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.errors import DataError
from models.personality.grounding import content_words
from models.training.loop import IGNORE_INDEX

__all__ = [
    "NAG",
    "TOPICAL_SENTIMENT",
    "ChatData",
    "ChatDataSettings",
    "ChatEncoder",
    "Conversation",
    "build_chat_data",
    "card_system",
    "content_words",
    "encode_conversations",
    "goemotions_topup",
    "persona_chat_conversations",
    "repeated_facts",
    "split_of",
    "states_fact",
    "topical_chat_conversations",
    "uses_persona",
    "windows",
]

#: Topical-Chat's self-reported sentiments onto our emotion labels.
TOPICAL_SENTIMENT = {
    "Happy": "joy",
    "Curious to dive deeper": "curious",
    "Surprised": "surprise",
    "Sad": "sadness",
    "Angry": "anger",
    "Disgusted": "anger",
    "Fearful": "fear",
    "Neutral": "neutral",
}

#: Names given to the assistant and the user in card-style system messages (varied so that no
#: one name is learnt as "the" companion).
_NAMES = (
    "Ada", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "June", "Kai", "Lena", "Milo",
    "Nora", "Otto", "Pia", "Quin", "Rosa", "Sam", "Tess", "Uma", "Vik", "Wren", "Yara", "Zeno",
)  # fmt: skip

NAG = re.compile(r"\b(be careful|take care|stay safe|be safe)\b", re.I)


def split_of(key: str, dev_share: int = 10) -> str:
    """`"dev"` for one conversation in `dev_share` (stable hash of its id), else `"train"`."""
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    return "dev" if h % dev_share == 0 else "train"


@dataclass
class Conversation:
    """One conversation seen from the assistant's side: `turns` alternate as the file has them."""

    key: str
    source: str
    system: str
    turns: list[dict[str, str]]
    persona: str = ""
    grounded: bool = False


def card_system(name: str, user: str, description: str = "") -> str:
    """The system message a card with this description gets (models.personality.prompt)."""
    head = f"You are {name}, talking with {user}. Stay in character."
    return f"{head}\n{description.strip()}" if description.strip() else head


def topical_chat_conversations(folder: Path, split: str, seed: int = 0) -> Iterator[Conversation]:
    """Topical-Chat's conversations in `split` ("train"/"dev"), once from each side."""
    rng = random.Random(seed)
    for f in sorted(folder.glob("*.json")):
        data = json.loads(f.read_text(encoding="utf-8"))
        for cid, conv in data.items():
            if split_of(f"topical:{cid}") != split:
                continue
            msgs = [m for m in conv.get("content", []) if str(m.get("message", "")).strip()]
            for me in ("agent_1", "agent_2"):
                name, user = rng.sample(_NAMES, 2)
                turns = [
                    {
                        "role": "assistant" if m["agent"] == me else "user",
                        "content": " ".join(str(m["message"]).split()),
                        "sentiment": str(m.get("sentiment", "")),
                    }
                    for m in msgs
                ]
                yield Conversation(f"topical:{cid}:{me}", "topical_chat", card_system(name, user), turns)


def persona_chat_conversations(csv_path: Path, split: str, seed: int = 0) -> Iterator[Conversation]:
    """Synthetic-Persona-Chat in `split`, from each side, with that side's persona as a card."""
    rng = random.Random(seed)
    with csv_path.open(newline="", encoding="utf-8") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            if split_of(f"persona:{i}") != split:
                continue
            raw = []
            for line in row.get("Best Generated Conversation", "").split("\n"):
                m = re.match(r"\s*User ([12]):\s*(.*)", line)
                if m and m.group(2).strip():
                    raw.append((m.group(1), " ".join(m.group(2).split())))
            for me in ("1", "2"):
                persona = " ".join(x.strip() for x in row.get(f"user {me} personas", "").split("\n") if x.strip())
                name, user = rng.sample(_NAMES, 2)
                turns = [{"role": "assistant" if who == me else "user", "content": text} for who, text in raw]
                yield Conversation(
                    f"persona:{i}:{me}", "persona_chat", card_system(name, user, persona), turns, persona=persona
                )


_WORD = re.compile(r"[a-z0-9']+")


def _grams(text: str, n: int = 5) -> set[str]:
    w = _WORD.findall(text.lower())
    return {" ".join(w[i : i + n]) for i in range(len(w) - n + 1)}


def repeated_facts(
    conversations: Sequence[Conversation], min_conversations: int = 8, rare_share: float = 0.001
) -> set[str]:
    """Word 5-grams of Topical-Chat that read as its reading sets' trivia: said in at least
    `min_conversations` of its conversations and holding a word that fewer than `rare_share` of
    ordinary chat turns (Synthetic-Persona-Chat's) use.

    Topical-Chat's pairs chatted about shared fact sheets, and its frequent-entity splits repeat
    the same facts across hundreds of conversations ("only 11 minutes of live gameplay", "the only
    left-handed quarterback"). Trained on as replies, they became the chat model's answer to any
    message (docs/embedded-model.md). Common phrases ("did you know that the", "what do you
    think about") are made of common words and stay."""
    seen: Counter[str] = Counter()
    words: Counter[str] = Counter()
    turns = 0
    for conv in conversations:
        if conv.source == "topical_chat" and conv.key.endswith(":agent_1"):  # each conversation once
            seen.update(set().union(*(_grams(t["content"]) for t in conv.turns)))
        elif conv.source == "persona_chat":
            for t in conv.turns:
                turns += 1
                words.update(set(_WORD.findall(t["content"].lower())))
    floor = rare_share * max(turns, 1)
    return {g for g, n in seen.items() if n >= min_conversations and any(words[w] < floor for w in g.split())}


def states_fact(text: str, facts: set[str]) -> bool:
    """Whether `text` holds one of `facts` (`repeated_facts`)."""
    return bool(facts) and not _grams(text).isdisjoint(facts)


def uses_persona(persona: str, reply: str, previous: str) -> bool:
    """Whether `reply` shares a content word with `persona` that `previous` did not say."""
    return bool((content_words(reply) & content_words(persona)) - content_words(previous))


# ----------------------------------------------------------------------------- encoding


@dataclass
class _Piece:
    ids: list[int]
    labels: list[int]


class ChatEncoder:
    """Encodes a conversation message by message (each message's template piece on its own, which
    concatenates to exactly the whole rendering: every piece starts and ends at a special token)."""

    def __init__(self, codec: Any) -> None:
        self.codec = codec
        self.prefix = codec.prefix_ids

    def piece(self, message: dict[str, Any], train: bool) -> _Piece:
        msg = {"role": message["role"], "content": message["content"]}
        if message.get("emotion"):
            msg["emotion"] = message["emotion"]
        ids = self.codec.encode(self.codec.render_chat([msg], add_generation_prompt=False))
        if not train:
            return _Piece(ids, [IGNORE_INDEX] * len(ids))
        head = 2 if msg.get("emotion") else 1  # the role token (and emotion tag) are the prompt's
        return _Piece(ids, [IGNORE_INDEX] * head + ids[head:])


def windows(
    system: _Piece, pieces: Sequence[_Piece], is_reply: Sequence[bool], seq_len: int, prefix: list[int]
) -> Iterator[tuple[list[int], list[int], list[int]]]:
    """Windows `prefix + system + turns[i:j]` of at most `seq_len` tokens; each reply is trained in
    exactly one window, with at least one earlier turn before it. Yields (ids, labels, reply_indices)."""
    budget = seq_len - len(prefix) - len(system.ids)
    i, n = 0, len(pieces)
    while i < n:
        used, j = 0, i
        while j < n and used + len(pieces[j].ids) <= budget:
            used += len(pieces[j].ids)
            j += 1
        if j == i:  # one turn longer than a window: skip it
            i += 1
            continue
        ids, labels, replies = list(prefix) + system.ids, [IGNORE_INDEX] * (len(prefix) + len(system.ids)), []
        for k in range(i, j):
            ids += pieces[k].ids
            trained = is_reply[k] and k > i
            labels += pieces[k].labels if trained else [IGNORE_INDEX] * len(pieces[k].ids)
            if trained:
                replies.append(k)
        if replies:
            yield ids, labels, replies
        if j >= n:
            break
        i = max(i + 1, j - 1)  # the next window starts with the last turn of this one as context


@dataclass
class ChatData:
    """Encoded windows of one split, with a sampling weight each, and counts for the report."""

    rows: list[tuple[list[int], list[int]]] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    sources: Counter[str] = field(default_factory=Counter)
    emotions: Counter[str] = field(default_factory=Counter)
    grounded_windows: int = 0
    facts_skipped: int = 0


def _tag(turns: list[dict[str, str]], classifier: Any, min_confidence: float) -> list[str | None]:
    """Each assistant turn's emotion: the classifier's label where it is at least `min_confidence`
    sure, else the writer's own sentiment (Topical-Chat), else the classifier's label."""
    idx = [k for k, t in enumerate(turns) if t["role"] == "assistant"]
    out: list[str | None] = [None] * len(turns)
    if not idx:
        return out
    probs = classifier.predict_proba([turns[k]["content"] for k in idx])
    for k, row in zip(idx, probs, strict=True):
        best = classifier.labels[int(row.argmax())]
        own = TOPICAL_SENTIMENT.get(turns[k].get("sentiment", ""))
        out[k] = best if (own is None or float(row.max()) >= min_confidence) else own
    return out


def encode_conversations(
    codec: Any,
    conversations: Sequence[Conversation],
    classifier: Any,
    seq_len: int,
    *,
    grounded_weight: float = 3.0,
    min_confidence: float = 0.6,
    data: ChatData | None = None,
    facts: set[str] | None = None,
) -> ChatData:
    """Window and encode `conversations` (see the module docstring). A turn that states one of
    `facts` (`repeated_facts`) stays as context but is no training target."""
    enc = ChatEncoder(codec)
    data = data or ChatData()
    for conv in conversations:
        tags = _tag(conv.turns, classifier, min_confidence)
        pieces, is_reply = [], []
        for turn, tag in zip(conv.turns, tags, strict=True):
            reply = turn["role"] == "assistant" and not NAG.search(turn["content"])
            if reply and facts is not None and states_fact(turn["content"], facts):
                reply = False
                data.facts_skipped += 1
            pieces.append(enc.piece({**turn, "emotion": tag}, train=reply))
            is_reply.append(reply)
        system = enc.piece({"role": "system", "content": conv.system}, train=False)
        for ids, labels, replies in windows(system, pieces, is_reply, seq_len, enc.prefix):
            grounded = bool(conv.persona) and any(
                uses_persona(conv.persona, conv.turns[k]["content"], conv.turns[k - 1]["content"]) for k in replies
            )
            data.rows.append((ids, labels))
            data.weights.append(grounded_weight if grounded else 1.0)
            data.grounded_windows += int(grounded)
            data.sources[conv.source] += 1
            data.emotions.update(str(tags[k]) for k in replies)
    return data


def goemotions_topup(
    codec: Any,
    classifier: Any,
    tsv: Path,
    prompts: Sequence[str],
    *,
    labels: Sequence[str],
    per_label: int,
    seq_len: int,
    split: str,
    seed: int,
    data: ChatData,
) -> ChatData:
    """GoEmotions comments whose gold label is one of `labels` (and the classifier agrees) as
    replies to random chat turns under a card-style system message."""
    from models.personality.emotion_training import read_goemotions

    texts, targets = read_goemotions(tsv, classifier.labels)
    keep = [
        (t, classifier.labels[g[0]])
        for i, (t, g) in enumerate(zip(texts, targets, strict=True))
        if len(g) == 1
        and classifier.labels[g[0]] in labels
        and 4 <= len(t.split()) <= 30
        and "[" not in t
        and not NAG.search(t)
        and split_of(f"goemotions:{i}") == split
    ]
    predicted = classifier.classify([t for t, _ in keep])
    rng = random.Random(seed)
    by_label: dict[str, list[str]] = {}
    for (text, gold), pred in zip(keep, predicted, strict=True):
        if gold == pred:
            by_label.setdefault(gold, []).append(text)
    enc = ChatEncoder(codec)
    for lab, items in by_label.items():
        rng.shuffle(items)
        for text in items[:per_label]:
            name, user = rng.sample(_NAMES, 2)
            system = enc.piece({"role": "system", "content": card_system(name, user)}, train=False)
            pieces = [
                enc.piece({"role": "user", "content": rng.choice(prompts)}, train=False),
                enc.piece({"role": "assistant", "content": text, "emotion": lab}, train=True),
            ]
            for ids, lbl, _ in windows(system, pieces, [False, True], seq_len, enc.prefix):
                data.rows.append((ids, lbl))
                data.weights.append(1.0)
                data.sources["goemotions"] += 1
                data.emotions[lab] += 1
    return data


@dataclass
class ChatDataSettings:
    """What `train_chat` reads and how it mixes it."""

    seq_len: int = 512
    grounded_weight: float = 3.0
    """How much more often a window whose reply uses its own persona's facts is drawn."""
    book_share: float = 0.15
    """Share of each batch that is plain fiction (keeps prose and the full context)."""
    goemotions_labels: tuple[str, ...] = ("romantic", "caring", "fear", "anger", "sadness", "playful")
    goemotions_per_label: int = 500
    min_confidence: float = 0.6
    seed: int = 7
    repeated_fact_conversations: int = 0
    """A Topical-Chat turn that states a fact said in at least this many of its conversations
    is context only, not a training target (`repeated_facts`); 0 trains on every turn."""


def build_chat_data(
    codec: Any, classifier: Any, data_dir: Path, split: str, s: ChatDataSettings
) -> tuple[ChatData, list[Conversation]]:
    """All chat windows of `split` from a `shared/data`-shaped folder, and the conversations."""
    convs: list[Conversation] = []
    tc = data_dir / "dialogue" / "topical_chat"
    if tc.is_dir():
        convs += list(topical_chat_conversations(tc, split, s.seed))
    spc = data_dir / "dialogue" / "synthetic_persona_chat" / "Synthetic-Persona-Chat_valid.csv"
    if spc.exists():
        convs += list(persona_chat_conversations(spc, split, s.seed))
    if not convs:
        raise DataError(
            f"no dialogue under {data_dir / 'dialogue'} (expected topical_chat/ or synthetic_persona_chat/)"
        )
    facts = repeated_facts(convs, s.repeated_fact_conversations) if s.repeated_fact_conversations else None
    data = encode_conversations(
        codec, convs, classifier, s.seq_len, grounded_weight=s.grounded_weight, min_confidence=s.min_confidence,
        facts=facts,
    )  # fmt: skip
    ge = data_dir / "goemotions" / ("train.tsv" if split == "train" else "dev.tsv")
    if ge.exists():
        prompts = [t["content"] for c in convs for t in c.turns if t["role"] == "user" and len(t["content"]) < 200]
        goemotions_topup(
            codec, classifier, ge, prompts[:5000], labels=s.goemotions_labels, per_label=s.goemotions_per_label,
            seq_len=s.seq_len, split="train" if split == "train" else "dev", seed=s.seed, data=data,
        )  # fmt: skip
    return data, convs
