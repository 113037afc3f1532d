"""How a character's reply is chosen: best-of-N ranking, card focus, and the final clean-up.

Small local models (under `SMALL_MODEL` parameters) get help by default: `DEFAULT_CANDIDATES`
samples ranked by `rank` (emotion fit, behaviour fit, the model's own likelihood), and the
card guide (`models.personality.grounding`) at `DEFAULT_CARD_FOCUS`. Large and remote models get
one sample and no focus unless their parameters ask. Measurements: docs/personality.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_CARD_FOCUS",
    "DEFAULT_SPECIFICITY",
    "FAREWELL",
    "SMALL_MODEL",
    "CardGuides",
    "best_of",
    "candidate_count",
    "claim_engine",
    "clean_reply",
    "complete_sentences",
    "generic_logprobs",
    "is_small_local",
    "rank",
    "sample_candidates",
    "small_model_weight",
]

#: Parameters below which a local base model gets the settings that help small models by default.
SMALL_MODEL = 1_000_000_000
DEFAULT_CANDIDATES = 8  # issue 18: the chat model of session 10 reaches 85% emotion agreement with 8 (83% with 4)
DEFAULT_CARD_FOCUS = 2.0
DEFAULT_SPECIFICITY = 1.0

#: A conversation's closing line. Topical-Chat's chats end with one, and the small chat model
#: says one to anything; a candidate that closes a conversation the user did not close ranks
#: below every other (`rank`), and the characters' rehearsal leaves such lines out.
FAREWELL = re.compile(
    r"\b(good ?bye|bye|good night|nice (chatting|talking)|talk (to you )?(later|soon)|"
    r"have a (good|great|nice) (day|night|one)|thanks? (you )?for (the|this|our) (chat|talk|conversation)|"
    r"thanks? (you )?for (chatting|talking))\b",
    re.I,
)
_MARK_RUN = re.compile(r"([!?.,~*])\1{3,}")
#: Where a sentence ends: terminal marks, then any closing quotes, brackets or asterisks, then a
#: space or the end of the text (so "3.2 billion" inside a sentence does not count).
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]*]*(?=\s|$)")


def is_small_local(engine: Any) -> bool:
    """Whether `engine` runs a local model under `SMALL_MODEL` parameters."""
    n = getattr(engine, "parameters", None)
    return isinstance(n, int) and 0 < n < SMALL_MODEL


def candidate_count(configured: int | None, engine: Any, batched: bool) -> int:
    """`emotion_rerank` as configured; else best of `DEFAULT_CANDIDATES` for small local models
    that decode candidates together (`batched`: the engine's `decodes_together`), and 1 for
    everything else, such as a small GGUF model on llama.cpp, whose 8 candidates would decode
    one after another. A stream asks `claim_engine` before it takes more than one."""
    if configured is not None:
        return configured
    return DEFAULT_CANDIDATES if batched and is_small_local(engine) else 1


def claim_engine(engine: Any) -> Callable[[], None] | None:
    """For a stream that would rank `candidate_count` candidates by default: the engine, held
    for this thread while nothing else decodes on it (its `hold_if_free`), as the function that
    lets it go; None while other requests share it.

    So one writer at `companion chat`, the demo or SillyTavern on a server of their own gets
    the best of N as one piece (Luna on the embedded model: 0.17 s after the message on 2 idle
    cores), the reply the project's reply figures measure: one streamed sample agrees with the
    asked emotion 8 points less often (docs/personality.md). On a server under load a stream
    decodes one sample through the scheduler and shows it as it comes, so 32 users cost 32
    rows, not 256. An engine that cannot tell (no `hold_if_free`) decodes one request at a time
    anyway."""
    hold = getattr(engine, "hold_if_free", None)
    if not callable(hold):
        return _nothing
    return engine.lock.release if hold() else None


def _nothing() -> None:
    return None


def small_model_weight(configured: float | None, engine: Any, default: float) -> float:
    """A weight that helps small models (`specificity`, `card_focus`): as configured, else
    `default` for small local models and 0 (off, no extra work) for everything else."""
    if configured is not None:
        return configured
    return default if is_small_local(engine) else 0.0


def best_of(
    base: Any,
    messages: Sequence[dict[str, Any]],
    n: int,
    max_new: int,
    options: dict[str, Any],
    judge: Callable[[str], tuple[float, float]],
    fluency_weight: float,
    specificity: float,
    message: str | None,
) -> str:
    """The best of n sampled replies by `rank`; `judge(text)` gives a candidate's agreement with
    the intended emotion and its fit to the behaviour plan."""
    candidates = sample_candidates(base, messages, n, max_new, options)
    generic = generic_logprobs(base, candidates, options) if specificity else [None] * len(candidates)

    def score(candidate: tuple[str, float | None, bool], generic_logprob: float | None) -> float:
        text, mean_logprob, ended = candidate
        agree, behaviour = judge(text)
        return rank(
            text, mean_logprob, agree, behaviour, fluency_weight, generic_logprob, specificity, message, not ended
        )

    return max(zip(candidates, generic, strict=True), key=lambda pair: score(*pair))[0][0]


def sample_candidates(
    base: Any, messages: Sequence[dict[str, Any]], n: int, max_new: int, options: dict[str, Any]
) -> list[tuple[str, float | None, bool]]:
    """n `(text, mean log-probability per token or None, ended at its turn's end)` replies: one
    batched decode where the base has `chat_candidates`, else n decodes (row i with
    `derived_seed(seed, i)`, as `sample_many` seeds its rows)."""
    seed = options.get("seed")
    if hasattr(base, "chat_candidates"):
        return [
            (c.text, c.mean_logprob, c.finish_reason == "stop")
            for c in base.chat_candidates(messages, n, max_new, **options)
        ]
    from models.engines.base import derived_seed

    out: list[tuple[str, float | None, bool]] = []
    for i in range(n):
        text = base.chat(messages, max_new, **{**options, "seed": None if seed is None else derived_seed(seed, i)})
        out.append((text, None, True))
    return out


#: What a reply is scored against to tell how much it owes to the conversation: the same
#: character's answer to an empty message (no card, no history).
GENERIC_MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": ""}]


def generic_logprobs(
    base: Any, candidates: Sequence[tuple[str, float | None, bool]], options: dict[str, Any]
) -> list[float | None]:
    """Each candidate's mean log-probability per token as the answer to an empty message (same
    emotion); None where the base cannot score replies."""
    if not hasattr(base, "reply_logprobs"):
        return [None] * len(candidates)
    keep = {k: v for k, v in options.items() if k in ("emotion",)}
    return base.reply_logprobs(GENERIC_MESSAGES, [(text, ended) for text, _, ended in candidates], **keep)


def rank(
    text: str,
    mean_logprob: float | None,
    agree: float,
    behaviour: float,
    fluency_weight: float,
    generic_logprob: float | None = None,
    specificity: float = 0.0,
    message: str | None = None,
    cut_off: bool = False,
) -> float:
    """A candidate's rank: agreement with the intended emotion (the classifier's probability),
    a quarter of its fit to the behaviour plan, `fluency_weight` times the model's own mean
    log-probability per token (so a garbled sample loses to a fluent one), and `specificity`
    times how much likelier the reply is after this conversation than after an empty message
    (pointwise mutual information per token, the anti-generic objective of Li et al. 2016,
    "A Diversity-Promoting Objective Function for Neural Conversation Models": a stock "Ha!!!"
    that fits any message scores low); empty text never wins, and a farewell in answer to a
    `message` that was not one loses to any other reply (the mutual-information term alone
    favours "Good night!", which is unlikely after an empty message). A candidate `cut_off` by the
    length limit loses to any that ended of itself: no reader counts a reply that stops
    mid-sentence as readable (docs/embedded-model.md, session 20)."""
    fluency = fluency_weight * mean_logprob if mean_logprob is not None else 0.0
    specific = (
        specificity * (mean_logprob - generic_logprob)
        if specificity and mean_logprob is not None and generic_logprob is not None
        else 0.0
    )
    empty = -100.0 if not text.strip() else 0.0
    closing = message is not None and bool(FAREWELL.search(text)) and not FAREWELL.search(message)
    last = 10.0 * (closing + cut_off)  # ranks below every candidate without either flaw
    return agree + 0.25 * behaviour + fluency + specific + empty - last


class CardGuides:
    """The card guide of one character, built once per tokenizer, card text, user and focus."""

    def __init__(self) -> None:
        self._entry: tuple[tuple[Any, ...], Any] | None = None  # (key, guide): one attribute, so
        # a turn on another thread never pairs one user's key with another user's guide

    def get(self, card: Any, scenario: str | None, user: str, char: str, codec: Any, focus: float) -> Any:
        """The guide toward the card's facts, or None (focus 0, no local logits, no card words)."""
        if focus <= 0 or codec is None or not hasattr(codec, "id_to_token"):
            return None
        from models.personality.grounding import CardGuide, card_text, card_token_ids

        text = card_text(card, scenario)
        key = (id(codec), text, user, focus)
        entry = self._entry
        if entry is None or entry[0] != key:  # one entry: a character's card rarely changes
            ids = card_token_ids(codec, text, user=user, char=char)
            entry = self._entry = (key, CardGuide(ids, focus) if ids else None)
        return entry[1]


def clean_reply(text: str, names: Sequence[str], trim: bool = False) -> str:
    """The reply without a leading "Name:" and with runs of 4+ identical marks ("!!!!!!!", a
    habit small models pick up from chat data) cut to three; with `trim`, also cut back to its
    last whole sentence (`complete_sentences`)."""
    text = _MARK_RUN.sub(r"\1\1\1", text.strip())
    for name in names:
        prefix = f"{name}:"
        if text.startswith(prefix):
            text = text[len(prefix) :].strip()
    return complete_sentences(text) if trim else text


def complete_sentences(text: str) -> str:
    """`text` up to the end of its last whole sentence: what is left of a reply that the token
    limit cut off ("He is the only left-handed quarterback in the"). Text with no sentence end
    is returned as it is, since cutting it would leave nothing to read."""
    stripped = text.rstrip()
    ends = [m.end() for m in _SENTENCE_END.finditer(stripped)]
    if not ends or ends[-1] == len(stripped) or not stripped[: ends[-1]].strip(" .!?\u2026"):
        return stripped
    return stripped[: ends[-1]]
