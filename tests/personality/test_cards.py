"""Character cards: V1/V2/V3 round trips (JSON, PNG, CHARX), validation, conversion."""

from __future__ import annotations

import base64
import json
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from models.errors import CardError
from models.personality.card import SPEC_V1, SPEC_V2, SPEC_V3, CardWarning, CharacterCard, load_card
from models.personality.container import PNG_SIGNATURE, default_avatar, png_card_payloads, write_png_card
from tests.personality.conftest import V1_CARD, card_json, v2_card, v3_card

CARDS = {"v1": lambda: dict(V1_CARD), "v2": v2_card, "v3": v3_card}


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    pos, out = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        ctype, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])
        assert crc == zlib.crc32(ctype + body) & 0xFFFFFFFF
        out.append((ctype, body))
        pos += 12 + n
    return out


def _text_chunks(data: bytes) -> dict[str, object]:
    found = {}
    for ctype, body in _chunks(data):
        if ctype == b"tEXt":
            key, value = body.split(b"\0", 1)
            found[key.decode()] = json.loads(base64.b64decode(value))
    return found


def _png_like_examples(obj: dict, both: bool) -> bytes:
    """A PNG the way the example cards are made: compact JSON, base64, tEXt after IHDR."""
    payloads = {"chara": CharacterCard(obj).convert(SPEC_V2).raw, "ccv3": obj} if both else {"chara": obj}
    return write_png_card(default_avatar("x"), payloads)


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_json_round_trip_is_byte_identical(tmp_path: Path, version: str) -> None:
    text = card_json(CARDS[version]())
    src = tmp_path / f"card_{version}.json"
    src.write_text(text, encoding="utf-8")
    card = load_card(src)
    assert card.spec == {"v1": SPEC_V1, "v2": SPEC_V2, "v3": SPEC_V3}[version]
    out = card.save(tmp_path / "out.json")
    assert out.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_png_round_trip_keeps_the_json(tmp_path: Path, version: str) -> None:
    obj = CARDS[version]()
    src = tmp_path / "card.png"
    src.write_bytes(_png_like_examples(obj, both=version == "v3"))
    card = load_card(src)
    assert card.raw == obj and card.image == src.read_bytes()
    again = card.to_png()
    chunks = _text_chunks(again)
    if version == "v3":
        assert list(chunks) == ["chara", "ccv3"] and chunks["ccv3"] == obj
        assert chunks["chara"]["spec"] == SPEC_V2  # the V2 backfill for older apps
    else:
        assert chunks == {"chara": obj}
    assert [c for c, _ in _chunks(again)][:1] == [b"IHDR"] and _chunks(again)[-1][0] == b"IEND"
    # the avatar itself is untouched
    assert [b for c, b in _chunks(again) if c == b"IDAT"] == [b for c, b in _chunks(src.read_bytes()) if c == b"IDAT"]
    # and the JSON export of the imported PNG is the same file as the JSON card
    assert card.to_json() == card_json(obj)


def test_unknown_extension_keys_survive_byte_for_byte(tmp_path: Path) -> None:
    obj = v3_card()
    card = load_card(card_json(obj).encode(), source="mem")
    for fmt in ("json", "png", "charx"):
        path = card.save(tmp_path / f"c.{fmt}")
        back = load_card(path)
        ext = back.extensions["x-other-app/avatar_crop"]
        assert json.dumps(ext) == json.dumps(obj["data"]["extensions"]["x-other-app/avatar_crop"])


def test_ccv3_preferred_and_keywords_case_insensitive() -> None:
    v3 = v3_card()
    old = v2_card()
    old["data"]["name"] = "Old backfill"
    png = write_png_card(default_avatar("x"), {"Chara": old, "CCV3": v3})
    assert load_card(png).name == "Ada" and load_card(png).spec == SPEC_V3
    only_v2 = write_png_card(default_avatar("x"), {"Chara": old})
    assert load_card(only_v2).name == "Old backfill"


def test_itxt_chunks_are_read_leniently() -> None:
    payload = base64.b64encode(json.dumps(v2_card()).encode())
    body = b"chara\0" + b"\0\0" + b"\0" + b"\0" + payload
    chunk = struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(b"iTXt" + body))
    avatar = default_avatar("y")
    png = avatar[:33] + chunk + avatar[33:]
    assert png_card_payloads(png)["chara"]["data"]["name"] == "Ada"


def test_png_without_card_and_not_png() -> None:
    with pytest.raises(CardError, match="no character card"):
        load_card(default_avatar("plain"))
    with pytest.raises(CardError, match="not a PNG, CHARX or JSON"):
        load_card(b"\x00\x01garbage")
    assert default_avatar("z").startswith(PNG_SIGNATURE)


def test_charx_read(tmp_path: Path) -> None:
    path = tmp_path / "ada.charx"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("card.json", json.dumps(v3_card()))
        z.writestr("assets/emotion/images/happy.png", default_avatar("happy"))
    card = load_card(path)
    assert card.spec == SPEC_V3 and card.nickname == "Addie"
    assert "assets/emotion/images/happy.png" in card.assets
    with zipfile.ZipFile(tmp_path / "bad.charx", "w") as z:
        z.writestr("other.json", "{}")
    with pytest.raises(CardError, match=r"card\.json"):
        load_card(tmp_path / "bad.charx")


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["data"]["alternate_greetings"].append(3), "data.alternate_greetings[2]"),
        (lambda d: d["data"].pop("name"), "data.name"),
        (lambda d: d["data"].update(tags="a,b"), "data.tags"),
        (lambda d: d["data"]["character_book"]["entries"][0].update(keys="storm"), "entries[0].keys"),
        (lambda d: d["data"]["character_book"]["entries"][1].update(position="top"), "entries[1].position"),
        (lambda d: d["data"]["extensions"]["companion"]["behavior"].update(verbosity=2), "behavior.verbosity"),
        (lambda d: d["data"]["extensions"]["companion"]["interaction"].update(colour="x"), "interaction.colour"),
        (lambda d: d["data"]["extensions"]["companion"]["scenarios"]["storm_night"].pop("scenario"), "storm_night"),
        (lambda d: d["data"]["extensions"]["companion"]["emotion"].update(baseline="bliss"), "emotion"),
        (lambda d: d.update(spec="chara_card_v9"), "spec"),
        (lambda d: d["data"].update(extensions=[]), "data.extensions"),
    ],
)
def test_invalid_cards_name_the_field(mutate, field: str) -> None:
    obj = v2_card()
    mutate(obj)
    with pytest.raises(CardError) as info:
        CharacterCard(obj, source="ada.json")
    assert field in str(info.value) and str(info.value).startswith("ada.json: ")


def test_v3_asset_validation_names_field() -> None:
    obj = v3_card()
    obj["data"]["assets"][1].pop("uri")
    with pytest.raises(CardError, match=r"data\.assets\[1\]\.uri"):
        CharacterCard(obj)


def test_newer_spec_version_imports_with_a_warning() -> None:
    obj = v3_card()
    obj["spec_version"] = "3.5"
    with pytest.warns(CardWarning, match="newer"):
        assert CharacterCard(obj).name == "Ada"


def test_conversions() -> None:
    v1 = CharacterCard(dict(V1_CARD))
    v2 = v1.convert(SPEC_V2)
    assert v2.raw["spec"] == SPEC_V2 and v2.data["alternate_greetings"] == [] and v2.data["extensions"] == {}
    assert v2.convert(SPEC_V1).raw == V1_CARD
    v3 = CharacterCard(v3_card())
    back = v3.convert(SPEC_V2)
    assert "nickname" not in back.data and "assets" not in back.data
    entries = back.data["character_book"]["entries"]
    assert len(entries) == 2 and all("use_regex" not in e for e in entries)  # the regex entry cannot be V2
    up = CharacterCard(v2_card()).convert(SPEC_V3)
    assert up.data["group_only_greetings"] == [] and up.data["character_book"]["entries"][0]["use_regex"] is False
    with pytest.raises(CardError, match="unknown spec"):
        v3.convert("chara_card_v7")


def test_fields_and_our_extension() -> None:
    card = CharacterCard(v3_card())
    assert card.display_name == "Addie" and card.greetings()[0].startswith("*{{char}} looks up")
    assert card.companion.behavior.verbosity == 0.2
    assert card.companion.baseline()["caring"] == pytest.approx(0.6)
    assert sorted(card.companion.scenarios) == ["romantic_conversation", "storm_night"]
    legacy = v2_card()
    legacy["data"]["extensions"] = {"companion/emotion_default": "curious"}
    assert CharacterCard(legacy).companion.baseline()["curious"] == 1.0


def test_builtin_cards_load_and_round_trip() -> None:
    from models.paths import builtin_dir

    folders = sorted(p.parent for p in builtin_dir().glob("*/persona.json"))
    assert {f.name for f in folders} >= {"luna", "marlowe", "quill"}
    for folder in folders:
        raw = (folder / "persona.json").read_text(encoding="utf-8")
        card = load_card(folder / "persona.json")
        assert card.to_json() == raw
        assert "romantic_conversation" in card.companion.scenarios or folder.name != "luna"
        assert load_card(card.to_png()).raw == card.raw


def test_small_hostile_inputs_get_clear_answers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 16 item 5: each of these was a traceback or a silent acceptance before."""
    import struct
    import zlib

    from models.config import load_config
    from models.errors import CardError, ConfigError
    from models.personality.card import CharacterCard, load_card
    from models.personality.macros import expand_macros

    # {{roll:²}} and a 5,000-digit die are left as written, not a ValueError.
    assert expand_macros("{{roll:²}}", char="A", user="B") == "{{roll:²}}"
    assert expand_macros("{{roll:" + "9" * 5000 + "}}", char="A", user="B").startswith("{{roll:")
    # Export to a folder that does not exist: a clear error, nothing written.
    card = CharacterCard(v2_card())
    with pytest.raises(CardError, match="does not exist"):
        card.save(tmp_path / "missing" / "ada.png")
    # A PNG whose card chunk fails its CRC loads with a warning.
    data = bytearray(card.to_png())
    at = data.index(b"tEXt") - 4
    (length,) = struct.unpack(">I", data[at : at + 4])
    crc_at = at + 8 + length
    data[crc_at : crc_at + 4] = struct.pack(">I", (zlib.crc32(b"x") + 1) & 0xFFFFFFFF)
    with caplog.at_level("WARNING"):
        assert load_card(bytes(data)).name == card.name
    assert "CRC" in caplog.text
    # A config over the size limit is refused before it is read; merge keys get their own message.
    big = tmp_path / "config.yaml"
    big.write_text("# padding\n" * 500_000)
    with pytest.raises(ConfigError, match="config_bytes"):
        load_config(big)
    big.write_text("base: &b {max_length: 8}\nmodels:\n  base:\n    x:\n      <<: *b\n")
    with pytest.raises(ConfigError, match="merge keys"):
        load_config(big)


def test_absolute_and_escaping_charx_members_are_dropped(tmp_path: Path) -> None:
    """Issue 16 item 5: a re-exported CHARX kept an absolute member name from its source."""
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("card.json", json.dumps(v2_card()))
        z.writestr("/etc/evil.png", b"x")
        z.writestr("../up.png", b"x")
        z.writestr("assets/ok.png", b"png")
    card = load_card(buf.getvalue())
    assert sorted(card.assets) == ["assets/ok.png"]
    out = tmp_path / "again.charx"
    card.save(out)
    with zipfile.ZipFile(out) as z:
        assert not [n for n in z.namelist() if n.startswith("/") or ".." in n]


def test_huge_fields_and_lorebooks_are_refused_at_import() -> None:
    """Issue 16 item 5: a 20 MB description made each reply take 30 s and 3.3 GB, and 100 k
    lorebook entries made a reply take minutes; both are refused with the limit's name."""
    card = v2_card()
    card["data"]["description"] = "x" * 20_000_000
    with pytest.raises(CardError, match="card_field_chars"):
        CharacterCard(card)
    card = v2_card()
    card["data"]["character_book"] = {"entries": [{"keys": [f"k{i}"], "content": "c"} for i in range(100_000)]}
    with pytest.raises(CardError, match="lorebook_entries"):
        CharacterCard(card)
