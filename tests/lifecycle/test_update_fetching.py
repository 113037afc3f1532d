"""Issue 16 item 4: fetching catalogs is bounded in time, stays on its origin, and one broken
mirror neither crashes `updates check` nor blocks the other catalogs.

Before: `updates.timeout` applied per read (a server sending a byte a second held the client for
over 70 s with a 2 s timeout), redirects to any host were followed, and a catalog nested deep
enough crashed the check before its signature was looked at.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from models.errors import CatalogError
from models.update_sources import HttpSource


class _Evil(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, Any]] = {}

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.routes[self.path](self)


def _trickle(h: _Evil) -> None:
    h.send_response(200)
    h.send_header("Content-Length", "100")
    h.end_headers()
    try:
        for _ in range(100):
            h.wfile.write(b" ")
            h.wfile.flush()
            time.sleep(0.5)
    except (BrokenPipeError, ConnectionResetError):
        pass


def _redirect(to: str) -> Any:
    def handler(h: _Evil) -> None:
        h.send_response(302)
        h.send_header("Location", to)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return handler


def _body(data: bytes) -> Any:
    def handler(h: _Evil) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return handler


@pytest.fixture
def evil() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Evil)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_trickling_server_cannot_hold_the_client(evil: str) -> None:
    _Evil.routes = {"/slow/catalog.json": _trickle}
    t0 = time.monotonic()
    with pytest.raises(CatalogError, match="did not arrive within 2 s"):
        HttpSource(evil + "/slow", timeout=2).read_catalog()
    assert time.monotonic() - t0 < 5


def test_redirects_stay_on_the_catalog_origin(evil: str) -> None:
    _Evil.routes = {
        "/away/catalog.json": _redirect("http://localhost:9/catalog.json"),  # another origin (host differs)
        "/moved/catalog.json": _redirect("/here/catalog.json"),
        "/here/catalog.json": _body(b'{"signed": {}, "signatures": []}'),
    }
    with pytest.raises(CatalogError, match="outside the catalog's origin"):
        HttpSource(evil + "/away").read_catalog()
    assert HttpSource(evil + "/moved").read_catalog() == b'{"signed": {}, "signatures": []}'


def test_a_deep_catalog_is_refused_and_the_others_are_still_checked(evil: str, tmp_path, user_config) -> None:
    from models.catalog import generate_key, load_private_key, public_key_text
    from models.update_manager import ModelUpdateManager

    generate_key(tmp_path / "k.pem")
    key = public_key_text(load_private_key(tmp_path / "k.pem").public_key())
    _Evil.routes = {"/deep/catalog.json": _body(b"[" * 200_000 + b"]" * 200_000)}
    empty = tmp_path / "empty"
    empty.mkdir()
    user_config(f"updates:\n  catalogs: ['{evil}/deep', '{empty}']\n  trusted_keys: ['{key}']\n")
    found = ModelUpdateManager().check_updates()
    reasons = dict(found.refused)
    assert set(reasons) == {f"{evil}/deep", str(empty)}  # both reported, neither crashed the check
    assert "json_depth" in reasons[f"{evil}/deep"]
    assert "no catalog.json" in reasons[str(empty)]


def test_gutenberg_fetches_follow_redirects_only_on_their_host(evil: str) -> None:
    from models.errors import DataError
    from models.training_data.sources.gutenberg import fetch_gutenberg

    _Evil.routes = {
        "/cache/epub/7/pg7.txt": _redirect("http://localhost:9/elsewhere.txt"),
        "/cache/epub/8/pg8.txt": _redirect("/mirror/pg8.txt"),
        "/mirror/pg8.txt": _body(b"THE BOOK"),
    }
    with pytest.raises(DataError, match="another host"):
        fetch_gutenberg(7, base_url=evil)
    assert fetch_gutenberg(8, base_url=evil).read_bytes() == b"THE BOOK"
