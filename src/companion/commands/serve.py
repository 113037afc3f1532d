"""`companion serve`: the OpenAI-compatible server and the web page (docs/serving.md).

companion serve                                # http://127.0.0.1:8000, local mode (no key on loopback)
companion serve --host 0.0.0.0 --port 8080     # keys required (companion users key create USER)
"""

from __future__ import annotations

from typing import Annotated

import typer

from companion.cli import err, handle_errors


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback: no key needed).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    require_keys: Annotated[bool, typer.Option("--require-keys", help="Ask for an API key even on loopback.")] = False,
    max_tokens: Annotated[int, typer.Option(help="Largest max_tokens a request may ask for.")] = 512,
    max_streams: Annotated[int, typer.Option(help="Open streams per user at once.")] = 8,
    max_requests: Annotated[
        int, typer.Option(help="Generations in flight per user, streamed or not (n choices count n).")
    ] = 8,
    max_writes: Annotated[
        float,
        typer.Option(help="Writes (preferences, memory, feedback, chats) per user per second; bursts of twice that."),
    ] = 10.0,
    batch_rows: Annotated[
        int,
        typer.Option(help="Continuous batching: streams a local fast-engine model decodes at once (0: queue them)."),
    ] = 64,
    engine_process: Annotated[
        bool,
        typer.Option(
            "--engine-process",
            help="Run the batching scheduler in a process of its own, apart from request handling (two cores+).",
        ),
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve personalities over an OpenAI-compatible API (SSE streaming) and a web page at /."""
    from companion.server import Limits, ServerSettings
    from companion.server import serve as run

    settings = ServerSettings(
        host=host,
        port=port,
        auth="keys" if require_keys else None,
        limits=Limits(
            max_tokens=max_tokens,
            max_streams_per_key=max_streams,
            max_requests_per_key=max_requests,
            writes_per_second=max_writes,
            batch_rows=batch_rows,
            engine_process=engine_process,
        ),
    ).check()
    where = f"http://{host}:{port}"
    err.print(f"[bold]companion serve[/] on {where} (web page {where}/, API {where}/v1, mode {settings.mode})")
    run(settings, log_level=log_level)


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    app.command("serve")(handle_errors(serve))
