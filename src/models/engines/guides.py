"""The logits guides local engines run, as plain data that can cross to an engine process.

A guide is a `sampling.LogitsGuide`: it sees each step's logits and the row's tokens so far.
The personality layer builds them (emotion steering, `models.personality.steering`; card
grounding, `models.personality.grounding`); what they compute lives here, in the engine layer,
so that an engine running in a process of its own (`engines.llama.engine_process`) can rebuild
them from `guide_spec(guide)` and adjust logits to the same numbers:

- `NearBias`: a per-token bias added to the tokens within `margin` nats of the best one, the
  end-of-turn tokens lifted by the same log-mass as the tokens that go on (emotion steering);
- `NearBoost`: `focus` added to a set of tokens within `margin` of the best one and not yet in
  the reply (card grounding);
- `GuideChain`: several guides in order.

Each has `adjust` (one row) and `adjust_rows` (a batch of rows with equal `batch_key()`, the
same numbers row by row).

A steering bias is the vocabulary's worth of floats (32 KB for 8,192 tokens) and the same few
tables serve every turn, so across a pipe a bias goes once and is named by number after that
(`Tables`, one on each side).
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from models.errors import EngineError

__all__ = ["GuideChain", "NearBias", "NearBoost", "Tables", "guide_from_spec", "guide_spec"]


def _encode(t: torch.Tensor) -> str:
    return base64.b64encode(t.to(torch.float32).contiguous().numpy().tobytes()).decode("ascii")


def _decode(data: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(data), dtype=np.float32).copy())


class Tables:
    """Float tensors that cross a pipe once and are named by number after that.

    The sending side (`ref`) remembers the last `limit` tensors it sent, by identity (it keeps
    them alive, so an identity is never reused); the receiving side (`take`) keeps what it was
    sent. When the sender drops one, `dropped()` gives its number for the receiver's `forget`:
    both sides then hold the same set, and the receiver never needs to ask for a table again.
    """

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._sent: OrderedDict[int, tuple[torch.Tensor, int]] = OrderedDict()
        self._held: dict[int, torch.Tensor] = {}
        self._next = 0
        self._dropped: list[int] = []

    def ref(self, t: torch.Tensor) -> dict[str, Any]:
        """`t` as data: its number, with its values the first time."""
        hit = self._sent.get(id(t))
        if hit is not None and hit[0] is t:
            self._sent.move_to_end(id(t))
            return {"ref": hit[1]}
        n, self._next = self._next, self._next + 1
        self._sent[id(t)] = (t, n)
        while len(self._sent) > self.limit:
            self._dropped.append(self._sent.popitem(last=False)[1][1])
        return {"ref": n, "values": _encode(t)}

    def clear(self) -> None:
        """Send every table again from now on (after a message that could not be sent whole);
        the receiver forgets the old numbers."""
        self._dropped.extend(n for _t, n in self._sent.values())
        self._sent.clear()

    def dropped(self) -> list[int]:
        """The numbers dropped since the last call (the receiver forgets them)."""
        out, self._dropped = self._dropped, []
        return out

    def take(self, data: dict[str, Any]) -> torch.Tensor:
        """The tensor `ref` wrote (kept when it came with its values)."""
        if "values" in data:
            self._held[int(data["ref"])] = _decode(data["values"])
        try:
            return self._held[int(data["ref"])]
        except KeyError:
            raise EngineError(f"table {data['ref']} was never sent to this engine process") from None

    def forget(self, refs: Iterable[int]) -> None:
        for n in refs:
            self._held.pop(int(n), None)


def _distinct(items: Sequence[Any]) -> tuple[list[Any], torch.Tensor]:
    """The distinct objects of `items` (by identity, first seen first) and each item's index
    among them: rows that share a table look it up once."""
    index: dict[int, int] = {}
    distinct: list[Any] = []
    which = []
    for item in items:
        if id(item) not in index:
            index[id(item)] = len(distinct)
            distinct.append(item)
        which.append(index[id(item)])
    return distinct, torch.tensor(which, dtype=torch.long)


def _row_logsumexp(values: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    """log(sum(exp(values))) of the entries of each of `n` rows (`rows` gives each entry's row,
    ascending); -inf for a row with none."""
    peak = torch.full((n,), float("-inf"), dtype=values.dtype).scatter_reduce_(0, rows, values, "amax")
    safe = torch.where(torch.isinf(peak), torch.zeros((), dtype=values.dtype), peak)
    total = torch.zeros(n, dtype=values.dtype).index_add_(0, rows, torch.exp(values - safe[rows]))
    return safe + torch.log(total)


class NearBias:
    """Adds `bias` (vocab,) to the logits within `margin` of the best one; the end tokens
    (`stops`) move with the steered mass, so the odds of ending the reply stay the model's.
    `key` names the table the bias comes from: rows with the same key are adjusted together."""

    def __init__(self, bias: torch.Tensor, margin: float, stops: torch.Tensor, key: str) -> None:
        self.bias = bias
        self.margin = float(margin)
        self.stops = stops
        self.key = key
        self._heads: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def batch_key(self) -> tuple[str, str, float]:
        """Rows whose guides share this key (one table) are adjusted together."""
        return ("emotion", self.key, self.margin)

    def head(self, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The bias and the end-of-turn ids for a head of `vocab` logits."""
        head = self._heads.get(vocab)
        if head is None:  # once per head size, not per step
            head = self._heads[vocab] = (self._fit(vocab), self.stops[self.stops < vocab])
        return head

    def adjust(self, logits: torch.Tensor, generated: Sequence[int] = ()) -> torch.Tensor:
        """`logits` plus the bias on the tokens within `margin` of the best one; the end-of-turn
        tokens move with the steered mass, so the odds of ending stay the same."""
        return type(self).adjust_rows([self], logits[None], [generated])[0]

    @staticmethod
    def adjust_rows(
        guides: Sequence[NearBias], logits: torch.Tensor, generated: Sequence[Sequence[int]] = ()
    ) -> torch.Tensor:
        """`adjust` over (rows, vocab) `logits`, each row with its own guide's bias (the guides
        share one table and margin). Only the entries within the margin change, so they are
        found first (one comparison over the batch) and everything after runs on them alone:
        over the whole vocabulary, the two log-sum-exps' `exp` cost more than the step's
        attention. Per row the same operations in the same order, so a row comes out the same
        alone or in a batch (`adjust` is this on one row)."""
        vocab = logits.shape[-1]
        heads = [g.head(vocab) for g in guides]
        stops = heads[0][1]
        top = logits.max(dim=-1).values
        rows, cols = torch.nonzero(logits >= (top - guides[0].margin)[:, None], as_tuple=True)
        tables, which = _distinct([h[0] for h in heads])
        bias = torch.stack(tables)[which[rows], cols]
        before = logits[rows, cols]
        after = before + bias
        out = logits.clone()
        out[rows, cols] = after
        if len(stops):
            go = ~torch.isin(cols, stops)  # the entries that go on (the stops move with them)
            n = logits.shape[0]
            moving = torch.zeros(n, dtype=torch.bool).index_fill_(0, rows[go], True)
            if bool(moving.any()):
                lift = _row_logsumexp(after[go], rows[go], n) - _row_logsumexp(before[go], rows[go], n)
                lifted = logits[:, stops] + lift[:, None]
                out[:, stops] = torch.where(moving[:, None], lifted, out[:, stops])
        return out

    def _fit(self, vocab: int) -> torch.Tensor:
        """The bias for a head of `vocab` logits: models often pad their head past the tokenizer
        (extra rows get no bias) or hold fewer rows than a tokenizer with added tokens."""
        n = self.bias.shape[0]
        if vocab == n:
            return self.bias
        if vocab < n:
            return self.bias[:vocab]
        return torch.cat((self.bias, torch.zeros(vocab - n, dtype=self.bias.dtype)))

    def to_spec(self, tables: Tables | None = None) -> dict[str, Any]:
        return {
            "kind": "near_bias",
            "bias": tables.ref(self.bias) if tables is not None else _encode(self.bias),
            "margin": self.margin,
            "stops": self.stops.tolist(),
            "key": self.key,
        }


class NearBoost:
    """Adds `focus` to the logits of `ids` that are within `margin` of the best token and not
    yet in this reply; stateless, so one guide serves every row of a batched decode."""

    def __init__(self, ids: Iterable[int], focus: float, margin: float = 3.0) -> None:
        self.ids = torch.tensor(sorted(set(ids)), dtype=torch.long)
        self.focus = float(focus)
        self.margin = float(margin)
        self._masks: dict[int, torch.Tensor] = {}

    def batch_key(self) -> tuple[str]:
        """Rows whose guides share this key are adjusted together (`adjust_rows`)."""
        return ("card",)

    def vocab_mask(self, vocab: int) -> torch.Tensor:
        """The guide's tokens as a (vocab,) mask."""
        mask = self._masks.get(vocab)
        if mask is None:
            mask = torch.zeros(vocab, dtype=torch.bool)
            mask[self.ids[self.ids < vocab]] = True
            self._masks[vocab] = mask
        return mask

    @staticmethod
    def adjust_rows(
        guides: Sequence[NearBoost], logits: torch.Tensor, generated: Sequence[Sequence[int]]
    ) -> torch.Tensor:
        """`adjust` for each row of (rows, vocab) `logits` with its own guide and reply so far:
        the entries within each row's margin are found with one comparison over the batch, and
        only they are looked up (the same additions, so the same numbers)."""
        vocab = logits.shape[-1]
        margin = torch.tensor([g.margin for g in guides], dtype=logits.dtype)
        focus = torch.tensor([g.focus for g in guides], dtype=logits.dtype)
        top = logits.max(dim=-1).values
        rows, cols = torch.nonzero(logits >= (top - margin)[:, None], as_tuple=True)
        distinct, which = _distinct(guides)
        allowed = torch.stack([g.vocab_mask(vocab) for g in distinct])[which[rows], cols]
        said = [r * vocab + t for r, done in enumerate(generated) for t in done if 0 <= t < vocab]
        if said:
            allowed &= ~torch.isin(rows * vocab + cols, torch.tensor(said, dtype=torch.long))
        allowed &= focus[rows] != 0
        out = logits.clone()
        out[rows[allowed], cols[allowed]] += focus[rows[allowed]]
        return out

    def adjust(self, logits: torch.Tensor, generated: Sequence[int] = ()) -> torch.Tensor:
        ids = self.ids[self.ids < logits.shape[-1]]
        if not len(ids) or self.focus == 0:
            return logits
        if generated:
            ids = ids[~torch.isin(ids, torch.tensor(list(generated), dtype=torch.long))]
        near = logits[ids] >= logits.max() - self.margin
        ids = ids[near]
        if not len(ids):
            return logits
        out = logits.clone()
        out[ids] += self.focus
        return out

    def to_spec(self, tables: Tables | None = None) -> dict[str, Any]:
        return {"kind": "near_boost", "ids": self.ids.tolist(), "focus": self.focus, "margin": self.margin}


class GuideChain:
    """Several guides applied in order (e.g. emotion steering, then card grounding)."""

    def __init__(self, guides: Sequence[Any]) -> None:
        self.guides = [g for g in guides if g is not None]

    @classmethod
    def of(cls, guides: Sequence[Any]) -> Any:
        """The guide that applies `guides` (Nones skipped): None, the one guide, or a chain."""
        present = [g for g in guides if g is not None]
        if len(present) <= 1:
            return present[0] if present else None
        return cls(present)

    def batch_key(self) -> tuple[Any, ...] | None:
        keys = tuple(g.batch_key() if hasattr(g, "batch_key") else None for g in self.guides)
        return None if None in keys else ("chain", keys)

    @staticmethod
    def adjust_rows(
        chains: Sequence[GuideChain], logits: torch.Tensor, generated: Sequence[Sequence[int]]
    ) -> torch.Tensor:
        """Each chain's guides in order over the rows, a position's guides together (chains
        with one `batch_key` have guides of the same kinds in the same order)."""
        for at, first in enumerate(chains[0].guides):
            logits = type(first).adjust_rows([c.guides[at] for c in chains], logits, generated)
        return logits

    def adjust(self, logits: torch.Tensor, generated: Sequence[int] = ()) -> torch.Tensor:
        for guide in self.guides:
            logits = guide.adjust(logits, generated)
        return logits

    def to_spec(self, tables: Tables | None = None) -> dict[str, Any]:
        return {"kind": "chain", "guides": [guide_spec(g, tables) for g in self.guides]}

    def __repr__(self) -> str:
        return f"GuideChain({self.guides!r})"


def guide_spec(guide: Any, tables: Tables | None = None) -> dict[str, Any] | None:
    """`guide` as JSON data (`guide_from_spec` rebuilds it), None for no guide; a guide that
    cannot be written down is an `EngineError` (it cannot run in an engine process). With
    `tables`, a bias goes by number once it has been sent (the receiver passes its own)."""
    if guide is None:
        return None
    to_spec = getattr(guide, "to_spec", None)
    if to_spec is None:
        raise EngineError(f"the logits guide {guide!r} cannot run in an engine process (it has no to_spec())")
    return to_spec(tables) if tables is not None else to_spec()


def guide_from_spec(spec: dict[str, Any] | None, tables: Tables | None = None) -> Any:
    """The guide `guide_spec` wrote down (it adjusts logits to the same numbers)."""
    if spec is None:
        return None
    kind = spec.get("kind")
    if kind == "near_bias":
        raw = spec["bias"]
        if isinstance(raw, dict):
            if tables is None:
                raise EngineError("a guide's bias was sent by number, with no tables to read it from")
            bias = tables.take(raw)
        else:
            bias = _decode(raw)
        return NearBias(bias, spec["margin"], torch.tensor(spec["stops"], dtype=torch.long), str(spec["key"]))
    if kind == "near_boost":
        return NearBoost(spec["ids"], spec["focus"], spec["margin"])
    if kind == "chain":
        return GuideChain([guide_from_spec(g, tables) for g in spec["guides"]])
    raise EngineError(f"unknown logits guide kind {kind!r}")
