"""Special tokens, the companion emotion labels and the chat template of our models.

The embedded model's tokenizer reserves one token per role and per emotion, so a personality
can condition generation on an emotional state with a single control token. Models from
elsewhere (Llama, Qwen, an OpenAI-compatible server) keep their own template; emotion then
goes into the prompt as words.
"""

from __future__ import annotations

__all__ = [
    "BOS",
    "CHAT_TEMPLATE",
    "EMOTIONS",
    "EOS",
    "PAD",
    "ROLE_TOKENS",
    "SPECIAL_TOKENS",
    "TURN_END",
    "emotion_token",
]

BOS = "<|bos|>"
EOS = "<|endoftext|>"
PAD = "<|pad|>"
TURN_END = "<|end|>"
ROLE_TOKENS = {
    "system": "<|system|>",
    "user": "<|user|>",
    "assistant": "<|assistant|>",
}

#: The default label set of the emotional model (issue 5 maps GoEmotions' 28 labels onto it).
EMOTIONS: tuple[str, ...] = (
    "neutral",
    "joy",
    "romantic",
    "caring",
    "playful",
    "curious",
    "surprise",
    "sadness",
    "fear",
    "anger",
)


def emotion_token(label: str) -> str:
    """The control token for an emotion label, e.g. ``<|emotion:romantic|>``."""
    return f"<|emotion:{label}|>"


#: Spare tokens so later features can add control tokens without resizing the embedding.
RESERVED = tuple(f"<|reserved_{i}|>" for i in range(16))

SPECIAL_TOKENS: tuple[str, ...] = (
    EOS,
    BOS,
    PAD,
    TURN_END,
    *ROLE_TOKENS.values(),
    *(emotion_token(e) for e in EMOTIONS),
    *RESERVED,
)

# Each turn: role token, optional emotion token, content, end token, newline.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|' + message['role'] + '|>' -}}"
    "{%- if message.get('emotion') -%}{{- '<|emotion:' + message['emotion'] + '|>' -}}{%- endif -%}"
    "{{- message['content'] | trim -}}"
    "{{- '<|end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|assistant|>' -}}"
    "{%- if emotion is defined and emotion -%}{{- '<|emotion:' + emotion + '|>' -}}{%- endif -%}"
    "{%- endif -%}"
)
