"""Collecting prose: shipped samples, genres, EPUB, HTML, encodings, Gutenberg boilerplate and downloads."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from models.errors import DataError
from models.training_data import DataCollector
from tests.training_data.conftest import make_epub

PROSE = (
    "The keeper climbed the stairs at dusk, as she had every evening for thirty years, and lit the lamp "
    "with hands that no longer shook. Below her the sea worked at the rocks with the patience of a clerk. "
    "She thought about the letter in her apron pocket and did not take it out."
)


def test_book_collection_resolves_to_the_shipped_samples_with_genres() -> None:
    collector = DataCollector()
    ds = collector.collect_writing_samples(source="Book_Collection", genres=["fantasy", "romance", "mystery"])
    assert set(ds["genre"]) == {"fantasy", "romance", "mystery"}
    assert len(ds) == 9
    report = collector.last_report
    assert report is not None and report.skipped["genre_not_requested"] == 4 and not report.problems
    row = ds[0]
    assert row["title"] and row["author"] == "Companion Models authors"
    assert row["position"] == "char:0" and len(row["sha256"]) == 64 and row["file"].endswith(".md")
    assert not row["text"].startswith("---") and "# " not in row["text"][:3]


def test_genre_precedence_index_then_metadata_then_folder(tmp_path: Path) -> None:
    root = tmp_path / "library"
    (root / "fantasy").mkdir(parents=True)
    (root / "fantasy" / "a.txt").write_text(PROSE)  # folder only
    (root / "fantasy" / "b.md").write_text(f"---\ngenre: Romance\ntitle: B\n---\n{PROSE}")  # front matter wins
    (root / "fantasy" / "c.txt").write_text(PROSE)  # index wins
    (root / "loose.txt").write_text(PROSE)  # nothing → unknown
    (root / "index.csv").write_text("file,genre,title,author\nfantasy/c.txt,mystery,Cee,Someone\n")
    ds = DataCollector().collect_writing_samples(root)
    genres = dict(zip(ds["file"], ds["genre"], strict=True))
    assert genres == {
        "fantasy/a.txt": "fantasy",
        "fantasy/b.md": "romance",
        "fantasy/c.txt": "mystery",
        "loose.txt": "unknown",
    }
    assert ds.filter(lambda r: r["file"] == "fantasy/c.txt")[0]["author"] == "Someone"


def test_subgenres_match_and_unknown_genres_fail_clearly(tmp_path: Path) -> None:
    (tmp_path / "x.md").write_text(f"---\ngenre: science-fantasy\n---\n{PROSE}")
    assert len(DataCollector().collect_writing_samples(tmp_path, genres=["fantasy"])) == 1
    with pytest.raises(DataError, match=r"no document .* has genre westerns; found: science-fantasy \(1\)"):
        DataCollector().collect_writing_samples(tmp_path, genres=["westerns"])


def test_epub_built_here_is_read_with_its_metadata(tmp_path: Path) -> None:
    make_epub(
        tmp_path / "tale.epub", title="The Moon Jar", author="A. Writer", subject="Fantasy",
        chapters=[PROSE, "Second chapter.\n\n" + PROSE.replace("keeper", "baker")],
    )  # fmt: skip
    collector = DataCollector()
    ds = collector.collect_writing_samples(tmp_path, genres=["fantasy"])
    assert len(ds) == 1
    row = ds[0]
    assert (row["title"], row["author"], row["genre"], row["format"]) == (
        "The Moon Jar",
        "A. Writer",
        "fantasy",
        "epub",
    )
    assert "Chapter 1" in row["text"] and "baker" in row["text"] and "<p>" not in row["text"]
    assert json.loads(row["meta"])["language"] == "en"


def test_broken_epub_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "broken.epub").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "ok.txt").write_text(PROSE)
    collector = DataCollector()
    ds = collector.collect_writing_samples(tmp_path)
    assert len(ds) == 1
    assert collector.last_report is not None
    assert "broken.epub" in str(collector.last_report.problems[0]) and "EPUB" in str(collector.last_report.problems[0])


def test_html_keeps_paragraphs_and_drops_scripts_and_navigation(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text(
        "<html><head><title>Night Ferry</title><meta name='genre' content='Romance'><style>p{}</style></head>"
        "<body><nav>Home | About</nav><p>First &amp; best paragraph.</p><script>var x = 1;</script>"
        f"<p>{PROSE}</p><footer>Copyright</footer></body></html>"
    )
    row = DataCollector().collect_writing_samples(tmp_path)[0]
    assert row["title"] == "Night Ferry" and row["genre"] == "romance"
    assert row["text"].startswith("First & best paragraph.\n\nThe keeper")
    assert "var x" not in row["text"] and "Home" not in row["text"] and "Copyright" not in row["text"]


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1", "utf-16", "utf-8-sig"])
def test_non_utf8_text_is_decoded(tmp_path: Path, encoding: str) -> None:
    text = "Café au lait, naïve façade — “quoted” words. " + PROSE if encoding != "latin-1" else "Café naïve. " + PROSE
    (tmp_path / "old.txt").write_bytes(text.encode(encoding))
    row = DataCollector().collect_writing_samples(tmp_path)[0]
    assert row["text"].startswith(text[:12]) and "\ufffd" not in row["text"]
    assert json.loads(row["meta"])["encoding"]


def test_gutenberg_boilerplate_and_hard_wraps_are_removed_nfc_applied(tmp_path: Path) -> None:
    body = (
        "The Project Gutenberg eBook of Tiny Tale\n\nTitle: Tiny Tale\n\n"
        "*** START OF THE PROJECT GUTENBERG EBOOK TINY TALE ***\n\nProduced by Volunteers.\n\n"
        "The keeper climbed the stairs at dusk, as she had every evening for thirty\n"
        "years, and lit the lamp with hands that no longer shook. [Illustration: a lamp]\n\n"
        "Two roads diverged\nin a yellow wood\n\n"
        "Cafe\u0301 at dawn.\n\n"
        "*** END OF THE PROJECT GUTENBERG EBOOK TINY TALE ***\n\nLicence text that must go.\n"
    )
    (tmp_path / "pg99999_tiny.txt").write_text(body)
    row = DataCollector().collect_writing_samples(tmp_path)[0]
    text = row["text"]
    assert text.startswith("The keeper climbed") and "for thirty years," in text  # unwrapped
    assert "Two roads diverged\nin a yellow wood" in text  # verse keeps its lines
    assert "Café" in text and "Cafe\u0301" not in text  # NFC
    assert (
        "Gutenberg" not in text and "Licence" not in text and "Produced by" not in text and "Illustration" not in text
    )
    assert json.loads(row["meta"])["gutenberg_id"] == "99999"


def test_large_files_stream_in_parts_with_positions(tmp_path: Path) -> None:
    paragraphs = [f"Paragraph {i}. " + PROSE for i in range(400)]
    (tmp_path / "big.txt").write_text("\n\n".join(paragraphs))
    ds = DataCollector(segment_chars=20_000).collect_writing_samples(tmp_path)
    assert len(ds) > 5
    assert ds["part"] == list(range(len(ds)))
    offsets = [int(p.split(":")[1]) for p in ds["position"]]
    assert offsets == sorted(offsets) and offsets[0] == 0
    assert sum(t.count("Paragraph ") for t in ds["text"]) == 400


def test_unknown_source_names_the_options() -> None:
    with pytest.raises(DataError, match=r"unknown data source 'Book_Colection'.*Did you mean 'Book_Collection'"):
        DataCollector().collect_writing_samples("Book_Colection")


def test_user_config_adds_sources_relative_to_the_config_file(companion_home: Path, tmp_path: Path) -> None:
    (companion_home / "mine").mkdir()
    (companion_home / "mine" / "story.txt").write_text(PROSE)
    (companion_home / "config.yaml").write_text("data_sources:\n  My_Books:\n    type: writing\n    path: mine\n")
    ds = DataCollector().collect_writing_samples("my_books")  # names match case-insensitively
    assert ds["file"] == ["story.txt"]
    with pytest.raises(DataError, match="holds writing, not conversations"):
        DataCollector().collect_conversation_data("My_Books")


def test_gutenberg_source_downloads_once_then_uses_the_cache(book_server, companion_home: Path) -> None:
    url, handler = book_server
    handler.books["/cache/epub/1342/pg1342.txt"] = (
        "Title: Pride and Prejudice\nAuthor: Jane Austen\n\n*** START OF THE PROJECT GUTENBERG EBOOK 1342 ***\n\n"
        f"{PROSE}\n\n*** END OF THE PROJECT GUTENBERG EBOOK 1342 ***\nlicence"
    ).encode()
    ds = DataCollector(gutenberg_url=url).collect_writing_samples("gutenberg:1342")
    assert ds[0]["title"] == "Pride and Prejudice" and ds[0]["author"] == "Jane Austen"
    assert ds[0]["text"] == PROSE
    assert (companion_home / "cache" / "gutenberg" / "pg1342.txt").is_file()
    DataCollector(gutenberg_url=url).collect_writing_samples("gutenberg:1342")
    assert handler.hits == ["/cache/epub/1342/pg1342.txt"]  # the second call used the cache
    with pytest.raises(DataError, match="no plain-text book 7 .*404"):
        DataCollector(gutenberg_url=url).collect_writing_samples("gutenberg:7")


def test_gutenberg_offline_fails_with_a_clear_message() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match=r"cannot download Gutenberg book 84 .*offline.*pg84\.txt"):
        DataCollector(gutenberg_url=f"http://127.0.0.1:{port}").collect_writing_samples("gutenberg:84")
    with pytest.raises(DataError, match="gutenberg:1342"):
        DataCollector().collect_writing_samples("gutenberg:abc")
