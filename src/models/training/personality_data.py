"""The personality recipe's data: a character's lines, anonymized, and the rehearsal share.

`load_rows` reads the lines from whatever the caller names (a path, a saved dataset, a named data
source, a `datasets.Dataset`); `anonymize_examples` runs the pipeline's anonymizer over them;
`rehearsal_examples` has the base model write replies under each emotion control token, kept
where the classifier agrees, so an adapter keeps what those tokens mean.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.errors import DataError
from models.personality.choice import FAREWELL
from models.personality.emotion import default_classifier
from models.tokens import EMOTIONS, emotion_token
from models.training.chat_data import NAG
from models.training.control import card_systems
from models.training.examples import ChatExample
from models.training_data.anonymize import anonymization_report, default_anonymizer
from models.training_data.collector import DataCollector
from models.training_data.dataset_io import load_dataset, read_dataset_info
from models.training_data.locations import resolve_training_data
from models.transformer_model import TransformerModel

__all__ = [
    "anonymize_examples",
    "has_emotion_control",
    "known_emotion",
    "load_rows",
    "rehearsal_examples",
    "system_message",
]


def load_rows(training_data: Any, character: str) -> tuple[list[dict[str, Any]], str, dict[str, Any] | None]:
    """Rows of training data, where they came from, and the pipeline's anonymization record
    for them when the pipeline already anonymized them (conversations, saved datasets)."""

    if hasattr(training_data, "column_names") and hasattr(training_data, "__iter__"):  # a datasets.Dataset
        return [dict(r) for r in training_data], f"a Dataset of {len(training_data)} rows", None
    if isinstance(training_data, list | tuple):
        return [dict(r) for r in training_data], f"{len(training_data)} rows given in memory", None
    raw = str(training_data)
    collector = DataCollector()
    source = collector.data_sources().get(raw)
    if source is not None:
        kind, path, where = source.type, raw, f"data source {raw!r}"
    else:
        found = resolve_training_data(raw)
        kind, path, where = found.kind, found.path, found.describe()
        if kind == "dataset":
            lineage = read_dataset_info(found.path).get("lineage") or {}
            return [dict(r) for r in load_dataset(found.path)], where, lineage.get("anonymization")
    if kind == "characters":
        ds = collector.collect_character_data(path, [character])
    elif kind == "files":  # a folder of the user's own: character files first, else conversations
        try:
            ds = collector.collect_character_data(path, [character])
        except DataError:
            ds = collector.collect_conversation_data(path)
    elif kind == "conversations":
        ds = collector.collect_conversation_data(path)
    else:
        raise DataError(f"{where} holds {kind}, not character lines or conversations")
    report = collector.last_report
    return [dict(r) for r in ds], where, (report.filters.get("anonymization") if report else None)


def anonymize_examples(examples: list[Any], anonymizer: Any = None) -> dict[str, Any]:
    """Pass every message of `examples` through the pipeline's anonymizer (in place) and return
    its record. `anonymizer=PassThroughAnonymizer(reason=...)` is the explicit, audited opt-out."""

    anonymizer = anonymizer or default_anonymizer()
    record = anonymization_report(anonymizer)
    if not record["applied"]:
        return record
    texts = [m["content"] for ex in examples for m in ex.messages]
    batch = getattr(anonymizer, "anonymize_texts", None)
    clean = batch(texts) if batch else [anonymizer.anonymize(t) for t in texts]
    it = iter(clean)
    for ex in examples:
        ex.messages = [{**m, "content": next(it)} for m in ex.messages]
    record["changed"] = sum(a != b for a, b in zip(texts, clean, strict=True))
    return record


def rehearsal_examples(
    codec: Any, examples: list[Any], per_label: int, seed: int, base_folder: Path, system: dict[str, str]
) -> list[Any]:
    """Replies the base model itself writes in every emotion it has a control token for, to the
    character's own prompts, kept only where the emotion classifier agrees (self-rehearsal; see
    `PersonalityRun.rehearsal`). The base's own varied phrasings, not composed sentences (issue
    18: rehearsing a phrasebook taught canned lines); safety nags ("take care") and farewells
    ("Goodbye!", "nice chatting with you") are left out."""
    import random

    prompts = [ex.messages[:-1] for ex in examples if ex.messages[:-1]] or [[{"role": "user", "content": "Hi."}]]
    rng = random.Random(seed)
    base = TransformerModel(str(base_folder), max_length=40, temperature=0.9, top_p=0.95)
    clf = default_classifier()
    out = []
    try:
        for label in EMOTIONS:
            if known_emotion(codec, label) is None or label not in clf.labels:
                continue
            kept = 0
            for attempt in range(3 * per_label):
                if kept >= per_label:
                    break
                prompt = rng.choice(prompts)
                reply = base.chat([system, *prompt], 40, emotion=label, seed=seed * 1000 + attempt).strip()
                unwanted = NAG.search(reply) or FAREWELL.search(reply)
                if len(reply.split()) < 3 or unwanted or clf.classify([reply])[0] != label:
                    continue
                out.append(ChatExample([*prompt, {"role": "assistant", "content": reply}], label, "rehearsal"))
                kept += 1
    finally:
        base.close()
    return out


def system_message(card: Any) -> dict[str, str]:

    return card_systems({card.name: card})[0]


def has_emotion_control(base_folder: Path, codec: Any) -> bool:
    meta_path = base_folder / "companion.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return bool(meta.get("emotion_control")) and codec.has_emotion_tokens


def known_emotion(codec: Any, label: str | None) -> str | None:

    return label if label and codec.token_id(emotion_token(label)) is not None else None
