"""Prose sources: folders (or single files) of `.txt`, `.md`, `.epub` and `.html` documents.

Genre, title and author come from, in order of precedence:

1. an index file in the source folder: `index.csv` / `index.json` (or `genres.csv` /
   `genres.json`) with a `file` column (path relative to the folder, or the bare file name)
   and `genre`, `title`, `author` columns (the layout of `shared/data/books/index.csv`);
2. the document's own metadata: Markdown front matter (`genre:`, `title:`, `author:`), EPUB
   Dublin Core (`dc:subject`, `dc:title`, `dc:creator`), HTML `<meta name="genre">`;
3. the name of the first sub-folder (`fantasy/dragon.txt` → `fantasy`);
4. otherwise `unknown`.

Text files are decoded with their detected encoding and read in paragraph-aligned parts of
about `segment_chars` characters, so a file of any size streams; each part is a record.
"""

from __future__ import annotations

import csv
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from models.training_data.cleaning import (
    clean_text,
    normalize_text,
    strip_gutenberg_end,
    strip_gutenberg_start,
    unwrap_paragraphs,
)
from models.training_data.reports import CollectionReport
from models.training_data.schema import dumps_meta, sha256_text
from models.training_data.textio import detect_encoding, html_to_text, iter_segments

__all__ = ["WRITING_SUFFIXES", "iter_writing_records", "list_writing_files", "load_index"]

WRITING_SUFFIXES = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown"}
WRITING_SUFFIXES |= {".epub": "epub", ".html": "html", ".htm": "html", ".xhtml": "html"}
_INDEX_NAMES = ("index.csv", "index.json", "genres.csv", "genres.json")
_SKIP_NAMES = {"readme.md", "readme.txt", "license.txt", "license.md", "source.md", "notes.md"}
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)
_MD_HEADING = re.compile(r"^#{1,6}\s+", re.M)
_PG_ID = re.compile(r"(?:^|[^a-z])pg0*(\d+)", re.I)


def load_index(root: Path, report: CollectionReport) -> dict[str, dict[str, str]]:
    """File (relative path and bare name) → {genre, title, author} from the folder's index file."""
    entries: list[dict[str, Any]] = []
    for name in _INDEX_NAMES:
        path = root / name
        if not path.is_file():
            continue
        try:
            if name.endswith(".csv"):
                with path.open(newline="", encoding="utf-8-sig") as f:
                    entries = list(csv.DictReader(f))
            else:
                data = json.loads(path.read_text(encoding="utf-8"))
                entries = data if isinstance(data, list) else data.get("files", data.get("books", []))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            report.problem(name, "", f"index file cannot be read ({exc}); genres fall back to metadata and folders")
            continue
        break
    index: dict[str, dict[str, str]] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        file = str(entry.get("file") or entry.get("path") or entry.get("filename") or "").strip()
        if not file:
            continue
        genre = entry.get("genre") or entry.get("genres") or ""
        if isinstance(genre, list):
            genre = ", ".join(str(g) for g in genre)
        info = {k: str(entry.get(k) or "") for k in ("title", "author")} | {"genre": str(genre).strip().lower()}
        index[file] = info
        index.setdefault(Path(file).name, info)
    return index


def list_writing_files(root: Path) -> list[Path]:
    """Readable documents under `root` (or `root` itself when it is a file), sorted."""
    if root.is_file():
        return [root]
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in WRITING_SUFFIXES
        and p.name.lower() not in _SKIP_NAMES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _front_matter(text: str) -> tuple[str, dict[str, str]]:
    m = _FRONT_MATTER.match(text)
    if not m:
        return text, {}
    import yaml

    try:
        data = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError:
        return text, {}
    if not isinstance(data, dict):
        return text, {}
    meta = {str(k).lower(): ", ".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in data.items()}
    return text[m.end() :], meta


def _folder_genre(root: Path, path: Path) -> str:
    if root.is_file():
        return ""
    parts = path.relative_to(root).parts
    return parts[0].lower() if len(parts) > 1 else ""


def _record(text: str, info: dict[str, Any], rel: str, position: str, part: int, fmt: str) -> dict[str, Any]:
    skip = ("title", "author", "genre", "source", "folder_genre")
    meta = {k: v for k, v in info.items() if k not in skip and v not in ("", None)}
    return {
        "text": text,
        "title": str(info.get("title") or ""),
        "author": str(info.get("author") or ""),
        "genre": str(info.get("genre") or info.get("folder_genre") or "unknown").lower(),
        "format": fmt,
        "part": part,
        "source": str(info.get("source", "")),
        "file": rel,
        "position": position,
        "sha256": sha256_text(text),
        "meta": dumps_meta(meta),
    }


def _merge(*layers: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for layer in layers:
        for k, v in layer.items():
            if v and not out.get(k):
                out[k] = v
    return out


def _iter_plain(path: Path, info: dict[str, Any], rel: str, fmt: str, segment_chars: int) -> Iterator[dict[str, Any]]:
    encoding = detect_encoding(path)
    info = info | {"encoding": encoding}
    pg = _PG_ID.search(path.stem)
    if pg:
        info["gutenberg_id"] = pg.group(1)
    part, started, ended = 0, False, False
    for offset, raw in iter_segments(path, segment_chars, encoding):
        text = raw.replace("\r\n", "\n")
        if part == 0 and not started:
            text, started = strip_gutenberg_start(text)
            if fmt == "markdown":
                text, front = _front_matter(text)
                info = _merge(info, front)
        text, ended = strip_gutenberg_end(text)
        if fmt == "markdown":
            text = _MD_HEADING.sub("", text)
        cleaned = clean_text(text, gutenberg=part == 0)
        if cleaned:
            if not info.get("title") and part == 0:
                first = cleaned.split("\n", 1)[0]
                info = info | {"title": first if len(first) <= 80 else path.stem.replace("_", " ")}
            yield _record(cleaned, info, rel, f"char:{offset}", part, fmt)
            part += 1
        if ended:
            break


def _iter_html(path: Path, info: dict[str, Any], rel: str, segment_chars: int) -> Iterator[dict[str, Any]]:
    encoding = detect_encoding(path)
    page = html_to_text(path.read_bytes().decode(encoding, errors="replace"))
    meta = {"genre": page.meta.get("genre", "").lower(), "title": page.title, "author": page.meta.get("author", "")}
    info = _merge(info, meta) | {"encoding": encoding}
    text = unwrap_paragraphs(normalize_text(page.text))
    yield from _split_parts(text, info, rel, "html", segment_chars, "char")


def _split_parts(
    text: str, info: dict[str, Any], rel: str, fmt: str, segment_chars: int, unit: str
) -> Iterator[dict[str, Any]]:
    start, part = 0, 0
    while start < len(text):
        end = min(len(text), start + segment_chars)
        if end < len(text):
            cut = text.rfind("\n\n", start + segment_chars // 2, end)
            end = cut + 2 if cut > 0 else end
        piece = text[start:end].strip()
        if piece:
            yield _record(piece, info, rel, f"{unit}:{start}", part, fmt)
            part += 1
        start = end


def _iter_epub(path: Path, info: dict[str, Any], rel: str, segment_chars: int) -> Iterator[dict[str, Any]]:
    import zipfile

    import ebooklib
    from ebooklib import epub

    from models import limits
    from models.errors import DataError

    try:  # counts and sizes first: ebooklib reads every member into memory
        with zipfile.ZipFile(path) as z:
            limits.check_zip(z, rel)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{rel}: not an EPUB (not a zip: {exc})") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            book = epub.read_epub(str(path), options={"ignore_ncx": True})
        except (TypeError, AttributeError, KeyError) as exc:  # ebooklib's errors on malformed packages
            raise DataError(f"{rel}: not a readable EPUB package (its OPF could not be parsed: {exc})") from None

    def dc(name: str) -> str:
        values = book.get_metadata("DC", name) or []
        return ", ".join(str(v[0]) for v in values if v and v[0])

    meta = {"title": dc("title"), "author": dc("creator"), "genre": dc("subject").lower(), "language": dc("language")}
    info = _merge(info, meta)
    buffer: list[str] = []
    size, part, first_item = 0, 0, 0
    for n, (idref, _linear) in enumerate(book.spine):
        item = book.get_item_with_id(idref)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
            continue
        text = unwrap_paragraphs(normalize_text(html_to_text(item.get_content().decode("utf-8", "replace")).text))
        if not text:
            continue
        if not buffer:
            first_item = n
        buffer.append(text)
        size += len(text)
        if size >= segment_chars:
            yield _record("\n\n".join(buffer), info, rel, f"item:{first_item}", part, "epub")
            buffer, size, part = [], 0, part + 1
    if buffer:
        yield _record("\n\n".join(buffer), info, rel, f"item:{first_item}", part, "epub")


def iter_writing_records(
    root: Path,
    *,
    source: str,
    report: CollectionReport,
    segment_chars: int = 1_000_000,
) -> Iterator[dict[str, Any]]:
    """Every document part under `root` as a writing record (see `schema.WRITING_FEATURES`)."""
    index = load_index(root if root.is_dir() else root.parent, report)
    for path in list_writing_files(root):
        rel = path.name if root.is_file() else path.relative_to(root).as_posix()
        report.files_seen += 1
        fmt = WRITING_SUFFIXES[path.suffix.lower()]
        base = index.get(rel) or index.get(path.name) or {}
        info: dict[str, Any] = dict(base) | {"source": source, "folder_genre": _folder_genre(root, path)}
        try:
            if fmt == "epub":
                records = _iter_epub(path, info, rel, segment_chars)
            elif fmt == "html":
                records = _iter_html(path, info, rel, segment_chars)
            else:
                records = _iter_plain(path, info, rel, fmt, segment_chars)
            produced = 0
            for rec in records:
                produced += 1
                yield rec
            report.files_read += 1
            report.bytes_read += path.stat().st_size
            if not produced:
                report.skip("empty_file")
        except Exception as exc:  # one unreadable file must not stop the others
            kind = "EPUB" if fmt == "epub" else fmt
            report.problem(rel, "", f"not a readable {kind} file ({type(exc).__name__}: {exc})")
