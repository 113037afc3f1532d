"""The official `openai` client against `companion serve` on loopback: list, chat, stream, errors."""

from __future__ import annotations

from typing import Any

import openai
import pytest


def test_models_lists_personalities_and_base_models(client: Any) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"ada", "tiny", "luna", "companion-base"} <= ids


def test_chat_in_card_mode_answers_with_a_response_id_and_emotion(client: Any) -> None:
    r = client.chat.completions.create(model="ada", messages=[{"role": "user", "content": "Hello there!"}], seed=1)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert isinstance(r.choices[0].message.content, str)
    extra = r.choices[0].model_extra["companion"]
    assert extra["response_id"].startswith("pr-")
    assert extra["emotion"]
    assert r.usage.completion_tokens >= 0


def test_stream_sends_chunks_and_ends(client: Any) -> None:
    stream = client.chat.completions.create(
        model="ada", messages=[{"role": "user", "content": "Tell me a story"}], stream=True, seed=2, max_tokens=8
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].choices[0].model_extra["companion"]["response_id"].startswith("pr-")


def test_seed_makes_answers_reproducible(client: Any) -> None:
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}]
    a = client.chat.completions.create(model="tiny", messages=msgs, seed=7, temperature=0.9, max_tokens=8)
    b = client.chat.completions.create(model="tiny", messages=msgs, seed=7, temperature=0.9, max_tokens=8)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_n_gives_several_choices(client: Any) -> None:
    r = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], n=2, seed=1, max_tokens=4
    )
    assert [c.index for c in r.choices] == [0, 1]


def test_stream_with_n_sends_every_choice_with_its_index(client: Any) -> None:
    msgs = [{"role": "user", "content": "Tell me a story"}]
    chunks = list(
        client.chat.completions.create(
            model="ada", messages=msgs, stream=True, n=2, seed=5, max_tokens=6, stream_options={"include_usage": True}
        )
    )
    texts: dict[int, str] = {0: "", 1: ""}
    finished = []
    for c in chunks:
        for choice in c.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finished.append(choice.index)
    assert finished == [0, 1] and chunks[-1].usage.completion_tokens > 0
    whole = client.chat.completions.create(model="ada", messages=msgs, n=2, seed=5, max_tokens=6)
    assert [c.message.content for c in whole.choices] == [texts[0].strip(), texts[1].strip()]  # same seeds


def test_companion_extension_sets_emotion_and_scenario(client: Any) -> None:
    msgs = [{"role": "user", "content": "Hello there!"}]
    r = client.chat.completions.create(
        model="ada", messages=msgs, seed=1, max_tokens=6, extra_body={"companion": {"emotion": "romantic"}}
    )
    assert r.choices[0].model_extra["companion"]["emotion"] == "romantic"
    r = client.chat.completions.create(
        model="ada", messages=msgs, seed=1, max_tokens=6, extra_body={"companion": {"context": "storm_night"}}
    )
    assert isinstance(r.choices[0].message.content, str)
    for bad, needle in (
        ({"emotion": "smug"}, "smug"),
        ({"context": "nowhere"}, "storm_night"),  # the error lists the valid scenarios
        ({"mood": "x"}, "mood"),
    ):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="ada", messages=msgs, max_tokens=4, extra_body={"companion": bad})
        assert needle in str(info.value.body), bad
    with pytest.raises(openai.BadRequestError, match="system message"):
        client.chat.completions.create(
            model="ada",
            messages=[{"role": "system", "content": "Be brief."}, *msgs],
            extra_body={"companion": {"emotion": "joy"}},
        )


def test_completions(client: Any) -> None:
    r = client.completions.create(model="tiny", prompt="The lighthouse", max_tokens=5, seed=1)
    assert r.object == "text_completion"
    assert isinstance(r.choices[0].text, str)
    stream = list(client.completions.create(model="tiny", prompt="The lighthouse", max_tokens=5, stream=True))
    assert stream[-1].choices[0].finish_reason in ("stop", "length")


def test_unknown_model_is_404(client: Any) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nobody", messages=[{"role": "user", "content": "Hi"}])
    assert info.value.body["code"] == "model_not_found"
    # the 404 does not list the server's models (a caller sees only its own, through /v1/models)
    assert "does not exist or you do not have access" in info.value.body["message"]
    assert "companion-base" not in info.value.body["message"] and "Known" not in info.value.body["message"]


def test_bad_values_are_400_naming_the_param(client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="ada", messages=[{"role": "user", "content": "Hi"}], max_tokens=100000)
    assert info.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="ada", messages=[{"role": "user", "content": "Hi"}], temperature=7)
    assert info.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="ada", messages=[])


def test_concurrent_requests_answer_as_if_sent_alone(client: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Tell me about ships"}]

    def ask(seed: int, stream: bool) -> str:
        if stream:
            chunks = client.chat.completions.create(
                model="tiny", messages=msgs, seed=seed, temperature=1.0, max_tokens=12, stream=True
            )
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        r = client.chat.completions.create(model="tiny", messages=msgs, seed=seed, temperature=1.0, max_tokens=12)
        return r.choices[0].message.content

    alone = [ask(seed, stream=False) for seed in range(6)]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda s: ask(s, stream=s % 2 == 0), range(6)))
    assert together == alone
    assert len(set(alone)) > 1  # the seeds differ, so must the answers


def test_stream_options_include_usage(client: Any) -> None:
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            max_tokens=4,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens >= 0 and chunks[-1].usage.prompt_tokens > 0


def test_logit_bias_is_applied_and_checked(client: Any, tiny_model_dir: Any) -> None:
    from models.engines.codec import TextCodec

    codec = TextCodec(tiny_model_dir)
    forced = next(t for t in range(codec.vocab_size) if t not in codec.stop_ids and codec.decode([t]).strip())
    r = client.completions.create(
        model="tiny", prompt="The lighthouse", max_tokens=3, temperature=0, logit_bias={str(forced): 100}
    )
    assert r.choices[0].text == codec.decode([forced] * 3)
    plain = client.completions.create(model="tiny", prompt="The lighthouse", max_tokens=1, temperature=0)
    ids = codec.encode(plain.choices[0].text)
    assert ids  # the tiny model's first greedy token is text
    banned = client.completions.create(
        model="tiny", prompt="The lighthouse", max_tokens=1, temperature=0, logit_bias={str(ids[0]): -100}
    )
    assert banned.choices[0].text != plain.choices[0].text
    for bad in ({"x": 1}, {"1": 101}, {str(i): 1 for i in range(301)}):
        with pytest.raises(openai.BadRequestError) as info:
            client.completions.create(model="tiny", prompt="Hi", max_tokens=1, logit_bias=bad)
        assert info.value.body["param"] == "logit_bias"
