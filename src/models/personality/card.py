"""Character cards: V1 (flat), V2 (`chara_card_v2`) and V3 (`chara_card_v3`) as JSON, PNG, CHARX.

A `CharacterCard` keeps the card's JSON object exactly as read (key order, unknown keys and
unknown `extensions` entries included), so an imported card re-exports byte for byte; typed
properties read it with the spec's defaults (missing strings are `""`, missing lists `[]`).
Our own fields live under `data.extensions.companion` (see `models.personality.extension`).

    card = load_card("luna.png")           # .json / .png / .apng / .charx, or bytes
    card.name, card.first_mes, card.lorebook, card.companion.scenarios
    card.save("luna.json"); card.save("luna.png")    # PNG: V3 writes `ccv3` + a V2 `chara`
    card.convert("chara_card_v3")

Validation happens on load: every problem is a `CardError` naming the field
(`data.alternate_greetings[1]: expected a string, got int`).
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

from models.errors import CardError
from models.personality.container import (
    PNG_SIGNATURE,
    default_avatar,
    png_card_payloads,
    read_charx,
    write_charx,
    write_png_card,
)

__all__ = ["SPEC_V1", "SPEC_V2", "SPEC_V3", "CardWarning", "CharacterCard", "load_card"]

SPEC_V1, SPEC_V2, SPEC_V3 = "chara_card_v1", "chara_card_v2", "chara_card_v3"
_VERSIONS = {SPEC_V2: "2.0", SPEC_V3: "3.0"}
V1_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
V2_STRINGS = ("creator_notes", "system_prompt", "post_history_instructions", "creator", "character_version")
V2_LISTS = ("alternate_greetings", "tags")
V3_ONLY = (
    "nickname",
    "creator_notes_multilingual",
    "source",
    "group_only_greetings",
    "creation_date",
    "modification_date",
    "assets",
)


class CardWarning(UserWarning):
    """A card that imports, but with something worth knowing (e.g. a newer spec_version)."""


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _too_long(value: str, field: str, source: str | None) -> None:
    from models import limits

    cap = limits.LIMITS.card_field_chars
    if len(value) > cap:
        raise CardError(
            field, f"{len(value):,} characters, over the limit of {cap:,} (models.limits: card_field_chars)", source
        )


def _check_str(data: dict[str, Any], key: str, where: str, source: str | None) -> None:
    if key in data and not isinstance(data[key], str):
        raise CardError(f"{where}{key}", f"expected a string, got {_type_name(data[key])}", source)
    if isinstance(data.get(key), str):
        _too_long(data[key], f"{where}{key}", source)


def _check_str_list(data: dict[str, Any], key: str, where: str, source: str | None) -> None:
    if key not in data:
        return
    value = data[key]
    if not isinstance(value, list):
        raise CardError(f"{where}{key}", f"expected a list of strings, got {_type_name(value)}", source)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise CardError(f"{where}{key}[{i}]", f"expected a string, got {_type_name(item)}", source)
        _too_long(item, f"{where}{key}[{i}]", source)


def _validate_data(data: Any, spec: str, where: str, source: str | None) -> None:
    if not isinstance(data, dict):
        raise CardError(where.rstrip(".") or "(top level)", f"expected an object, got {_type_name(data)}", source)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        problem = "required: the character's name" if name is None else f"expected a non-empty string, got {name!r}"
        raise CardError(f"{where}name", problem, source)
    for key in V1_FIELDS:
        _check_str(data, key, where, source)
    if spec == SPEC_V1:
        return
    for key in V2_STRINGS:
        _check_str(data, key, where, source)
    for key in V2_LISTS:
        _check_str_list(data, key, where, source)
    if "extensions" in data and not isinstance(data["extensions"], dict):
        raise CardError(f"{where}extensions", f"expected an object, got {_type_name(data['extensions'])}", source)
    book = data.get("character_book")
    if book is not None:
        from models.personality.lorebook import Lorebook

        Lorebook.validate(book, f"{where}character_book", source)
    if spec == SPEC_V3:
        _check_str(data, "nickname", where, source)
        _check_str_list(data, "group_only_greetings", where, source)
        _check_str_list(data, "source", where, source)
        for key in ("creation_date", "modification_date"):
            v = data.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise CardError(f"{where}{key}", f"expected Unix seconds (a number), got {_type_name(v)}", source)
        _validate_assets(data.get("assets"), f"{where}assets", source)


def _validate_assets(assets: Any, where: str, source: str | None) -> None:
    if assets is None:
        return
    if not isinstance(assets, list):
        raise CardError(where, f"expected a list of assets, got {_type_name(assets)}", source)
    for i, asset in enumerate(assets):
        if not isinstance(asset, dict):
            raise CardError(f"{where}[{i}]", f"expected an object, got {_type_name(asset)}", source)
        for key in ("type", "uri", "name", "ext"):
            if not isinstance(asset.get(key), str):
                raise CardError(f"{where}[{i}].{key}", f"required string, got {_type_name(asset.get(key))}", source)


def detect_spec(obj: Any, source: str | None = None) -> str:
    """`chara_card_v1|v2|v3` of a card JSON object; CardError when it is none of them."""
    if not isinstance(obj, dict):
        raise CardError("(top level)", f"a card is a JSON object, got {_type_name(obj)}", source)
    spec = obj.get("spec")
    if spec in (SPEC_V2, SPEC_V3):
        version = obj.get("spec_version")
        try:
            newer = float(version) >= float(_VERSIONS[spec]) + 1 or float(version) > 3.0
        except (TypeError, ValueError):
            raise CardError(
                "spec_version", f"expected a version like {_VERSIONS[spec]!r}, got {version!r}", source
            ) from None
        if newer:
            warnings.warn(f"{source or 'card'}: spec_version {version} is newer than this reader", CardWarning, 3)
        return spec
    if spec is not None:
        raise CardError("spec", f"unknown spec {spec!r}; expected {SPEC_V2!r} or {SPEC_V3!r}", source)
    if "name" in obj and any(k in obj for k in V1_FIELDS[1:]):
        return SPEC_V1
    raise CardError("spec", "not a character card: no spec chara_card_v2/v3 and no V1 fields (name, first_mes)", source)


class CharacterCard:
    """One character card, V1/V2/V3, kept as read. Properties give typed, defaulted access."""

    def __init__(self, raw: dict[str, Any], *, image: bytes | None = None, source: str | None = None) -> None:
        self.spec = detect_spec(raw, source)
        self.raw = raw
        self.source = source
        self.image = image
        """The avatar PNG the card came in (PNG cards), or None."""
        self.assets: dict[str, bytes] = {}
        """Files of a CHARX card, by path inside the zip (`embeded://path` refers to them)."""
        _validate_data(self.data, self.spec, "" if self.spec == SPEC_V1 else "data.", source)
        if self.spec != SPEC_V1:
            from models.personality.extension import CompanionExtension

            CompanionExtension.from_card_extensions(self.extensions, source)

    # --- fields -----------------------------------------------------------------------------

    @property
    def data(self) -> dict[str, Any]:
        """The fields: `raw` itself for V1, `raw["data"]` for V2/V3."""
        return self.raw if self.spec == SPEC_V1 else self.raw["data"]

    def _s(self, key: str) -> str:
        v = self.data.get(key)
        return v if isinstance(v, str) else ""

    def _l(self, key: str) -> list[Any]:
        v = self.data.get(key)
        return list(v) if isinstance(v, list) else []

    name = property(lambda self: self._s("name"), doc="The character's name.")
    description = property(lambda self: self._s("description"))
    personality = property(lambda self: self._s("personality"))
    scenario = property(lambda self: self._s("scenario"))
    first_mes = property(lambda self: self._s("first_mes"), doc="The greeting (V1 `first_mes`).")
    mes_example = property(lambda self: self._s("mes_example"))
    creator_notes = property(lambda self: self._s("creator_notes"), doc="For people; never put into a prompt.")
    system_prompt = property(lambda self: self._s("system_prompt"))
    post_history_instructions = property(lambda self: self._s("post_history_instructions"))
    creator = property(lambda self: self._s("creator"))
    character_version = property(lambda self: self._s("character_version"))
    alternate_greetings = property(lambda self: self._l("alternate_greetings"))
    group_only_greetings = property(lambda self: self._l("group_only_greetings"))
    tags = property(lambda self: self._l("tags"))

    @property
    def nickname(self) -> str:
        return self._s("nickname") if self.spec == SPEC_V3 else ""

    @property
    def display_name(self) -> str:
        """What `{{char}}` expands to: the V3 nickname when set, else the name."""
        return self.nickname or self.name

    @property
    def extensions(self) -> dict[str, Any]:
        ext = self.data.get("extensions")
        return ext if isinstance(ext, dict) else {}

    @property
    def companion(self) -> Any:
        """Our fields (`data.extensions.companion`) as a `CompanionExtension`, defaults filled."""
        from models.personality.extension import CompanionExtension

        return CompanionExtension.from_card_extensions(self.extensions, self.source)

    @property
    def lorebook(self) -> Any:
        """The `character_book` as a `Lorebook` (an empty one when the card has none)."""
        from models.personality.lorebook import Lorebook

        return Lorebook(self.data.get("character_book") or {"entries": []}, v3=self.spec == SPEC_V3)

    def greetings(self) -> list[str]:
        """`first_mes` then the alternates (unexpanded; see `interaction.greeting`)."""
        return [g for g in [self.first_mes, *self.alternate_greetings] if g]

    # --- conversion -------------------------------------------------------------------------

    def convert(self, spec: str) -> CharacterCard:
        """A copy of this card in another spec (`chara_card_v1|v2|v3`)."""
        if spec == self.spec:
            return CharacterCard(copy.deepcopy(self.raw), image=self.image, source=self.source)
        data = copy.deepcopy(self.data)
        if spec == SPEC_V1:
            raw: dict[str, Any] = {k: data.get(k, "") for k in V1_FIELDS}
        elif spec in (SPEC_V2, SPEC_V3):
            full = {k: data.get(k, "") for k in V1_FIELDS} | data
            for key in V2_STRINGS:
                full.setdefault(key, "")
            for key in V2_LISTS:
                full.setdefault(key, [])
            full.setdefault("extensions", {})
            if spec == SPEC_V2:
                full = _backfill_v2(full)
            else:
                full.setdefault("group_only_greetings", [])
                for entry in (full.get("character_book") or {}).get("entries", []):
                    entry.setdefault("use_regex", False)
            raw = {"spec": spec, "spec_version": _VERSIONS[spec], "data": full}
        else:
            raise CardError("spec", f"unknown spec {spec!r}; use {SPEC_V1}, {SPEC_V2} or {SPEC_V3}", self.source)
        out = CharacterCard(raw, image=self.image, source=self.source)
        out.assets = dict(self.assets)
        return out

    # --- output -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.raw)

    def to_json(self) -> str:
        """Pretty JSON (2-space indent, UTF-8 kept, trailing newline), the usual card file."""
        return json.dumps(self.raw, indent=2, ensure_ascii=False) + "\n"

    def to_png(self, image: bytes | None = None) -> bytes:
        """The card in a PNG: V3 as `ccv3` plus a V2 backfill in `chara`; V1/V2 as `chara`."""
        base = image or self.image or default_avatar(self.name)
        if self.spec == SPEC_V3:
            payloads = {"chara": self.convert(SPEC_V2).raw, "ccv3": self.raw}
        else:
            payloads = {"chara": self.raw}
        return write_png_card(base, payloads, self.source or "png")

    def to_charx(self) -> bytes:
        """A CHARX zip (the card converted to V3) with this card's assets."""
        return write_charx(self.convert(SPEC_V3).raw, self.assets)

    def save(self, path: str | Path, fmt: str | None = None) -> Path:
        """Write as `json`, `png` or `charx` (default: from the file suffix)."""
        from models.fileio import atomic_write_bytes

        path = Path(path)
        fmt = (fmt or path.suffix.lstrip(".") or "json").lower()
        if not path.parent.is_dir():
            raise CardError("output", f"the folder {path.parent} does not exist; create it first", str(path))
        if fmt == "json":
            data = self.to_json().encode("utf-8")
        elif fmt in ("png", "apng"):
            data = self.to_png()
        elif fmt == "charx":
            data = self.to_charx()
        else:
            raise CardError("format", f"cannot write {fmt!r}; use json, png or charx", str(path))
        atomic_write_bytes(path, data)  # a crash mid-write leaves the previous file whole
        return path

    def __repr__(self) -> str:
        return f"CharacterCard({self.name!r}, spec={self.spec!r})"


def _backfill_v2(data: dict[str, Any]) -> dict[str, Any]:
    """V3 `data` → V2: V3-only fields dropped, regex lorebook entries dropped, decorators removed."""
    from models.personality.lorebook import strip_decorators

    out = {k: v for k, v in data.items() if k not in V3_ONLY}
    book = out.get("character_book")
    if isinstance(book, dict):
        entries = []
        for entry in book.get("entries", []):
            if entry.get("use_regex"):
                continue
            entry = {k: v for k, v in entry.items() if k != "use_regex"}
            entry["content"] = strip_decorators(str(entry.get("content", "")))
            entries.append(entry)
        out["character_book"] = {**book, "entries": entries}
    return out


def load_card(src: str | Path | bytes, *, source: str | None = None) -> CharacterCard:
    """Read a card from a `.json`, `.png`/`.apng` or `.charx` file (or their bytes)."""
    from models import limits

    cap = limits.LIMITS.card_file_bytes
    if isinstance(src, bytes):
        data, name = src, source or "card"
    else:
        path = Path(src)
        name = source or str(path)
        try:
            if path.stat().st_size > cap:
                raise limits.LimitError(
                    f"{name}: a {path.stat().st_size >> 20} MiB card file is over the limit of {cap >> 20} MiB "
                    "(models.limits: card_file_bytes)"
                )
            data = path.read_bytes()
        except FileNotFoundError:
            raise CardError("file", "not found", name) from None
    if len(data) > cap:
        raise limits.LimitError(
            f"{name}: the card is over the limit of {cap >> 20} MiB (models.limits: card_file_bytes)"
        )
    if data.startswith(PNG_SIGNATURE):
        payloads = png_card_payloads(data, name)
        raw = payloads.get("ccv3") or payloads.get("chara")
        if raw is None:
            raise CardError("png", "no character card in this PNG (no 'chara' or 'ccv3' text chunk)", name)
        return CharacterCard(raw, image=data, source=name)
    if data.startswith(b"PK"):
        raw, assets = read_charx(data, name)
        card = CharacterCard(raw, source=name)
        card.assets = assets
        return card
    try:
        raw = limits.loads_bounded(data.decode("utf-8-sig"), name)
    except limits.LimitError:
        raise
    except (UnicodeDecodeError, ValueError) as exc:
        raise CardError("(file)", f"not a PNG, CHARX or JSON card ({exc})", name) from None
    return CharacterCard(raw, source=name)
