"""Issue 15 item 3 (DNS rebinding on the keyless loopback mode) and the chunked-body 413 of item 11.

Before the fix, `Host: attacker.example:PORT` was served as the local owner (memory read, model
rolled back), and a 2.6 MB chunked body was a 400 from the JSON parser instead of a 413.
"""

from __future__ import annotations

import httpx
import pytest

from tests.serving.conftest import RunningServer


@pytest.mark.parametrize(
    "host", ["attacker.example", "attacker.example:{port}", "192.168.1.5:{port}", "localhost.evil"]
)
def test_foreign_host_names_are_refused_in_local_mode(server: RunningServer, host: str) -> None:
    port = server.url.rsplit(":", 1)[1]
    h = {"Host": host.format(port=port)}
    for method, path in (("GET", "/api/me/memory"), ("GET", "/v1/models"), ("POST", "/api/me/memory")):
        r = httpx.request(method, server.url + path, headers=h, json={"text": "x"} if method == "POST" else None)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"]["code"] == "forbidden_host"


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "localhost", "127.0.0.1"])
def test_loopback_names_are_served(server: RunningServer, host: str) -> None:
    port = server.url.rsplit(":", 1)[1]
    r = httpx.get(server.url + "/v1/models", headers={"Host": host.format(port=port)})
    assert r.status_code == 200, r.text


def test_cross_origin_state_changes_are_refused(server: RunningServer) -> None:
    url = server.url + "/api/me/preferences"
    evil = {"Origin": "http://attacker.example:8000"}
    r = httpx.put(url, json={"preferences": {"length": "short"}}, headers=evil)
    assert r.status_code == 403
    assert httpx.put(url, json={"preferences": {"length": "short"}}, headers={"Origin": "null"}).status_code == 403
    same = {"Origin": server.url}
    assert httpx.put(url, json={"preferences": {"length": "short"}}, headers=same).status_code == 200
    assert httpx.get(url, headers=evil).status_code == 200  # reads: the browser's same-origin policy hides them


def test_keyed_mode_does_not_depend_on_the_host_name(keyed_server: RunningServer) -> None:
    r = httpx.get(keyed_server.url + "/v1/models", headers={"Host": "companion.internal"})
    assert r.status_code == 401  # the key decides, as behind any reverse proxy


def test_a_chunked_body_over_the_limit_is_413(server: RunningServer) -> None:
    def chunks():
        for _ in range(40):
            yield b"x" * 65536

    r = httpx.post(server.url + "/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "body_too_large"


def test_a_small_chunked_body_still_works(server: RunningServer) -> None:
    body = b'{"model": "ada", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}'
    r = httpx.post(
        server.url + "/v1/chat/completions",
        content=iter([body[:20], body[20:]]),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
