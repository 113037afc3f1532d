"""`Conversation`: a saved chat and the model answering in it: send, regenerate (swipes),
continue, edit, with what the user did recorded as feedback.

    conv = Conversation.open("sam", personality, chat_id=None)        # a new chat, greeted
    print("".join(conv.send("Help me plot a lighthouse mystery?")))   # streamed, then stored
    print("".join(conv.regenerate()))                                 # a second answer (swipe 1)
    conv.swipe(-1)                                                    # back to the first
    print("".join(conv.continue_reply()))                             # longer, same answer
    conv.edit(conv.chat.messages[-1].position, "My own ending.")

Every step is planned (`plan`: what the model is asked, where the answer goes) and recorded
(`record`) separately, so the server runs the generation in its own worker and records with
the same code. The user's message is stored before the model answers: a failure loses the
answer, never the message.

Feedback on logged answers (those with a `response_id`, i.e. personalized or served):
regenerating records `regenerate` on the answer replaced; sending after swiping records the
shown answer as kept over the others (`kept_over`); an edit records `edited_text`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from models.chats.store import Chat, ChatStore, Message, messages_from
from models.errors import ChatError

__all__ = ["Conversation", "ReplyPlan", "model_ref"]

ACTIONS = ("send", "regenerate", "continue")


@dataclass
class ReplyPlan:
    """What the model is asked for one answer, and where the answer goes."""

    action: str
    message: str
    """The user message the answer replies to."""
    history: list[dict[str, str]]
    """The turns before that message."""
    partial: str | None = None
    """continue: the shown answer so far."""
    replaces: str | None = None
    """regenerate: the response id of the answer shown until now (feedback goes to it)."""


def model_ref(model: Any) -> str:
    """CATEGORY/NAME of a loaded model (a personality, a base or a remote model)."""
    if hasattr(model, "generate_response"):
        return f"personality/{model.name}"
    return f"base/{getattr(model, 'name', 'model')}"


def _feedback(response_id: str | None, user: str, **kind: Any) -> None:
    if not response_id:
        return
    from models.personalization import record_feedback
    from models.personalization.events import FeedbackError

    try:
        record_feedback(response_id, user=user, **kind)
    except FeedbackError:  # an answer logged elsewhere or since erased: the chat itself is what matters
        return


class Conversation:
    """One stored chat of `user`, answered by `model` (`hybrid` personalizes a personality)."""

    def __init__(self, store: ChatStore, chat: Chat, model: Any, hybrid: Any = None) -> None:
        self.store, self.chat, self.model, self.hybrid = store, chat, model, hybrid
        self.last_response: Any = None
        self.last_personalized: Any = None  # the PersonalizedResponse of the last personalized answer

    @classmethod
    def open(
        cls,
        user: str,
        model: Any,
        chat_id: str | None = None,
        *,
        latest: bool = False,
        hybrid: Any = None,
        context: str | None = None,
        ref: str | None = None,
        system: str | None = None,
    ) -> Conversation:
        """Chat `chat_id` (or a unique start of it), the latest chat with `model` if `latest`,
        else a new chat that a personality opens with its greeting (a plain model with the
        `system` message, if given). `ref` is how the chat names the model (CATEGORY/NAME)."""
        store = ChatStore(user)
        ref = ref or model_ref(model)
        chat = None
        if chat_id is not None:
            chat = store.resolve(chat_id)
        elif latest:
            chat = store.latest(ref)
        if chat is None:
            greeting = model.greetings(user, context) if hasattr(model, "greetings") else []
            shown = model.greeting(user, context) if greeting else ""  # the card's choice (first or random)
            index = greeting.index(shown) if shown in greeting else 0
            meta = {"character": getattr(model, "character", None), "system": system}
            first = messages_from([{"role": "system", "content": system}]) if system else []
            chat = store.create(
                ref,
                greeting=greeting or None,
                greeting_index=index,
                meta={k: v for k, v in meta.items() if v},
                messages=first,
            )
        return cls(store, chat, model, hybrid)

    @property
    def user(self) -> str:
        return self.store.user

    def reload(self) -> Chat:
        self.chat = self.store.get(self.chat.id)
        return self.chat

    # --- planning and recording -------------------------------------------------------------

    def plan(self, action: str, text: str | None = None, images: list[str] | None = None) -> ReplyPlan:
        """What to generate for `action`; `send` stores the user's `text` (and `images`, data
        URLs a vision model reads) first."""
        if action not in ACTIONS:
            raise ChatError(f"action: expected one of {', '.join(ACTIONS)}, got {action!r}")
        msgs = self.chat.messages
        if action == "send":
            if not isinstance(text, str) or not text.strip():
                raise ChatError("message: expected the text to send")
            self._record_kept()
            self.store.append(self.chat.id, "user", text, details={"images": list(images)} if images else None)
            self.reload()
            return ReplyPlan("send", text, self.chat.history(len(self.chat.messages) - 1))
        last_user = max((m.position for m in msgs if m.role == "user"), default=None)
        if last_user is None:
            raise ChatError(f"chat {self.chat.id}: nothing to {action} yet (send a message first)")
        answered = last_user < len(msgs) - 1 and msgs[-1].role == "assistant"
        message, history = msgs[last_user].text, self.chat.history(last_user)
        if action == "continue":
            if not answered:
                raise ChatError(f"chat {self.chat.id}: the last message is not an answer to continue")
            return ReplyPlan("continue", message, history, partial=msgs[-1].text)
        replaces = msgs[-1].response_id if answered else None
        return ReplyPlan("regenerate", message, history, replaces=replaces)

    def record(self, plan: ReplyPlan, text: str, response_id: str | None = None, **details: Any) -> Message:
        """Store the answer `plan` asked for, with its feedback."""
        details = {k: v for k, v in details.items() if v is not None}
        msgs = self.chat.messages
        if plan.action == "continue":
            msg = self.store.extend(self.chat.id, msgs[-1].position, text, response_id=response_id)
        elif plan.action == "regenerate" and msgs and msgs[-1].role == "assistant" and msgs[-1].position > 0:
            msg = self.store.add_swipe(self.chat.id, text, response_id=response_id, **details)
            _feedback(plan.replaces, self.user, regenerate=True)
        else:
            msg = self.store.append(self.chat.id, "assistant", text, response_id=response_id, details=details)
        self.reload()
        return msg

    def _record_kept(self) -> None:
        """Before the next message: the shown answer was kept over its other swipes."""
        msgs = self.chat.messages
        last = msgs[-1] if msgs else None
        if (
            last is None
            or last.role != "assistant"
            or len(last.swipes) < 2
            or last.details.get("kept") == last.swipe_id
        ):
            return
        others = [s["text"] for i, s in enumerate(last.swipes) if i != last.swipe_id and s["text"].strip()]
        if others:
            _feedback(last.response_id, self.user, kept_over=others)
        self.store.set_details(self.chat.id, last.position, kept=last.swipe_id)

    # --- generation (in this process) ---------------------------------------------------------

    def _generate(self, plan: ReplyPlan, opts: dict[str, Any]) -> Iterator[str]:
        model = self.model
        answer: dict[str, Any] = {}
        self.last_personalized = None
        if plan.partial is None and self.hybrid is not None:
            if plan.action == "regenerate":
                opts = {k: v for k, v in opts.items() if k != "seed"}  # a new answer, not the same again
            p = self.hybrid.generate_personalized_response(
                message=plan.message, user=self.user, history=plan.history, **opts
            )
            self.last_response, self.last_personalized = p.response, p
            answer.update(response_id=p.response_id, emotion=p.response.emotion)
            yield str(p)
            text = str(p)
        elif hasattr(model, "stream_response"):
            if plan.partial is not None:
                opts = {**opts, "partial": plan.partial}
            pieces = []
            for piece in model.stream_response(message=plan.message, history=plan.history, user=self.user, **opts):
                pieces.append(piece)
                yield piece
            r = model.last_response
            self.last_response = r
            text = r.text if r is not None else "".join(pieces)
            answer.update(emotion=getattr(r, "emotion", None))
        else:
            messages = [*plan.history, {"role": "user", "content": plan.message}]
            if plan.partial is not None:
                messages.append({"role": "assistant", "content": plan.partial})
                opts = {**opts, "continue_final": True}
            max_length = opts.pop("max_length", None)
            pieces = []
            for piece in model.stream_chat(messages, max_length, **opts):
                pieces.append(piece)
                yield piece
            text = "".join(pieces) if plan.partial is not None else "".join(pieces).strip()
        self.record(plan, text, **answer)

    def send(self, text: str, **opts: Any) -> Iterator[str]:
        """Answer `text` (stored first), streamed; the answer is stored when it ends."""
        return self._generate(self.plan("send", text), dict(opts))

    def regenerate(self, **opts: Any) -> Iterator[str]:
        """Another answer to the last message, kept beside the earlier ones (a swipe)."""
        return self._generate(self.plan("regenerate"), dict(opts))

    def continue_reply(self, **opts: Any) -> Iterator[str]:
        """More of the shown answer (the model carries on from where it stopped)."""
        return self._generate(self.plan("continue"), dict(opts))

    # --- swipes and edits ---------------------------------------------------------------------

    def swipe(self, index: int | None = None, step: int = 1) -> Message:
        """Show answer `index` of the last answer, or the one `step` away (wrapping around)."""
        msgs = self.chat.messages
        if not msgs or msgs[-1].role != "assistant":
            raise ChatError(f"chat {self.chat.id}: the last message is not an answer")
        last = msgs[-1]
        target = index if index is not None else (last.swipe_id + step) % len(last.swipes)
        msg = self.store.select_swipe(self.chat.id, last.position, target)
        self.reload()
        return msg

    def edit(self, position: int, text: str) -> Message:
        """Replace the text at `position` (an answer's edit is feedback on it)."""
        msg, before = self.store.edit(self.chat.id, position, text)
        if msg.role == "assistant" and before != text:
            _feedback(msg.response_id, self.user, edited_text=text)
        self.reload()
        return msg
