"""Our endpoints: feedback reaches the monitor, preferences and memory, versions, updates, metrics."""

from __future__ import annotations

from typing import Any

import httpx
import openai

from tests.serving.conftest import RunningServer


def _chat(client: Any) -> str:
    r = client.chat.completions.create(model="ada", messages=[{"role": "user", "content": "Hi Ada"}], seed=1)
    return r.choices[0].model_extra["companion"]["response_id"]


def test_feedback_reaches_the_monitor(client: Any, server: RunningServer) -> None:
    from models.monitoring.monitor import ModelPerformanceMonitor

    response_id = _chat(client)
    r = httpx.post(server.url + "/api/feedback", json={"response_id": response_id, "rating": 1})
    assert r.status_code == 200, r.text
    assert r.json() == {"recorded": "rating", "response_id": response_id, "model": "personality/ada"}
    metrics = ModelPerformanceMonitor().get_performance_metrics("ada", "all", category="personality")
    assert metrics["user_satisfaction"] == 100.0
    figures = httpx.get(server.url + "/api/monitor/personality/ada", params={"period": "all"}).json()
    assert figures["metrics"]["user_satisfaction"] == 100.0
    assert sum(b["requests"] for b in figures["series"]) >= 1


def test_feedback_on_an_unknown_answer_is_404(server: RunningServer) -> None:
    r = httpx.post(server.url + "/api/feedback", json={"response_id": "pr-nothing", "rating": 1})
    assert r.status_code == 404
    assert r.json()["error"]["param"] == "response_id"


def test_feedback_needs_exactly_one_kind(client: Any, server: RunningServer) -> None:
    response_id = _chat(client)
    r = httpx.post(server.url + "/api/feedback", json={"response_id": response_id})
    assert r.status_code == 400
    assert "exactly one" in r.json()["error"]["message"]


def test_preferences_round_trip_and_bad_values_change_nothing(server: RunningServer) -> None:
    url = server.url + "/api/me/preferences"
    r = httpx.put(url, json={"preferences": {"length": "short", "emoji": True}})
    assert r.status_code == 200, r.text
    assert httpx.get(url).json()["preferences"]["length"] == "short"
    bad = httpx.put(url, json={"preferences": {"length": "enormous"}})
    assert bad.status_code == 400
    assert httpx.get(url).json()["preferences"]["length"] == "short"


def test_memory_add_edit_delete(server: RunningServer) -> None:
    url = server.url + "/api/me/memory"
    fact = httpx.post(url, json={"text": "Has a cat called Ink", "kind": "person"}).json()
    assert [f["text"] for f in httpx.get(url).json()["facts"]] == ["Has a cat called Ink"]
    edited = httpx.put(f"{url}/{fact['id']}", json={"text": "Has two cats", "kind": "person"})
    assert edited.json()["text"] == "Has two cats"
    assert httpx.delete(f"{url}/{fact['id']}").status_code == 200
    assert httpx.get(url).json()["facts"] == []


def test_memory_and_preferences_reach_the_prompt(client: Any, server: RunningServer, monkeypatch: Any) -> None:
    from models.personality.loader import shared_manager

    engine = shared_manager().load_model("personality", "ada").base.engine
    seen: list[Any] = []
    original = engine.chat_text

    def spy(messages: Any, params: Any) -> Any:  # every chat prompt is rendered here
        seen.append(messages)
        return original(messages, params)

    monkeypatch.setattr(engine, "chat_text", spy)
    httpx.put(server.url + "/api/me/preferences", json={"preferences": {"length": "short"}})
    httpx.post(server.url + "/api/me/memory", json={"text": "Is writing a novel about lighthouses"})
    client.chat.completions.create(model="ada", messages=[{"role": "user", "content": "Any ideas for my novel?"}])
    prompts = [" ".join(m["content"] for m in messages) for messages in seen]
    assert any("lighthouses" in p and "Any ideas for my novel?" in p for p in prompts), prompts


def test_versions_rollback_and_updates_are_policy_checked(keyed_server: RunningServer) -> None:
    from companion.server.keys import create_key

    headers = {"Authorization": f"Bearer {create_key('ada')[0]}"}
    versions = httpx.get(keyed_server.url + "/api/models/personality/ada/versions", headers=headers)
    assert versions.status_code == 200, versions.text
    assert versions.json()["versions"] == []
    rollback = httpx.post(keyed_server.url + "/api/models/personality/ada/rollback", json={}, headers=headers)
    assert rollback.status_code == 403
    assert httpx.get(keyed_server.url + "/api/updates", headers=headers).status_code == 403


def test_the_local_owner_is_admin(server: RunningServer) -> None:
    assert httpx.get(server.url + "/api/me").json()["admin"] is True
    assert httpx.get(server.url + "/api/updates").json() == {"updates": [], "refused": []}
    r = httpx.post(server.url + "/api/models/personality/ada/rollback", json={})
    assert r.status_code == 409
    assert "no earlier version" in r.json()["error"]["message"] or "rollback" in r.json()["error"]["message"]


def test_metrics_speak_prometheus(client: Any, server: RunningServer) -> None:
    _chat(client)
    r = httpx.get(server.url + "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "companion_generation_latency_seconds" in r.text


def test_openapi_documents_every_endpoint(server: RunningServer) -> None:
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    for path in (
        "/v1/models",
        "/v1/chat/completions",
        "/v1/completions",
        "/api/feedback",
        "/api/me/preferences",
        "/api/me/memory",
        "/api/models/{category}/{name}/versions",
        "/api/models/{category}/{name}/rollback",
        "/api/updates",
        "/api/monitor/{category}/{name}",
        "/metrics",
        "/healthz",
    ):
        assert path in paths


def test_the_page_and_its_files_are_served(server: RunningServer) -> None:
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "<canvas" in page.text
    for name in ("app.js", "style.css"):
        assert httpx.get(f"{server.url}/static/{name}").status_code == 200
    assert httpx.get(server.url + "/static/..%2Fapp.py").status_code == 404


def test_client_system_prompt_is_honoured(client: Any) -> None:
    msgs = [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hello"}]
    r = client.chat.completions.create(model="ada", messages=msgs, max_tokens=4, seed=1)
    assert r.choices[0].model_extra["companion"]["emotion"] is None  # the card's prompt did not apply
    try:
        client.chat.completions.create(
            model="ada", messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}], max_tokens=4
        )
    except openai.BadRequestError as exc:
        assert exc.body["param"] == "messages.0.role"
    else:  # pragma: no cover
        raise AssertionError("a tool message was accepted")


def test_admin_rolls_back_a_version(server: RunningServer, tiny_model_dir: Any) -> None:
    from models.version_control import ModelVersionControl

    vc = ModelVersionControl()
    first = vc.create_version("tiny", "first", category="base", source=tiny_model_dir)
    second = vc.create_version("tiny", "second", category="base", source=tiny_model_dir)
    listed = httpx.get(server.url + "/api/models/base/tiny/versions").json()
    assert [v["version"] for v in listed["versions"]] == [first.version, second.version]
    assert listed["aliases"]["current"] == second.version
    r = httpx.post(server.url + "/api/models/base/tiny/rollback", json={"reason": "bad answers"})
    assert r.status_code == 200, r.text
    assert (r.json()["from_version"], r.json()["target_version"]) == (second.version, first.version)
    history = httpx.get(server.url + "/api/models/base/tiny/versions").json()["history"]
    assert history[-1]["to_version"] == first.version and history[-1]["reason"] == "bad answers"
    unknown = httpx.post(server.url + "/api/models/base/tiny/rollback", json={"version": "9.9.9"})
    assert unknown.status_code == 409


def test_a_personality_lists_its_emotions_and_scenarios(server: RunningServer) -> None:
    r = httpx.get(server.url + "/api/personalities/ada")
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["character"] == "Ada" and "romantic" in info["labels"] and "storm_night" in info["contexts"]
    assert info["emotion_steering"] >= 0 and info["emotion_control"] in ("token", "prompt")
    assert httpx.get(server.url + "/api/personalities/nobody").status_code == 404


def test_concurrent_preference_merges_all_land(server: RunningServer) -> None:
    """Issue 15 item 4: six concurrent PUTs with different keys kept one (30 of 30 rounds) when the
    merge was read-merge-write outside a transaction."""
    import threading

    url = server.url + "/api/me/preferences"
    rounds = [
        {"length": "short", "formality": "casual", "questions": "never", "reading_level": "simple",
         "name": "Ada", "pronouns": "she/her"},
        {"length": "long", "formality": "formal", "questions": "often", "reading_level": "advanced",
         "name": "Ben", "pronouns": "he/him"},
        {"length": "medium", "formality": "neutral", "questions": "sometimes", "reading_level": "standard",
         "name": "Cleo", "pronouns": "they/them"},
    ]  # fmt: skip
    for wanted in rounds:
        barrier = threading.Barrier(len(wanted))
        codes: list[int] = []

        def put(key: str, value: str, barrier: threading.Barrier, codes: list[int]) -> None:
            barrier.wait()
            codes.append(httpx.put(url, json={"preferences": {key: value}}, timeout=30).status_code)

        threads = [threading.Thread(target=put, args=(*kv, barrier, codes)) for kv in wanted.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes == [200] * len(wanted)
        stored = httpx.get(url).json()["preferences"]
        assert {k: stored.get(k) for k in wanted} == wanted


def test_a_refused_merge_changes_nothing() -> None:
    import pytest

    from models.personalization import load_preferences, save_preferences, update_preferences
    from models.personalization.preferences import PreferenceError, UserPreferences

    save_preferences("cleo", UserPreferences(length="short"))
    with pytest.raises(PreferenceError):
        update_preferences("cleo", lambda p: p.merged({"length": "enormous"}))
    assert load_preferences("cleo").length == "short"
    assert update_preferences("cleo", lambda p: p.merged({"tone": "warm"})).length == "short"
