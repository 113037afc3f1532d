"""The `openai` engine against a real OpenAI-compatible HTTP server on loopback."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from models.engines.base import SamplingParams
from models.engines.openai import OpenAIEngine
from models.errors import EngineError
from tests.openai_fake_server import FakeOpenAIServer, closed_port

SECRET = "sk-test-0123456789abcdef"
PIECES = ["Hello", " there", ",", " friend", "."]
HI = [{"role": "user", "content": "Hi!"}]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("COMPANION_HOME", str(tmp_path))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake
    assert fake.errors == []


@pytest.fixture
def make_engine(server: FakeOpenAIServer) -> Iterator[Callable[..., OpenAIEngine]]:
    engines: list[OpenAIEngine] = []

    def make(**kwargs: Any) -> OpenAIEngine:
        kwargs = {"model": "fake-model", "base_url": server.url, "retry_backoff_s": 0.001, **kwargs}
        engine = OpenAIEngine(**kwargs)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture
def engine(make_engine: Callable[..., OpenAIEngine]) -> OpenAIEngine:
    return make_engine()


def params(**changes: Any) -> SamplingParams:
    return SamplingParams(max_new_tokens=50).but(**changes)


# --- streaming ---------------------------------------------------------------------------


def test_stream_chat_yields_pieces_as_they_arrive(engine, server):
    pieces = list(engine.stream_chat(HI, params()))
    assert pieces == PIECES
    assert "".join(pieces) == "Hello there, friend."
    (request,) = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.body["messages"] == HI
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}


def test_sampling_parameters_are_forwarded(engine, server):
    p = params(temperature=0.3, top_p=0.9, max_new_tokens=40, seed=7, stop=("\n", "User:"))
    list(
        engine.stream_chat(HI, p.but(repetition_penalty=1.3, top_k=5, asked=frozenset({"repetition_penalty", "top_k"})))
    )
    body = server.requests[0].body
    assert body["model"] == "fake-model"
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.3, 0.9, 40)
    assert body["seed"] == 7
    assert body["stop"] == ["\n", "User:"]
    # not OpenAI's own API: the fields vLLM and llama.cpp's server take beyond OpenAI's go too, when asked
    assert (body["repetition_penalty"], body["top_k"]) == (1.3, 5)
    for absent in ("frequency_penalty", "presence_penalty", "min_p"):  # at their "off" values: not sent
        assert absent not in body
    list(engine.stream_chat(HI, p.but(presence_penalty=0.5, frequency_penalty=-0.5, min_p=0.05, top_k=9)))
    body = server.requests[1].body  # top_k and min_p not asked for by the call: model defaults stay home
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.5, -0.5)
    assert "min_p" not in body and "top_k" not in body


def test_openai_own_api_gets_only_its_own_fields() -> None:
    from models.engines.openai import openai_proper

    assert openai_proper("https://api.openai.com/v1") and openai_proper("https://me.openai.azure.com/openai")
    assert not openai_proper("http://localhost:11434/v1") and not openai_proper("http://127.0.0.1:8000/v1")


def test_no_seed_or_stop_when_unset(engine, server):
    list(engine.stream_chat(HI, params(seed=None, stop=())))
    assert "seed" not in server.requests[0].body
    assert "stop" not in server.requests[0].body


def test_extra_body_reaches_the_server(make_engine, server):
    engine = make_engine(extra_body={"repetition_penalty": 1.1, "top_k": 40})
    list(engine.stream_chat(HI, params()))
    body = server.requests[0].body
    assert body["repetition_penalty"] == 1.1
    assert body["top_k"] == 40


def test_emotion_becomes_a_system_instruction(engine, server):
    list(engine.stream_chat(HI, params(emotion="cheerful")))
    messages = server.requests[0].body["messages"]
    assert messages[0] == {
        "role": "system",
        "content": "Respond with a cheerful emotional tone.",
    }
    assert messages[1:] == HI


def test_emotion_is_merged_into_an_existing_system_message(engine, server):
    chat = [{"role": "system", "content": "You are Luna."}, *HI]
    list(engine.stream_chat(chat, params(emotion="sad")))
    messages = server.requests[0].body["messages"]
    assert len(messages) == 2
    assert messages[0]["content"] == "You are Luna.\n\nRespond with a sad emotional tone."
    assert chat[0]["content"] == "You are Luna."  # the caller's list is untouched


def test_usage_from_the_server_fills_stats(engine):
    list(engine.stream_chat(HI, params()))
    stats = engine.last_stats
    assert (stats.prompt_tokens, stats.completion_tokens) == (11, 5)
    assert stats.finish_reason == "stop"
    assert stats.time_to_first_token_s is not None
    assert stats.total_s >= stats.time_to_first_token_s > 0


def test_without_usage_pieces_are_counted(engine, server):
    server.usage = False
    list(engine.stream_chat(HI, params(max_new_tokens=3)))
    stats = engine.last_stats
    assert stats.completion_tokens == 3
    assert stats.prompt_tokens >= 1  # estimated
    assert stats.finish_reason == "length"


def test_a_server_that_ignores_stream_still_works(engine, server):
    server.ignore_stream = True
    assert list(engine.stream_chat(HI, params())) == ["Hello there, friend."]
    assert engine.last_stats.completion_tokens == 5
    assert engine.last_stats.finish_reason == "stop"


def test_zero_new_tokens_sends_nothing(engine, server):
    assert list(engine.stream_chat(HI, params(max_new_tokens=0))) == []
    assert server.requests == []


def test_bad_params_fail_before_any_request(engine, server):
    with pytest.raises(EngineError, match="top_p"):
        engine.stream_chat(HI, params(top_p=0))
    assert server.requests == []


def test_stream_uses_completions(engine, server):
    assert "".join(engine.stream("Once upon a time", params())) == "Hello there, friend."
    (request,) = server.requests
    assert request.path == "/v1/completions"
    assert request.body["prompt"] == "Once upon a time"
    assert engine.last_stats.completion_tokens == 5


def test_stream_falls_back_to_chat_on_a_chat_only_server_and_remembers(engine, server):
    server.completions = False
    assert "".join(engine.stream("Once upon a time", params())) == "Hello there, friend."
    assert server.paths() == ["/v1/completions", "/v1/chat/completions"]
    assert server.requests[1].body["messages"] == [{"role": "user", "content": "Once upon a time"}]
    list(engine.stream("Again", params()))
    assert server.paths()[2:] == ["/v1/chat/completions"]


def test_closing_a_stream_early_frees_the_connection(engine, server):
    stream = engine.stream_chat(HI, params())
    assert next(stream) == "Hello"
    stream.close()
    assert list(engine.stream_chat(HI, params())) == PIECES


def test_concurrent_generations_share_one_engine(engine, server):
    results: list[str] = []

    def run() -> None:
        results.append("".join(engine.stream_chat(HI, params())))

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert results == ["Hello there, friend."] * 6


# --- scoring -----------------------------------------------------------------------------


def test_score_sums_echoed_prompt_logprobs(engine, server):
    # The fake gives -0.5 per character of each token after the first.
    assert engine.score(["the cat sat", "", "one"]) == [-4.0, 0.0, 0.0]
    body = server.requests[0].body
    assert (body["echo"], body["logprobs"], body["max_tokens"]) == (True, 0, 0)
    assert len(server.requests) == 2  # the empty text costs no request


@pytest.mark.parametrize("setting", ["completions", "logprobs"])
def test_score_unsupported_says_which_servers_support_it(engine, server, setting):
    setattr(server, setting, False)
    with pytest.raises(EngineError, match=r"vLLM or llama\.cpp"):
        engine.score(["the cat sat"])


# --- models and info ---------------------------------------------------------------------


def test_list_models_and_info(make_engine, server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    server.api_key = SECRET
    engine = make_engine()
    assert engine.list_models() == ["fake-model", "other-model"]
    assert server.requests[0].headers["Authorization"] == f"Bearer {SECRET}"
    info = engine.info()
    assert info["engine"] == "openai"
    assert (info["base_url"], info["model"]) == (server.url, "fake-model")
    assert SECRET not in repr(info)


def test_key_from_the_configured_env_var(make_engine, server, monkeypatch):
    monkeypatch.setenv("OLLAMA_API_KEY", SECRET)
    server.api_key = SECRET
    engine = make_engine(api_key_env="OLLAMA_API_KEY")
    assert list(engine.stream_chat(HI, params())) == PIECES


def test_no_key_no_authorization_header(engine, server):
    list(engine.stream_chat(HI, params()))
    assert "Authorization" not in server.requests[0].headers


def test_credentials_in_base_url_are_not_shown(server):
    url = server.url.replace("http://", "http://user:hunter22@")
    engine = OpenAIEngine("fake-model", base_url=url, retry_backoff_s=0.001)
    assert "hunter22" not in repr(engine.info())
    server.stream_mode = "garbage"
    with pytest.raises(EngineError, match="malformed") as caught:
        list(engine.stream_chat(HI, params()))
    assert "hunter22" not in str(caught.value)
    engine.close()


def test_bad_arguments_are_all_reported():
    with pytest.raises(EngineError) as caught:
        OpenAIEngine("", base_url="localhost:11434", timeout=0, max_retries=-1)
    for name in ("model", "base_url", "timeout", "max_retries"):
        assert name in str(caught.value)


# --- errors ------------------------------------------------------------------------------


def test_wrong_key_names_the_env_var_and_hides_the_key(make_engine, server, monkeypatch):
    monkeypatch.setenv("MY_KEY", SECRET)
    server.api_key = "sk-the-right-one"
    engine = make_engine(api_key_env="MY_KEY")
    with pytest.raises(EngineError) as caught:
        list(engine.stream_chat(HI, params()))
    message = str(caught.value)
    assert "401" in message
    assert "MY_KEY" in message
    assert "Incorrect API key" in message  # the server's own words, redacted
    assert SECRET not in message
    assert len(server.requests) == 1  # not retried


def test_missing_key_says_none_was_sent(engine, server):
    server.api_key = SECRET
    with pytest.raises(EngineError, match=r"no API key was sent.*OPENAI_API_KEY"):
        engine.list_models()


def test_unknown_model_lists_the_available_ones(make_engine):
    engine = make_engine(model="llama3.1:70b")
    with pytest.raises(EngineError) as caught:
        list(engine.stream_chat(HI, params()))
    message = str(caught.value)
    assert "'llama3.1:70b' is not on the server" in message
    assert "fake-model, other-model" in message
    assert "ollama pull llama3.1:70b" in message


def test_unknown_model_is_not_a_reason_to_fall_back(make_engine, server):
    engine = make_engine(model="nope")
    with pytest.raises(EngineError, match="'nope' is not on the server"):
        list(engine.stream("Once", params()))
    assert server.paths() == ["/v1/completions", "/v1/models"]


def test_wrong_base_url_path_is_explained(make_engine, server):
    engine = make_engine(base_url=server.url.removesuffix("/v1"))
    with pytest.raises(EngineError, match=r"Check `base_url`.*/v1"):
        list(engine.stream_chat(HI, params()))


def test_429_is_retried_then_succeeds(engine, server):
    server.statuses = [429, 429]
    assert list(engine.stream_chat(HI, params())) == PIECES
    assert len(server.requests) == 3


def test_500_always_gives_up_after_max_retries(make_engine, server):
    server.always_status = 500
    engine = make_engine(max_retries=2)
    with pytest.raises(EngineError, match=r"500 .*after 3 attempts.*scripted 500"):
        list(engine.stream_chat(HI, params()))
    assert len(server.requests) == 3


def test_429_forever_says_rate_limited(make_engine, server):
    server.always_status = 429
    with pytest.raises(EngineError, match="429 \\(rate limited\\) after 2 attempts"):
        make_engine(max_retries=1).list_models()


def test_connection_closed_mid_stream(engine, server):
    server.stream_mode = "cut"
    got: list[str] = []
    with pytest.raises(EngineError, match="connection broke in the middle of the reply"):
        got.extend(engine.stream_chat(HI, params()))
    assert got == PIECES[:2]


@pytest.mark.parametrize(
    ("mode", "quoted"),
    [("garbage", "this is not an event"), ("bad-json", 'data: {"choices": [oops')],
)
def test_malformed_sse_quotes_the_line(engine, server, mode, quoted):
    server.stream_mode = mode
    with pytest.raises(EngineError, match="malformed server-sent event") as caught:
        list(engine.stream_chat(HI, params()))
    assert quoted in str(caught.value)


def test_malformed_sse_line_is_truncated(engine, server):
    server.stream_mode = "garbage"
    server.garbage_line = "x" * 5000
    with pytest.raises(EngineError) as caught:
        list(engine.stream_chat(HI, params()))
    assert "x" * 200 in str(caught.value)
    assert len(str(caught.value)) < 400


def test_finish_reason_without_done_is_complete(engine, server):
    server.stream_mode = "no-done"
    server.usage = False
    assert list(engine.stream_chat(HI, params())) == PIECES


def test_stream_ending_early_without_done_is_an_error(engine, server):
    server.stream_mode = "short"
    with pytest.raises(EngineError, match="ended without `data: \\[DONE\\]`"):
        list(engine.stream_chat(HI, params()))


def test_timeout_says_how_long_it_waited(make_engine, server):
    server.delay_s = 0.5
    with pytest.raises(EngineError, match=r"no answer within 0\.1 s; raise `timeout`"):
        make_engine(timeout=0.1).list_models()


def test_connection_refused_names_the_url_and_the_fix():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    engine = OpenAIEngine("fake-model", base_url=url, api_key=SECRET)
    with pytest.raises(EngineError) as caught:
        list(engine.stream_chat(HI, params()))
    engine.close()
    message = str(caught.value)
    assert url in message
    assert "ollama serve" in message
    assert SECRET not in message


def test_config_entry_on_an_openai_server_through_the_manager(server):
    """A user's config pointing at an OpenAI-compatible server works end to end."""
    import os
    from pathlib import Path

    from models.model_manager import ModelManager

    (Path(os.environ["COMPANION_HOME"]) / "config.yaml").write_text(
        "models:\n  base:\n    remote:\n      type: transformer\n      path: openai:fake-model\n"
        f"      parameters: {{base_url: '{server.url}', temperature: 0.2}}\n"
    )
    model = ModelManager().load_model("base", "remote")
    assert model.engine_name == "openai"
    assert model.chat([{"role": "user", "content": "hi"}], max_length=20) == "Hello there, friend."
    body = server.requests[-1].body
    assert body is not None and body["temperature"] == 0.2 and body["model"] == "fake-model"
