"""`companion serve`: an OpenAI-compatible HTTP server over the model layer, with a web page.

    from companion.server import ServerSettings, create_app, serve
    serve(ServerSettings(host="127.0.0.1", port=8000))     # blocks; Ctrl-C stops

Personalities and base models are model ids; API keys name users (`companion users key
create`); see docs/serving.md for endpoints, limits and how SillyTavern connects.
"""

from __future__ import annotations

from typing import Any

from companion.server.app import create_app
from companion.server.settings import Limits, ServerSettings

__all__ = ["Limits", "ServerSettings", "create_app", "serve"]


def serve(settings: ServerSettings, *, log_level: str = "info") -> None:
    """Run the server until interrupted."""
    import uvicorn

    app: Any = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, timeout_graceful_shutdown=5)
