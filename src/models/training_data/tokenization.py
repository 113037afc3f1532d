"""The tokenizer a dataset is prepared with, and chat rendering through its template.

`tokenization="gpt2"` means the target model's GPT-2-style byte-level BPE: the built-in
`companion-base` tokenizer (vocabulary 8,192, our special tokens and chat template). GPT-2's
own vocabulary is not what our models read, and it cannot be fetched offline. Any other value
is a tokenizer the model in question uses: a folder with `tokenizer.json` (a Hugging Face
model folder), a folder `transformers.AutoTokenizer` can load offline (fast tokenizers only,
since chunking needs character offsets), or a model path as the config understands it
(`builtin:companion-base`, `store:base/companion-base`, ...).
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from models.errors import DataError

__all__ = ["Offsets", "TokenizerHandle", "load_tokenizer"]

_ALIASES = {"gpt2", "builtin", "default", "companion", "companion-base", "byte-level-bpe"}


class Offsets:
    """Character offsets of a text encoded in pieces, looked up lazily (no list of every token).

    `offsets[i]` is token i's (start, end) in the whole text.
    """

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._bases: list[int] = []
        self._encodings: list[Any] = []
        self._lists: dict[int, list[tuple[int, int]]] = {}
        self._n = 0

    def add(self, encoding: Any, base: int) -> None:
        self._starts.append(self._n)
        self._bases.append(base)
        self._encodings.append(encoding)
        self._n += len(encoding)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> tuple[int, int]:
        if not 0 <= i < self._n:
            raise IndexError(i)
        j = bisect.bisect_right(self._starts, i) - 1
        offs = self._lists.get(j)
        if offs is None:
            offs = self._lists[j] = self._encodings[j].offsets
        a, b = offs[i - self._starts[j]]
        return a + self._bases[j], b + self._bases[j]


@dataclass
class TokenizerHandle:
    """A `tokenizers.Tokenizer` (for ids and offsets) plus the folder's chat template."""

    name: str
    folder: Path
    tokenizer: Any
    fingerprint: str
    eos_id: int | None
    _codec: Any = field(default=None, repr=False)

    def encode_batch(self, texts: list[str]) -> list[tuple[list[int], Offsets]]:
        """Ids and character offsets of each text (no special tokens added).

        Long texts are encoded in pieces cut just before a blank line (`_pieces`), which the
        tokenizer processes in parallel and much faster than one huge string; with a GPT-2-style
        pre-tokenizer the result is the same as encoding the whole text.
        """
        cuts = [_pieces(t) for t in texts]
        flat = [t[a:b] for t, spans in zip(texts, cuts, strict=True) for a, b in spans]
        encoded = self.tokenizer.encode_batch(flat, add_special_tokens=False)
        out, k = [], 0
        for spans in cuts:
            ids: list[int] = []
            offsets = Offsets()
            for a, _b in spans:
                enc = encoded[k]
                k += 1
                ids.extend(enc.ids)
                offsets.add(enc, a)
            out.append((ids, offsets))
        return out

    def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self.tokenizer.encode(text, add_special_tokens=False)
        return enc.ids, enc.offsets

    @property
    def codec(self) -> Any:
        if self._codec is None:
            from models.engines.codec import TextCodec

            self._codec = TextCodec(self.folder)
        return self._codec

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        """The messages through the folder's chat template (no generation prompt)."""
        return self.codec.render_chat(messages, add_generation_prompt=False)

    @property
    def has_emotion_tokens(self) -> bool:
        return self.codec.has_emotion_tokens

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "folder": str(self.folder), "sha256": self.fingerprint}


_PIECE = 8192


def _pieces(text: str, size: int = _PIECE) -> list[tuple[int, int]]:
    """[start, end) spans of at most about `size` characters, each cut just before a blank line."""
    spans, start = [], 0
    while len(text) - start > size:
        cut = text.find("\n\n", start + size // 2, start + 2 * size)
        if cut < 0:
            break
        spans.append((start, cut))
        start = cut
    spans.append((start, len(text)))
    return spans


def _folder_for(spec: str) -> Path:
    from models.paths import builtin_dir, classify_path

    if spec.lower() in _ALIASES:
        return builtin_dir("companion-base")
    ref = classify_path(spec)
    if ref.kind in ("folder", "builtin") and ref.folder is not None:
        return ref.folder
    if ref.kind == "store" and ref.category and ref.name:
        from models.store import ModelStore

        try:
            return ModelStore().open(ref.category, ref.name, ref.version)
        except Exception as exc:  # the store raises several kinds; report one clear message
            raise DataError(f"tokenization {spec!r}: {exc}") from None
    raise DataError(
        f"tokenization {spec!r} is not a tokenizer: use 'gpt2' (the built-in byte-level BPE), a model "
        f"folder with tokenizer.json, or a model path such as builtin:companion-base ({ref.problem or ref.kind})"
    )


@lru_cache(maxsize=8)
def _load(folder: str) -> TokenizerHandle:
    path = Path(folder)
    tj = path / "tokenizer.json"
    if tj.is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tj))
        fingerprint = hashlib.sha256(tj.read_bytes()).hexdigest()
    else:
        try:
            from transformers import AutoTokenizer

            hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:  # transformers raises many kinds here
            raise DataError(f"{path}: no tokenizer found ({exc})") from None
        if not getattr(hf, "is_fast", False):
            raise DataError(f"{path}: a slow (Python) tokenizer cannot give character offsets; use a fast one")
        tok = hf.backend_tokenizer
        fingerprint = hashlib.sha256(tok.to_str().encode()).hexdigest()
    from models.tokens import EOS

    eos = tok.token_to_id(EOS)
    if eos is None:
        import json

        cfg = path / "tokenizer_config.json"
        eos_token = json.loads(cfg.read_text()).get("eos_token") if cfg.is_file() else None
        if isinstance(eos_token, dict):
            eos_token = eos_token.get("content")
        eos = tok.token_to_id(eos_token) if isinstance(eos_token, str) else None
    return TokenizerHandle(path.name, path, tok, fingerprint, eos)


def load_tokenizer(spec: str | Path | None = "gpt2") -> TokenizerHandle:
    """The tokenizer named by `spec` (see the module docstring); cached per folder."""
    folder = _folder_for(str(spec or "gpt2"))
    handle = _load(str(folder.resolve()))
    if str(spec or "gpt2").lower() in _ALIASES:
        handle.name = "gpt2 (byte-level BPE of companion-base)"
    return handle
