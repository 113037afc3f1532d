"""The `openai` engine: any OpenAI-compatible HTTP server as a generation engine.

Ollama, vLLM, llama.cpp's server, LM Studio and OpenAI itself all speak the same protocol, so
one small client covers them. It talks to the server with `httpx` directly (no SDK at runtime):

* `stream_chat` posts to `{base_url}/chat/completions` with `stream: true` and yields each
  `choices[0].delta.content` of the server-sent events until `data: [DONE]`.
* `stream` (plain continuation) posts to `{base_url}/completions`. Chat-only servers answer that
  with 404/405; the engine then sends the prompt as one user message to the chat endpoint and
  remembers the choice for later calls.
* `score` asks `/completions` to echo the prompt with its log-probabilities (`echo`, `logprobs`,
  `max_tokens: 0`), which vLLM and llama.cpp's server support; other servers get a clear error.

Sampling: `temperature`, `top_p`, `max_tokens`, `seed`, `stop`, `presence_penalty` and
`frequency_penalty` are sent; `top_k`, `min_p` and `repetition_penalty` have no field in OpenAI's
API: when a call sets them itself (a client's request, not the model's defaults) they are sent
under the names vLLM, llama.cpp's server and LM Studio take (Ollama's `/v1` ignores them),
except to OpenAI's own API (`api.openai.com`, Azure OpenAI), which refuses unknown fields.
`extra_body`, a dict merged into every request body, sets them (or anything else a server
takes) for every call.
External models have no emotion tokens: `params.emotion` becomes a short system instruction.

Errors become `EngineError`s that say what to do (start the server, set the key's environment
variable, pull the model). 429 and 5xx answers are retried with exponential backoff (honouring
`Retry-After`) before any text is yielded; nothing is retried once a reply has started. The API
key is never put into a message or `info()`: anything echoed from the server is redacted.

The engine keeps no per-request state, so one instance serves concurrent generations: the
`httpx.Client` is thread-safe and `self.lock` is never held. `last_stats` is the stats object of
the most recently *started* generation.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from models.engines.base import Engine, GenerationStats, SamplingParams
from models.errors import EngineError

__all__ = ["OpenAIEngine"]

_CLIP = 200  # characters of a bad line or server message quoted in an error
_MAX_RETRY_AFTER_S = 30.0
_SCORE_SERVERS = (
    "scoring needs a server whose /completions endpoint echoes prompt log-probabilities "
    "(`echo: true` with `logprobs`), such as vLLM or llama.cpp's server; Ollama, LM Studio "
    "and OpenAI's chat models do not support it"
)


class _HTTPError(EngineError):
    """An HTTP error answer (private: callers see `EngineError`)."""

    def __init__(self, message: str, status: int, endpoint_missing: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.endpoint_missing = endpoint_missing


class OpenAIEngine(Engine):
    """A generation engine backed by an OpenAI-compatible server at `base_url`."""

    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str = "http://localhost:11434/v1",
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 2,
        context_length: int = 8192,
        transport: httpx.BaseTransport | None = None,
        *,
        extra_body: dict[str, Any] | None = None,
        retry_backoff_s: float = 0.5,
    ) -> None:
        super().__init__()
        _check_args(model, base_url, timeout, max_retries, context_length, retry_backoff_s)
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.retry_backoff_s = float(retry_backoff_s)
        self.extra_body = dict(extra_body or {})
        self._context_length = int(context_length)
        self._api_key = api_key if api_key is not None else os.environ.get(api_key_env) or None
        self._shown_url = _shown(httpx.URL(self.base_url))
        self._text_via_chat = False  # set once /completions turns out to be missing
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(self.timeout), transport=transport)

    # --- Engine API ------------------------------------------------------------------------

    @property
    def context_length(self) -> int:
        return self._context_length

    def info(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "base_url": self._shown_url,
            "model": self.model,
            "context_length": self._context_length,
        }

    def close(self) -> None:
        self._client.close()

    def list_models(self) -> list[str]:
        """The model ids the server offers (`GET {base_url}/models`)."""
        data = self._json(self._request("GET", "/models"))
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise self._error(f"{self._shown_url}/models did not return a model list")
        return [str(m["id"]) for m in items if isinstance(m, dict) and "id" in m]

    def stream_chat(self, messages: Sequence[dict[str, str]], params: SamplingParams) -> Iterator[str]:
        params.check()
        return self._chat(list(messages), params)

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        params.check()
        return self._text(prompt, params)

    def score(self, texts: Sequence[str]) -> list[float]:
        return [self._score_one(text) for text in texts]

    # --- generation ------------------------------------------------------------------------

    def _chat(self, messages: list[dict[str, str]], params: SamplingParams) -> Iterator[str]:
        if params.emotion:
            messages = _with_emotion(messages, params.emotion)
        body = {**self._sampling_body(params), "messages": messages}
        if params.continue_final and messages and messages[-1].get("role") == "assistant":
            # vLLM's names; Ollama and llama.cpp's server continue a final assistant message anyway
            body.update(continue_final_message=True, add_generation_prompt=False)
        prompt_text = "\n".join(str(m.get("content", "")) for m in messages)
        yield from self._generate("/chat/completions", body, prompt_text, params)

    def _text(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        if not self._text_via_chat:
            body = {**self._sampling_body(params), "prompt": prompt}
            try:
                yield from self._generate("/completions", body, prompt, params)
                return
            except _HTTPError as exc:
                if not exc.endpoint_missing:
                    raise
                self._text_via_chat = True  # a chat-only server: remember, then fall back
        yield from self._chat([{"role": "user", "content": prompt}], params)

    def _sampling_body(self, params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(params, name):
                body[name] = getattr(params, name)
        if not openai_proper(self.base_url):  # a request's own top_k, min_p, repetition_penalty
            for name in sorted(params.asked):
                body[name] = getattr(params, name)
        if params.response_format is not None:
            body["response_format"] = dict(params.response_format)
        if params.logit_bias:  # the server's own token ids (a guide needs local logits: ignored)
            body["logit_bias"] = {str(k): float(v) for k, v in params.logit_bias.items()}
        body.update(self.extra_body)
        return body

    def _generate(self, path: str, body: dict[str, Any], prompt_text: str, params: SamplingParams) -> Iterator[str]:
        """Open one streaming request and yield its text pieces, recording `last_stats`."""
        stats = GenerationStats(extra={"endpoint": path})
        self.last_stats = stats
        t0 = time.perf_counter()
        if params.max_new_tokens == 0:
            stats.finish_reason = "length"
            return
        response = self._request("POST", path, body, stream=True)
        pieces = 0
        try:
            for piece in self._read_reply(response, stats):
                if stats.time_to_first_token_s is None:
                    stats.time_to_first_token_s = time.perf_counter() - t0
                pieces += 1
                yield piece
        finally:
            response.close()
            stats.total_s = time.perf_counter() - t0
        if not stats.prompt_tokens:
            stats.prompt_tokens = self.count_tokens(prompt_text)
        if not stats.completion_tokens:
            stats.completion_tokens = pieces

    def _read_reply(self, response: httpx.Response, stats: GenerationStats) -> Iterator[str]:
        """Yield the text pieces of a reply (SSE, or one JSON body if `stream` was ignored)."""
        url = _shown(response.request.url)
        if response.headers.get("content-type", "").startswith("application/json"):
            piece, _ = self._absorb(self._json(response), stats, url, delta=False)
            if piece:
                yield piece
            return
        finished = False
        try:
            for line in response.iter_lines():
                data = self._sse_data(line, url)
                if data is None:
                    continue
                if data.strip() == "[DONE]":
                    finished = True
                    break
                piece, ended = self._absorb(self._event(data, url), stats, url, delta=True)
                finished = finished or ended
                if piece:
                    yield piece
        except httpx.TransportError as exc:
            raise self._error(
                f"{url}: the connection broke in the middle of the reply ({exc}); check the server's log"
            ) from exc
        if not finished:
            raise self._error(f"{url}: the reply stream ended without `data: [DONE]`")

    def _absorb(self, chunk: dict[str, Any], stats: GenerationStats, url: str, *, delta: bool) -> tuple[str, bool]:
        """Fold one response chunk into `stats`; return its text and whether it is the last."""
        if "error" in chunk:
            raise self._error(f"{url}: the server reported an error: {_message_of(chunk)}")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            stats.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            stats.completion_tokens = int(usage.get("completion_tokens") or 0)
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return "", False
        choice = choices[0]
        ended = bool(choice.get("finish_reason"))
        if ended:
            stats.finish_reason = str(choice["finish_reason"])
        if "text" in choice:  # /completions
            return str(choice.get("text") or ""), ended
        part = choice.get("delta" if delta else "message")
        return (str(part.get("content") or "") if isinstance(part, dict) else ""), ended

    def _sse_data(self, line: str, url: str) -> str | None:
        """The payload of a `data:` line; None for blank lines, comments and other fields."""
        if not line or line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if field == "data":
            return value[1:] if value.startswith(" ") else value
        if field in ("event", "id", "retry"):
            return None
        raise self._error(f"{url}: malformed server-sent event: {_clip(line)!r}")

    def _event(self, data: str, url: str) -> dict[str, Any]:
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            chunk = None
        if not isinstance(chunk, dict):
            raise self._error(f"{url}: malformed server-sent event: {_clip('data: ' + data)!r}")
        return chunk

    # --- scoring ---------------------------------------------------------------------------

    def _score_one(self, text: str) -> float:
        if not text:
            return 0.0
        body = {
            "model": self.model,
            "prompt": text,
            "echo": True,
            "logprobs": 0,
            "max_tokens": 0,
            "temperature": 0,
            **self.extra_body,
        }
        try:
            chunk = self._json(self._request("POST", "/completions", body))
        except _HTTPError as exc:
            if exc.endpoint_missing or exc.status in (400, 422, 501):
                raise self._error(f"{exc} — {_SCORE_SERVERS}") from exc
            raise
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        first = choices[0] if isinstance(choices, list) and choices else {}
        logprobs = first.get("logprobs") if isinstance(first, dict) else None
        values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
        if not isinstance(values, list):
            raise self._error(f"{self._shown_url} returned no prompt log-probabilities; {_SCORE_SERVERS}")
        offsets = logprobs.get("text_offset")
        if isinstance(offsets, list) and len(offsets) == len(values):
            # Keep the prompt's tokens only, should the server have generated some.
            values = [v for v, at in zip(values, offsets, strict=True) if at < len(text)]
        return float(sum(v for v in values if v is not None))

    # --- HTTP ------------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, stream: bool = False
    ) -> httpx.Response:
        """Send one request, retrying 429/5xx; return a 2xx response or raise `EngineError`.

        With `stream=True` the body is not read yet: the caller must close the response.
        """
        url = f"{self.base_url}{path}"
        attempt = 0
        while True:
            request = self._client.build_request(method, url, json=body)
            try:
                response = self._client.send(request, stream=stream)
            except httpx.ConnectError as exc:
                raise self._error(
                    f"cannot connect to the OpenAI-compatible server at {self._shown_url} "
                    f"({exc}). Is it running? Start it (e.g. `ollama serve` or "
                    "`vllm serve MODEL`) or fix `base_url`."
                ) from exc
            except httpx.TimeoutException as exc:
                raise self._error(
                    f"{self._shown_url}{path}: no answer within {self.timeout:g} s; raise `timeout` or check the server"
                ) from exc
            except httpx.TransportError as exc:
                raise self._error(f"{self._shown_url}{path}: request failed ({exc})") from exc
            if response.status_code < 400:
                return response
            response.read()
            response.close()
            retryable = response.status_code == 429 or response.status_code >= 500
            if not retryable or attempt >= self.max_retries:
                raise self._http_error(response, path, attempts=attempt + 1)
            time.sleep(self._retry_delay(response, attempt))
            attempt += 1

    def _retry_delay(self, response: httpx.Response, attempt: int) -> float:
        try:
            after = float(response.headers.get("retry-after", ""))
        except ValueError:
            after = self.retry_backoff_s * 2**attempt
        return max(0.0, min(after, _MAX_RETRY_AFTER_S))

    def _http_error(self, response: httpx.Response, path: str, attempts: int) -> _HTTPError:
        status = response.status_code
        where = f"{self._shown_url}{path}"
        detail = _clip(_message_of(_maybe_json(response)) or response.text.strip())
        if status in (401, 403):
            sent = "the API key was refused" if self._api_key else "no API key was sent"
            msg = (
                f"{where} answered {status} ({detail}): {sent}. Put a valid key in the "
                f"environment variable {self.api_key_env}."
            )
        elif status in (404, 405) and path != "/models" and "model" in detail.lower():
            msg = f"model {self.model!r} is not on the server at {self._shown_url}. "
            msg += self._available_models()
        elif status in (404, 405):
            msg = (
                f"{where} answered {status} ({detail}): the server has no such endpoint. "
                "Check `base_url` (OpenAI-compatible servers usually serve under /v1)."
            )
            return _HTTPError(self._redact(msg), status, endpoint_missing=True)
        elif status == 429:
            msg = f"{where} kept answering 429 (rate limited) after {attempts} attempts: {detail}"
        elif status >= 500:
            msg = f"{where} answered {status} (server error) after {attempts} attempts: {detail}"
        else:
            msg = f"{where} rejected the request ({status}): {detail}"
        return _HTTPError(self._redact(msg), status)

    def _available_models(self) -> str:
        try:
            models = self.list_models()
        except EngineError:
            return "Check the model name (the server did not list its models)."
        listed = ", ".join(models) if models else "none"
        return f"Available: {listed}. (With Ollama, `ollama pull {self.model}` fetches it.)"

    def _json(self, response: httpx.Response) -> Any:
        try:
            return json.loads(response.read())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            text = response.text
            raise self._error(
                f"{_shown(response.request.url)}: the server did not answer JSON: {_clip(text)!r}"
            ) from exc
        finally:
            response.close()

    def _error(self, message: str) -> EngineError:
        return EngineError(self._redact(message))

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text


def _check_args(
    model: str,
    base_url: str,
    timeout: float,
    max_retries: int,
    context_length: int,
    retry_backoff_s: float,
) -> None:
    problems = []
    if not model or not isinstance(model, str):
        problems.append("model must be a non-empty model id, e.g. 'llama3.1:8b'")
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        problems.append(f"base_url must start with http:// or https://, not {base_url!r}")
    if not timeout > 0:
        problems.append(f"timeout must be > 0 seconds, not {timeout}")
    if max_retries < 0:
        problems.append(f"max_retries must be >= 0, not {max_retries}")
    if context_length < 1:
        problems.append(f"context_length must be >= 1, not {context_length}")
    if retry_backoff_s < 0:
        problems.append(f"retry_backoff_s must be >= 0, not {retry_backoff_s}")
    if problems:
        raise EngineError("openai engine: " + "; ".join(problems))


def openai_proper(base_url: str) -> bool:
    """Whether `base_url` is OpenAI's own API (or Azure OpenAI): those refuse fields OpenAI's API
    does not define, where other OpenAI-compatible servers take or ignore them."""
    host = (httpx.URL(base_url).host or "").lower()
    return host == "api.openai.com" or host.endswith(".openai.azure.com")


def _with_emotion(messages: list[dict[str, str]], emotion: str) -> list[dict[str, str]]:
    """Ask for the emotion in the system message (merged into an existing one)."""
    instruction = f"Respond with a {emotion} emotional tone."
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content', '')}\n\n{instruction}".lstrip()
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def _maybe_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _message_of(payload: Any) -> str:
    """The human message of an OpenAI-style error body (`{"error": {"message": ...}}`)."""
    if not isinstance(payload, dict):
        return ""
    error = payload.get("error", payload)
    if isinstance(error, dict):
        return str(error.get("message") or error.get("detail") or "")
    return str(error)


def _shown(url: httpx.URL) -> str:
    """A URL fit for messages: without any `user:password@`."""
    return str(url.copy_with(userinfo=b""))


def _clip(text: str) -> str:
    return text if len(text) <= _CLIP else text[:_CLIP] + "…"
