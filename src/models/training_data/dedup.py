"""Exact and near-duplicate detection (MinHash + LSH) in bounded memory.

Exact duplicates: records whose text is the same after lower-casing and collapsing
whitespace (the first 8 bytes of its sha256 are compared).

Near duplicates: MinHash signatures over word 5-grams (`textstats.normalized_tokens`),
112 permutations read as 14 LSH bands of 8 rows; two records whose signatures agree on any
whole band are duplicates, which catches pairs with Jaccard similarity above about
(1/14)^(1/8) ≈ 0.72 with high probability (0.92 at 0.8). These are datatrove's defaults
(`MinhashConfig`: 5-grams, 14 buckets × 8 hashes), so the two are directly comparable.

The permutations are `datasketch.MinHash`'s (its default "affine32" scheme: a MurmurHash3
finalizer, then h → a·h + b mod 2³², same seed → same a, b), and a signature is exactly what
`datasketch.MinHash(num_perm=112, seed=1, hashfunc=shingle_hash)` computes when given the
shingle values by `update_batch`
(a test checks this; `MinHasher.to_datasketch` hands one over). The arithmetic runs for all
shingles of a record at once in numpy rather than one shingle at a time in Python. Only 14
band keys (8 bytes each) per record are kept; duplicates are found by sorting each band's keys
and joining equal neighbours with union-find, so memory grows by ~120 bytes per record, never
with the text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from models.training_data.textstats import Tokens, ngram_hashes

__all__ = ["DedupIndex", "MinHasher", "exact_key", "shingle_hash"]

_BAND_MULT = np.uint64(0x9E3779B97F4A7C15)
_SHINGLE_MULT = np.uint64(1_000_003)


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (Appleby's public constants), as datasketch applies it."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def exact_key(text: str) -> int:
    """64-bit key of the text after lower-casing and collapsing whitespace."""
    norm = " ".join(text.lower().split())
    return int.from_bytes(hashlib.sha256(norm.encode("utf-8", "surrogatepass")).digest()[:8], "little")


def shingle_values(tokens: Tokens, ngram: int) -> np.ndarray:
    """32-bit hashes of the token n-grams (a single n-gram when the text is shorter than `ngram`).

    The n-gram hashes are `textstats.ngram_hashes` folded to 32 bits: no n-gram string is built,
    and the quality rules' repetition measures reuse the same token hashes.
    """
    g = ngram_hashes(tokens.hashes, min(ngram, len(tokens)))
    return ((g ^ (g >> np.uint64(32))) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def shingle_hash(value: int) -> int:
    """The hash function datasketch applies to our shingle values: identity (they are hashes)."""
    return int(value)


@dataclass
class MinHasher:
    """MinHash signatures with datasketch's permutations, computed a record at a time in numpy."""

    num_perm: int = 112
    bands: int = 14
    ngram: int = 5
    seed: int = 1

    def __post_init__(self) -> None:
        from datasketch import MinHash

        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be a multiple of bands ({self.bands})")
        self.rows = self.num_perm // self.bands
        reference = MinHash(num_perm=self.num_perm, seed=self.seed)
        if reference.scheme != "affine32":  # pragma: no cover - guards a datasketch default change
            raise RuntimeError(f"datasketch MinHash scheme {reference.scheme!r}; expected 'affine32'")
        a, b = reference.permutations
        self._a, self._b = np.asarray(a, dtype=np.uint32), np.asarray(b, dtype=np.uint32)

    def shingles(self, text: str, tokens: Tokens | None = None) -> np.ndarray:
        """The shingle values of a text (see `shingle_values`); empty for a text without words."""
        tok = Tokens.of(text) if tokens is None else tokens
        if not len(tok):
            return np.zeros(0, dtype=np.uint32)
        return shingle_values(tok, self.ngram)

    def signature(self, text: str, tokens: Tokens | None = None) -> np.ndarray | None:
        """uint32 array of `num_perm` minimums, or None for a text without words."""
        sh = self.shingles(text, tokens)
        if not len(sh):
            return None
        hv = _fmix32(sh)
        return (hv[:, None] * self._a + self._b).min(axis=0)

    def to_datasketch(self, signature: np.ndarray) -> object:
        """The same signature as a `datasketch.MinHash` (for `MinHashLSH`, `jaccard`, ...)."""
        from datasketch import MinHash

        return MinHash(seed=self.seed, hashvalues=signature, scheme="affine32", hashfunc=shingle_hash)

    def band_keys(self, signature: np.ndarray) -> np.ndarray:
        """One uint64 key per band (a multiplicative hash of the band's rows)."""
        rows = signature.astype(np.uint64).reshape(self.bands, self.rows)
        key = np.zeros(self.bands, dtype=np.uint64)
        for r in range(self.rows):
            key = (key ^ rows[:, r]) * _BAND_MULT
        return key


class _Blocks:
    """A growable uint64 array of shape (n, width) kept in fixed-size numpy blocks."""

    def __init__(self, width: int, block: int = 65_536) -> None:
        self.width, self.block = width, block
        self.full: list[np.ndarray] = []
        self.cur = np.zeros((block, width), dtype=np.uint64)
        self.fill = 0

    def append(self, row: np.ndarray | int) -> None:
        if self.fill == self.block:
            self.full.append(self.cur)
            self.cur = np.zeros((self.block, self.width), dtype=np.uint64)
            self.fill = 0
        self.cur[self.fill] = row
        self.fill += 1

    def array(self) -> np.ndarray:
        return np.concatenate([*self.full, self.cur[: self.fill]])


class DedupIndex:
    """Collects keys of records one by one, then tells which are duplicates of an earlier one."""

    def __init__(self, hasher: MinHasher | None = None, near: bool = True) -> None:
        self.hasher = hasher or MinHasher()
        self.near = near
        self._exact = _Blocks(1)
        self._bands = _Blocks(self.hasher.bands)
        self._count = 0

    def add(self, text: str, near_text: str | None = None, tokens: Tokens | None = None) -> None:
        """Record `text` (exact key) and `near_text` or `text` (MinHash; `tokens` are its tokens)."""
        self._exact.append(exact_key(text))
        self._count += 1
        if self.near:
            if near_text is not None:
                sig = self.hasher.signature(near_text)
            else:
                sig = self.hasher.signature(text, tokens)
            self._bands.append(0 if sig is None else self.hasher.band_keys(sig))

    def __len__(self) -> int:
        return self._count

    def duplicates(self, eligible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(exact, near) boolean masks: a record is marked when an earlier eligible record matches it.

        Only records with `eligible[i]` (e.g. those that passed the quality rules) take part,
        so the first good copy is the one kept.
        """
        n = self._count
        exact = np.zeros(n, dtype=bool)
        near = np.zeros(n, dtype=bool)
        idx = np.nonzero(eligible)[0]
        if not len(idx):
            return exact, near
        keys = self._exact.array()[idx, 0]
        _, first = np.unique(keys, return_index=True)
        keep = np.zeros(len(idx), dtype=bool)
        keep[first] = True
        exact[idx[~keep]] = True
        if not self.near:
            return exact, near
        rest = idx[keep]
        bands = self._bands.array()[rest]
        has_words = bands.any(axis=1)
        parent = np.arange(len(rest))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for b in range(self.hasher.bands):
            col = bands[:, b]
            order = np.argsort(col, kind="stable")
            same = np.nonzero((col[order][1:] == col[order][:-1]) & has_words[order][1:])[0]
            for j in same:
                ra, rb = find(int(order[j])), find(int(order[j + 1]))
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
        roots = np.array([find(i) for i in range(len(rest))])
        near[rest[roots != np.arange(len(rest))]] = True
        return exact, near
