"""Teach a base model its emotion control tokens (`companion train emotion-control`).

Recipe: take dialogue (Synthetic-Persona-Chat's second speaker, CC BY 4.0; the built-in
characters' lines and card examples), tag every reply with the emotion classifier, and
fine-tune the base model on chats rendered through its own template with the tag as the
reply's control token::

    <|system|>You are ...<|end|> <|user|>...<|end|> <|assistant|><|emotion:playful|>reply<|end|>

Loss is on the reply tokens only (labels are -100 elsewhere). Batches are stratified by
emotion (sampling weight ∝ count^0.25 per label) so rare emotions are learnt too; generic
dialogue is kept only where the classifier is confident, so each tag means what it says. The shared
loop (`models.training.loop.train`) runs it; the result is exported as a new HF model folder
whose `companion.json` says `"emotion_control": true`, which personalities read to switch
from emotion-in-words to control tokens.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import random
import re
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from models.engines.codec import TextCodec
from models.errors import DataError
from models.personality.emotion import default_classifier
from models.personality.emotion_training import read_goemotions
from models.personality.interaction import parse_examples
from models.personality.macros import expand_macros
from models.personality.phrasebook import PHRASES, compose
from models.personality.prompt import assemble_prompt
from models.store import write_manifest
from models.tokens import emotion_token
from models.training.base import export_model
from models.training.examples import pad_rows
from models.training.loop import IGNORE_INDEX, TrainSettings, train

__all__ = ["ControlBatches", "ControlExample", "build_examples", "encode_examples", "train_emotion_control"]


@dataclass
class ControlExample:
    """One chat whose last message is the tagged reply."""

    messages: list[dict[str, str]]
    emotion: str
    source: str


def _persona_chat(csv_path: Path, context_turns: int) -> Iterator[tuple[list[dict[str, str]], str]]:
    with csv_path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            persona = " ".join(row.get("user 2 personas", "").split("\n"))
            turns = []
            for line in row.get("Best Generated Conversation", "").split("\n"):
                m = re.match(r"\s*User ([12]):\s*(.*)", line)
                if m and m.group(2).strip():
                    turns.append({"role": "user" if m.group(1) == "1" else "assistant", "content": m.group(2).strip()})
            system = {"role": "system", "content": f"You are a friendly person. {persona}".strip()}
            for i, t in enumerate(turns):
                if t["role"] == "assistant" and i > 0:
                    yield [system, *turns[max(0, i - context_turns) : i]], t["content"]


def _card_chats(cards: Mapping[str, Any], dialogue_dir: Path | None) -> Iterator[tuple[list[dict[str, str]], str, str]]:

    for cid, card in cards.items():
        user = card.companion.interaction.user_name
        system = card_systems({cid: card})[0]
        for block in parse_examples(card.mes_example):
            for i, m in enumerate(block):
                if m["role"] == "assistant" and i > 0:
                    ctx = [
                        {**x, "content": expand_macros(x["content"], char=card.display_name, user=user)}
                        for x in block[:i]
                    ]
                    yield [system, *ctx], expand_macros(m["content"], char=card.display_name, user=user), cid
        lines = dialogue_dir / f"{cid}_dialogue.jsonl" if dialogue_dir else None
        if lines is not None and lines.exists():
            for raw in lines.read_text(encoding="utf-8").splitlines():
                obj = json.loads(raw) if raw.strip() else None
                if isinstance(obj, dict) and str(obj.get("text", "")).strip():
                    ctx = [{"role": "user", "content": str(obj["context"])}] if obj.get("context") else []
                    yield [system, *ctx], str(obj["text"]).strip(), cid


_PROFANE = re.compile(
    r"\b(fuck\w*|shit\w*|bitch\w*|cunt|dick\w*|asshole\w*|bastard|piss\w*|damn\w*|reddit\w*|upvot\w*|subs?|OP)\b", re.I
)


def _goemotions_replies(tsv: Path, classifier: Any, per_label: int, seed: int) -> dict[str, list[str]]:
    """Clean GoEmotions comments per label where the gold label and the classifier agree:
    one label, 4-30 words, no masked names, no profanity. Tops up the labels dialogue lacks."""

    texts, targets = read_goemotions(tsv, classifier.labels)
    keep = [
        (t, classifier.labels[g[0]])
        for t, g in zip(texts, targets, strict=True)
        if len(g) == 1 and 4 <= len(t.split()) <= 30 and "[" not in t and not _PROFANE.search(t)
    ]
    predicted = classifier.classify([t for t, _ in keep])
    by_label: dict[str, list[str]] = {}
    for (text, gold), pred in zip(keep, predicted, strict=True):
        if gold == pred:
            by_label.setdefault(gold, []).append(text)
    rng = random.Random(seed)
    for lab in by_label:
        rng.shuffle(by_label[lab])
        by_label[lab] = by_label[lab][:per_label]
    return by_label


def build_examples(
    classifier: Any,
    *,
    persona_chat: Path | None,
    cards: Mapping[str, Any] | None = None,
    dialogue_dir: Path | None = None,
    goemotions: Path | None = None,
    min_per_label: int = 600,
    min_confidence: float = 0.5,
    phrasebook: int = 150,
    context_turns: int = 1,
    card_repeat: int = 3,
    seed: int = 7,
    character_lines: bool = False,
) -> list[ControlExample]:
    """Tagged examples from the dialogue sources (each reply labelled by `classifier`; generic
    dialogue only where the classifier is at least `min_confidence` sure), plus up to
    `phrasebook` composed companion replies per emotion, topped up to `min_per_label` per
    emotion with GoEmotions comments. Added replies answer random dialogue turns under a
    random system prompt (generic or a built-in card's), so the tokens work under both.

    `character_lines=False` (the default) leaves the cards' own lines (examples, dialogue files)
    out: the shared chat model stays generic, each character's voice comes from its own LoRA
    adapter (`train_personality_model`), and a character's held-out lines are really unseen."""
    pairs: list[tuple[list[dict[str, str]], str, str]] = []
    if persona_chat is not None:
        pairs += [(ctx, reply, "persona_chat") for ctx, reply in _persona_chat(persona_chat, context_turns)]
    if character_lines:
        pairs += [p for p in _card_chats(cards or {}, dialogue_dir) for _ in range(card_repeat)]
    if not pairs:
        raise DataError("no dialogue to train emotion control on")
    probs = classifier.predict_proba([reply for _ctx, reply, _src in pairs])
    labels = [classifier.labels[int(row.argmax())] for row in probs]
    out = [
        ControlExample([*ctx, {"role": "assistant", "content": reply, "emotion": label}], label, src)
        for (ctx, reply, src), label, row in zip(pairs, labels, probs, strict=True)
        if src != "persona_chat" or float(row.max()) >= min_confidence
    ]
    systems = [{"role": "system", "content": "You are a friendly person."}, *card_systems(cards or {})]
    prompts = [ctx[-1:] for ctx, _r, src in pairs if src == "persona_chat" and ctx[-1]["role"] == "user"]
    rng = random.Random(seed)
    if phrasebook:
        for lab in (x for x in classifier.labels if x in PHRASES):
            texts = compose(lab, phrasebook, seed)
            for text, judged in zip(texts, classifier.classify(texts), strict=True):
                if judged == lab:
                    out.append(_reply_example(rng, systems, prompts, text, lab, "phrasebook"))
    if goemotions is not None:
        counts = Counter(ex.emotion for ex in out)
        extra = _goemotions_replies(goemotions, classifier, min_per_label, seed)
        for lab, texts in extra.items():
            for text in texts[: max(0, min_per_label - counts.get(lab, 0))]:
                out.append(_reply_example(rng, systems, prompts, text, lab, "goemotions"))
    return out


def _reply_example(
    rng: random.Random,
    systems: Sequence[dict[str, str]],
    prompts: Sequence[list[dict[str, str]]],
    text: str,
    label: str,
    source: str,
) -> ControlExample:
    """`text` as the reply to a random dialogue turn, under a random system prompt (generic or a card's)."""
    ctx = rng.choice(prompts) if prompts else [{"role": "user", "content": "Tell me something."}]
    msg = {"role": "assistant", "content": text, "emotion": label}
    return ControlExample([rng.choice(systems), *ctx, msg], label, source)


def card_systems(cards: Mapping[str, Any]) -> list[dict[str, str]]:
    """Each card's system message as a personality assembles it (default context, no extras)."""

    out = []
    for card in cards.values():
        ext = card.companion
        key = ext.default_context
        scenario = ext.scenarios[key].scenario if key else card.scenario
        prompt = assemble_prompt(
            card, user=ext.interaction.user_name, message=None, history=[], scenario_text=scenario, example_mode="never"
        )
        out.append(prompt.messages[0])
    return out


def encode_examples(
    codec: Any, examples: Sequence[ControlExample], seq_len: int
) -> list[tuple[list[int], list[int], str, str]]:
    """`(ids, labels, emotion, source)` per example (labels: reply tokens only); the start is cut to fit
    `seq_len`; examples whose reply alone takes more than half of it are skipped."""
    out = []
    for ex in examples:
        head = codec.render_chat(ex.messages[:-1], add_generation_prompt=True, emotion=ex.emotion)
        full = codec.render_chat(ex.messages, add_generation_prompt=False)
        prefix = codec.encode(head, add_bos=True)
        ids = codec.encode(full, add_bos=True)
        if ids[: len(prefix)] != prefix or len(ids) - len(prefix) > seq_len // 2:
            continue
        labels = [IGNORE_INDEX] * len(prefix) + ids[len(prefix) :]
        out.append((ids[-seq_len:], labels[-seq_len:], ex.emotion, ex.source))
    return out


class ControlBatches:
    """A `BatchSource` over encoded examples, right-padded. Each sequence is drawn from a
    stratum: an emotion (weight ∝ count^`balance`, together `1 − character_share`) or, with
    `character_share`, one of the characters' own lines (equal shares), so both the rare
    emotions and the characters' voices are learnt."""

    GENERIC = ("persona_chat", "goemotions", "phrasebook")

    def __init__(
        self,
        encoded: Sequence[tuple[list[int], list[int], str, str]],
        pad_id: int,
        seed: int,
        heldout: float = 0.05,
        character_share: float = 0.25,
        balance: float = 0.25,
    ) -> None:
        order = list(range(len(encoded)))
        random.Random(seed).shuffle(order)
        n_held = max(1, min(160, int(len(order) * heldout)))
        self.held = [encoded[i][:2] for i in order[:n_held]]
        self.train = [encoded[i][:2] for i in order[n_held:]]
        by_label: dict[str, list[int]] = {}
        by_char: dict[str, list[int]] = {}
        for j, i in enumerate(order[n_held:]):
            by_label.setdefault(encoded[i][2], []).append(j)
            if encoded[i][3] not in self.GENERIC:
                by_char.setdefault(encoded[i][3], []).append(j)
        share = character_share if by_char else 0.0
        emo_w = torch.tensor([len(g) ** balance for g in by_label.values()], dtype=torch.float)
        emo_w = emo_w / emo_w.sum() * (1 - share)
        char_w = torch.full((len(by_char),), share / max(1, len(by_char)))
        self.groups = list(by_label.values()) + list(by_char.values())
        self.weights = torch.cat([emo_w, char_w])
        self.pad_id, self.seed = pad_id, seed

    def _pad(self, rows: Sequence[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:

        return pad_rows(self.pad_id, rows)

    def global_batch(self, step: int, size: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        groups = torch.multinomial(self.weights, size, replacement=True, generator=g).tolist()
        picks = [self.groups[k][int(torch.randint(len(self.groups[k]), (1,), generator=g))] for k in groups]
        return self._pad([self.train[i] for i in picks])

    def eval_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        for i in range(0, len(self.held), 16):
            yield self._pad(self.held[i : i + 16])


@torch.no_grad()
def init_emotion_embeddings(
    model: Any, codec: Any, encoded: Sequence[tuple[list[int], list[int], str, str]], top: int = 32
) -> dict[str, list[str]]:
    """Start each `<|emotion:X|>` embedding at the mean of the tokens most typical of X's
    replies (log-ratio of reply-token frequencies, X vs all), scaled to the usual norm: the
    token then means something from the first step. Returns the tokens used, per label."""

    total: Counter[int] = Counter()
    per: dict[str, Counter[int]] = {}
    for _ids, labels, emotion, _source in encoded:
        reply = [t for t in labels if t != IGNORE_INDEX]
        total.update(reply)
        per.setdefault(emotion, Counter()).update(reply)
    emb = model.get_input_embeddings().weight
    special = set(codec.stop_ids) | {i for i in (codec.pad_id, codec.bos_id) if i is not None}
    norm = emb.norm(dim=1).median()
    n_all = sum(total.values())
    chosen: dict[str, list[str]] = {}
    for label, counts in per.items():
        tid = codec.token_id(emotion_token(label))
        if tid is None:
            continue
        n_lab = sum(counts.values())
        score = {
            t: math.log((c + 1) / (n_lab + 1)) - math.log((total[t] + 1) / (n_all + 1))
            for t, c in counts.items()
            if c >= 3 and t not in special
        }
        best = sorted(score, key=lambda t: -score[t])[:top]
        if not best:
            continue
        vec = emb[best].mean(dim=0)
        emb[tid] = vec * (norm / vec.norm().clamp_min(1e-6))
        chosen[label] = [codec.decode([t]) for t in best[:8]]
    return chosen


def train_emotion_control(
    base_folder: str | Path,
    output_folder: str | Path,
    run_dir: str | Path,
    *,
    persona_chat: Path | None,
    cards: Mapping[str, Any] | None = None,
    dialogue_dir: Path | None = None,
    goemotions: Path | None = None,
    settings: TrainSettings | None = None,
    seq_len: int = 160,
    classifier: Any = None,
    threads: int = 1,
    progress: bool = True,
    character_lines: bool = False,
) -> dict[str, Any]:
    """Fine-tune `base_folder` with emotion tokens; export to `output_folder`; the report."""
    from transformers import LlamaForCausalLM

    torch.set_num_threads(threads)
    t0 = time.time()
    base_folder, out, run = Path(base_folder), Path(output_folder), Path(run_dir)
    clf = classifier or default_classifier()
    codec = TextCodec(base_folder)
    if not codec.has_emotion_tokens:
        raise DataError(f"{base_folder}: the tokenizer has no emotion tokens")
    examples = build_examples(
        clf,
        persona_chat=persona_chat,
        cards=cards,
        dialogue_dir=dialogue_dir,
        goemotions=goemotions,
        character_lines=character_lines,
    )
    encoded = encode_examples(codec, examples, seq_len)
    source = ControlBatches(encoded, codec.pad_id or 0, seed=7)
    settings = settings or TrainSettings(
        max_steps=300, batch_size=16, micro_batch_size=16, lr=2e-3, warmup_steps=20, eval_every=100,
        checkpoint_every=100, max_minutes=9.0, seed=7, log_every=10,
    )  # fmt: skip
    model = LlamaForCausalLM.from_pretrained(str(base_folder), dtype=torch.float32)
    typical = init_emotion_embeddings(model, codec, encoded)
    result = train(model, source, settings, run, progress=progress, description="emotion control")
    report = {
        "recipe": "companion train emotion-control",
        "base_model": str(base_folder),
        "examples": len(encoded),
        "emotion_counts": dict(Counter(ex.emotion for ex in examples).most_common()),
        "sources": dict(Counter(ex.source for ex in examples)),
        "data_sha256": hashlib.sha256(json.dumps([e.messages for e in examples]).encode()).hexdigest(),
        "seq_len": seq_len,
        "character_lines": character_lines,
        "emotion_token_init": typical,
    }
    return finish_run(model, base_folder, out, run, report, settings, result, t0)


def finish_run(
    model: Any, base_folder: Path, out: Path, run: Path, report: dict[str, Any], settings: Any, result: Any, t0: float
) -> dict[str, Any]:
    """Complete a whole-model recipe's report (settings, result, time), export the model with it
    and write it into the run folder; the report."""
    report = {
        **report,
        "settings": asdict(settings),
        "result": {k: v for k, v in result.to_json().items() if k != "history"},
        "wall_seconds": round(time.time() - t0, 1),
    }
    export_trained(model, base_folder, out, report)
    (run / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def export_trained(model: Any, base_folder: Path, out: Path, report: dict[str, Any]) -> None:
    """The HF folder with `companion.json` (`"emotion_control": true`, lineage) and a manifest."""

    meta_path = base_folder / "companion.json"
    base_meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    report["base_training"] = base_meta.get("training", {})
    result = report["result"]
    meta = {
        **{k: v for k, v in base_meta.items() if k != "training"},
        "format": "companion-model/1",
        "kind": "chat",
        "name": "companion-chat",
        "emotion_control": True,
        "base": {"name": base_meta.get("name", base_folder.name), "training": base_meta.get("training", {})},
        "training": {k: report[k] for k in ("recipe", "examples", "emotion_counts", "data_sha256")}
        | {"heldout_perplexity": result["best_eval_perplexity"], "steps": result["steps"]},
    }
    export_model(model, base_folder, out, meta)
    write_manifest(out)
