"""Text ↔ token ids for local engines: tokenizer, chat template and streaming detokenizer.

A model folder in Hugging Face format carries `tokenizer.json` (read with `tokenizers`, fast
and dependency-light) or, failing that, whatever `transformers.AutoTokenizer` can load; the
chat template comes from `chat_template.jinja` or `tokenizer_config.json` and renders in a
sandboxed Jinja environment, as `transformers` does.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.errors import EngineError, GenerationInputError

if TYPE_CHECKING:
    import torch

__all__ = ["StreamDecoder", "TextCodec"]

#: Texts up to this many characters (words, names, short turns) are encoded once and remembered
#: (the last `SHORT_KEPT`): card grounding encodes every content word of the card in three forms
#: for each new user, and those words are the same every time.
SHORT_TEXT = 64
SHORT_KEPT = 8192
#: How many texts' token counts `TextCodec.count` remembers.
COUNTED = 4096
#: Longer texts are encoded in the pieces between their added tokens (a chat prompt's turns), the
#: last `PIECES_KEPT` pieces remembered: every turn's prompt repeats the card and the earlier turns.
PIECES_KEPT = 2048

_FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def _token_str(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


class TextCodec:
    """Tokenizer + chat template of one model folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._short = functools.lru_cache(maxsize=SHORT_KEPT)(self._encode)
        self._piece = functools.lru_cache(maxsize=PIECES_KEPT)(self._encode_whole)
        cfg_path = self.folder / "tokenizer_config.json"
        self.config: dict[str, Any] = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        tj = self.folder / "tokenizer.json"
        self._fast = None
        self._hf = None
        self._cuts: tuple[Any, dict[str, int]] | None = None
        if tj.exists():
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_file(str(tj))
            self._cuts = self._added_token_cuts()
        else:
            try:
                from transformers import AutoTokenizer

                self._hf = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
            except Exception as exc:  # transformers raises many kinds here
                raise EngineError(f"{self.folder}: no usable tokenizer ({exc})") from exc
        self.bos_id = self.token_id(_token_str(self.config.get("bos_token")))
        self.eos_id = self.token_id(_token_str(self.config.get("eos_token")))
        self.pad_id = self.token_id(_token_str(self.config.get("pad_token")))
        self.add_bos = bool(self.config.get("add_bos_token", False)) and self.bos_id is not None
        self.stop_ids: set[int] = {i for i in (self.eos_id,) if i is not None}
        end = self.token_id("<|end|>")
        if end is not None:
            self.stop_ids.add(end)
        self._add_generation_stops()
        self.template_source = self._load_template()
        self._template: Any = None
        self._chat_ids: torch.Tensor | None = None

    # --- ids -------------------------------------------------------------------------------

    def token_id(self, token: str | None) -> int | None:
        if not token:
            return None
        if self._fast is not None:
            return self._fast.token_to_id(token)
        tid = self._hf.convert_tokens_to_ids(token)  # type: ignore[union-attr]
        return None if tid == getattr(self._hf, "unk_token_id", None) else tid

    def _add_generation_stops(self) -> None:
        gc = self.folder / "generation_config.json"
        if gc.exists():
            eos = json.loads(gc.read_text()).get("eos_token_id")
            for i in eos if isinstance(eos, list) else [eos]:
                if isinstance(i, int):
                    self.stop_ids.add(i)

    @property
    def vocab_size(self) -> int:
        if self._fast is not None:
            return self._fast.get_vocab_size()
        return len(self._hf)  # type: ignore[arg-type]

    @property
    def prefix_ids(self) -> list[int]:
        """What starts every sequence: BOS if the tokenizer adds one, else the document
        separator (GPT-2 convention: our models saw `<|endoftext|>` before every document)."""
        if self.add_bos:
            return [self.bos_id]  # type: ignore[list-item]
        return [self.eos_id] if self.eos_id is not None else []

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = self._short(text) if len(text) <= SHORT_TEXT else self._encode(text)
        if add_bos:
            prefix = self.prefix_ids
            if not (prefix and ids[: len(prefix)] == prefix):
                ids = prefix + list(ids)
        return list(ids)

    def _added_token_cuts(self) -> tuple[Any, dict[str, int]] | None:
        """A pattern that cuts text at the tokenizer's added tokens (leftmost, longest first, as
        `tokenizers` matches them) and their ids, where `tokenizers` itself cuts there and encodes
        the pieces between on their own: no added token strips the spaces beside it, matches
        whole words only or is matched after normalization. Otherwise None (encode whole)."""
        import re

        assert self._fast is not None
        ids: dict[str, int] = {}
        for tid, token in self._fast.get_added_tokens_decoder().items():
            if token.lstrip or token.rstrip or token.single_word or token.normalized:
                return None
            ids[token.content] = tid
        if not ids:
            return None
        return re.compile("(" + "|".join(re.escape(t) for t in sorted(ids, key=len, reverse=True)) + ")"), ids

    def _encode(self, text: str) -> tuple[int, ...]:
        if self._cuts is not None and len(text) > SHORT_TEXT:
            pattern, added = self._cuts
            out: list[int] = []
            for i, part in enumerate(pattern.split(text)):
                if i % 2:
                    out.append(added[part])
                elif part:
                    out.extend(self._piece(part))
            return tuple(out)
        return self._encode_whole(text)

    def _encode_whole(self, text: str) -> tuple[int, ...]:
        if self._fast is not None:
            return tuple(self._fast.encode(text, add_special_tokens=False).ids)
        return tuple(self._hf.encode(text, add_special_tokens=False))  # type: ignore[union-attr]

    def count(self, text: str) -> int:
        """How many tokens `text` encodes to (remembered for the last `COUNTED` texts: a prompt's
        budget counts the same card, examples and turns again and again)."""
        counter = self.__dict__.get("_count")
        if counter is None:  # made on first use (subclasses with their own encode have one too)
            counter = self._count = functools.lru_cache(maxsize=COUNTED)(lambda t: len(self.encode(t)))
        return counter(text)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        if self._fast is not None:
            return self._fast.decode(list(ids), skip_special_tokens=skip_special_tokens)
        return self._hf.decode(list(ids), skip_special_tokens=skip_special_tokens)  # type: ignore[union-attr]

    def id_to_token(self, token_id: int) -> str | None:
        """The vocabulary piece of `token_id` as the tokenizer stores it (`Ġword` in byte-level
        BPE), or None for an id outside the vocabulary."""
        if self._fast is not None:
            return self._fast.id_to_token(token_id)
        return self._hf.convert_ids_to_tokens(token_id)  # type: ignore[union-attr]

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)

    def guidance_tokenizer(self) -> Any:
        """llguidance's view of this tokenizer (for structured output), built once; the end of
        the turn (`stop_ids`) is its end-of-sequence."""
        cached = getattr(self, "_guidance", None)
        if cached is None:
            from llguidance import LLTokenizer

            if self._fast is not None:
                spec = self._fast.to_str()
            elif getattr(self._hf, "backend_tokenizer", None) is not None:
                spec = self._hf.backend_tokenizer.to_str()  # type: ignore[union-attr]
            else:
                raise EngineError(f"{self.folder}: structured output needs a fast tokenizer (tokenizer.json)")
            cached = LLTokenizer(spec, n_vocab=self.vocab_size, eos_token=sorted(self.stop_ids))
            self._guidance = cached
        return cached

    # --- chat ------------------------------------------------------------------------------

    def _load_template(self) -> str:
        jinja = self.folder / "chat_template.jinja"
        if jinja.exists():
            return jinja.read_text()
        tpl = self.config.get("chat_template")
        if isinstance(tpl, str):
            return tpl
        if isinstance(tpl, list):  # named templates: take "default"
            for t in tpl:
                if t.get("name") == "default":
                    return t["template"]
        if self._hf is not None and getattr(self._hf, "chat_template", None):
            return self._hf.chat_template
        return _FALLBACK_TEMPLATE

    @property
    def chat_control_ids(self) -> torch.Tensor:
        """Ids of our chat markup tokens (roles, turn end, emotions, reserved) in this vocabulary;
        empty for tokenizers from elsewhere."""
        if self._chat_ids is None:
            import torch

            from models.tokens import EOS, SPECIAL_TOKENS

            found = [self.token_id(t) for t in SPECIAL_TOKENS if t != EOS]
            self._chat_ids = torch.tensor(sorted(i for i in found if i is not None), dtype=torch.long)
        return self._chat_ids

    @property
    def has_emotion_tokens(self) -> bool:
        return self.token_id("<|emotion:neutral|>") is not None

    def render_chat(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True, **extra: Any) -> str:
        """Render OpenAI-style messages through the model's chat template."""
        if self._template is None:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(message: str) -> None:
                raise GenerationInputError(f"chat template: {message}")

            env = ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
            )
            env.globals["raise_exception"] = raise_exception
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            self._template = env.from_string(self.template_source)
        for i, m in enumerate(messages):
            if "role" not in m or "content" not in m:
                raise GenerationInputError(f"message {i} needs 'role' and 'content' keys, got {sorted(m)}")
        if not self.has_emotion_tokens:
            extra.pop("emotion", None)
        return self._template.render(
            messages=list(messages),
            add_generation_prompt=add_generation_prompt,
            bos_token=_token_str(self.config.get("bos_token")) or "",
            eos_token=_token_str(self.config.get("eos_token")) or "",
            **extra,
        )


class StreamDecoder:
    """Turns token ids into text pieces as they arrive, never splitting a UTF-8 character.

    Keeps a short window of ids: the text of `ids[prefix:]` minus the text of
    `ids[prefix:read]` is what is new; a piece ending in U+FFFD waits for more bytes.
    """

    def __init__(self, codec: TextCodec) -> None:
        self.codec = codec
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        prev = self.codec.decode(self.ids[self.prefix : self.read])
        full = self.codec.decode(self.ids[self.prefix :])
        if len(full) > len(prev) and not full.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return full[len(prev) :]
        return ""

    def flush(self) -> str:
        prev = self.codec.decode(self.ids[self.prefix : self.read])
        full = self.codec.decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return full[len(prev) :] if len(full) > len(prev) else ""
