"""Chats as files: our JSON and SillyTavern's JSONL, both ways.

SillyTavern keeps a chat as JSON Lines (`chats/<character>/<name>.jsonl` in its data folder):
the first line is a header `{"user_name", "character_name", "create_date", "chat_metadata"}`,
then one message per line `{"name", "is_user", "is_system", "send_date", "mes", "extra",
"swipes", "swipe_id", "swipe_info"}` (`swipes` only where a message has alternatives). Fields
we do not use are kept with the chat (the header's in `meta["sillytavern"]`, a message's in its
`details["sillytavern"]`) and written back on export, so a SillyTavern chat imported and
exported again is the same chat, line by line.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from models.chats.store import Chat, Message, new_swipe
from models.errors import ChatError

__all__ = ["FORMAT", "ChatDraft", "from_json", "from_sillytavern", "read_chat", "to_json", "to_sillytavern"]

FORMAT = "companion-chat/1"
MAX_LINES = 100_000
_MESSAGE_KEYS = ("name", "is_user", "is_system", "send_date", "mes", "swipes", "swipe_id")


class ChatDraft:
    """A chat read from a file, not yet stored: `ChatStore.create(draft.model, **draft.kwargs())`."""

    def __init__(self, model: str | None, title: str | None, meta: dict[str, Any], messages: list[Message],
                 created_at: str | None = None) -> None:  # fmt: skip
        self.model, self.title, self.meta, self.messages, self.created_at = model, title, meta, messages, created_at

    def kwargs(self) -> dict[str, Any]:
        return {"title": self.title, "meta": self.meta, "messages": self.messages, "created_at": self.created_at}


# ----------------------------------------------------------------------------- our JSON


def to_json(chat: Chat) -> dict[str, Any]:
    """The chat as our JSON (`companion chats export --format json`)."""
    return {"format": FORMAT, **chat.to_dict()}


def from_json(data: Any) -> ChatDraft:
    """A chat from our JSON (what `to_json` wrote)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ChatError(f'not a chat file: expected "format": "{FORMAT}"')
    messages = []
    for i, m in enumerate(data.get("messages") or []):
        if not isinstance(m, dict) or not isinstance(m.get("swipes"), list) or not m["swipes"]:
            raise ChatError(f"messages[{i}]: expected an object with a non-empty swipes list")
        swipes = []
        for j, s in enumerate(m["swipes"]):
            if not isinstance(s, dict) or not isinstance(s.get("text"), str):
                raise ChatError(f"messages[{i}].swipes[{j}]: expected an object with a text")
            swipes.append(dict(s))
        swipe_id = m.get("swipe_id", 0)
        if not isinstance(swipe_id, int) or not 0 <= swipe_id < len(swipes):
            raise ChatError(f"messages[{i}].swipe_id: expected 0..{len(swipes) - 1}, got {swipe_id!r}")
        details = m.get("details") or {}
        if not isinstance(details, dict):
            raise ChatError(f"messages[{i}].details: expected an object")
        messages.append(Message(i, str(m.get("role")), swipes, swipe_id, details, str(m.get("created_at") or "")))
    meta = data.get("meta") or {}
    if not isinstance(meta, dict):
        raise ChatError("meta: expected an object")
    title = data.get("title") if isinstance(data.get("title"), str) and data.get("title") else None
    return ChatDraft(data.get("model"), title, dict(meta), messages, data.get("created_at"))


# ----------------------------------------------------------------------------- SillyTavern


def _st_date(iso: str | None) -> str:
    """SillyTavern's `create_date` style (2024-05-01@10h00m00s) for one of our ISO times."""
    try:
        when = datetime.fromisoformat(iso) if iso else datetime.now(UTC)
    except ValueError:
        when = datetime.now(UTC)
    return when.strftime("%Y-%m-%d@%Hh%Mm%Ss")


def to_sillytavern(chat: Chat, *, user_name: str = "User", character_name: str | None = None) -> str:
    """The chat as SillyTavern JSONL (one JSON object per line, header first)."""
    st = chat.meta.get("sillytavern") or {}
    character = character_name or chat.meta.get("character") or chat.model.split("/", 1)[-1]
    header = dict(st.get("header") or {})
    header.setdefault("user_name", chat.meta.get("user_name") or user_name)
    header.setdefault("character_name", character)
    header.setdefault("create_date", _st_date(chat.created_at))
    header.setdefault("chat_metadata", {})
    lines = [header]
    for m in chat.messages:
        kept = dict(m.details.get("sillytavern") or {})
        own = kept.pop("_fields", None)
        is_user = m.role == "user"
        line: dict[str, Any] = {
            "name": kept.pop("name", None) or (header["user_name"] if is_user else header["character_name"]),
            "is_user": is_user,
            "is_system": m.role == "system",
            "send_date": kept.pop("send_date", None) or m.swipes[m.swipe_id].get("at") or m.created_at,
            "mes": m.text,
        }
        texts = [s["text"] for s in m.swipes]
        if (own is None and not is_user) or (own is not None and "swipes" in own) or len(texts) > 1:
            line["swipes"] = texts
            line["swipe_id"] = m.swipe_id
            info = kept.pop("swipe_info", None)
            if not isinstance(info, list) or len(info) != len(texts):
                info = [{"send_date": s.get("at") or line["send_date"], "extra": {}} for s in m.swipes]
            line["swipe_info"] = info
        if own is None:
            line.setdefault("extra", kept.pop("extra", None) or {})
        elif "is_system" not in own:
            line.pop("is_system")
        line.update(kept)
        if own is not None:  # the imported message's own key order, then anything we added
            line = {k: line[k] for k in own if k in line} | {k: v for k, v in line.items() if k not in own}
        lines.append(line)
    return "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n"


def _st_message(i: int, obj: Any) -> Message:
    if not isinstance(obj, dict):
        raise ChatError(f"line {i + 2}: expected a message object")
    mes = obj.get("mes")
    if not isinstance(mes, str):
        raise ChatError(f"line {i + 2}: mes: expected the message text")
    swipes_raw = obj.get("swipes")
    if swipes_raw is not None and (not isinstance(swipes_raw, list) or not all(isinstance(s, str) for s in swipes_raw)):
        raise ChatError(f"line {i + 2}: swipes: expected a list of texts")
    texts = list(swipes_raw) if swipes_raw else [mes]
    swipe_id = obj.get("swipe_id", 0) if swipes_raw else 0
    if not isinstance(swipe_id, int) or isinstance(swipe_id, bool) or not 0 <= swipe_id < len(texts):
        raise ChatError(f"line {i + 2}: swipe_id: expected 0..{len(texts) - 1}, got {swipe_id!r}")
    if texts[swipe_id] != mes:  # SillyTavern keeps mes == swipes[swipe_id]; trust mes
        texts[swipe_id] = mes
    role = "user" if obj.get("is_user") else ("system" if obj.get("is_system") else "assistant")
    send_date = obj.get("send_date")
    swipes = [new_swipe(t, at=send_date if isinstance(send_date, str) else None) for t in texts]
    kept = {k: v for k, v in obj.items() if k not in ("mes", "swipes", "swipe_id", "is_user", "is_system")}
    kept["_fields"] = list(obj)
    return Message(i, role, swipes, swipe_id, {"sillytavern": kept}, send_date if isinstance(send_date, str) else "")


def from_sillytavern(text: str, model: str | None = None) -> ChatDraft:
    """A chat from SillyTavern JSONL; errors name the line."""
    rows = [line for line in text.splitlines() if line.strip()]
    if not rows:
        raise ChatError("empty chat file: expected SillyTavern JSONL (a header line, then one message per line)")
    if len(rows) > MAX_LINES:
        raise ChatError(f"chat file: at most {MAX_LINES} lines, got {len(rows)}")
    parsed = []
    for n, line in enumerate(rows, 1):
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ChatError(f"line {n}: not JSON ({exc.msg})") from None
    header = parsed[0]
    if (
        not isinstance(header, dict)
        or "mes" in header
        or not ({"user_name", "character_name", "chat_metadata"} & set(header))
    ):
        raise ChatError("line 1: expected SillyTavern's header (user_name, character_name, chat_metadata)")
    messages = [_st_message(i, obj) for i, obj in enumerate(parsed[1:])]
    character = header.get("character_name") if isinstance(header.get("character_name"), str) else None
    meta = {"sillytavern": {"header": header}, "character": character, "user_name": header.get("user_name")}
    return ChatDraft(model, None, {k: v for k, v in meta.items() if v is not None}, messages)


def read_chat(text: str, model: str | None = None) -> ChatDraft:
    """A chat file's text, either format: our JSON (one object with `format`) or SillyTavern JSONL."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and "format" in data:
        draft = from_json(data)
        draft.model = model or draft.model
        return draft
    return from_sillytavern(text, model)
