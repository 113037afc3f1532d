"""Where catalogs and their files come from: a local folder or an HTTP(S) server.

`open_source(spec)` gives a `CatalogSource` with two operations: `read_catalog()` (the raw bytes
of `catalog.json`, size-capped) and `download(url, dest, size, sha256, advance)`, which streams a
file into `dest`, never accepting more than `size` bytes, and checks size and sha256 before the
file gets its final name. A download that is cut, too long or corrupted raises UpdateError
naming the file, the bytes received and the source; the partial file is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from models.errors import CatalogError, UpdateError
from models.lifecycle.catalog import CATALOG_NAME, MAX_CATALOG_BYTES

__all__ = ["CatalogSource", "FolderSource", "HttpSource", "open_source"]

_CHUNK = 1 << 16
Advance = Callable[[int], None]


class CatalogSource:
    """A place that serves `catalog.json` and the files it lists."""

    name: str

    def read_catalog(self) -> bytes:
        raise NotImplementedError

    def _chunks(self, url: str, size: int | None = None) -> Iterator[bytes]:
        raise NotImplementedError

    def download(self, url: str, dest: Path, size: int, sha256: str, advance: Advance | None = None) -> None:
        """Fetch `url` into `dest`, verifying its size and sha256 on the way."""
        part = dest.with_name(dest.name + ".part")
        part.parent.mkdir(parents=True, exist_ok=True)
        digest, got = hashlib.sha256(), 0
        try:
            with part.open("wb") as f:
                for chunk in self._chunks(url, size):
                    got += len(chunk)
                    if got > size:
                        raise UpdateError(
                            f"{url} from {self.name} is larger than the {size} bytes the catalog lists: refusing it"
                        )
                    digest.update(chunk)
                    f.write(chunk)
                    if advance is not None:
                        advance(len(chunk))
                f.flush()
                os.fsync(f.fileno())
            if got != size:
                raise UpdateError(
                    f"download of {url} from {self.name} is incomplete: got {got} of {size} bytes; try again later"
                )
            if digest.hexdigest() != sha256:
                raise UpdateError(
                    f"{url} from {self.name}: sha256 differs from the signed catalog (the file was tampered "
                    "with or corrupted in transit); refusing it"
                )
            os.replace(part, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            raise


class FolderSource(CatalogSource):
    """A catalog in a local (or mounted) folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.name = str(self.root)

    def read_catalog(self) -> bytes:
        path = self.root / CATALOG_NAME
        try:
            with path.open("rb") as f:
                return f.read(MAX_CATALOG_BYTES + 1)
        except FileNotFoundError as exc:
            raise CatalogError(
                f"{self.name}: no {CATALOG_NAME} there (publish one with `companion updates publish`)"
            ) from exc
        except OSError as exc:
            raise CatalogError(f"{path} cannot be read: {exc}") from exc

    def _chunks(self, url: str, size: int | None = None) -> Iterator[bytes]:
        if "://" in url or url.startswith("/") or ".." in url.split("/"):
            raise UpdateError(f"{url!r} in the catalog at {self.name}: folder catalogs use relative file paths")
        path = self.root / url
        try:
            with path.open("rb") as f:
                while chunk := f.read(_CHUNK):
                    yield chunk
        except FileNotFoundError as exc:
            raise UpdateError(f"{url} is listed in the catalog at {self.name} but missing there") from exc


#: Downloads may take `timeout` plus the time this minimum rate needs for the listed size.
MIN_DOWNLOAD_RATE = 64 * 1024  # bytes per second
MAX_REDIRECTS = 5


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


class HttpSource(CatalogSource):
    """A catalog on any static HTTP(S) file server.

    Bounded (issue 16): the catalog is read within `timeout` seconds *in total* (not per read, so
    a server trickling a byte a second cannot hold the client), a download within `timeout` plus
    its size at `MIN_DOWNLOAD_RATE`; redirects are followed only within the catalog's own origin
    (scheme, host and port), so a mirror cannot steer clients to another host."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.catalog_url = url if url.endswith(".json") else url.rstrip("/") + "/" + CATALOG_NAME
        self.name = url
        self.timeout = timeout

    def _client(self) -> Any:
        import httpx

        return httpx.Client(timeout=self.timeout, follow_redirects=False, headers={"User-Agent": "companion-updates"})

    @contextlib.contextmanager
    def _stream(self, client: Any, url: str, error: type[UpdateError]) -> Iterator[Any]:
        """GET `url`, following redirects only within the catalog's origin."""
        origin = _origin(self.catalog_url)
        for _hop in range(MAX_REDIRECTS + 1):
            with client.stream("GET", url) as response:
                if response.is_redirect:
                    target = urljoin(url, response.headers.get("location", ""))
                    if _origin(target) != origin:
                        raise error(
                            f"{url}: redirected to {target}, outside the catalog's origin "
                            f"{self.catalog_url}; refusing to follow"
                        )
                    url = target
                    continue
                yield response
                return
        raise error(f"{url}: more than {MAX_REDIRECTS} redirects")

    def read_catalog(self) -> bytes:
        import httpx

        deadline = time.monotonic() + self.timeout
        try:
            with self._client() as client, self._stream(client, self.catalog_url, CatalogError) as response:
                if response.status_code != 200:
                    raise CatalogError(
                        f"{self.catalog_url}: HTTP {response.status_code}; is the catalog published there?"
                    )
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > MAX_CATALOG_BYTES:
                    raise CatalogError(f"{self.catalog_url}: catalog is larger than {MAX_CATALOG_BYTES >> 20} MiB")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_CATALOG_BYTES:
                        break
                    if time.monotonic() > deadline:
                        raise CatalogError(
                            f"{self.catalog_url}: the catalog did not arrive within {self.timeout:g} s "
                            "(updates.timeout, the whole transfer); try again later"
                        )
                return bytes(body)
        except httpx.HTTPError as exc:
            raise CatalogError(f"{self.catalog_url}: cannot fetch the catalog: {exc}") from exc

    def _chunks(self, url: str, size: int | None = None) -> Iterator[bytes]:
        import httpx

        full = urljoin(self.catalog_url, url)
        if urlsplit(full).scheme not in ("http", "https"):
            raise UpdateError(f"{url!r} in the catalog at {self.name}: only http(s) file URLs are allowed")
        budget = self.timeout + (size or 0) / MIN_DOWNLOAD_RATE
        deadline = time.monotonic() + budget
        try:
            with self._client() as client, self._stream(client, full, UpdateError) as response:
                if response.status_code != 200:
                    raise UpdateError(f"{full}: HTTP {response.status_code}")
                for chunk in response.iter_bytes(_CHUNK):
                    yield chunk
                    if time.monotonic() > deadline:
                        raise UpdateError(f"download of {full} took longer than {budget:.0f} s; try again later")
        except httpx.HTTPError as exc:
            raise UpdateError(f"download of {full} failed: {exc} (the connection was cut or timed out)") from exc


def open_source(spec: str, base_dir: Path | None = None, timeout: float = 30.0) -> CatalogSource:
    """A source for a configured catalog: an http(s):// URL, a file:// URL or a folder path
    (relative ones resolve against `base_dir`, the config file's folder)."""
    if spec.startswith(("http://", "https://")):
        return HttpSource(spec, timeout)
    path = Path(spec[len("file://") :] if spec.startswith("file://") else spec).expanduser()
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    if path.name == CATALOG_NAME:
        path = path.parent
    return FolderSource(path)
