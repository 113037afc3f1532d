"""Character data: character cards (V1/V2/V3; JSON, PNG, CHARX), our sheets and dialogue files.

Card facts follow `shared/data/character_cards/SPEC_NOTES.md`: PNG cards carry base64 JSON in
a `tEXt`/`iTXt`/`zTXt` chunk named `chara` (V1/V2) or `ccv3` (V3, preferred when both exist);
CHARX is a ZIP with `card.json`. `creator_notes`, `tags` and `creator` never become training
text. `{{char}}`/`<BOT>` become the character's name (V3 `nickname` when set) and
`{{user}}`/`<USER>` the `user_name` passed in.

Rows (see `schema.CHARACTER_FEATURES`), by `kind`:

* `dialogue`    a line the character says (`context` = what it answers, when known)
* `greeting`    `first_mes`, `alternate_greetings`, a sheet's greeting
* `example`     a `{{char}}:` line of `mes_example` (its `{{user}}:` line is the context)
* `description`, `personality`, `scenario`   card and sheet descriptions

Our own files (shipped in `writing_assistant/character_data/`):

* `<id>.json` with `"format": "companion-character-sheet/1"`: the character sheet
* `<id>_dialogue.jsonl`: one `{"context", "text", "emotion"}` object per line
"""

from __future__ import annotations

import json
import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from models import limits
from models.errors import DataError
from models.training_data.reports import CollectionReport
from models.training_data.schema import dumps_meta, sha256_text

__all__ = ["SHEET_FORMAT", "iter_character_records", "load_character_sheets", "read_card"]

SHEET_FORMAT = "companion-character-sheet/1"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHAR = re.compile(r"\{\{char\}\}|<bot>|<char>", re.IGNORECASE)
_USER = re.compile(r"\{\{user\}\}|<user>", re.IGNORECASE)
_EXAMPLE_LINE = re.compile(r"^\s*(\{\{user\}\}|<user>|\{\{char\}\}|<bot>|<char>)\s*:\s*(.*)$", re.IGNORECASE)


def read_card(path: Path) -> dict[str, Any]:
    """A card file as `{"spec", "spec_version", "data"}` (V1 cards are wrapped as V2)."""
    # The same bounded readers as `companion cards import` (models.limits: sizes, counts, depth).
    from models.personality.container import png_card_payloads, read_charx

    suffix = path.suffix.lower()
    cap = limits.LIMITS.card_file_bytes
    if path.stat().st_size > cap:
        raise limits.LimitError(f"{path.name}: over the limit of {cap >> 20} MiB (models.limits: card_file_bytes)")
    if suffix == ".png":
        payloads = png_card_payloads(path.read_bytes(), path.name)
        raw = payloads.get("ccv3") or payloads.get("chara")
        if raw is None:
            raise DataError("PNG has no character card (no 'chara' or 'ccv3' text chunk)")
    elif suffix == ".charx":
        raw, _assets = read_charx(path.read_bytes(), path.name)
    else:
        raw = limits.loads_bounded(path.read_text(encoding="utf-8"), path.name)
    if not isinstance(raw, dict):
        raise DataError("a character card must be a JSON object")
    if raw.get("spec") in ("chara_card_v2", "chara_card_v3") and isinstance(raw.get("data"), dict):
        return raw
    if "name" in raw and ("first_mes" in raw or "description" in raw):
        return {"spec": "chara_card_v1", "spec_version": "1.0", "data": raw}
    raise DataError("not a character card (no spec chara_card_v2/v3, nor V1 fields name/first_mes)")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "character"


def _row(character: str, name: str, kind: str, text: str, *, context: str = "", emotion: str = "", **prov: Any) -> dict:
    return {
        "character": character,
        "name": name,
        "kind": kind,
        "context": context,
        "text": text,
        "emotion": emotion,
        "source": prov["source"],
        "file": prov["file"],
        "position": prov["position"],
        "sha256": sha256_text(f"{kind}\0{context}\0{text}"),
        "meta": dumps_meta(prov.get("meta")),
    }


def _card_rows(card: dict[str, Any], rel: str, source: str, user_name: str) -> Iterator[dict[str, Any]]:
    data = card["data"]
    name = str(data.get("name") or Path(rel).stem)
    shown = str(data.get("nickname") or name)
    char = _slug(name)

    def fill(text: Any) -> str:
        return _USER.sub(user_name, _CHAR.sub(shown, str(text or ""))).strip()

    meta = {"spec": card.get("spec"), "spec_version": card.get("spec_version")}
    for field in ("description", "personality", "scenario"):
        if fill(data.get(field)):
            yield _row(char, name, field, fill(data.get(field)), source=source, file=rel, position=field, meta=meta)
    greetings = [data.get("first_mes"), *(data.get("alternate_greetings") or [])]
    for i, greeting in enumerate(g for g in greetings if g):
        yield _row(char, name, "greeting", fill(greeting), source=source, file=rel, position=f"greeting:{i}", meta=meta)
    context, n = "", 0
    for line in str(data.get("mes_example") or "").splitlines():
        if line.strip().upper() == "<START>":
            context = ""
            continue
        m = _EXAMPLE_LINE.match(line)
        if not m:
            continue
        if m.group(1).lower() in ("{{user}}", "<user>"):
            context = fill(m.group(2))
        else:
            yield _row(
                char, name, "example", fill(m.group(2)), context=context, source=source, file=rel,
                position=f"example:{n}", meta=meta,
            )  # fmt: skip
            n += 1


def _sheet_rows(sheet: dict[str, Any], rel: str, source: str) -> Iterator[dict[str, Any]]:
    char, name = str(sheet.get("id") or _slug(str(sheet.get("name", "")))), str(sheet.get("name") or "")
    fields = {"description": "summary", "personality": "personality", "scenario": "setting"}
    for kind, key in fields.items():
        value = sheet.get(key)
        text = ", ".join(map(str, value)) if isinstance(value, list) else str(value or "")
        if text.strip():
            yield _row(char, name, kind, text.strip(), source=source, file=rel, position=key)
    for i, greeting in enumerate(sheet.get("greetings") or []):
        yield _row(char, name, "greeting", str(greeting), source=source, file=rel, position=f"greetings:{i}")


def _dialogue_rows(path: Path, rel: str, source: str, report: CollectionReport) -> Iterator[dict[str, Any]]:
    default = path.stem.removesuffix("_dialogue")
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = limits.loads_line(line, f"{rel} line {n}")
            except limits.LimitError as exc:
                report.problem(rel, f"line {n}", str(exc))
                continue
            except json.JSONDecodeError as exc:
                report.problem(rel, f"line {n}, column {exc.colno}", f"malformed JSON ({exc.msg})")
                continue
            if not isinstance(obj, dict) or not str(obj.get("text", "")).strip():
                report.skip("empty_line")
                continue
            char = str(obj.get("character") or default)
            name, kind = str(obj.get("name") or char.title()), str(obj.get("kind") or "dialogue")
            yield _row(
                char, name, kind, str(obj["text"]).strip(), context=str(obj.get("context") or ""),
                emotion=str(obj.get("emotion") or ""), source=source, file=rel, position=f"line:{n}",
            )  # fmt: skip


def load_character_sheets(folder: Path) -> dict[str, dict[str, Any]]:
    """Character id → sheet, for every `companion-character-sheet/1` JSON file in `folder`."""
    sheets = {}
    for path in sorted(Path(folder).glob("*.json")):
        try:
            data = limits.loads_bounded(path.read_text(encoding="utf-8"), path.name)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("format") == SHEET_FORMAT:
            sheets[str(data.get("id") or path.stem)] = data
    return sheets


def iter_character_records(
    root: Path, *, source: str, report: CollectionReport, user_name: str = "User"
) -> Iterator[dict[str, Any]]:
    """Rows from every card, sheet and dialogue file under `root` (or `root` itself)."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for path in files:
        suffix = path.suffix.lower()
        if suffix not in (".json", ".png", ".charx", ".jsonl"):
            continue
        rel = path.name if root.is_file() else path.relative_to(root).as_posix()
        report.files_seen += 1
        try:
            if suffix == ".jsonl":
                rows: Iterator[dict[str, Any]] = _dialogue_rows(path, rel, source, report)
            elif suffix == ".json" and '"' + SHEET_FORMAT + '"' in path.read_text(encoding="utf-8")[:4096]:
                rows = _sheet_rows(limits.loads_bounded(path.read_text(encoding="utf-8"), rel), rel, source)
            else:
                rows = _card_rows(read_card(path), rel, source, user_name)
            yield from rows
            report.files_read += 1
            report.bytes_read += path.stat().st_size
        except (DataError, ValueError, OSError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
            report.problem(rel, "", f"not a readable character file ({exc})")
