"""Saved conversations (issue 20): chats per user and model, with swipes, edits and continue;
our JSON and SillyTavern's JSONL both ways.

    from models.chats import ChatStore, Conversation
    conv = Conversation.open("sam", load_personality_model("luna"), latest=True)
    for piece in conv.send("Where were we?"): print(piece, end="")

`models.chats.store` keeps them (sealed at rest, exported and erased with the user),
`models.chats.conversation` drives a model through one, `models.chats.formats` reads and
writes them as files.
"""

from models.chats.conversation import Conversation, ReplyPlan, model_ref
from models.chats.formats import ChatDraft, from_json, from_sillytavern, to_json, to_sillytavern
from models.chats.store import Chat, ChatInfo, ChatStore, Message

__all__ = [
    "Chat",
    "ChatDraft",
    "ChatInfo",
    "ChatStore",
    "Conversation",
    "Message",
    "ReplyPlan",
    "from_json",
    "from_sillytavern",
    "model_ref",
    "to_json",
    "to_sillytavern",
]
