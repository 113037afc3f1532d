"""Reading text files of any size and encoding, and turning HTML into plain text.

* `detect_encoding` looks at the first MiB: a BOM wins; strict UTF-8 next; then cp1252 (a
  superset of Latin-1's printable range, the usual encoding of old Western text files) when
  the bytes decode with it into mostly ASCII letters; otherwise `charset_normalizer`'s best
  guess, and cp1252 as the last resort.
* `iter_segments` decodes a file incrementally and yields paragraph-aligned segments of about
  `segment_chars` characters with their character offset, so a 1 GB book never sits in memory.
* `html_to_text` keeps the readable flow of a page: block elements become paragraph breaks;
  `script`, `style`, navigation, headers and footers are dropped.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

__all__ = ["HtmlText", "detect_encoding", "html_to_text", "iter_segments", "read_text"]

_SAMPLE = 1 << 20
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def detect_encoding(path: Path) -> str:
    """The encoding of a text file, judged from its first MiB."""
    with Path(path).open("rb") as f:
        sample = f.read(_SAMPLE)
    return detect_encoding_bytes(sample, complete=len(sample) < _SAMPLE)


def _looks_western(sample: bytes) -> bool:
    """Decodes as cp1252 with few non-ASCII letters: Western European text (Latin-1, Windows).

    Short Latin-1 samples are where statistical detectors go wrong (a Baltic or Central European
    code page fits a handful of accented letters as well); text in a non-Latin script encoded
    with a single-byte code page has mostly non-ASCII letters and fails this test.
    """
    try:
        text = sample.decode("cp1252")
    except UnicodeDecodeError:
        return False
    letters = sum(c.isalpha() for c in text)
    accented = sum(c.isalpha() and not c.isascii() for c in text)
    return letters > 0 and accented / letters < 0.3


def detect_encoding_bytes(sample: bytes, complete: bool = True) -> str:
    for bom, name in _BOMS:
        if sample.startswith(bom):
            return name
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=complete)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    if _looks_western(sample):
        return "cp1252"
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(sample).best()
        if best is not None and best.encoding:
            return codecs.lookup(best.encoding).name
    except ImportError:  # pragma: no cover - charset_normalizer is a dependency
        pass
    return "cp1252"


def read_text(path: Path, encoding: str | None = None) -> tuple[str, str]:
    """The whole file as text and the encoding used (undecodable bytes become U+FFFD)."""
    enc = encoding or detect_encoding(path)
    return Path(path).read_bytes().decode(enc, errors="replace"), enc


def _cut_point(buf: str, limit: int) -> int:
    para = buf.rfind("\n\n", limit // 2, limit)
    if para >= 0:
        return para + 2
    line = buf.rfind("\n", limit // 2, limit)
    return line + 1 if line >= 0 else limit


def iter_segments(path: Path, segment_chars: int = 1_000_000, encoding: str | None = None) -> Iterator[tuple[int, str]]:
    """(character offset, text) pieces of about `segment_chars`, cut at blank lines when possible."""
    enc = encoding or detect_encoding(path)
    decoder = codecs.getincrementaldecoder(enc)(errors="replace")
    buf, offset = "", 0
    with Path(path).open("rb") as f:
        while True:
            chunk = f.read(1 << 20)
            buf += decoder.decode(chunk, final=not chunk)
            while len(buf) >= segment_chars:
                cut = _cut_point(buf, segment_chars)
                yield offset, buf[:cut]
                offset += cut
                buf = buf[cut:]
            if not chunk:
                break
    if buf:
        yield offset, buf


_SKIP = {"script", "style", "head", "nav", "footer", "header", "aside", "noscript", "template", "svg", "form"}
_BLOCK = {
    "p", "div", "br", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol", "blockquote", "section",
    "article", "tr", "table", "pre", "hr", "dd", "dt", "figure", "figcaption", "main", "body",
}  # fmt: skip


@dataclass
class HtmlText:
    """The text of an HTML document and the metadata found in its head."""

    text: str
    title: str = ""
    meta: dict[str, str] = field(default_factory=dict)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip_depth = 0
        self.in_title = False
        self.title = ""
        self.meta: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "meta":
            a = {k.lower(): v or "" for k, v in attrs}
            key = (a.get("name") or a.get("property") or "").lower()
            if key and a.get("content"):
                self.meta[key] = a["content"]
        elif tag == "title":
            self.in_title = True
        elif tag in _SKIP:
            self.skip_depth += 1
        elif tag in _BLOCK:
            self.parts.append("\n\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in _SKIP:
            self.skip_depth -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag in _SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag in _BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title += data
        elif not self.skip_depth:
            self.parts.append(data)


def html_to_text(html: str) -> HtmlText:
    """Readable text of an HTML page, paragraphs separated by blank lines."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    paras = []
    for block in "".join(parser.parts).split("\n\n"):
        line = " ".join(block.split())
        if line:
            paras.append(line)
    return HtmlText("\n\n".join(paras), " ".join(parser.title.split()), parser.meta)
