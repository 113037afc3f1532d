"""`companion models export NAME --format gguf [--quant f32|q8_0] [--ollama]`.

    from models.export import export_gguf, write_modelfile
    path = export_gguf(builtin_dir("companion-chat"), Path("out/companion-chat.gguf"), quant="q8_0")

Writes a Llama, Mistral, Qwen2 or Qwen3 model folder (safetensors, our byte-level BPE
tokenizer or any `tokenizer.json` BPE with GPT-2 pre-tokenization) as one GGUF file with the
`gguf` package's writer, for llama.cpp, LM Studio and Ollama:

* **Metadata** from `config.json`: the `llama.*` hyper-parameters, `general.name`, the context
  length, and the tokenizer (`tokenizer.ggml.model = gpt2`, pre-tokenizer `gpt-2`, tokens,
  merges, token types: added special tokens are CONTROL, so they are never printed), the
  special ids (our models start every sequence with `<|endoftext|>`, so it is the BOS that
  `add_bos_token` prepends), and the chat template as `tokenizer.chat_template`.
* **Tensors** under llama.cpp's names (`token_embd`, `blk.N.attn_q`, ...). The query and key
  projections are permuted from the Hugging Face rotary layout (halves) back to the
  interleaved-pairs layout llama.cpp's `llama` architecture applies RoPE in (the same
  permutation llama.cpp's own converter does). Norms stay f32; with `q8_0`, every 2-D matrix
  is quantized to Q8_0 or rounded to BF16 (`gguf.quants`).
* A personality exports its base with its LoRA adapter merged (`models.adapters.merge_lora`).

`write_modelfile` writes an Ollama `Modelfile` beside it: `FROM` the file, `TEMPLATE` (our
chat format in Ollama's Go template syntax; for other templates Ollama reads
`tokenizer.chat_template` itself), `SYSTEM` (the character's system prompt), `PARAMETER`s
(temperature, top_p, top_k, repeat_penalty, num_ctx, stop). `ollama create luna -f Modelfile`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.errors import ExportTargetError

__all__ = ["QUANTS", "export_gguf", "ollama_template", "write_modelfile"]

QUANTS = ("f32", "f16", "bf16", "q8_0")


def _permute_rotary(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Hugging Face's rotary layout (each head's first half, then second half) to llama.cpp's
    interleaved pairs: row (h, i, r) <- (h, r, i) for pair index i and half r."""
    rows = w.shape[0]
    return w.reshape(heads, 2, rows // heads // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
}
#: Hugging Face model_type -> GGUF architecture. llama.cpp's `llama` applies RoPE to
#: interleaved pairs (Q and K rows get permuted on export); `qwen2` and `qwen3` use the
#: halves layout Hugging Face stores, so their rows stay as they are.
GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}


def _gguf_name(hf: str) -> str | None:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    parts = hf.split(".")
    if len(parts) >= 5 and parts[0] == "model" and parts[1] == "layers":
        module = ".".join(parts[3:-1])
        if module in _NAMES:
            return f"blk.{parts[2]}.{_NAMES[module]}.{parts[-1]}"
    return None


def _tokenizer(folder: Path, vocab_size: int) -> dict[str, Any]:
    """Tokens, merges, token types and special ids from `tokenizer.json` (byte-level BPE)."""
    path = folder / "tokenizer.json"
    if not path.exists():
        raise ExportTargetError(f"{folder}: no tokenizer.json (only byte-level BPE tokenizers export to GGUF here)")
    tok = json.loads(path.read_text(encoding="utf-8"))
    model = tok.get("model") or {}
    pre = json.dumps(tok.get("pre_tokenizer") or {})
    if model.get("type") != "BPE" or "ByteLevel" not in pre:
        raise ExportTargetError(f"{folder}: tokenizer is {model.get('type')} without byte-level pre-tokenization")
    vocab: dict[str, int] = dict(model["vocab"])
    added = {a["content"]: a for a in tok.get("added_tokens", [])}
    for content, a in added.items():
        vocab[content] = a["id"]
    size = max(max(vocab.values()) + 1, vocab_size)  # a model's head may be padded past its tokenizer
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [5] * size  # UNUSED until filled
    for text, i in vocab.items():
        tokens[i] = text
        a = added.get(text)
        types[i] = 1 if a is None else (3 if a.get("special") else 4)  # NORMAL, CONTROL, USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return {"tokens": tokens, "types": types, "merges": merges, "ids": vocab}


def _token_id(cfg: dict[str, Any], ids: dict[str, int], key: str) -> int | None:
    value = cfg.get(key)
    if isinstance(value, dict):
        value = value.get("content")
    return ids.get(value) if isinstance(value, str) else None


def _gguf_arch(folder: Path, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The GGUF architecture name and RoPE settings, or why this model cannot be exported."""
    from models.engines.llama.spec import rope_settings

    arch = GGUF_ARCH.get(str(config.get("model_type")))
    if arch is None:
        raise ExportTargetError(
            f"{folder}: GGUF export handles {', '.join(sorted(GGUF_ARCH))} models, not "
            f"{config.get('model_type')!r}; llama.cpp's convert_hf_to_gguf.py covers the rest"
        )
    rope = rope_settings(config)
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ExportTargetError(f"{folder}: RoPE scaling {rope.get('rope_type')!r} is not exported yet")
    return arch, rope


def _write_shape(w: Any, config: dict[str, Any], rope: dict[str, Any]) -> None:
    """The model's hyperparameters, as llama.cpp's loader reads them."""
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    w.add_context_length(int(config.get("max_position_embeddings", 2048)))
    w.add_embedding_length(hidden)
    w.add_block_count(int(config["num_hidden_layers"]))
    w.add_feed_forward_length(int(config["intermediate_size"]))
    w.add_head_count(heads)
    w.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    w.add_rope_dimension_count(head_dim)
    if head_dim != hidden // heads:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))


def _write_tokenizer(w: Any, folder: Path, vocab_size: int) -> None:
    """The byte-level BPE vocabulary and merges, the special tokens, our emotion-control flag and
    the chat template (the folder's `chat_template.jinja` first, else tokenizer_config.json's)."""
    tok = _tokenizer(folder, vocab_size)
    tok_cfg_path = folder / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text()) if tok_cfg_path.exists() else {}
    w.add_vocab_size(len(tok["tokens"]))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tok["tokens"])
    w.add_token_types(tok["types"])
    w.add_token_merges(tok["merges"])
    ids = tok["ids"]
    bos = _token_id(tok_cfg, ids, "bos_token")
    eos = _token_id(tok_cfg, ids, "eos_token")
    pad = _token_id(tok_cfg, ids, "pad_token")
    if not tok_cfg.get("add_bos_token") and eos is not None:
        bos = eos  # our models' sequences start with the document separator (GPT-2 style)
    if bos is not None:
        w.add_bos_token_id(bos)
        w.add_add_bos_token(True)
    if eos is not None:
        w.add_eos_token_id(eos)
    if pad is not None:
        w.add_pad_token_id(pad)
    end = ids.get("<|end|>")
    if end is not None:
        w.add_eot_token_id(end)
    companion = folder / "companion.json"
    if companion.exists() and json.loads(companion.read_text()).get("emotion_control"):
        w.add_bool("companion.emotion_control", True)  # trained on <|emotion:X|> tokens
    template = folder / "chat_template.jinja"
    if template.exists():
        w.add_chat_template(template.read_text())
    elif isinstance(tok_cfg.get("chat_template"), str):
        w.add_chat_template(tok_cfg["chat_template"])


def _write_tensors(w: Any, folder: Path, tensors: Any, config: dict[str, Any], arch: str, quant: str) -> None:
    """Every weight under its GGUF name in `quant` (vectors stay f32; a tied head is not
    written twice; Llama's Q and K rows permuted to llama.cpp's rotary layout)."""
    import gguf

    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    tied = "lm_head.weight" not in tensors or bool(config.get("tie_word_embeddings"))
    for hf_name in list(tensors):
        gname = _gguf_name(hf_name)
        if gname is None:
            if "rotary_emb" in hf_name:
                continue
            raise ExportTargetError(f"{folder}: tensor {hf_name!r} has no GGUF name")
        if gname == "output.weight" and tied:
            continue
        t = tensors[hf_name].float()
        if arch == "llama" and gname.endswith(("attn_q.weight", "attn_q.bias")):
            t = _permute_rotary(t, heads)
        elif arch == "llama" and gname.endswith(("attn_k.weight", "attn_k.bias")):
            t = _permute_rotary(t, kv_heads)
        data = t.numpy()
        if data.ndim == 1 or quant == "f32":
            w.add_tensor(gname, np.ascontiguousarray(data, dtype=np.float32))
        elif quant == "f16":
            w.add_tensor(gname, data.astype(np.float16))
        else:
            kind = gguf.GGMLQuantizationType.Q8_0 if quant == "q8_0" else gguf.GGMLQuantizationType.BF16
            packed = gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), kind)
            w.add_tensor(gname, packed, raw_dtype=kind)


def export_gguf(
    folder: str | Path,
    output: str | Path,
    *,
    quant: str = "f32",
    adapter: str | Path | None = None,
    name: str | None = None,
) -> Path:
    """Write the model in `folder` (with `adapter` merged) as the GGUF file `output`."""
    import gguf

    from models.adapters import merge_lora
    from models.engines.llama.weights import load_tensors
    from models.fileio import atomic_path

    folder, output = Path(folder), Path(output)
    if quant not in QUANTS:
        raise ExportTargetError(f"unknown quantization {quant!r}: use one of {', '.join(QUANTS)}")
    config = json.loads((folder / "config.json").read_text())
    arch, rope = _gguf_arch(folder, config)
    tensors = load_tensors(folder)
    if adapter is not None:
        merge_lora(tensors, Path(adapter))
    ftype = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:  # a failure midway leaves no half-written file at `output`
        w = gguf.GGUFWriter(str(tmp), arch)
        w.add_name(name or folder.name)
        w.add_file_type(ftype[quant])
        _write_shape(w, config, rope)
        _write_tokenizer(w, folder, int(config["vocab_size"]))
        _write_tensors(w, folder, tensors, config, arch, quant)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return output


def ollama_template(chat_template: str) -> str | None:
    """Our chat format as an Ollama Go template (None for other templates: Ollama then reads
    `tokenizer.chat_template` from the GGUF itself)."""
    if "'<|' + message['role'] + '|>'" not in chat_template:
        return None
    return (
        "{{- if .System }}<|system|>{{ .System }}<|end|>\n{{ end }}"
        '{{- range .Messages }}{{- if ne .Role "system" }}<|{{ .Role }}|>{{ .Content }}<|end|>\n{{ end }}{{- end }}'
        "<|assistant|>"
    )


def write_modelfile(
    gguf_path: Path,
    folder: Path,
    *,
    system: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> Path:
    """An Ollama `Modelfile` beside `gguf_path` (see the module doc)."""
    from models.fileio import atomic_write_bytes

    lines = [f"FROM ./{gguf_path.name}"]
    template = folder / "chat_template.jinja"
    go = ollama_template(template.read_text()) if template.exists() else None
    if go is not None:
        lines.append(f'TEMPLATE """{go}"""')
    if system:
        lines.append(f'SYSTEM """{system.replace(chr(34) * 3, chr(39) * 3)}"""')
    p = parameters or {}
    names = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "repetition_penalty": "repeat_penalty"}
    for ours, theirs in names.items():
        if p.get(ours) is not None:
            lines.append(f"PARAMETER {theirs} {p[ours]}")
    config = json.loads((folder / "config.json").read_text())
    lines.append(f"PARAMETER num_ctx {int(config.get('max_position_embeddings', 2048))}")
    if go is not None:
        lines.append('PARAMETER stop "<|end|>"')
        lines.append('PARAMETER stop "<|user|>"')
    path = gguf_path.with_name("Modelfile")
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
    return path
