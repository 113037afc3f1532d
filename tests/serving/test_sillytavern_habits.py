"""What SillyTavern (Chat Completion → Custom) sends that once broke: a cleared key, a base URL
with a trailing slash, top_p 0."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import httpx

from tests.serving.conftest import RunningServer


def get(url: str, authorization: str) -> tuple[int, dict]:
    """GET with the header exactly as given (httpx refuses the trailing space browsers send)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", parts.path, headers={"Authorization": authorization})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


def test_a_cleared_key_counts_as_no_key_in_local_mode(server: RunningServer) -> None:
    for header in ("Bearer ", "Bearer undefined", "Bearer null"):
        status, body = get(server.base_url + "/models", header)
        assert status == 200, (header, body)


def test_a_cleared_key_is_named_in_keyed_mode(keyed_server: RunningServer) -> None:
    r = httpx.get(keyed_server.base_url + "/models", headers={"Authorization": "Bearer undefined"})
    assert r.status_code == 401 and "received 'Bearer undefined'" in r.json()["error"]["message"]
    status, body = get(keyed_server.base_url + "/models", "Bearer ")
    assert status == 401 and "'Bearer' with no key" in body["error"]["message"]
    r = httpx.get(keyed_server.base_url + "/models", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and "'Basic'" in r.json()["error"]["message"]


def test_a_base_url_with_a_trailing_slash_works(server: RunningServer) -> None:
    assert httpx.get(server.url + "/v1//models").status_code == 200
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    r = httpx.post(server.url + "/v1//chat/completions", json=body, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"


def test_top_p_zero_is_greedy(server: RunningServer) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6}
    greedy = httpx.post(server.base_url + "/chat/completions", json={**body, "temperature": 0}, timeout=60)
    zero = httpx.post(server.base_url + "/chat/completions", json={**body, "top_p": 0, "seed": 4}, timeout=60)
    assert zero.status_code == 200, zero.text
    assert zero.json()["choices"][0]["message"] == greedy.json()["choices"][0]["message"]


def test_sampler_fields_are_honoured_and_unsupported_ones_refused(server: RunningServer) -> None:
    url = server.base_url + "/chat/completions"
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "seed": 3}
    # SillyTavern always sends the penalties; its "Additional Parameters" add top_k, min_p, repetition_penalty
    st = {"presence_penalty": 2.0, "frequency_penalty": 2.0, "top_k": 1, "min_p": 0.1, "repetition_penalty": 1.3}
    plain = httpx.post(url, json=body, timeout=60).json()["choices"][0]["message"]["content"]
    tuned = httpx.post(url, json={**body, **st}, timeout=60)
    assert tuned.status_code == 200, tuned.text
    greedy = httpx.post(url, json={**body, "temperature": 0, "repetition_penalty": 1.3, "presence_penalty": 2.0,
                                    "frequency_penalty": 2.0}, timeout=60)  # fmt: skip
    assert tuned.json()["choices"][0]["message"] == greedy.json()["choices"][0]["message"]  # top_k 1 = greedy
    assert isinstance(plain, str)
    bad = httpx.post(url, json={**body, "presence_penalty": 3}, timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "presence_penalty"
    limited = httpx.post(url, json={**{k: v for k, v in body.items() if k != "max_tokens"}, "max_completion_tokens": 2})
    assert limited.status_code == 200 and limited.json()["usage"]["completion_tokens"] <= 2
    for extra, param in (({"modalities": ["text", "audio"]}, "modalities"),):
        r = httpx.post(url, json={**body, **extra}, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (extra, r.text)
        assert r.json()["error"]["code"] == "unsupported_parameter"
    r = httpx.post(url, json={**body, "response_format": {"type": "yaml"}}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format"
    ok = {"response_format": {"type": "text"}, "tools": [], "tool_choice": "none", "logprobs": False, "store": False,
          "metadata": {"a": "b"}, "modalities": ["text"]}  # fmt: skip
    assert httpx.post(url, json={**body, **ok}, timeout=60).status_code == 200


def _sillytavern_chat(turns: int) -> list[dict]:
    """The shape SillyTavern sends: main prompt, card, example dialogue as named system messages,
    the chat, and its final instruction."""
    msgs = [
        {"role": "system", "content": "Write Ada's next reply in a fictional chat between Ada and Sam."},
        {"role": "system", "content": "Ada is a patient lighthouse keeper who writes letters."},
        {"role": "system", "name": "example_user", "content": "Do you like the sea?"},
        {"role": "system", "name": "example_assistant", "content": "I love it at night, when the lamp turns."},
    ]
    for i in range(turns):
        role = "user" if i % 2 == 0 else "assistant"
        msgs.append({"role": role, "content": f"Message {i} about the storm and the ships at sea tonight."})
    return [*msgs, {"role": "user", "content": "What happens next?"}]


def test_a_prompt_over_the_context_keeps_the_system_and_card_and_says_so(server: RunningServer) -> None:
    body = {"model": "ada", "messages": _sillytavern_chat(200), "max_tokens": 4, "seed": 1}
    r = httpx.post(server.base_url + "/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    prompt = r.json()["choices"][0]["companion"]["prompt"]
    assert prompt["used"] == "client" and prompt["fit"]["changed"]
    assert prompt["fit"]["dropped_messages"] > 100 and not prompt["fit"]["shortened_system"]
    assert prompt["fit"]["tokens_kept"] <= prompt["fit"]["budget"]
    assert r.headers["x-companion-prompt"].startswith("client; dropped_messages=")
    with httpx.stream("POST", server.base_url + "/chat/completions", json={**body, "stream": True}, timeout=60) as s:
        assert s.headers["x-companion-prompt"].startswith("client; dropped_messages=")
        s.read()
    small = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    short = httpx.post(server.base_url + "/chat/completions", json={**body, "messages": small}, timeout=60)
    assert short.headers["x-companion-prompt"] == "client" and not short.json()["choices"][0]["companion"][
        "prompt"]["fit"]["changed"]  # fmt: skip


def test_which_prompt_answers_is_said_and_can_be_chosen(server: RunningServer) -> None:
    url = server.base_url + "/chat/completions"
    bare = {"model": "ada", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}
    r = httpx.post(url, json=bare, timeout=60)
    assert r.json()["choices"][0]["companion"]["prompt"]["used"] == "card" and r.headers["x-companion-prompt"] == "card"
    r = httpx.post(url, json={**bare, "companion": {"prompt": "client"}}, timeout=60)
    assert r.json()["choices"][0]["companion"]["prompt"]["used"] == "client"
    folded = {**bare, "messages": _sillytavern_chat(2), "companion": {"prompt": "card"}}
    r = httpx.post(url, json=folded, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["companion"]["prompt"]["used"] == "card"
    r = httpx.post(url, json={**bare, "model": "tiny", "companion": {"prompt": "card"}}, timeout=60)
    assert r.status_code == 400 and "needs a personality" in r.json()["error"]["message"]
