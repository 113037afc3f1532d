"""What a user reads: the embedded chat model's replies, the previous shipped model vs this one.

Issue 18's figures, each measured on the dev splits the recipe never trains on
(`models.training.chat.split_of`) and printed as after / before:

1. **Context**: the base model's per-token perplexity by position in 512-token windows of the
   books' held-out tail (every window, one each 128 tokens, so every bucket holds the same text);
   the 384-511 / 128-255 ratio must be <= 1.1.
2. **Fluency**: the chat model's perplexity on human replies of held-out dialogue (Topical-Chat
   and Synthetic-Persona-Chat dev conversations), the reply's tokens only, previous turns as
   context in the chat template (no emotion tags, so neither model is handed the answer's mood).
3. **Persona use**: a card is built from each held-out persona (the persona as its description);
   the companion answers the other speaker's questions through `PersonalityModel`; a reply uses
   the card when it shares a content word with the persona that the question did not contain.
   The control is the same replies against a different card's facts.
4. **Emotion**: 20 prompts x 10 labels with `emotional_state=`; agreement by the independent
   judge of `bench.emotion` (not the shipped classifier), replies made only of phrasebook
   sentences, and distinct replies per label.
5. **Blind sample**: 40 replies of each model to held-out messages, shuffled, written to
   `bench/results/replies_blind.json` (the key in `replies_blind_key.json`) for a reader who
   does not know which model wrote which.

"Before" is the chat and base model shipped before issue 18, read from git history (commit
`BEFORE`); without a git checkout only "after" is printed.

    python -m bench replies
    python -m bench.replies --n 20 --skip emotion
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
BEFORE = "a60b0c8"  # the last commit with the pre-issue-18 embedded models
_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
          "chat_template.jinja", "companion.json")  # fmt: skip


def previous_model(name: str, dest: Path) -> Path | None:
    """`src/models/builtin/<name>` as of `BEFORE`, extracted from git (None outside a checkout)."""
    folder = dest / name
    folder.mkdir(parents=True, exist_ok=True)
    for f in _FILES:
        r = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{BEFORE}:src/models/builtin/{name}/{f}"], capture_output=True
        )
        if r.returncode != 0:
            return None
        (folder / f).write_bytes(r.stdout)
    return folder


# --- 1. context -------------------------------------------------------------------------------


def position_perplexity(folder: Path, shared: Path, stride: int = 128, batch: int = 16) -> dict[str, float]:
    """Per-token perplexity by position bucket over 512-token windows of held-out book text.

    Every window of the held-out split is scored, one every `stride` (128) tokens, so each token
    is scored once in each 128-position bucket and the buckets compare the same text at different
    positions. A sample of windows does not: with 48 windows the ratio of the last bucket to the
    second moved between 0.85 and 1.19 for the same model as the sample's offset moved
    (docs/embedded-model.md, "Context")."""
    import torch
    from transformers import LlamaForCausalLM

    from models.engines.codec import TextCodec
    from models.training.corpus import book_token_ids

    codec = TextCodec(folder)
    ids = torch.from_numpy(book_token_ids(codec, shared, "heldout").astype("int64"))
    model = LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    starts = list(range(0, len(ids) - 512, stride))
    sums, n = torch.zeros(511, dtype=torch.float64), 0
    with torch.no_grad():
        for i in range(0, len(starts), batch):
            x = torch.stack([ids[s : s + 512] for s in starts[i : i + batch]])
            logp = torch.log_softmax(model(x).logits[:, :-1].float(), -1)
            sums += -logp.gather(2, x[:, 1:].unsqueeze(2)).squeeze(2).sum(0).double()
            n += len(x)
    mean = sums / max(1, n)
    buckets = {"0-127": (0, 127), "128-255": (127, 255), "256-383": (255, 383), "384-511": (383, 511)}
    return {k: math.exp(float(mean[a:b].mean())) for k, (a, b) in buckets.items()}


# --- 2. fluency -------------------------------------------------------------------------------


def reply_perplexity(folder: Path, shared: Path, limit: int = 120) -> dict[str, float]:
    """Perplexity on held-out human replies (reply tokens only, turns before as context):
    `with_end` counts the end-of-turn marker as part of the reply, `words` only the text."""
    import torch
    from transformers import LlamaForCausalLM

    from models.engines.codec import TextCodec
    from models.training.chat_data import (
        ChatEncoder,
        card_system,
        persona_chat_conversations,
        topical_chat_conversations,
        windows,
    )

    codec = TextCodec(folder)
    enc = ChatEncoder(codec)
    convs = list(topical_chat_conversations(shared / "dialogue" / "topical_chat", "dev"))[: limit // 2]
    spc = shared / "dialogue" / "synthetic_persona_chat" / "Synthetic-Persona-Chat_valid.csv"
    convs += list(persona_chat_conversations(spc, "dev"))[: limit // 2]
    model = LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    markup = set(codec.chat_control_ids.tolist()) | set(codec.encode("\n"))
    nll, count, nll_w, count_w = 0.0, 0, 0.0, 0
    with torch.no_grad():
        for conv in convs:
            pieces = [enc.piece({"role": t["role"], "content": t["content"]}, train=t["role"] == "assistant")
                      for t in conv.turns]  # fmt: skip
            system = enc.piece({"role": "system", "content": conv.system or card_system("A", "B")}, train=False)
            is_reply = [t["role"] == "assistant" for t in conv.turns]
            for ids, labels, _ in windows(system, pieces, is_reply, 512, enc.prefix):
                x, y = torch.tensor([ids]), torch.tensor(labels[1:])
                logp = torch.log_softmax(model(x).logits[0, :-1].float(), -1)
                keep = y != -100
                token_nll = -logp[keep].gather(1, y[keep].unsqueeze(1)).squeeze(1)
                nll += float(token_nll.sum())
                count += int(keep.sum())
                words = torch.tensor([int(t) not in markup for t in y[keep]], dtype=torch.bool)
                nll_w += float(token_nll[words].sum())
                count_w += int(words.sum())
    return {"with_end": math.exp(nll / max(1, count)), "words": math.exp(nll_w / max(1, count_w))}


# --- 3. persona use ---------------------------------------------------------------------------


def _shipped_sampling(folder: Path) -> dict[str, float]:
    """The temperature and top-p a model ships with (its generation_config.json)."""
    gen = json.loads((folder / "generation_config.json").read_text())
    return {"temperature": gen.get("temperature", 0.8), "top_p": gen.get("top_p", 0.95)}


def _persona_card(name: str, persona: str) -> Any:
    from models.personality.card import CharacterCard

    return CharacterCard(
        {"spec": "chara_card_v2", "spec_version": "2.0",
         "data": {"name": name, "description": persona, "first_mes": "Hi!", "personality": "", "scenario": ""}}
    )  # fmt: skip


def persona_questions(shared: Path, n: int) -> list[tuple[str, str]]:
    """`(persona, question)` pairs: the other speaker's questions in held-out persona chats."""
    from models.training.chat_data import persona_chat_conversations

    spc = shared / "dialogue" / "synthetic_persona_chat" / "Synthetic-Persona-Chat_valid.csv"
    out = []
    for conv in persona_chat_conversations(spc, "dev"):
        qs = [t["content"] for t in conv.turns if t["role"] == "user" and t["content"].endswith("?")]
        qs = [q for q in qs if any(w in q.lower().split() for w in ("you", "your", "you?"))]
        if qs:
            out.append((conv.persona, qs[0]))
        if len(out) >= n:
            break
    return out


#: Reply settings the model shipped before issue 18 ran with (one sample, no card focus); the
#: "before" column uses them, so each column is a model with the settings it shipped with.
BEFORE_SETTINGS: dict[str, Any] = {"emotion_rerank": 1, "card_focus": 0.0}


def persona_use(
    folder: Path, pairs: Sequence[tuple[str, str]], seed: int = 0, settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    from models.personality.model import PersonalityModel
    from models.personality.params import PersonalityParams
    from models.training.chat_data import uses_persona
    from models.transformer_model import TransformerModel

    base = TransformerModel(str(folder), max_length=48)
    rng = random.Random(seed)
    own = other = 0
    samples = []
    for i, (persona, question) in enumerate(pairs):
        card = _persona_card("Sam", persona)
        params = PersonalityParams(max_length=48, seed=100 + i, **_shipped_sampling(folder), **(settings or {}))
        model = PersonalityModel(card, base, params=params)
        reply = model.generate_response(message=question, history=[]).text
        foreign = rng.choice([p for p, _ in pairs if p != persona])
        own += uses_persona(persona, reply, question)
        other += uses_persona(foreign, reply, question)
        samples.append({"persona": persona, "question": question, "reply": reply})
    n = max(1, len(pairs))
    return {"own": own / n, "other": other / n, "n": len(pairs), "samples": samples[:5]}


# --- 4. emotion -------------------------------------------------------------------------------


def emotion_figures(folder: Path, judge: Any, n: int = 20, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    from bench.emotion import PROMPTS
    from models.personality.emotion import project
    from models.personality.model import PersonalityModel
    from models.personality.params import PersonalityParams
    from models.personality.phrasebook import PHRASES
    from models.tokens import EMOTIONS
    from models.transformer_model import TransformerModel

    canned = {s.strip().lower() for parts in PHRASES.values() for part in parts for s in part if s.strip()}
    base = TransformerModel(str(folder), max_length=40)
    card = _persona_card("Ada", "Ada is a warm, curious writing companion who loves stories and the sea.")
    params = PersonalityParams(max_length=40, **_shipped_sampling(folder), **(settings or {}))
    model = PersonalityModel(card, base, params=params)
    agree, only_canned, total = 0, 0, 0
    distinct: dict[str, float] = {}
    for label in EMOTIONS:
        texts = []
        for i, prompt in enumerate(PROMPTS[:n]):
            model.reset()
            texts.append(model.generate_response(message=prompt, emotional_state=label, history=[], seed=500 + i).text)
        for t in texts:
            dist = project(
                judge.detect(t).distribution, card.companion.emotion.labels, card.companion.emotion.label_map
            )
            agree += max(dist, key=lambda k: dist[k]) == label
            sentences = [s.strip().lower() for s in _sentences(t)]
            only_canned += bool(sentences) and all(s in canned for s in sentences)
        total += len(texts)
        distinct[label] = len(set(texts)) / len(texts)
    return {
        "judge_agreement": agree / total,
        "phrasebook_only": only_canned / total,
        "distinct_min": min(distinct.values()),
        "distinct": distinct,
    }


def _sentences(text: str) -> list[str]:
    import re

    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


# --- 5. blind sample --------------------------------------------------------------------------


def blind_sample(
    models: dict[str, Path], shared: Path, n: int = 40, seed: int = 5, settings: dict[str, dict[str, Any]] | None = None
) -> Path:
    """n replies per model to held-out user messages, shuffled; the key in a separate file."""
    from models.personality.model import PersonalityModel
    from models.personality.params import PersonalityParams
    from models.training.chat_data import topical_chat_conversations
    from models.transformer_model import TransformerModel

    rng = random.Random(seed)
    convs = list(topical_chat_conversations(shared / "dialogue" / "topical_chat", "dev"))
    rng.shuffle(convs)
    cases = []
    for conv in convs:
        turns = conv.turns
        for k in range(2, len(turns)):
            if turns[k]["role"] == "assistant" and turns[k - 1]["role"] == "user":
                cases.append((turns[max(0, k - 3) : k - 1], turns[k - 1]["content"]))
                break
        if len(cases) >= n:
            break
    card = _persona_card("Ada", "Ada is a friendly writing companion.")
    items, key = [], {}
    for tag, folder in models.items():
        base = TransformerModel(str(folder), max_length=48)  # each model with the sampling it ships with
        extra = (settings or {}).get(tag, {})
        model = PersonalityModel(
            card, base, params=PersonalityParams(max_length=48, **_shipped_sampling(folder), **extra)
        )
        for i, (history, message) in enumerate(cases):
            hist = [{"role": t["role"], "content": t["content"]} for t in history]
            reply = model.generate_response(message=message, history=hist, seed=900 + i).text
            items.append({"history": hist, "message": message, "reply": reply, "_model": tag})
    rng.shuffle(items)
    for i, item in enumerate(items):
        key[str(i)] = item.pop("_model")
        item["id"] = i
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "replies_blind.json"
    path.write_text(json.dumps(items, indent=1, ensure_ascii=False))
    (RESULTS / "replies_blind_key.json").write_text(json.dumps(key, indent=1))
    return path


# --- main -------------------------------------------------------------------------------------


def _ratio(after: float, before: float | None) -> str:
    return f"{after / before:.3f}" if before else "-"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    from models.paths import builtin_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60, help="persona questions (emotion: 20 prompts per label)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["context", "fluency", "persona", "emotion", "blind"])
    ap.add_argument("--shared", type=Path, default=SHARED)
    args = ap.parse_args(list(argv) if argv is not None else [])
    console = Console(width=120)
    if not (args.shared / "dialogue" / "topical_chat").is_dir():
        console.print(f"bench.replies: skipped ({args.shared}/dialogue/topical_chat not found)")
        return {}
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-replies-") as tmp:
        before = {n: previous_model(n, Path(tmp)) for n in ("companion-base", "companion-chat")}
        after = {n: builtin_dir(n) for n in ("companion-base", "companion-chat")}
        table = Table(title="Embedded model replies: this model vs the one shipped before issue 18 (dev splits)")
        for col in ("figure", "before", "after", "after / before", "target"):
            table.add_column(col)
        if "context" not in args.skip:
            ctx = {k: position_perplexity(v, args.shared) if v else None for k, v in (
                ("before", before["companion-base"]), ("after", after["companion-base"]))}  # fmt: skip
            out["context"] = ctx
            for tag in ("before", "after"):
                if ctx[tag]:
                    ctx[tag]["ratio"] = ctx[tag]["384-511"] / ctx[tag]["128-255"]
            b, a = ctx["before"], ctx["after"]
            for bucket in ("0-127", "128-255", "256-383", "384-511"):
                table.add_row(f"base ppl, positions {bucket}", f"{b[bucket]:.1f}" if b else "-", f"{a[bucket]:.1f}",
                              _ratio(a[bucket], b[bucket] if b else None), "")  # fmt: skip
            table.add_row("base ppl 384-511 / 128-255", f"{b['ratio']:.2f}" if b else "-", f"{a['ratio']:.2f}",
                          "", "≤ 1.10")  # fmt: skip
        if "fluency" not in args.skip:
            f = {k: reply_perplexity(v, args.shared) if v else None for k, v in (
                ("before", before["companion-chat"]), ("after", after["companion-chat"]))}  # fmt: skip
            out["fluency"] = f
            for key, label in (("words", "chat ppl, held-out human replies (text)"),
                               ("with_end", "  … counting the end-of-turn marker")):  # fmt: skip
                b = f["before"][key] if f["before"] else None
                table.add_row(label, f"{b:.1f}" if b else "-", f"{f['after'][key]:.1f}",
                              _ratio(f["after"][key], b), "≤ 40")  # fmt: skip
        if "persona" not in args.skip:
            pairs = persona_questions(args.shared, args.n)
            p = {"before": persona_use(before["companion-chat"], pairs, settings=BEFORE_SETTINGS)
                 if before["companion-chat"] else None,
                 "after": persona_use(after["companion-chat"], pairs)}  # fmt: skip
            out["persona"] = p
            for what in ("own", "other"):
                table.add_row(f"persona facts used ({'its card' if what == 'own' else 'another card'})",
                              f"{p['before'][what]:.0%}" if p["before"] else "-", f"{p['after'][what]:.0%}",
                              _ratio(p["after"][what], p["before"][what] if p["before"] else None),
                              "≥ 30%" if what == "own" else "own ≥ 3x this")  # fmt: skip
        if "emotion" not in args.skip:
            from bench.emotion import independent_judge

            judge = independent_judge(args.shared)
            if judge is not None:
                e = {"before": emotion_figures(before["companion-chat"], judge, settings=BEFORE_SETTINGS)
                     if before["companion-chat"] else None,
                     "after": emotion_figures(after["companion-chat"], judge)}  # fmt: skip
                out["emotion"] = e
                for key, label, target in (("judge_agreement", "emotion agreement (independent judge)", "≥ 85%"),
                                           ("phrasebook_only", "replies made only of phrasebook sentences", "≤ 2%"),
                                           ("distinct_min", "distinct replies (worst label)", "≥ 95%")):  # fmt: skip
                    b = e["before"][key] if e["before"] else None
                    table.add_row(label, f"{b:.0%}" if b is not None else "-", f"{e['after'][key]:.0%}",
                                  _ratio(e["after"][key], b), target)  # fmt: skip
        if "blind" not in args.skip:
            models = {"after": after["companion-chat"]}
            if before["companion-chat"]:
                models["before"] = before["companion-chat"]
            out["blind"] = str(blind_sample(models, args.shared, settings={"before": BEFORE_SETTINGS}))
        console.print(table)
    if "blind" in out:
        console.print(f"blind sample for a reader: {out['blind']} (key: replies_blind_key.json)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "replies.json").write_text(json.dumps(out, indent=1, default=str))
    return out


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
