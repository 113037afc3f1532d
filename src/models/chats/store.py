"""Saved conversations: one user's chats with models, their messages and swipes.

    store = ChatStore("sam")
    chat = store.create("personality/luna", greeting="Hello, traveller.")
    store.append(chat.id, "user", "Help me with my lighthouse mystery?")
    store.append(chat.id, "assistant", "Gladly. Who finds the body?", response_id="r1")
    store.add_swipe(chat.id, "A lighthouse! Tell me about the keeper.", response_id="r2")
    store.select_swipe(chat.id, 2, 0)           # back to the first answer
    store.get(chat.id).history()                # [{"role": ..., "content": ...}, ...]

A message holds every answer given at its place (`swipes`, SillyTavern's word) and which one
is shown (`swipe_id`); regenerating adds one, it never replaces. Each operation is one
transaction and checks that the chat is this user's: another user's chat is "not found".

At rest the chat's title and meta and each message's swipes and details are sealed with the
rest of personalization data (`models.personalization.storage.SEALED`); erasure and export of a
user include their chats (`erase_user`, `export_user`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from models import db
from models.errors import ChatError, ChatNotFoundError
from models.personalization.storage import home_engine, open_row, seal_row
from models.users import check_user_id

__all__ = ["ROLES", "Chat", "ChatInfo", "ChatStore", "Message", "erase_user", "export_user", "new_swipe"]

ROLES = ("user", "assistant", "system")
MAX_TITLE = 200
MAX_TEXT = 100_000  # characters in one message
TITLE_FROM = 60  # characters of the first user message that name a chat nobody named


def new_swipe(text: str, response_id: str | None = None, at: str | None = None, **extra: Any) -> dict[str, Any]:
    """One alternative answer as stored: its text, the logged answer it came from, and when."""
    if not isinstance(text, str):
        raise ChatError(f"message text: expected a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise ChatError(f"message text: at most {MAX_TEXT} characters, got {len(text)}")
    swipe: dict[str, Any] = {"text": text, "response_id": response_id, "at": at or db.utc_now()}
    swipe.update({k: v for k, v in extra.items() if v is not None})
    return swipe


@dataclass
class Message:
    """One message of a chat: the answer shown is `swipes[swipe_id]`."""

    position: int
    role: str
    swipes: list[dict[str, Any]]
    swipe_id: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""

    @property
    def text(self) -> str:
        return str(self.swipes[self.swipe_id]["text"])

    @property
    def response_id(self) -> str | None:
        return self.swipes[self.swipe_id].get("response_id")

    @property
    def emotion(self) -> str | None:
        """The emotion the shown answer was given in (a swipe's own, else the message's)."""
        return self.swipes[self.swipe_id].get("emotion") or self.details.get("emotion")

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "role": self.role,
            "text": self.text,
            "swipes": [dict(s) for s in self.swipes],
            "swipe_id": self.swipe_id,
            "details": dict(self.details),
            "created_at": self.created_at,
        }


@dataclass
class Chat:
    """A saved conversation of `user` with `model` (CATEGORY/NAME)."""

    id: str
    user: str
    model: str
    title: str
    meta: dict[str, Any]
    created_at: str
    updated_at: str
    messages: list[Message] = field(default_factory=list)

    def history(self, upto: int | None = None) -> list[dict[str, str]]:
        """The shown text of each message before `upto` (all by default), as chat turns."""
        shown = self.messages if upto is None else self.messages[:upto]
        return [{"role": m.role, "content": m.text} for m in shown]

    def message(self, position: int) -> Message:
        if not isinstance(position, int) or not 0 <= position < len(self.messages):
            raise ChatError(f"chat {self.id}: no message at position {position!r} (it has {len(self.messages)})")
        return self.messages[position]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "title": self.title,
            "meta": dict(self.meta),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "messages": [m.to_dict() for m in self.messages],
        }


@dataclass
class ChatInfo:
    """A chat in a list: no messages, their count and the last one's start."""

    id: str
    model: str
    title: str
    created_at: str
    updated_at: str
    messages: int
    last: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _title(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= TITLE_FROM else line[: TITLE_FROM - 1].rstrip() + "…"


def _check_title(title: object) -> str:
    if not isinstance(title, str) or not title.strip():
        raise ChatError(f"title: expected a non-empty string, got {title!r}")
    if len(title) > MAX_TITLE:
        raise ChatError(f"title: at most {MAX_TITLE} characters, got {len(title)}")
    return title.strip()


def _check_role(role: object) -> str:
    if role not in ROLES:
        raise ChatError(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
    return str(role)


def _check_model(model: object) -> str:
    if not isinstance(model, str) or not model.strip() or len(model) > 200:
        raise ChatError(f"model: expected the model's name (CATEGORY/NAME), got {model!r}")
    return model


class ChatStore:
    """The chats of one user (every method checks the chat is theirs)."""

    def __init__(self, user: str) -> None:
        self.user = check_user_id(user)

    # --- reading ------------------------------------------------------------------------------

    def _row(self, conn: Any, chat_id: str) -> dict[str, Any]:
        t = db.chats
        if not isinstance(chat_id, str) or not chat_id:
            raise ChatNotFoundError(f"no chat {chat_id!r}")
        row = conn.execute(select(t).where(t.c.id == chat_id, t.c.user_id == self.user)).mappings().first()
        if row is None:
            raise ChatNotFoundError(f"no chat {chat_id!r} of {self.user!r} (companion chats list shows them)")
        return open_row("chats", row)

    def _messages(self, conn: Any, chat_id: str) -> list[Message]:
        t = db.chat_messages
        rows = conn.execute(select(t).where(t.c.chat_id == chat_id).order_by(t.c.position)).mappings()
        out = []
        for raw in rows:
            row = open_row("chat_messages", raw)
            out.append(
                Message(row["position"], row["role"], list(row["swipes"]), row["swipe_id"], dict(row["details"] or {}),
                        row["created_at"])
            )  # fmt: skip
        return out

    def _chat(self, conn: Any, chat_id: str) -> Chat:
        row = self._row(conn, chat_id)
        return Chat(
            row["id"], self.user, row["model"], row["title"], dict(row["meta"] or {}), row["created_at"],
            row["updated_at"], self._messages(conn, chat_id),
        )  # fmt: skip

    def get(self, chat_id: str) -> Chat:
        """The chat with all its messages (ChatNotFoundError if it is not this user's)."""
        with home_engine().connect() as conn:
            return self._chat(conn, chat_id)

    def list(self, model: str | None = None, limit: int = 200) -> list[ChatInfo]:
        """This user's chats (with `model` only, if given), most recently changed first."""
        t, m = db.chats, db.chat_messages
        query = select(t).where(t.c.user_id == self.user)
        if model is not None:
            query = query.where(t.c.model == model)
        query = query.order_by(t.c.updated_at.desc(), t.c.id).limit(max(1, int(limit)))
        with home_engine().connect() as conn:
            rows = [open_row("chats", r) for r in conn.execute(query).mappings()]
            ids = [r["id"] for r in rows]
            counts: dict[str, int] = {}
            lasts: dict[str, str] = {}
            if ids:
                grouped = select(m.c.chat_id, func.count(), func.max(m.c.position)).where(m.c.chat_id.in_(ids))
                ends = []
                for chat_id, n, last in conn.execute(grouped.group_by(m.c.chat_id)):
                    counts[chat_id] = n
                    ends.append((chat_id, last))
                for chat_id, last in ends:
                    raw = (
                        conn.execute(
                            select(m.c.swipes, m.c.swipe_id).where(m.c.chat_id == chat_id, m.c.position == last)
                        )
                        .mappings()
                        .first()
                    )
                    if raw is not None:
                        row = open_row("chat_messages", raw)
                        lasts[chat_id] = _title(row["swipes"][row["swipe_id"]]["text"])
        return [
            ChatInfo(r["id"], r["model"], r["title"], r["created_at"], r["updated_at"], counts.get(r["id"], 0),
                     lasts.get(r["id"], ""))
            for r in rows
        ]  # fmt: skip

    def latest(self, model: str | None = None) -> Chat | None:
        """The most recently changed chat (with `model`, if given), or None."""
        found = self.list(model, limit=1)
        return self.get(found[0].id) if found else None

    # --- writing ------------------------------------------------------------------------------

    def _touch(self, conn: Any, chat_id: str, **values: Any) -> None:
        t = db.chats
        sealed = seal_row("chats", values) if values else {}
        conn.execute(update(t).where(t.c.id == chat_id).values(updated_at=db.utc_now(), **sealed))

    def _insert_message(
        self,
        conn: Any,
        chat_id: str,
        position: int,
        role: str,
        swipes: list[dict[str, Any]],
        swipe_id: int = 0,
        details: dict[str, Any] | None = None,
        at: str | None = None,
    ) -> Message:
        row = {"swipes": swipes, "details": details or {}}
        conn.execute(
            insert(db.chat_messages).values(
                chat_id=chat_id, user_id=self.user, position=position, role=role, swipe_id=swipe_id,
                created_at=at or db.utc_now(), **seal_row("chat_messages", row),
            )
        )  # fmt: skip
        return Message(position, role, swipes, swipe_id, details or {}, at or "")

    def _write_message(self, conn: Any, chat_id: str, msg: Message) -> None:
        t = db.chat_messages
        sealed = seal_row("chat_messages", {"swipes": msg.swipes, "details": msg.details})
        conn.execute(
            update(t)
            .where(t.c.chat_id == chat_id, t.c.position == msg.position)
            .values(swipe_id=msg.swipe_id, **sealed)
        )

    def create(
        self,
        model: str,
        *,
        title: str | None = None,
        greeting: str | Sequence[str] | None = None,
        greeting_index: int = 0,
        meta: dict[str, Any] | None = None,
        messages: Iterable[Message] = (),
        created_at: str | None = None,
    ) -> Chat:
        """A new chat with `model`, opened by the character's `greeting` (if any; a list: the
        card's greetings, shown as swipes of the first message, `greeting_index` first) and/or
        holding `messages` (an import). Untitled chats take their title from the first user message."""
        _check_model(model)
        meta = dict(meta or {})
        if title is not None:
            title = _check_title(title)
            meta["titled"] = True
        chat_id = secrets.token_hex(8)
        now = db.utc_now()
        msgs = list(messages)
        greetings = [greeting] if isinstance(greeting, str) else [g for g in greeting or [] if g]
        if greetings:
            if not 0 <= greeting_index < len(greetings):
                raise ChatError(f"greeting: the card has greetings 0..{len(greetings) - 1}, not {greeting_index}")
            opening = Message(0, "assistant", [new_swipe(g) for g in greetings], greeting_index, {"greeting": True})
            msgs = [opening, *msgs]
        first_user = next((m.text for m in msgs if m.role == "user"), None)
        title = title or (_title(first_user) if first_user else "New chat")
        with db.write_transaction(home_engine()) as conn:
            conn.execute(
                insert(db.chats).values(
                    id=chat_id, user_id=self.user, model=model, created_at=created_at or now, updated_at=now,
                    **seal_row("chats", {"title": title, "meta": meta}),
                )
            )  # fmt: skip
            for i, m in enumerate(msgs):
                _check_role(m.role)
                if not m.swipes or not 0 <= m.swipe_id < len(m.swipes):
                    raise ChatError(f"message {i}: swipe_id {m.swipe_id} is not one of its {len(m.swipes)} swipes")
                self._insert_message(conn, chat_id, i, m.role, m.swipes, m.swipe_id, m.details, m.created_at or None)
            return self._chat(conn, chat_id)

    def append(
        self,
        chat_id: str,
        role: str,
        text: str,
        *,
        response_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> Message:
        """Add a message at the end of the chat."""
        _check_role(role)
        swipe = new_swipe(text, response_id)
        t = db.chat_messages
        with db.write_transaction(home_engine()) as conn:
            row = self._row(conn, chat_id)
            n = conn.scalar(select(func.count()).where(t.c.chat_id == chat_id)) or 0
            msg = self._insert_message(conn, chat_id, n, role, [swipe], 0, details)
            title = {}
            if role == "user" and not row["meta"].get("titled") and not self._has_user_message(conn, chat_id, n):
                title = {"title": _title(text)}
            self._touch(conn, chat_id, **title)
        return msg

    def _has_user_message(self, conn: Any, chat_id: str, before: int) -> bool:
        t = db.chat_messages
        found = conn.scalar(
            select(func.count()).where(t.c.chat_id == chat_id, t.c.role == "user", t.c.position < before)
        )
        return bool(found)

    def _update(self, chat_id: str, position: int, change: Any) -> Message:
        with db.write_transaction(home_engine()) as conn:
            self._row(conn, chat_id)
            msgs = self._messages(conn, chat_id)
            if not isinstance(position, int) or not 0 <= position < len(msgs):
                raise ChatError(f"chat {chat_id}: no message at position {position!r} (it has {len(msgs)})")
            msg = msgs[position]
            change(msg)
            self._write_message(conn, chat_id, msg)
            self._touch(conn, chat_id)
        return msg

    def add_swipe(
        self, chat_id: str, text: str, *, response_id: str | None = None, position: int | None = None, **extra: Any
    ) -> Message:
        """Another answer at `position` (default: the last message, which must be the model's);
        it becomes the one shown. The earlier answers stay, to swipe back to."""
        swipe = new_swipe(text, response_id, **extra)
        if position is None:
            position = len(self.get(chat_id).messages) - 1

        def change(msg: Message) -> None:
            if msg.role != "assistant":
                raise ChatError(f"chat {chat_id}: message {position} is the {msg.role}'s; only answers have swipes")
            msg.swipes.append(swipe)
            msg.swipe_id = len(msg.swipes) - 1

        return self._update(chat_id, position, change)

    def select_swipe(self, chat_id: str, position: int, index: int) -> Message:
        """Show answer `index` of the message at `position`."""

        def change(msg: Message) -> None:
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(msg.swipes):
                raise ChatError(f"swipe: message {position} has answers 0..{len(msg.swipes) - 1}, not {index!r}")
            msg.swipe_id = index

        return self._update(chat_id, position, change)

    def edit(self, chat_id: str, position: int, text: str) -> tuple[Message, str]:
        """Replace the shown text of the message at `position`; returns it and the text it had."""
        new_swipe(text)  # checks the text
        before: list[str] = []

        def change(msg: Message) -> None:
            swipe = msg.swipes[msg.swipe_id]
            before.append(swipe["text"])
            swipe.setdefault("original", swipe["text"])
            swipe["text"] = text
            swipe["edited_at"] = db.utc_now()

        msg = self._update(chat_id, position, change)
        return msg, before[0]

    def extend(self, chat_id: str, position: int, more: str, *, response_id: str | None = None) -> Message:
        """Append `more` to the shown answer at `position` (the model continued it)."""

        def change(msg: Message) -> None:
            swipe = msg.swipes[msg.swipe_id]
            text = swipe["text"] + more
            new_swipe(text)
            swipe["text"] = text
            if response_id:
                swipe.setdefault("continued_by", []).append(response_id)

        return self._update(chat_id, position, change)

    def set_details(self, chat_id: str, position: int, **details: Any) -> Message:
        """Merge `details` into the message at `position` (None removes a key)."""

        def change(msg: Message) -> None:
            for k, v in details.items():
                if v is None:
                    msg.details.pop(k, None)
                else:
                    msg.details[k] = v

        return self._update(chat_id, position, change)

    def truncate(self, chat_id: str, position: int) -> int:
        """Delete the messages from `position` on; returns how many went."""
        t = db.chat_messages
        with db.write_transaction(home_engine()) as conn:
            self._row(conn, chat_id)
            n = conn.execute(delete(t).where(t.c.chat_id == chat_id, t.c.position >= int(position))).rowcount
            self._touch(conn, chat_id)
        return n

    def rename(self, chat_id: str, title: str) -> Chat:
        title = _check_title(title)
        with db.write_transaction(home_engine()) as conn:
            row = self._row(conn, chat_id)
            self._touch(conn, chat_id, title=title, meta={**row["meta"], "titled": True})
            return self._chat(conn, chat_id)

    def update_meta(self, chat_id: str, **meta: Any) -> Chat:
        with db.write_transaction(home_engine()) as conn:
            row = self._row(conn, chat_id)
            self._touch(conn, chat_id, meta={**row["meta"], **meta})
            return self._chat(conn, chat_id)

    def delete(self, chat_id: str) -> None:
        with db.write_transaction(home_engine()) as conn:
            self._row(conn, chat_id)
            conn.execute(delete(db.chat_messages).where(db.chat_messages.c.chat_id == chat_id))
            conn.execute(delete(db.chats).where(db.chats.c.id == chat_id))

    def resolve(self, ref: str) -> Chat:
        """A chat by its id or by a unique start of it (as `git` takes short hashes)."""
        if len(ref) >= 16:
            return self.get(ref)
        t = db.chats
        with home_engine().connect() as conn:
            ids = list(
                conn.scalars(select(t.c.id).where(t.c.user_id == self.user, t.c.id.startswith(ref, autoescape=True)))
            )
        if len(ids) == 1:
            return self.get(ids[0])
        if not ids:
            raise ChatNotFoundError(f"no chat {ref!r} of {self.user!r} (companion chats list shows them)")
        raise ChatError(f"chat {ref!r} is ambiguous: {', '.join(sorted(ids))}")


def erase_user(user: str) -> dict[str, int]:
    """Delete every chat of `user` and their messages; returns how many rows went."""
    with db.write_transaction(home_engine()) as conn:
        n_msgs = conn.execute(delete(db.chat_messages).where(db.chat_messages.c.user_id == user)).rowcount
        n_chats = conn.execute(delete(db.chats).where(db.chats.c.user_id == user)).rowcount
    return {"chats": n_chats, "chat_messages": n_msgs}


def export_user(user: str) -> list[dict[str, Any]]:
    """Every chat of `user`, whole (for data-subject access)."""
    store = ChatStore(user)
    return [store.get(info.id).to_dict() for info in store.list(limit=100_000)]


def messages_from(turns: Sequence[dict[str, Any]]) -> list[Message]:
    """Plain `{"role", "content"}` turns as messages (one swipe each)."""
    return [
        Message(i, _check_role(t.get("role")), [new_swipe(str(t.get("content") or ""))]) for i, t in enumerate(turns)
    ]
