"""Continuous batching for the `fast` engine: every decoding step runs all live requests at once.

A `Scheduler` owns one thread and one batch KV cache. Callers `submit` a prompt (token ids and
`SamplingParams`) and read text pieces from the returned `Ticket` as they decode. At every
step the thread

1. **admits** waiting requests into free rows, round-robin across users (one user's twenty
   requests cannot starve another's one), first come first served within a user. While more
   than one user has work, no user holds more than `user_rows` rows (their other requests
   wait their turn), so a step stays short for everyone; a user alone may fill the batch. At
   most `admit_ahead` admitted prompts wait for their prefill, so a request that arrives later
   from another user is admitted next rather than behind a long line of one user's. A prompt is
   prefilled from the longest prefix it shares with a recently seen prompt (kept least
   recently used first out of `prefix_cache_mb`; a character's card is the same for every
   request, so only the new turns are computed: automatic prefix caching, as vLLM and
   llama.cpp's server do), in chunks of at most `prefill_chunk` tokens per step, so a long
   prompt does not stall the rows already decoding. All but its last token: the row joins the
   batch with that one, and its first new token comes out of the next step (a prompt found
   whole in the cache then costs no forward pass of its own, and the loop goes on admitting,
   so a burst of such prompts joins before one step);
2. **steps** every live row by one token in one forward pass (`step_rows`: each row at its own
   position in the cache, attention masked per row; for plain float weights the same ops
   compiled by TorchScript, `compiled.py`, so the step takes the GIL back once, not per op; a
   float32 row alone takes the engine's NumPy one-row step, `numpy_row.py`).
   While a light user (at most `user_rows` rows, nothing waiting) shares the batch with
   heavier users, each user steps and prefills only an equal share of rows, its oldest; the
   others keep their cache and wait (`_stepping`). It hands each row's logits to its own
   `DecodeRow` (sampler with its seed, `logit_bias`, penalties, the steering guide, stop ids and
   strings, length limit), exactly the per-token code of the one-request loop, except that the
   steps rows share (penalty, temperature, top-k/top-p/min-p) run once per group of rows with
   the same settings (`sampling.pick_rows`; greedy rows pick the same tokens either way).
   When every stepped row starts with the same prompt prefix (one card, many users), that
   prefix's keys and values are read once for the whole batch (`shared_prefix.py`, cascade
   attention); its attention is then the same sum taken in two parts, equal up to float
   rounding;
3. **retires** finished and cancelled rows at once (their cache rows are dropped).

Greedy decoding gives the same tokens batched and alone (up to float rounding between batch
shapes; the tests compare them); a seeded sampled row is reproducible because each row samples
with its own generator. The waiting queue is bounded: `submit` raises `QueueFullError` beyond
`max_waiting` (a server answers 429).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import torch

from models.engines.base import DecodeRow, SamplingParams
from models.engines.llama import fair_share, shared_prefix
from models.engines.llama.block import forward, step_rows
from models.engines.llama.cache import KVCache, RopeTable
from models.engines.llama.compiled import PlainStep
from models.engines.llama.numpy_row import NumpyRowStep
from models.engines.llama.prefix_cache import PrefixCache
from models.engines.llama.shared_prefix import SharedSegment
from models.engines.llama.tickets import DONE, REQUESTER, Ticket, requested_by
from models.engines.sampling import pick_rows
from models.engines.user_queues import UserQueues
from models.errors import EngineError, QueueFullError

if TYPE_CHECKING:
    from models.engines.llama.engine import FastEngine

__all__ = ["DONE", "REQUESTER", "QueueFullError", "Scheduler", "Ticket", "requested_by", "step_rows"]


class Scheduler:
    """Continuous batching over one `FastEngine` (see the module docstring)."""

    def __init__(self, engine: FastEngine, *, max_rows: int = 64, max_waiting: int = 256,
                 prefill_chunk: int = 512, prefix_cache_mb: float = 128, user_rows: int = 2,
                 admit_ahead: int = 2) -> None:  # fmt: skip
        self.engine = engine
        self.max_rows, self.max_waiting, self.prefill_chunk = max_rows, max_waiting, prefill_chunk
        self.user_rows, self.admit_ahead = max(1, user_rows), max(1, admit_ahead)
        self._live: dict[str, int] = {}  # rows (admitted or decoding) per user
        self._light: set[str] = set()  # users with work, all of it live and at most user_rows rows
        self.prefixes = PrefixCache(int(prefix_cache_mb * 2**20))
        self._cond = threading.Condition()
        self._waiting: UserQueues[Ticket] = UserQueues()
        self._admitting: list[Ticket] = []
        self._running: list[Ticket] = []
        self._cache: KVCache | None = None
        self._rope: RopeTable | None = None
        self._plain: tuple[Any, PlainStep | None] | None = None  # (weights, their compiled step)
        self._one_row: NumpyRowStep | None = None  # a row alone steps in NumPy (float32)
        self._segment = SharedSegment()  # a prompt the rows' attention reads once per step
        self.shared_steps = 0  # steps that read the segment once for all rows
        self._closed = False
        self.steps = 0
        self.row_steps = 0  # rows stepped, over all steps
        self.alone_steps = 0  # steps of a row alone on NumPy's one-row step
        self.admitted: deque[str] = deque(maxlen=1000)  # users in admission order (for tests and stats)
        self._thread = threading.Thread(target=self._loop, name="companion-batch", daemon=True)
        self._thread.start()

    # --- the caller's side -------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    @property
    def running(self) -> int:
        with self._cond:
            return len(self._running) + len(self._admitting)

    @property
    def in_flight(self) -> int:
        """Requests submitted and not yet finished (waiting, being prefilled or decoding)."""
        with self._cond:
            return len(self._waiting) + len(self._running) + len(self._admitting)

    def submit(self, ids: list[int], params: SamplingParams, *, user: str | None = None,
               suppress: torch.Tensor | None = None, outbox: Any = None) -> Ticket:  # fmt: skip
        """Queue a generation (for `user`, else `REQUESTER`'s); its pieces arrive on the ticket
        (or on `outbox`, anything with `put`: an engine process forwards them from there)."""
        user = REQUESTER.get() if user is None else user
        stats, ids, max_new, _t0 = self.engine.begin(ids, params)
        row = DecodeRow(self.engine.codec, ids, params, max(1, max_new))
        ticket = Ticket(ids, params, user, row, stats, suppress)
        if outbox is not None:
            ticket.outbox = outbox
        if max_new <= 0:
            row.done = True
            ticket.outbox.put(DONE)
            return ticket
        with self._cond:
            if self._closed:
                raise EngineError("the scheduler is closed")
            if len(self._waiting) >= self.max_waiting:
                raise QueueFullError(f"{self.max_waiting} requests are already waiting for this model")
            self._waiting.put(user, ticket)
            self._cond.notify()
        return ticket

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)

    # --- the loop ----------------------------------------------------------------------------

    def _next_waiting(self) -> Ticket | None:
        """The next request to admit: round-robin over the users who wait, skipping a user at
        `user_rows` live rows while anyone else has work."""
        contended = len(self._waiting.users() | {u for u, n in self._live.items() if n}) > 1
        full = (lambda user: self._live.get(user, 0) >= self.user_rows) if contended else None
        while (ticket := self._waiting.pop(full)) is not None:
            if not ticket.cancelled.is_set():
                self._live[ticket.user] = self._live.get(ticket.user, 0) + 1
                return ticket
            ticket.outbox.put(DONE)
        return None

    def _loop(self) -> None:
        engine = self.engine
        while True:
            with self._cond:
                while not self._closed and not self._waiting and not self._running and not self._admitting:
                    self._cond.wait()
                if self._closed:
                    return
            try:
                yielded = self._admit_and_prefill()
                if self._running and not yielded:
                    with engine.scope():
                        self._step()
            except BaseException as exc:  # the batch itself failed: every caller must hear of it
                self._fail_all(exc)

    def _admit(self) -> bool:
        """Admit waiting requests into free rows while fewer than `admit_ahead` admitted prompts
        wait for their prefill; whether any was admitted."""
        admitted = False
        with self._cond:
            while (len(self._running) + len(self._admitting) < self.max_rows
                   and self._ahead() < self.admit_ahead):  # fmt: skip
                ticket = self._next_waiting()
                if ticket is None:
                    break
                self._admitting.append(ticket)
                self.admitted.append(ticket.user)
                admitted = True
            waiting = self._waiting.users()
            self._light = {u for u, n in self._live.items() if n and n <= self.user_rows and u not in waiting}
        return admitted

    def _admit_and_prefill(self) -> bool:
        """One loop's admissions and prefill (`prefill_chunk` prompt tokens); whether the prefill
        yielded to a newcomer (then the loop skips its step).

        A prompt that the prefix cache covers costs no computation: it joins the batch at once,
        and the next waiting requests are admitted in the same loop. So a burst of prompts the
        cache holds (a card every user shares, the earlier turns of their chats) fills the batch
        before the next step instead of `admit_ahead` rows a step: 32 of the bench's requests
        used to climb to at most 20 rows (two more each step while the first ones finished),
        every step with fewer rows than the batch could take. Once a round computes any prompt
        token, the loop goes on to its step as before, and `admit_ahead` still bounds how many
        admitted prompts wait for computing."""
        while True:
            admitted = self._admit()
            with self.engine.batch_scope():  # prompts: compute-bound, `threads_batch`
                yielded, computed = self._prefill_some()
            if yielded or computed or self._admitting or not admitted:
                return yielded

    def _tables(self, capacity: int) -> tuple[KVCache, RopeTable]:
        engine = self.engine
        dtype = engine.weights.dtype
        if self._rope is None or self._rope.capacity < capacity or self._rope.cos.dtype != dtype:
            self._rope = RopeTable(engine.spec, min(engine.spec.max_positions, max(capacity, 256)), dtype)
        if self._cache is None or self._cache.dtype != dtype:
            self._cache = KVCache(engine.spec, 0, self._rope.capacity, dtype)
        if self._cache.capacity < capacity:
            self._cache.grow(capacity)
            self._rope = RopeTable(engine.spec, self._cache.capacity, dtype)
        return self._cache, self._rope

    def _prefill_some(self) -> tuple[bool, int]:
        """Prefill admitted prompts, `prefill_chunk` tokens in all; finished ones take their first
        token and join the running batch. Returns whether it yielded, and how many tokens it
        computed. Light users' prompts (see `_stepping`) go first. While one shares the batch with other
        users, each of those gets prefill only while it has fewer rows running than its share of
        the step (`_stepping`), a piece per loop, so the light user's rows step about as often
        as alone. A prompt is computed in pieces of an eighth of the chunk; before and between a
        heavy user's pieces, a request from a user with nothing running yet ends the loop's
        prefill and skips its step (True): it is admitted and prefilled next."""
        budget, used = self.prefill_chunk, 0
        piece = max(16, self.prefill_chunk // 8)
        engine = self.engine
        contended = bool(self._light) and len(self._live) > 1
        running, share = self._shares()
        for ticket in sorted(self._admitting, key=lambda t: t.user not in self._light):  # light users' first
            if ticket.cancelled.is_set():
                self._admitting.remove(ticket)
                self._finish(ticket)
                continue
            if contended and ticket.user not in self._light:  # the light users' rows step as if alone
                if len(running.get(ticket.user, ())) >= share:  # this user already steps its share
                    continue
                budget = min(budget, piece)
            if budget <= 0:
                break
            if self._heavy(ticket.user) and self._newcomer_waits():
                return True, used  # admit the newcomer first
            need = len(ticket.ids) + ticket.row.max_new
            _cache, rope = self._tables(need)
            if ticket.cache is None:
                ticket.cache = KVCache(engine.spec, 1, need, engine.weights.dtype)
                ticket.prefilled = self._from_prefix(ticket)
            end = len(ticket.ids) - 1  # the prompt's last token is computed in the batch's next step
            try:
                while budget > 0 and ticket.prefilled < end:
                    take = min(budget, piece, end - ticket.prefilled)
                    start = ticket.prefilled
                    chunk = torch.tensor([ticket.ids[start : start + take]])
                    plain = self._plain_for(engine.weights)
                    if plain is not None:  # the cache only: the logits come from the batch's step
                        plain.prefill(rope, chunk, ticket.cache, start, logits=False)
                    else:
                        forward(engine.weights, engine.spec, rope, chunk, ticket.cache, start=start, logits=False)
                    ticket.prefilled += take
                    budget -= take
                    used += take
                    if ticket.prefilled < end and self._heavy(ticket.user) and self._newcomer_waits():
                        return True, used
            except Exception as exc:  # this prompt's problem (a bad token id): this request fails alone
                ticket.error = exc
                self._admitting.remove(ticket)
                self._finish(ticket)
                continue
            if ticket.prefilled < end:
                continue
            self._remember(ticket)
            self._admitting.remove(ticket)
            if ticket.cancelled.is_set():
                self._finish(ticket)
                continue
            ticket.pos, ticket.last = end, ticket.ids[-1]
            self._join(ticket)
        return False, used

    def _heavy(self, user: str) -> bool:
        return self._live.get(user, 0) > self.user_rows

    def _ahead(self) -> int:
        """Admitted prompts that a new request would wait behind: a heavy user's (more than
        `user_rows` live) are prefilled after a light user's, so they do not count."""
        return sum(1 for t in self._admitting if not self._heavy(t.user))

    def _newcomer_waits(self) -> bool:
        """Whether a user with nothing admitted or running has a request waiting, and the batch
        has a row and an admission slot for it (so yielding to it admits it at once)."""
        if len(self._running) + len(self._admitting) >= self.max_rows or self._ahead() >= self.admit_ahead:
            return False
        with self._cond:
            return any(user not in self._live for user in self._waiting.users())

    def _from_prefix(self, ticket: Ticket) -> int:
        """Copy the longest cached prefix of the prompt into its cache; how many tokens it covers."""
        n, kv = self.prefixes.longest(ticket.ids)
        if kv is not None:
            ticket.cache.data[..., :n, :] = kv[..., :n, :]
        return n

    def _remember(self, ticket: Ticket) -> None:
        """Keep the prompt's K/V for the prompts that start the same (all but its last token,
        which the batch's step computes)."""
        n = len(ticket.ids) - 1
        self.prefixes.remember(ticket.ids[:n], ticket.cache.data[..., :n, :])

    @property
    def prefix_hits(self) -> int:
        return self.prefixes.hits

    def _join(self, ticket: Ticket) -> None:
        """Copy a prefilled request's cache into the next free row of the batch cache (the live
        rows are always the first ones: no concatenation, one row's copy)."""
        cache, _rope = self._tables(len(ticket.ids) + ticket.row.max_new)
        slot = len(self._running)
        cache.reserve_rows(slot + 1)
        filled = ticket.pos
        cache.data[:, :, slot, :, :filled] = ticket.cache.data[:, :, 0, :, :filled]
        ticket.shared = self._segment.join(ticket.ids, ticket.pos, ticket.cache.data, (t.shared for t in self._running))
        ticket.cache = None
        self._running.append(ticket)

    def _take(self, ticket: Ticket, logits: torch.Tensor, token: int | None = None) -> bool:
        """Sample the row's next token (or record `token`, picked with the batch) and hand over
        its text; whether it goes on. A request's own error (its sampling parameters, its
        grammar) ends that request only."""
        if ticket.cancelled.is_set():
            return False
        try:
            return self._sample(ticket, logits, token)
        except Exception as exc:
            ticket.error = exc
            return False

    def _sample(self, ticket: Ticket, logits: torch.Tensor, token: int | None = None) -> bool:
        row, stats = ticket.row, ticket.stats
        seen = len(row.pieces)
        if token is not None:
            ticket.last = row.record(token, logits)
        else:
            if ticket.suppress is not None and len(ticket.suppress):
                logits = logits.index_fill(0, ticket.suppress, float("-inf"))
            ticket.last = row.take(logits)
        stats.completion_tokens = row.tokens
        for piece in row.pieces[seen:]:
            if stats.time_to_first_token_s is None:
                stats.time_to_first_token_s = time.perf_counter() - ticket.submitted
            ticket.outbox.put(piece)
        return not row.done

    def _stepping(self) -> list[int] | None:
        """Which running rows step now (indexes into `_running`, ascending), or None for all
        (`fair_share.stepping`: an equal share per user while a light user shares the batch)."""
        return fair_share.stepping(self._running, self._light)

    def _shares(self) -> tuple[dict[str, list[int]], int]:
        return fair_share.shares(self._running, self._light)

    def _to_front(self, chosen: list[int]) -> None:
        """Swap the chosen rows (and their caches) into the first slots, so a step reads the
        cache's first rows as views (gathering scattered rows costs more than the step)."""
        cache = self._cache
        assert cache is not None
        rows = self._running
        later = [i for i in chosen if i >= len(chosen)]
        for front in (j for j in range(len(chosen)) if j not in chosen):
            back = later.pop()
            cache.swap_rows(front, back, rows[front].pos, rows[back].pos)
            rows[front], rows[back] = rows[back], rows[front]

    def _step(self) -> None:
        engine, cache = self.engine, self._cache
        assert cache is not None and self._rope is not None
        chosen = self._stepping()
        if chosen is not None:
            self._to_front(chosen)
        rows = self._running if chosen is None else self._running[: len(chosen)]
        one = self._one_row_for(engine.weights) if len(rows) == 1 else None
        shared = None
        if one is not None:  # a row alone: the engine's own batch-1 step, on the batch cache's first row
            logits = one(rows[0].last, rows[0].pos)[None]
            self.alone_steps += 1
        else:
            tokens = torch.tensor([t.last for t in rows], dtype=torch.long)
            positions = torch.tensor([t.pos for t in rows], dtype=torch.long)
            shared = shared_prefix.for_rows([t.shared for t in rows])
            plain = self._plain_for(engine.weights)
            if plain is not None:
                logits = plain(self._rope, tokens, cache, positions, shared)
            else:
                logits = step_rows(engine.weights, engine.spec, self._rope, tokens, cache, positions, shared)
        self.steps += 1
        self.shared_steps += shared is not None
        self.row_steps += len(rows)
        picked = self._pick(logits, rows)
        done = []
        for i, ticket in enumerate(rows):
            ticket.pos += 1
            if not (self._take(ticket, logits[i], picked.get(i)) and ticket.pos < cache.capacity):
                self._finish(ticket)
                done.append(i)
        for i in reversed(done):  # the last live row takes each finished row's slot
            last = self._running.pop()
            if i < len(self._running):
                cache.move_row(len(self._running), i, last.pos)
                self._running[i] = last

    def _one_row_for(self, w: Any) -> NumpyRowStep | None:
        """NumPy's one-row step on the batch cache's first row, for float32 weights (about a
        third of the compiled step's time at one row: `numpy_row.py`), or None."""
        if not NumpyRowStep.fits(w):
            return None
        one = self._one_row
        if one is None or one.weights is not w or one.data is not self._cache.data or one.rope is not self._rope:
            one = self._one_row = NumpyRowStep(w, self.engine.spec, self._cache, self._rope)
        return one

    def _plain_for(self, w: Any) -> PlainStep | None:
        """The compiled step and prefill for these weights (the same numbers as `step_rows` and
        `forward`: `tests/test_scheduler.py`), or None: eager (`compiled.py`)."""
        if self._plain is None or self._plain[0] is not w:
            self._plain = (w, PlainStep.for_weights(w, self.engine.spec))
        return self._plain[1]

    def _pick(self, logits: torch.Tensor, rows: list[Ticket]) -> dict[int, int]:
        """The next token of every stepped row without a grammar, picked together
        (`sampling.pick_rows`); a row whose picking fails is left to pick alone (and to fail
        alone, with its own error)."""
        for i, ticket in enumerate(rows):
            if ticket.suppress is not None and len(ticket.suppress):
                logits[i].index_fill_(0, ticket.suppress, float("-inf"))
        plain = [i for i, t in enumerate(rows) if t.row.structure is None and not t.cancelled.is_set()]
        if not plain:
            return {}
        try:
            tokens = pick_rows([rows[i].row.sampler for i in plain], logits[plain])
        except Exception:
            return {}
        return dict(zip(plain, tokens, strict=True))

    def _finish(self, ticket: Ticket) -> None:
        with self._cond:
            left = self._live.get(ticket.user, 0) - 1
            if left > 0:
                self._live[ticket.user] = left
            else:
                self._live.pop(ticket.user, None)
        row, stats = ticket.row, ticket.stats
        tail = row.tail() if not ticket.cancelled.is_set() and ticket.error is None else ""
        if tail:
            ticket.outbox.put(tail)
        stats.finish_reason = row.finish
        stats.total_s = time.perf_counter() - ticket.submitted
        if row.token_logprobs is not None:
            stats.extra["logprobs"] = row.token_logprobs
        stats.extra["batched"] = True
        row.done = True
        ticket.outbox.put(DONE)

    def _fail_all(self, exc: BaseException) -> None:
        with self._cond:
            everyone = self._admitting + self._running + self._waiting.clear()
            self._admitting, self._running = [], []
            self._live = {}
            self._cache = None
        for ticket in everyone:
            ticket.error = exc
            ticket.row.done = True
            ticket.outbox.put(DONE)
