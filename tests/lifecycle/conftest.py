"""Fixtures of the lifecycle tests (versions, aliases, updates).

* `database` (autouse): with `COMPANION_TEST_DATABASE_URL` set (CI sets a PostgreSQL URL), each
  test gets its own schema on that server through `COMPANION_DATABASE_URL` (subprocesses inherit
  it); otherwise the home's SQLite file is used.
* `luna`: a config whose `personality/luna` is the tiny test model.
* `serve_folder`: an HTTP server on loopback for a catalog folder, cutting chosen downloads.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models import db
from tests.lifecycle.support import LUNA_CONFIG, CuttingHandler

TEST_DB_ENV = "COMPANION_TEST_DATABASE_URL"


@pytest.fixture(autouse=True)
def database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str | None]:
    """A private database for one test: a fresh PostgreSQL schema, or the home's SQLite file."""
    base = os.environ.get(TEST_DB_ENV)
    if not base:
        monkeypatch.delenv(db.DATABASE_URL_ENV, raising=False)
        yield None
        db.dispose_engines()
        return
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    rendered = url.render_as_string(hide_password=False)
    monkeypatch.setenv(db.DATABASE_URL_ENV, rendered)
    try:
        yield rendered
    finally:
        db.dispose_engines()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def luna(user_config, database) -> str:
    """`personality/luna` served from the tiny model; returns the config text."""
    user_config(LUNA_CONFIG)
    return LUNA_CONFIG


@pytest.fixture
def serve_folder() -> Iterator[Any]:
    """`serve_folder(path, cut=set())` → base URL of a loopback HTTP server for `path`."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(folder: Path, cut: set[str] | None = None) -> str:
        handler = type("Handler", (CuttingHandler,), {"cut": set(cut or ())})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
