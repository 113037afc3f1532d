"""Cutting token streams into training windows: `max_length`, `stride` (overlap) and packing.

`stride` follows the Hugging Face tokenizers' meaning: the number of tokens two consecutive
windows share, so window k starts at k × (max_length − stride). Each window adds at least one
new token; the last one of a document may be shorter than `max_length`.

With packing, documents (each followed by the end-of-text token) are concatenated into one
stream that is cut into full windows, so no position is wasted on padding; a window may then
hold the end of one document and the start of the next. Every window keeps the exact text it
covers (taken from the tokenizer's character offsets, so nothing is re-decoded).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from models.errors import DataError

__all__ = ["Piece", "StreamPacker", "check_window", "window_spans"]


def check_window(max_length: int, stride: int) -> None:
    """DataError unless 1 ≤ max_length and 0 ≤ stride < max_length."""
    if not isinstance(max_length, int) or max_length < 1:
        raise DataError(f"max_length must be a positive number of tokens, got {max_length!r}")
    if not isinstance(stride, int) or not 0 <= stride < max_length:
        raise DataError(f"stride must be between 0 and max_length - 1 ({max_length - 1}), got {stride!r}")


def window_spans(n_tokens: int, max_length: int, stride: int = 0) -> list[tuple[int, int]]:
    """[start, end) token spans covering `n_tokens` (see the module docstring)."""
    spans: list[tuple[int, int]] = []
    step = max_length - stride
    start = 0
    while start < n_tokens:
        end = min(n_tokens, start + max_length)
        spans.append((start, end))
        if end == n_tokens:
            break
        start += step
    return spans


@dataclass
class Piece:
    """Tokens of one document with where they came from.

    `offsets[i]` is token i's character span in `text`; tokens from `n_text` on (the appended
    end-of-text token) cover no text.
    """

    ids: list[int]
    offsets: Any
    text: str
    meta: dict[str, Any]
    n_text: int

    def text_of(self, start: int, end: int) -> str:
        """The exact text covered by tokens [start, end)."""
        end = min(end, self.n_text)
        if start >= end:
            return ""
        return self.text[self.offsets[start][0] : self.offsets[end - 1][1]]


class StreamPacker:
    """Packs pieces into windows of exactly `max_length` tokens (the last may be shorter)."""

    def __init__(self, max_length: int, stride: int = 0) -> None:
        check_window(max_length, stride)
        self.max_length, self.stride = max_length, stride
        # (piece, first token of the piece still in the buffer)
        self.parts: list[tuple[Piece, int]] = []
        self.size = 0
        self._emitted = False

    def add(self, piece: Piece) -> Iterator[dict[str, Any]]:
        self.parts.append((piece, 0))
        self.size += len(piece.ids)
        while self.size >= self.max_length:
            yield self._emit(self.max_length)
            self._drop(self.max_length - self.stride)

    def finish(self) -> Iterator[dict[str, Any]]:
        if self.size > self.stride or (self.size and not self._emitted):
            yield self._emit(self.size)
        self.parts, self.size = [], 0

    def _emit(self, length: int) -> dict[str, Any]:
        ids: list[int] = []
        texts: list[str] = []
        first_meta: dict[str, Any] | None = None
        for piece, start in self.parts:
            take = min(len(piece.ids) - start, length - len(ids))
            if take <= 0:
                break
            ids.extend(piece.ids[start : start + take])
            if (t := piece.text_of(start, start + take).strip()) != "":
                texts.append(t)
            if first_meta is None:
                first_meta = piece.meta | {"token_start": start}
        self._emitted = True
        return {"input_ids": ids, "text": "\n\n".join(texts), "meta": first_meta or {}}

    def _drop(self, n: int) -> None:
        while n > 0 and self.parts:
            piece, start = self.parts[0]
            left = len(piece.ids) - start
            if left <= n:
                self.parts.pop(0)
                n -= left
                self.size -= left
            else:
                self.parts[0] = (piece, start + n)
                self.size -= n
                n = 0
