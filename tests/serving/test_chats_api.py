"""Saved chats over HTTP: send (streamed and not), regenerate into swipes, continue, edit,
export/import, card import and avatar; each user sees only their own chats."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.serving.conftest import RunningServer


def _events(r: httpx.Response) -> list[dict]:
    return [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]


def test_a_chat_is_greeted_answered_regenerated_swiped_continued_and_edited(server: RunningServer) -> None:
    from models.personalization import storage

    api = server.url + "/api/chats"
    chat = httpx.post(api, json={"model": "ada"}).json()
    assert chat["model"] == "personality/ada" and chat["messages"][0]["details"]["greeting"]
    greetings = httpx.get(server.url + "/api/personalities/ada").json()["greetings"]
    assert [s["text"] for s in chat["messages"][0]["swipes"]] == greetings and len(greetings) >= 2

    r = httpx.post(f"{api}/{chat['id']}/messages", json={"content": "Hello Ada", "stream": True, "seed": 1}, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _events(r)
    done = events[-1]
    assert done["done"] and any("delta" in e for e in events)
    assert "".join(e.get("delta", "") for e in events).strip() == done["message"]["text"]
    first_id = done["companion"]["response_id"]
    assert first_id and done["message"]["position"] == 2

    again = httpx.post(f"{api}/{chat['id']}/regenerate", json={"seed": 2}, timeout=60).json()
    assert again["message"]["swipe_id"] == 1 and len(again["message"]["swipes"]) == 2
    back = httpx.put(f"{api}/{chat['id']}/messages/2", json={"swipe_id": 0})
    assert back.status_code == 200 and back.json()["text"] == done["message"]["text"]
    more = httpx.post(f"{api}/{chat['id']}/continue", json={"max_tokens": 4}, timeout=60).json()
    assert more["message"]["text"].startswith(done["message"]["text"])
    edited = httpx.put(f"{api}/{chat['id']}/messages/2", json={"content": "An answer I wrote."}).json()
    assert edited["text"] == "An answer I wrote." and edited["swipes"][0]["original"]

    stored = httpx.get(f"{api}/{chat['id']}").json()
    assert [m["role"] for m in stored["messages"]] == ["assistant", "user", "assistant"]
    assert stored["title"] == "Hello Ada"
    assert httpx.get(api).json()["chats"][0]["id"] == chat["id"]
    storage.flush()
    kinds = sorted(row["kind"] for row in storage.list_feedback(user="local"))
    assert kinds == ["edit", "regenerate"], kinds

    # a second message after swiping records the kept answer; both appear as feedback
    httpx.post(f"{api}/{chat['id']}/regenerate", json={"seed": 5}, timeout=60)
    httpx.post(f"{api}/{chat['id']}/messages", json={"content": "Go on"}, timeout=60)
    storage.flush()
    assert "choice" in {row["kind"] for row in storage.list_feedback(user="local")}


def test_chat_errors_are_4xx_and_change_nothing(server: RunningServer) -> None:
    api = server.url + "/api/chats"
    assert httpx.post(api, json={"model": "nope"}).status_code == 404
    chat = httpx.post(api, json={"model": "tiny"}).json()
    assert chat["messages"] == []  # a plain model has no greeting
    r = httpx.post(f"{api}/{chat['id']}/regenerate", json={})
    assert r.status_code == 400 and "nothing to regenerate" in r.json()["error"]["message"]
    assert httpx.post(f"{api}/{chat['id']}/messages", json={"content": " "}).status_code == 400
    assert httpx.put(f"{api}/{chat['id']}/messages/7", json={"swipe_id": 0}).status_code == 400
    assert httpx.put(f"{api}/{chat['id']}/messages/0", json={}).status_code == 400
    r = httpx.get(f"{api}/0123456789abcdef")
    assert r.status_code == 404 and r.json()["error"]["code"] == "chat_not_found"
    r = httpx.post(f"{api}/import", json={"text": "{oops"})
    assert r.status_code == 400 and "line 1" in r.json()["error"]["message"]
    assert httpx.get(f"{api}/{chat['id']}").json()["messages"] == []


def test_chats_export_and_import_through_the_api(server: RunningServer) -> None:
    api = server.url + "/api/chats"
    chat = httpx.post(api, json={"model": "ada", "title": "Export me"}).json()
    httpx.post(f"{api}/{chat['id']}/messages", json={"content": "Hi"}, timeout=60)
    r = httpx.get(f"{api}/{chat['id']}/export", params={"format": "sillytavern"})
    assert r.status_code == 200 and "Export-me.jsonl" in r.headers["content-disposition"]
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert lines[0]["character_name"] == "Ada" and lines[2]["mes"] == "Hi"
    copy = httpx.post(f"{api}/import", json={"text": r.text}).json()  # model found by the character's name
    assert copy["model"] == "personality/ada" and len(copy["messages"]) == 3
    again = httpx.get(f"{api}/{copy['id']}/export", params={"format": "sillytavern"}).text
    assert [json.loads(x) for x in again.splitlines()][1:] == lines[1:]
    as_json = httpx.get(f"{api}/{chat['id']}/export").json()
    assert as_json["format"] == "companion-chat/1" and as_json["title"] == "Export me"
    assert httpx.post(f"{api}/import", json={"text": json.dumps(as_json)}).status_code == 200
    assert httpx.delete(f"{api}/{chat['id']}").status_code == 200
    assert httpx.get(f"{api}/{chat['id']}").status_code == 404


def test_each_user_sees_only_their_chats(keyed_server: RunningServer) -> None:
    from companion.server.keys import create_key

    ada, bob = (create_key(u)[0] for u in ("ada-user", "bob-user"))
    api = keyed_server.url + "/api/chats"
    mine = httpx.post(api, json={"model": "ada"}, headers={"Authorization": f"Bearer {ada}"}).json()
    theirs = {"Authorization": f"Bearer {bob}"}
    assert httpx.get(api, headers=theirs).json()["chats"] == []
    assert httpx.get(f"{api}/{mine['id']}", headers=theirs).status_code == 404
    r = httpx.post(f"{api}/{mine['id']}/messages", json={"content": "hi"}, headers=theirs)
    assert r.status_code == 404
    assert httpx.delete(f"{api}/{mine['id']}", headers=theirs).status_code == 404


def test_a_card_imported_in_the_page_is_a_personality_with_its_avatar(server: RunningServer, tmp_path: Path) -> None:
    from models.personality.card import CharacterCard
    from tests.personality.conftest import v2_card

    raw = v2_card()
    raw["data"]["name"] = "Mira"
    png = tmp_path / "mira.png"
    CharacterCard(raw).save(png)
    body = png.read_bytes()
    r = httpx.post(server.url + "/api/cards", params={"filename": "mira.png"}, content=body)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "mira"
    assert "mira" in [m["id"] for m in httpx.get(server.base_url + "/models").json()["data"]]
    avatar = httpx.get(server.url + "/api/personalities/mira/avatar")
    assert avatar.status_code == 200 and avatar.content[:8] == b"\x89PNG\r\n\x1a\n"
    again = httpx.post(server.url + "/api/cards", params={"filename": "mira.png"}, content=body)
    assert again.status_code == 409 and "replace=true" in again.json()["error"]["message"]
    r = httpx.post(server.url + "/api/cards", params={"filename": "bad.json"}, content=b'{"spec": "chara_card_v2"}')
    problem = r.json()["error"]["message"]
    assert r.status_code == 400 and problem.startswith("bad.json: spec_version") and "/tmp" not in problem
    r = httpx.post(server.url + "/api/cards", params={"filename": "card.exe"}, content=b"x")
    assert r.status_code == 400
