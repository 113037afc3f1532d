"""A small OpenAI-compatible server for tests: real HTTP on loopback, scripted replies.

`FakeOpenAIServer` runs `http.server.ThreadingHTTPServer` on an ephemeral port in a thread and
speaks just enough of the protocol (HTTP/1.1, chunked server-sent events) to exercise a client:

* `GET /v1/models`, `POST /v1/chat/completions` (streaming and not), `POST /v1/completions`
  (streaming, and `echo` + `logprobs` for scoring).
* The reply is `pieces`, one per event, cut to `max_tokens` (then `finish_reason: "length"`).
* Failure modes are attributes: `api_key` (401 without it, the bad key echoed back as OpenAI
  does), unknown models (404), `statuses` (answered first, in order: `[429]` = one 429 then
  success), `always_status`, `completions=False` (a chat-only server), `logprobs=False`,
  `ignore_stream` (answers chat with one JSON body), `delay_s` (before answering), and
  `stream_mode` ("cut" closes the connection mid-stream, "garbage" and "bad-json" send a bad
  event, "no-done" ends without `[DONE]`, "short" ends cleanly after two pieces).
* Every request is recorded in `requests`; errors inside the handler land in `errors`.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeOpenAIServer", "Recorded", "closed_port"]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None = None


@dataclass
class FakeOpenAIServer:
    models: list[str] = field(default_factory=lambda: ["fake-model", "other-model"])
    pieces: list[str] = field(default_factory=lambda: ["Hello", " there", ",", " friend", "."])
    prompt_tokens: int = 11
    api_key: str | None = None
    completions: bool = True
    logprobs: bool = True
    usage: bool = True
    statuses: list[int] = field(default_factory=list)
    always_status: int | None = None
    stream_mode: str = "ok"
    ignore_stream: bool = False
    delay_s: float = 0.0
    garbage_line: str = "this is not an event"
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"fake": self})
        self.errors: list[BaseException] = []
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._httpd.fake = self
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def record(self, request: Recorded) -> int | None:
        """Record a request; return a scripted failure status for it, if any."""
        with self._lock:
            self.requests.append(request)
            if self.statuses:
                return self.statuses.pop(0)
        return self.always_status


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Keep handler errors for the test; a client hanging up early is not one."""
        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, ConnectionError):
            self.fake.errors.append(error)


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tokens(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeOpenAIServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # --- routing -----------------------------------------------------------------------

    def do_GET(self) -> None:
        self._handle(None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self._handle(json.loads(raw) if raw else None)

    def _handle(self, body: dict[str, Any] | None) -> None:
        fake = self.fake
        time.sleep(fake.delay_s)
        status = fake.record(Recorded(self.command, self.path, dict(self.headers), body))
        if status is not None:
            extra = {"Retry-After": "0"} if status == 429 else {}
            self._json(status, {"error": {"message": f"scripted {status}"}}, extra)
            return
        if fake.api_key and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
            given = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            msg = f"Incorrect API key provided: {given or '(none)'}"
            self._json(401, {"error": {"message": msg, "code": "invalid_api_key"}})
            return
        routes = {
            ("GET", "/v1/models"): self._models,
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/completions"): self._completions if fake.completions else None,
        }
        route = routes.get((self.command, self.path))
        if route is None:
            self._send(404, b"404 page not found", "text/plain")
            return
        if body is not None and body.get("model") not in fake.models:
            msg = f"The model `{body.get('model')}` does not exist."
            self._json(404, {"error": {"message": msg, "type": "NotFoundError"}})
            return
        route(body or {})

    # --- endpoints -----------------------------------------------------------------------

    def _models(self, body: dict[str, Any]) -> None:
        data = [{"id": m, "object": "model", "owned_by": "fake"} for m in self.fake.models]
        self._json(200, {"object": "list", "data": data})

    def _chat(self, body: dict[str, Any]) -> None:
        pieces, finish = self._reply(body)
        if not body.get("stream") or self.fake.ignore_stream:
            message = {"role": "assistant", "content": "".join(pieces)}
            choice = {"index": 0, "message": message, "finish_reason": finish}
            self._json(200, {"object": "chat.completion", "choices": [choice], **self._usage()})
            return
        events = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
        events += [{"choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces]
        events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        self._stream(body, events)

    def _completions(self, body: dict[str, Any]) -> None:
        if body.get("echo"):
            self._echo(body)
            return
        pieces, finish = self._reply(body)
        events = [{"choices": [{"index": 0, "text": p}]} for p in pieces]
        events.append({"choices": [{"index": 0, "text": "", "finish_reason": finish}]})
        self._stream(body, events)

    def _echo(self, body: dict[str, Any]) -> None:
        """Echo the prompt with log-probabilities: -0.5 per character, first token None."""
        text = str(body.get("prompt", ""))
        tokens = _tokens(text)
        values = [None] + [-0.5 * len(t) for t in tokens[1:]]
        offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
        logprobs = {"tokens": tokens, "token_logprobs": values, "text_offset": offsets}
        choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": "length"}
        if self.fake.logprobs:
            choice["logprobs"] = logprobs
        self._json(200, {"object": "text_completion", "choices": [choice]})

    def _reply(self, body: dict[str, Any]) -> tuple[list[str], str]:
        limit = body.get("max_tokens")
        pieces = list(self.fake.pieces)
        if isinstance(limit, int) and limit < len(pieces):
            return pieces[:limit], "length"
        return pieces, "stop"

    def _usage(self) -> dict[str, Any]:
        if not self.fake.usage:
            return {}
        n = len(self.fake.pieces)
        total = self.fake.prompt_tokens + n
        tokens = {"prompt_tokens": self.fake.prompt_tokens, "completion_tokens": n}
        return {"usage": {**tokens, "total_tokens": total}}

    # --- wire ----------------------------------------------------------------------------

    def _stream(self, body: dict[str, Any], events: list[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        mode = self.fake.stream_mode
        if body.get("stream_options", {}).get("include_usage") and self._usage():
            events.append({"choices": [], **self._usage()})
        lines = [f"data: {json.dumps(e)}" for e in events]
        if mode in ("cut", "short"):
            for line in lines[:3]:
                self._chunk(line + "\n\n")
            if mode == "short":  # a complete HTTP body that stops before the reply does
                self.wfile.write(b"0\r\n\r\n")
                return
            self.wfile.flush()
            self.close_connection = True  # no terminating chunk: the body is incomplete
            return
        if mode in ("garbage", "bad-json"):
            bad = self.fake.garbage_line if mode == "garbage" else 'data: {"choices": [oops'
            lines = [*lines[:2], bad, *lines[2:]]
        if mode != "no-done":
            lines.append("data: [DONE]")
        for line in lines:
            self._chunk(line + "\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _send(self, status: int, data: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
