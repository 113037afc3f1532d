"""`TextCodec` encodes a long text in the pieces between its added tokens, each remembered (a
chat prompt repeats the card and the earlier turns every turn): the ids must be the ones the
tokenizer gives the whole text, and a tokenizer whose added tokens strip spaces is encoded whole."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from models.engines.codec import TextCodec
from models.paths import builtin_dir

SPECIALS = ["<|user|>", "<|end|>", "<|system|>", "<|assistant|>", "<|emotion:joy|>", "<|endoftext|>", "<|end|>\n"]
WORDS = ["Hello", " there", "\n", "  ", "Luna", "'s", " tea", ",", " <|", "|>", "<|end", "end|>", " ", "é", "🙂", "\t"]


def _texts(n: int) -> list[str]:
    rng = random.Random(0)
    return [
        "".join(rng.choice(SPECIALS) if rng.random() < 0.2 else rng.choice(WORDS) for _ in range(rng.randint(20, 80)))
        for _ in range(n)
    ]


def test_pieces_between_added_tokens_encode_as_the_whole_text() -> None:
    codec = TextCodec(builtin_dir("companion-chat"))
    assert codec._cuts is not None
    for text in _texts(400):
        assert codec.encode(text) == list(codec._encode_whole(text)), text
    turns = [{"role": "system", "content": "You are Luna, who keeps a lighthouse. " * 10},
             {"role": "user", "content": "Tell me about the sea at night."}]  # fmt: skip
    prompt = codec.render_chat(turns)
    assert codec.encode(prompt) == list(codec._encode_whole(prompt)) == codec.encode(prompt)  # again, remembered


def test_a_tokenizer_whose_added_tokens_strip_spaces_is_encoded_whole(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(builtin_dir("companion-chat"), folder, ignore=shutil.ignore_patterns("*.safetensors"))
    data = json.loads((folder / "tokenizer.json").read_text())
    data["added_tokens"][3]["rstrip"] = True  # "<|end|>" eats the newline after it
    (folder / "tokenizer.json").write_text(json.dumps(data))
    codec = TextCodec(folder)
    assert codec._cuts is None
    text = "<|user|>Hi there, how are you today? I hope the sea is calm.<|end|>\n<|assistant|>Fine."
    assert codec.encode(text) == list(codec._fast.encode(text, add_special_tokens=False).ids)
