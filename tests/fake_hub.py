"""A loopback Hugging Face Hub: the model-info API and `resolve` file downloads, for `pull` tests.

Serves repositories from folders (`FakeHub.add(repo, folder)`) at one fixed commit each, the way
`huggingface_hub` reads them: `GET /api/models/{repo}/revision/{rev}` (file list and commit),
`HEAD`/`GET /{repo}/resolve/{rev}/{path}` (commit, ETag and size headers; byte ranges, so an
interrupted download resumes). Unknown repositories and revisions get the Hub's error codes.
`fail_after` cuts one file's body short once, to test resuming. Records every request.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, tuple[str, dict[str, bytes]]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.fail_after: dict[str, int] = {}  # path -> bytes to send before dropping, once
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                hub.serve(self, head=True)

            def do_GET(self) -> None:
                hub.serve(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, repo: str, folder: Path, extra: dict[str, bytes] | None = None) -> str:
        """Serve `folder`'s files (plus `extra`) as `repo`; returns its commit id."""
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        files.update(extra or {})
        commit = hashlib.sha1(repr(sorted((k, hashlib.sha1(v).hexdigest()) for k, v in files.items())).encode())
        self.repos[repo] = (commit.hexdigest(), files)
        return commit.hexdigest()

    # -- serving ------------------------------------------------------------------------------

    def _error(self, h: BaseHTTPRequestHandler, code: str, message: str, head: bool) -> None:
        body = json.dumps({"error": message}).encode()
        h.send_response(404)
        h.send_header("X-Error-Code", code)
        h.send_header("X-Error-Message", message)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _json(self, h: BaseHTTPRequestHandler, data: Any, head: bool) -> None:
        body = json.dumps(data).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _find(self, parts: list[str]) -> tuple[str, str, list[str]] | None:
        """(repo, revision, rest) for `org/name/<verb>/<rev>/rest...` style paths."""
        if len(parts) < 4:
            return None
        return f"{parts[0]}/{parts[1]}", unquote(parts[3]), parts[4:]

    def serve(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = h.path.split("?", 1)[0]
        self.requests.append((h.command, path, h.headers.get("Range")))
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "models"]:
            found = self._find(parts[2:]) if len(parts) > 5 else (f"{parts[2]}/{parts[3]}", "main", [])
            if found is None:
                return self._error(h, "RepoNotFound", "Repository not found", head)
            repo, rev, _ = found
            if repo not in self.repos:
                return self._error(h, "RepoNotFound", "Repository not found", head)
            commit, files = self.repos[repo]
            if rev not in ("main", commit, commit[:7]):
                return self._error(h, "RevisionNotFound", f"Invalid rev id: {rev}", head)
            if parts[4] == "tree":  # the recursive file listing snapshot_download reads
                tree = [
                    {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                    for name, data in sorted(files.items())
                ]
                return self._json(h, tree, head)
            info = {
                "id": repo, "modelId": repo, "sha": commit, "private": False, "disabled": False, "gated": False,
                "tags": [], "downloads": 0, "likes": 0, "lastModified": "2026-01-01T00:00:00.000Z",
                "createdAt": "2026-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": name} for name in sorted(files)],
            }  # fmt: skip
            return self._json(h, info, head)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, rev, rest = self._find(parts) or ("", "", [])
            if repo not in self.repos:
                return self._error(h, "RepoNotFound", "Repository not found", head)
            commit, files = self.repos[repo]
            if rev not in ("main", commit):
                return self._error(h, "RevisionNotFound", f"Invalid rev id: {rev}", head)
            name = unquote("/".join(rest))
            if name not in files:
                return self._error(h, "EntryNotFound", f"{name} does not exist", head)
            data = files[name]
            start = 0
            rng = h.headers.get("Range")
            if rng and rng.startswith("bytes="):
                start = int(rng[6:].split("-", 1)[0] or 0)
            body = data[start:]
            h.send_response(206 if start else 200)
            h.send_header("X-Repo-Commit", commit)
            h.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            h.send_header("Content-Length", str(len(body)))
            if start:
                h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            h.end_headers()
            if head:
                return None
            cut = self.fail_after.pop(name, None)
            if cut is not None:
                h.wfile.write(body[:cut])
                h.wfile.flush()
                h.close_connection = True
                return None
            h.wfile.write(body)
            return None
        return self._error(h, "RepoNotFound", "not found", head)
