"""`gutenberg:<id>` sources: download a Project Gutenberg plain-text book once, then use the cache.

The book is fetched from `<base>/cache/epub/<id>/pg<id>.txt` (Project Gutenberg's own layout)
where `<base>` is the collector's `gutenberg_url`, else the `COMPANION_GUTENBERG_URL`
environment variable, else https://www.gutenberg.org, and kept in
`COMPANION_HOME/cache/gutenberg/pg<id>.txt`. A cached book is never downloaded again, so a
source that worked once keeps working offline. Title and author come from the book's header;
its licence header and footer are stripped like every Gutenberg text.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from models.errors import DataError

__all__ = ["DEFAULT_BASE_URL", "ENV_VAR", "book_header", "fetch_gutenberg", "parse_gutenberg_source"]

DEFAULT_BASE_URL = "https://www.gutenberg.org"
ENV_VAR = "COMPANION_GUTENBERG_URL"
_MAX_BYTES = 64 << 20
_HEADER_FIELD = re.compile(r"^(Title|Author|Language):\s*(.+)$", re.M)


def parse_gutenberg_source(source: str) -> list[int]:
    """`gutenberg:1342` or `gutenberg:1342,84` → the book ids."""
    rest = source.split(":", 1)[1]
    ids = []
    for part in rest.split(","):
        part = part.strip().removeprefix("pg")
        if not part.isdigit() or int(part) <= 0:
            raise DataError(f"{source!r}: Gutenberg sources look like gutenberg:1342 (a positive book number)")
        ids.append(int(part))
    return ids


def book_header(path: Path) -> dict[str, str]:
    """Title, author and language from a Gutenberg header (first 20 kB)."""
    with path.open("rb") as f:
        head = f.read(20_000).decode("utf-8", errors="replace")
    return {m.group(1).lower(): m.group(2).strip() for m in _HEADER_FIELD.finditer(head)}


def _cache_dir() -> Path:
    from models.home import companion_home

    return companion_home() / "cache" / "gutenberg"


def fetch_gutenberg(book_id: int, *, base_url: str | None = None, timeout: float = 30.0) -> Path:
    """The cached text of book `book_id`, downloading it first if needed (DataError if that fails)."""
    import httpx

    cache = _cache_dir()
    path = cache / f"pg{book_id}.txt"
    if path.is_file() and path.stat().st_size > 0:
        return path
    base = (base_url or os.environ.get(ENV_VAR) or DEFAULT_BASE_URL).rstrip("/")
    url = f"{base}/cache/epub/{book_id}/pg{book_id}.txt"
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".pg{book_id}.{uuid.uuid4().hex[:8]}.part"
    host = (urlsplit(url).hostname or "").lower()
    deadline = time.monotonic() + timeout + _MAX_BYTES / (64 * 1024)  # the whole transfer, not per read
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            resp = None
            for _hop in range(6):  # redirects only to the same host (http -> https, another path)
                resp = client.send(client.build_request("GET", url), stream=True)
                if not resp.is_redirect:
                    break
                resp.close()
                target = urljoin(url, resp.headers.get("location", ""))
                if (urlsplit(target).hostname or "").lower() != host:
                    raise DataError(f"{url} redirects to {target}, another host; not following it")
                url = target
            if resp is None or resp.is_redirect:
                raise DataError(f"{url}: too many redirects")
            with contextlib.closing(resp):
                if resp.status_code == 404:
                    raise DataError(f"Project Gutenberg has no plain-text book {book_id} at {url} (HTTP 404)")
                if resp.status_code != 200:
                    raise DataError(f"downloading Gutenberg book {book_id} from {url} failed: HTTP {resp.status_code}")
                size = 0
                with tmp.open("wb") as f:
                    for chunk in resp.iter_bytes():
                        size += len(chunk)
                        if size > _MAX_BYTES:
                            raise DataError(f"{url} is larger than {_MAX_BYTES >> 20} MB; not a plain-text book")
                        if time.monotonic() > deadline:
                            raise DataError(f"downloading {url} is taking too long (a stalled server?); try again")
                        f.write(chunk)
        os.replace(tmp, path)
    except httpx.TransportError as exc:
        raise DataError(
            f"cannot download Gutenberg book {book_id} from {url}: {type(exc).__name__} ({exc}). "
            f"You seem to be offline: download pg{book_id}.txt elsewhere and pass its folder as the source, "
            f"or put it at {path}; set {ENV_VAR} to use a mirror"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path
