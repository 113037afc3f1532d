"""Request bodies as SillyTavern 1.12 (Chat Completion → Custom) sends them, replayed against
`companion serve`, with a personality whose base model is a recording OpenAI-compatible server:
status, response shape, and what reached the model (the kept prompt holds the main prompt and
the character's card; the oldest turns went first)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.openai_fake_server import FakeOpenAIServer
from tests.serving.conftest import GRANT_ALL, RunningServer, start_server

MAIN = "Write Ada's next reply in a fictional chat between Ada and Sam. Write 1 reply only."
CARD = "[Ada's personality: a patient lighthouse keeper who writes letters; loves storms.]"


def st_body(turns: int, **changes: Any) -> dict[str, Any]:
    """What SillyTavern 1.12 sends for a chat: main prompt, card, examples, chat, jailbreak."""
    messages = [
        {"role": "system", "content": MAIN},
        {"role": "system", "content": CARD},
        {"role": "system", "content": "[Start a new Chat]"},
        {"role": "system", "name": "example_user", "content": "Do you like the sea?"},
        {"role": "system", "name": "example_assistant", "content": "*smiles* At night, when the lamp turns."},
    ]
    for i in range(turns):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": f"({i}) The storm kept on over the bay, waves on the rocks. " * 3})
    messages.append({"role": "user", "content": "What happens next?"})
    body = {
        "messages": messages, "model": "ada-remote", "temperature": 1, "frequency_penalty": 0, "presence_penalty": 0,
        "top_p": 1, "max_tokens": 300, "stream": False, "logit_bias": {}, "stop": ["\nSam:"], "n": 1,
    }  # fmt: skip
    return {**body, **changes}


@pytest.fixture
def recorder() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(models=["fake-model"]) as fake:
        yield fake


@pytest.fixture
def st_server(
    recorder: FakeOpenAIServer, tmp_path: Path, tiny_model_dir: Path, user_config: Any
) -> Iterator[RunningServer]:
    from companion.server import ServerSettings
    from models.personality.card import CharacterCard
    from models.personality.loader import write_personality_folder
    from tests.personality.conftest import v2_card

    folder = write_personality_folder(tmp_path / "ada", CharacterCard(v2_card()), base_model="base/remote")
    user_config(
        GRANT_ALL + "models:\n  base:\n"
        f"    remote: {{type: transformer, path: 'openai:fake-model', parameters: {{base_url: '{recorder.url}'}}}}\n"
        "    tiny: {type: transformer, path: '{tiny}'}\n"
        "  personality:\n"
        f"    ada-remote: {{type: personality, path: '{folder}', parameters: {{max_length: 16}}}}\n"
    )
    running = start_server(ServerSettings(host="127.0.0.1", port=0))
    yield running
    running.stop()


def sent(recorder: FakeOpenAIServer) -> list[dict[str, Any]]:
    return [r.body for r in recorder.requests if r.path.endswith("/chat/completions") and r.body]


def test_a_sillytavern_chat_reaches_the_model_as_sent(st_server: RunningServer, recorder: FakeOpenAIServer) -> None:
    r = httpx.post(st_server.base_url + "/chat/completions", json=st_body(4), timeout=60)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] == "Hello there, friend." and choice["companion"]["prompt"]["used"] == "client"
    (body,) = sent(recorder)
    contents = [m["content"] for m in body["messages"]]
    assert contents[:3] == [MAIN, CARD, "[Start a new Chat]"]
    assert contents[3] == "Sam: Do you like the sea?" or contents[3] == "User: Do you like the sea?"
    assert contents[4].startswith("Assistant: ") and contents[-1] == "What happens next?"
    assert body["stop"] == ["\nSam:"] and body["max_tokens"] == 300 and body["temperature"] == 1


def test_streaming_n_2_and_a_logit_bias_preset(st_server: RunningServer, recorder: FakeOpenAIServer) -> None:
    url = st_server.base_url + "/chat/completions"
    with httpx.stream("POST", url, json=st_body(2, stream=True), timeout=60) as s:
        events = [line[6:] for line in s.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["choices"][0]["finish_reason"] == "stop"
    r = httpx.post(url, json=st_body(2, n=2, seed=7), timeout=60)
    assert [c["index"] for c in r.json()["choices"]] == [0, 1]
    assert [b["seed"] for b in sent(recorder)[-2:]] == [7, 8]
    r = httpx.post(url, json=st_body(2, logit_bias={"17": -100, "42": 5}), timeout=60)
    assert r.status_code == 200 and sent(recorder)[-1]["logit_bias"] == {"17": -100.0, "42": 5.0}


def test_a_prompt_far_over_the_context_keeps_the_system_and_the_card(
    st_server: RunningServer, recorder: FakeOpenAIServer
) -> None:
    r = httpx.post(st_server.base_url + "/chat/completions", json=st_body(600), timeout=60)
    assert r.status_code == 200, r.text
    fit = r.json()["choices"][0]["companion"]["prompt"]["fit"]
    assert fit["changed"] and fit["dropped_messages"] > 100 and not fit["shortened_system"]
    assert r.headers["x-companion-prompt"].startswith("client; dropped_messages=")
    contents = [m["content"] for m in sent(recorder)[-1]["messages"]]
    assert contents[:2] == [MAIN, CARD] and contents[-1] == "What happens next?"
    assert "(599)" in contents[-2] and not any("(0)" in c for c in contents)  # the oldest turns went


def test_post_processing_that_folds_the_system_prompt_is_visible_and_selectable(
    st_server: RunningServer, recorder: FakeOpenAIServer
) -> None:
    """ "Prompt Post-Processing: Claude" sends the system parts inside the first user turn: the
    request looks like a bare chat, so the character's own prompt answers, and says so."""
    folded = st_body(2)
    system = "\n".join(m["content"] for m in folded["messages"] if m["role"] == "system")
    chat = [m for m in folded["messages"] if m["role"] != "system"]
    chat[0] = {"role": "user", "content": system + "\n" + chat[0]["content"]}
    url = st_server.base_url + "/chat/completions"
    r = httpx.post(url, json={**folded, "messages": chat}, timeout=60)
    assert r.json()["choices"][0]["companion"]["prompt"]["used"] == "card" and r.headers["x-companion-prompt"] == "card"
    r = httpx.post(url, json={**folded, "messages": chat, "companion": {"prompt": "client"}}, timeout=60)
    assert r.json()["choices"][0]["companion"]["prompt"]["used"] == "client"
    assert sent(recorder)[-1]["messages"][0]["content"].startswith(MAIN)


def test_images_reach_a_vision_model_and_a_text_model_says_no(
    st_server: RunningServer, recorder: FakeOpenAIServer
) -> None:
    """OpenAI image parts pass through to a remote model (an Ollama or vLLM vision model) as sent;
    the same request to a local text model is a 400 naming the message."""
    picture = "data:image/png;base64,iVBORw0KGgo="
    message = {"role": "user", "content": [{"type": "text", "text": "What is in this sketch?"},
                                          {"type": "image_url", "image_url": {"url": picture}}]}  # fmt: skip
    body = {"model": "remote", "messages": [{"role": "system", "content": "Describe images."}, message]}
    r = httpx.post(st_server.base_url + "/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    sent_content = sent(recorder)[-1]["messages"][-1]["content"]
    assert sent_content == [{"type": "text", "text": "What is in this sketch?"},
                            {"type": "image_url", "image_url": {"url": picture}}]  # fmt: skip
    r = httpx.post(st_server.base_url + "/chat/completions", json={**body, "model": "tiny"}, timeout=60)
    assert r.status_code == 400 and "reads text only" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "messages.1.content"
    bad = {**message, "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}
    r = httpx.post(st_server.base_url + "/chat/completions", json={**body, "messages": [bad]}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages.0.content.0.image_url"


def test_an_image_attached_in_a_saved_chat(st_server: RunningServer, recorder: FakeOpenAIServer) -> None:
    """The page's image attachment: sent to a vision model with the message, kept with it in the
    chat; a text model refuses before anything is stored."""
    picture = "data:image/png;base64,iVBORw0KGgo="
    api = st_server.url + "/api/chats"
    chat = httpx.post(api, json={"model": "remote"}, timeout=30).json()
    r = httpx.post(f"{api}/{chat['id']}/messages", json={"content": "What is this?", "images": [picture]}, timeout=60)
    assert r.status_code == 200, r.text
    assert sent(recorder)[-1]["messages"][-1]["content"][1] == {"type": "image_url", "image_url": {"url": picture}}
    stored = httpx.get(f"{api}/{chat['id']}", timeout=30).json()["messages"]
    assert stored[0]["details"]["images"] == [picture] and stored[1]["role"] == "assistant"
    text_only = httpx.post(api, json={"model": "tiny"}, timeout=30).json()
    r = httpx.post(f"{api}/{text_only['id']}/messages", json={"content": "Look", "images": [picture]}, timeout=60)
    assert r.status_code == 400 and "reads text only" in r.json()["error"]["message"]
    assert httpx.get(f"{api}/{text_only['id']}", timeout=30).json()["messages"] == []  # nothing was stored
    r = httpx.post(f"{api}/{chat['id']}/messages", json={"content": "x", "images": ["http://a/b.png"]}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "images.0"


def test_past_one_machine_the_card_prompt_and_the_emotion_reach_the_remote_engine(
    st_server: RunningServer, recorder: FakeOpenAIServer
) -> None:
    """The vLLM/SGLang path (docs/serving.md): with only user turns the character's own prompt is
    built here and sent to the remote server, the emotion in words, the sampler fields as asked."""
    body = {
        "model": "ada-remote", "messages": [{"role": "user", "content": "The storm is back."}],
        "companion": {"emotion": "romantic"}, "temperature": 0.7, "top_k": 20, "seed": 3, "max_tokens": 16,
    }  # fmt: skip
    r = httpx.post(st_server.base_url + "/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["companion"]["emotion"] == "romantic"
    sent_body = sent(recorder)[-1]
    system = sent_body["messages"][0]
    assert system["role"] == "system" and "Ada" in system["content"]  # the card, rendered here
    assert "romantic" in system["content"]  # the emotion, in words (no emotion tokens remotely)
    users = [m for m in sent_body["messages"] if m["role"] == "user"]
    assert users[-1] == {"role": "user", "content": "The storm is back."}  # post-history instructions may follow
    assert (sent_body["top_k"], sent_body["seed"]) == (20, 3)  # temperature: the card's traits shape it
    assert 0 < sent_body["temperature"] <= 0.7
