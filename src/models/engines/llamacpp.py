"""`llamacpp`: GGUF files through llama.cpp, in process (`llama-cpp-python`).

    model = TransformerModel("exports/companion-chat.gguf")     # engine: auto picks llamacpp
    luna = companion_for("exports/companion-chat.gguf", character="luna")

llama.cpp does the forward pass; everything else is the shared `LocalEngine` loop, the same
code the `fast` engine runs: our seeded sampler (temperature, top-k, top-p, repetition penalty,
`logit_bias`), stop strings, the emotion steering and card guides (they see llama.cpp's logits
each step), streaming, best-of-N. So a GGUF model behaves like the same model in safetensors,
token for token at f32 (`tests/test_llamacpp.py` checks greedy decoding against `fast`).

The tokenizer is the GGUF's own (llama.cpp's), the chat template its `tokenizer.chat_template`
metadata rendered in the same sandboxed Jinja as Hugging Face folders, and generation stops at
every end-of-generation token the vocabulary marks (EOS, EOT, `<|im_end|>`, `<|end|>`, ...).

LoRA adapters must be GGUF too (llama.cpp's `convert_lora_to_gguf.py` makes one from a PEFT
folder); a PEFT folder is refused with that hint. The context is the model's training context,
capped at `MAX_CONTEXT` tokens so a 128 k-context model does not reserve a 128 k KV cache.

`llama-cpp-python` compiles llama.cpp on install; it comes with the `gguf` extra
(`pip install 'companion-models[gguf]'`), which the test extra includes, and `companion doctor`
says whether it is installed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.engines.base import LocalEngine
from models.engines.codec import StreamDecoder, TextCodec
from models.errors import AdapterError, EngineError

__all__ = ["MAX_CONTEXT", "GGUFCodec", "LlamaCppEngine", "gguf_metadata", "llama_cpp_available"]

#: The most context a GGUF model is given by default (its KV cache is reserved up front).
MAX_CONTEXT = 8192


def llama_cpp_available() -> str | None:
    """The installed llama-cpp-python version, or None."""
    try:
        import llama_cpp
    except ImportError:
        return None
    return str(getattr(llama_cpp, "__version__", "unknown"))


def gguf_metadata(path: str | Path) -> dict[str, Any]:
    """The scalar metadata of a GGUF file (strings, numbers, booleans; arrays left out), read
    with the `gguf` package without loading any tensor."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path), "r")
    out: dict[str, Any] = {}
    for name, fld in reader.fields.items():
        if len(fld.types) != 1:  # arrays (the vocabulary, merges) are not needed here
            continue
        value = fld.contents()
        out[name] = value
    return out


def _as_bool(value: Any) -> bool:
    return str(value).lower() in ("true", "1")


class GGUFCodec(TextCodec):
    """`TextCodec` over llama.cpp's tokenizer and the GGUF's chat template."""

    def __init__(self, llm: Any, metadata: dict[str, Any], path: Path) -> None:
        import llama_cpp

        self.folder = path.parent
        self._llm = llm
        self._lib = llama_cpp
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self._fast = None
        self._hf = None
        self._ids: dict[str, int] | None = None

        def tid(key: str) -> int | None:
            value = metadata.get(f"tokenizer.ggml.{key}")
            return int(value) if value is not None and 0 <= int(value) < self._n_vocab else None

        self.bos_id, self.eos_id, self.pad_id = tid("bos_token_id"), tid("eos_token_id"), tid("padding_token_id")
        self.add_bos = _as_bool(metadata.get("tokenizer.ggml.add_bos_token", False)) and self.bos_id is not None
        self.config = {
            "bos_token": self.id_to_token(self.bos_id) if self.bos_id is not None else None,
            "eos_token": self.id_to_token(self.eos_id) if self.eos_id is not None else None,
        }
        self.stop_ids = {i for i in range(self._n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, i)}
        if self.eos_id is not None:
            self.stop_ids.add(self.eos_id)
        template = metadata.get("tokenizer.chat_template")
        self.template_source = str(template) if template else self._fallback_template()
        self._template = None
        self._chat_ids = None

    def _fallback_template(self) -> str:
        from models.engines.codec import _FALLBACK_TEMPLATE

        return _FALLBACK_TEMPLATE

    # --- ids -------------------------------------------------------------------------------

    def _vocab_index(self) -> dict[str, int]:
        if self._ids is None:
            get = self._lib.llama_vocab_get_text
            self._ids = {}
            for i in range(self._n_vocab):
                self._ids.setdefault(get(self._vocab, i).decode("utf-8", errors="replace"), i)
        return self._ids

    def token_id(self, token: str | None) -> int | None:
        if not token:
            return None
        return self._vocab_index().get(token)

    @property
    def vocab_size(self) -> int:
        return self._n_vocab

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)) if text else []
        if add_bos:
            prefix = self.prefix_ids
            if not (prefix and ids[: len(prefix)] == prefix):
                ids = prefix + ids
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        if not ids:
            return ""
        raw = self._llm.detokenize(list(ids), special=not skip_special_tokens)
        return bytes(raw).decode("utf-8", errors="replace")

    def id_to_token(self, token_id: int) -> str | None:
        if not 0 <= int(token_id) < self._n_vocab:
            return None
        return self._lib.llama_vocab_get_text(self._vocab, int(token_id)).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)

    def guidance_tokenizer(self) -> Any:
        """llguidance's tokenizer from the GGUF's token pieces (bytes) and llama.cpp's tokenizer."""
        cached = getattr(self, "_guidance", None)
        if cached is None:
            import ctypes

            from llguidance import LLTokenizer, TokenizerWrapper

            buf = ctypes.create_string_buffer(256)
            pieces = []
            lib, vocab = self._lib, self._vocab
            for i in range(self._n_vocab):
                n = lib.llama_token_to_piece(vocab, i, buf, len(buf), 0, True)
                piece = buf.raw[: max(0, n)]
                # llguidance marks special tokens with a leading 0xFF byte: they are never text
                special = lib.llama_vocab_is_control(vocab, i) or lib.llama_vocab_is_eog(vocab, i)
                pieces.append(b"\xff" + piece if special else piece)
            codec = self

            class _Pieces:
                eos_token_id = sorted(self.stop_ids)[0] if self.stop_ids else 0
                bos_token_id = self.bos_id
                tokens = pieces

                def __call__(self, text: bytes | str) -> list[int]:
                    raw = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
                    return codec.encode(raw)

            cached = LLTokenizer(TokenizerWrapper(_Pieces()), n_vocab=self._n_vocab, eos_token=sorted(self.stop_ids))
            self._guidance = cached
        return cached


class LlamaCppEngine(LocalEngine):
    """A GGUF model run by llama.cpp, decoded by the shared loop (see the module doc)."""

    name = "llamacpp"

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int | None = None,
        adapter: Path | None = None,
        n_ctx: int | None = None,
        threads_batch: int | None = None,
    ) -> None:
        try:
            import llama_cpp
        except ImportError as exc:
            raise EngineError(
                f"{path}: GGUF files need llama-cpp-python: pip install 'companion-models[gguf]' "
                "(it compiles llama.cpp, a few minutes)"
            ) from exc
        self.path = Path(path)
        if not self.path.is_file():
            raise EngineError(f"{path}: no such GGUF file")
        lora = None
        if adapter is not None:
            if Path(adapter).suffix != ".gguf":
                raise AdapterError(
                    f"{adapter}: a GGUF model takes a LoRA adapter in GGUF form (convert a PEFT folder with "
                    "llama.cpp's convert_lora_to_gguf.py), or merge it first: companion models export --format gguf"
                )
            lora = str(adapter)
        try:
            meta = gguf_metadata(self.path)
        except (ValueError, OSError, KeyError, IndexError) as exc:
            raise EngineError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from None
        arch = str(meta.get("general.architecture", "llama"))
        trained = int(meta.get(f"{arch}.context_length", 4096))
        ctx = min(trained, n_ctx or MAX_CONTEXT)
        self.threads = threads or max(1, min(8, os.cpu_count() or 1))
        self.threads_batch = threads_batch or self.threads
        self._lib = llama_cpp
        # An all-f32 file (what `--quant f32` exports) keeps an f32 KV cache too, so it decodes
        # like the same weights in safetensors; llama.cpp's default f16 cache otherwise.
        kv = {"type_k": 0, "type_v": 0} if int(meta.get("general.file_type", -1)) == 0 else {}
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=ctx,
                n_batch=min(512, ctx),
                n_threads=self.threads,
                n_threads_batch=self.threads_batch,
                logits_all=False,
                lora_path=lora,
                verbose=False,
                **kv,
            )
        except (ValueError, RuntimeError) as exc:  # llama-cpp-python's ways of saying "cannot load"
            raise EngineError(f"{path}: llama.cpp cannot load it ({exc})") from None
        self.metadata = meta
        self.architecture = arch
        self.parameters = int(llama_cpp.llama_model_n_params(self.llm.model))
        self.adapter = lora
        codec = GGUFCodec(self.llm, meta, self.path)
        super().__init__(codec, ctx)

    # --- primitives ----------------------------------------------------------------------

    def _logits(self) -> torch.Tensor:
        ptr = self._lib.llama_get_logits_ith(self.llm.ctx, -1)
        return torch.from_numpy(np.ctypeslib.as_array(ptr, shape=(self.codec.vocab_size,)).copy())

    def prefill(self, ids: list[int]) -> torch.Tensor:
        from models.errors import GenerationInputError

        if not ids:
            raise GenerationInputError("cannot prefill an empty prompt: give at least one token")
        self.llm.reset()
        self.llm.eval(ids)
        return self._logits()

    def step(self, token: int) -> torch.Tensor:
        from models.errors import GenerationInputError

        if not 0 <= token < self.codec.vocab_size:
            raise GenerationInputError(f"token id {token} is outside the vocabulary (0..{self.codec.vocab_size - 1})")
        self.llm.eval([token])
        return self._logits()

    def forward_full(self, ids: torch.Tensor) -> torch.Tensor:
        """Every position's logits, one token at a time through the cache (llama.cpp keeps only
        the last position's logits of a batch unless built with `logits_all`)."""
        if ids.dim() != 2:
            raise EngineError(f"forward_full takes a (batch, time) tensor, not {tuple(ids.shape)}")
        rows = []
        for row in ids.tolist():
            out = [self.prefill(row[:1])]
            out += [self.step(t) for t in row[1:]]
            rows.append(torch.stack(out))
        return torch.stack(rows)

    # --- reporting -----------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        extra = {
            "architecture": self.architecture,
            "parameters": self.parameters,
            "threads": self.threads,
            "threads_batch": self.threads_batch,
            "file": str(self.path),
            "llama_cpp": llama_cpp_available(),
        }
        if self.adapter:
            extra["adapter"] = self.adapter
        return {**super().info(), **extra}

    def close(self) -> None:
        self.llm.close()
