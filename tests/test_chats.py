"""Saved chats (issue 20): the store, SillyTavern's JSONL both ways, the CLI, privacy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from models.chats import ChatStore, Conversation, from_json, from_sillytavern, to_json, to_sillytavern
from models.errors import ChatError, ChatNotFoundError

runner = CliRunner()

# A SillyTavern chat as its own files hold it: header first, its own fields everywhere, a user
# message without swipes, an answer with two swipes (the second shown), a hidden system note.
ST_LINES = [
    {
        "user_name": "Sam",
        "character_name": "Luna",
        "create_date": "2026-01-01@10h00m00s",
        "chat_metadata": {"note_prompt": "", "world_info": "Moonhaven", "tainted": True},
    },
    {
        "name": "Luna",
        "is_user": False,
        "is_system": False,
        "send_date": "January 1, 2026 10:00am",
        "mes": "Hello, traveller.",
        "extra": {},
        "swipe_id": 0,
        "swipes": ["Hello, traveller."],
        "swipe_info": [{"send_date": "January 1, 2026 10:00am", "extra": {}}],
    },
    {
        "name": "Sam",
        "is_user": True,
        "send_date": "January 1, 2026 10:01am",
        "mes": "Help me with a lighthouse mystery?",
        "extra": {"isSmallSys": False},
        "force_avatar": "User Avatars/sam.png",
    },
    {
        "extra": {"api": "custom", "model": "luna", "gen_id": 17},
        "name": "Luna",
        "is_user": False,
        "send_date": "January 1, 2026 10:02am",
        "mes": "Who keeps the light?",
        "swipe_id": 1,
        "swipes": ["Gladly. Who finds the body?", "Who keeps the light?"],
        "swipe_info": [
            {"send_date": "January 1, 2026 10:02am", "gen_started": "x", "gen_finished": "y", "extra": {"gen_id": 16}},
            {"send_date": "January 1, 2026 10:03am", "extra": {"gen_id": 17}},
        ],
        "gen_started": "2026-01-01T10:02:58.000Z",
        "gen_finished": "2026-01-01T10:03:00.000Z",
    },
    {
        "name": "Narrator",
        "is_user": False,
        "is_system": True,
        "send_date": "x",
        "mes": "[The storm rises.]",
        "extra": {},
    },
]


def st_text(lines: list[dict] = ST_LINES) -> str:
    return "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n"


def test_a_chat_keeps_messages_swipes_and_edits_for_its_user_only(companion_home: Path) -> None:
    store = ChatStore("sam")
    chat = store.create("personality/luna", greeting="Hello, traveller.")
    assert chat.title == "New chat" and [m.role for m in chat.messages] == ["assistant"]
    store.append(
        chat.id, "user", "Help me with my lighthouse mystery, please, the keeper vanished at dawn and nobody knows"
    )
    store.append(chat.id, "assistant", "Gladly.", response_id="r1")
    store.add_swipe(chat.id, "Who keeps the light?", response_id="r2")
    got = store.get(chat.id)
    assert got.title.startswith("Help me with my lighthouse mystery") and got.title.endswith("…")
    last = got.messages[-1]
    assert (last.text, last.response_id, len(last.swipes)) == ("Who keeps the light?", "r2", 2)
    assert store.select_swipe(chat.id, 2, 0).text == "Gladly."
    msg, before = store.edit(chat.id, 2, "Gladly. Tell me about the keeper.")
    assert before == "Gladly." and msg.swipes[0]["original"] == "Gladly." and msg.text.endswith("keeper.")
    assert store.get(chat.id).history()[-1] == {"role": "assistant", "content": "Gladly. Tell me about the keeper."}
    with pytest.raises(ChatError, match="answers 0..1"):
        store.select_swipe(chat.id, 2, 5)
    with pytest.raises(ChatError, match="only answers have swipes"):
        store.add_swipe(chat.id, "x", position=1)
    # another user's chat does not exist for them, not even by a short id
    with pytest.raises(ChatNotFoundError):
        ChatStore("ana").get(chat.id)
    with pytest.raises(ChatNotFoundError):
        ChatStore("ana").resolve(chat.id[:6])
    assert ChatStore("ana").list() == []
    info = store.list()[0]
    assert (info.id, info.messages, info.last) == (chat.id, 3, "Gladly. Tell me about the keeper.")
    assert store.resolve(chat.id[:6]).id == chat.id
    renamed = store.rename(chat.id, "The lighthouse")
    store.append(chat.id, "user", "A second message does not rename it.")
    assert store.get(chat.id).title == renamed.title == "The lighthouse"
    assert store.truncate(chat.id, 3) == 1 and len(store.get(chat.id).messages) == 3
    store.delete(chat.id)
    with pytest.raises(ChatNotFoundError):
        store.get(chat.id)


def test_chats_are_sealed_at_rest(companion_home: Path) -> None:
    from sqlalchemy import select

    from models import db
    from models.personalization.storage import home_engine

    store = ChatStore("sam")
    chat = store.create("personality/luna", title="Secret plot")
    store.append(chat.id, "user", "The butler is my uncle Ebenezer.")
    with home_engine().connect() as conn:
        raw = [str(v) for row in conn.execute(select(db.chats)) for v in row]
        raw += [str(v) for row in conn.execute(select(db.chat_messages)) for v in row]
    assert not any("Ebenezer" in v or "Secret plot" in v for v in raw)
    assert store.get(chat.id).messages[0].text == "The butler is my uncle Ebenezer."


def test_sillytavern_chat_imports_and_exports_back_unchanged(companion_home: Path) -> None:
    draft = from_sillytavern(st_text(), model="personality/luna")
    chat = ChatStore("sam").create(draft.model, **draft.kwargs())
    assert [m.role for m in chat.messages] == ["assistant", "user", "assistant", "system"]
    assert chat.messages[2].text == "Who keeps the light?" and chat.messages[2].swipe_id == 1
    assert chat.history()[1] == {"role": "user", "content": "Help me with a lighthouse mystery?"}
    back = [json.loads(line) for line in to_sillytavern(ChatStore("sam").get(chat.id)).splitlines()]
    assert back == ST_LINES
    # key order too: SillyTavern's own files diff cleanly
    assert [list(x) for x in back] == [list(x) for x in ST_LINES]


def test_our_chats_round_trip_through_sillytavern_and_json(companion_home: Path) -> None:
    store = ChatStore("sam")
    chat = store.create("personality/luna", greeting="Hello.", meta={"character": "Luna"})
    store.append(chat.id, "user", "Hi Luna")
    store.append(chat.id, "assistant", "First answer")
    store.add_swipe(chat.id, "Second answer")
    chat = store.get(chat.id)
    lines = [json.loads(x) for x in to_sillytavern(chat, user_name="Sam").splitlines()]
    assert lines[0]["character_name"] == "Luna" and lines[0]["user_name"] == "Sam"
    assert lines[2] == {**lines[2], "is_user": True, "name": "Sam", "mes": "Hi Luna"} and "swipes" not in lines[2]
    assert lines[3]["swipes"] == ["First answer", "Second answer"] and lines[3]["swipe_id"] == 1
    again = store.create("personality/luna", **from_sillytavern(to_sillytavern(chat)).kwargs())
    texts = [[s["text"] for s in m.swipes] for m in again.messages]
    assert texts == [[s["text"] for s in m.swipes] for m in chat.messages]
    assert [m.swipe_id for m in again.messages] == [m.swipe_id for m in chat.messages]
    # our JSON keeps everything
    copy = store.create("personality/luna", **from_json(json.loads(json.dumps(to_json(chat)))).kwargs())
    assert [m.to_dict() for m in copy.messages] == [m.to_dict() for m in chat.messages]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty chat file"),
        ("{not json\n", "line 1: not JSON"),
        ('{"mes": "hi"}\n', "line 1: expected SillyTavern's header"),
        ('{"user_name": "a", "character_name": "b"}\n{"name": "b", "is_user": false}\n', "line 2: mes"),
        (
            '{"user_name": "a", "character_name": "b"}\n{"mes": "x", "swipes": ["x"], "swipe_id": 3}\n',
            "line 2: swipe_id",
        ),
    ],
)
def test_bad_sillytavern_files_name_the_line(text: str, problem: str) -> None:
    with pytest.raises(ChatError, match=problem):
        from_sillytavern(text)


class Scripted:
    """A plain chat model that answers from a script and records what it was sent."""

    name = "scripted"
    engine_name = "scripted"

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[list[dict], dict]] = []

    def stream_chat(self, messages, max_length=None, **opts):
        self.sent.append(([dict(m) for m in messages], opts))
        text = self.answers.pop(0)
        yield text[: len(text) // 2]
        yield text[len(text) // 2 :]


def test_a_conversation_sends_regenerates_swipes_continues_and_edits(companion_home: Path) -> None:
    model = Scripted("Once upon", "A different", " a time.")
    conv = Conversation.open("sam", model, ref="base/scripted", system="Be brief.")
    assert "".join(conv.send("Tell me a story")) == "Once upon"
    assert model.sent[0][0] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Tell me a story"},
    ]
    "".join(conv.regenerate())
    assert model.sent[1][0] == model.sent[0][0]  # the same question again
    last = conv.chat.messages[-1]
    assert [s["text"] for s in last.swipes] == ["Once upon", "A different"] and last.swipe_id == 1
    assert conv.swipe(step=1).swipe_id == 0  # wraps around
    "".join(conv.continue_reply())
    sent, opts = model.sent[2]
    assert sent[-1] == {"role": "assistant", "content": "Once upon"} and opts["continue_final"] is True
    assert conv.chat.messages[-1].text == "Once upon a time."
    conv.edit(conv.chat.messages[-1].position, "Once upon a time, the end.")
    resumed = Conversation.open("sam", Scripted(), latest=True, ref="base/scripted")
    assert resumed.chat.id == conv.chat.id and resumed.chat.messages[-1].text == "Once upon a time, the end."
    with pytest.raises(ChatError, match="nothing to continue"):
        Conversation.open("sam", Scripted(), ref="base/other").continue_reply()


def test_continue_on_a_real_model_carries_on_from_the_cut(tiny_model_dir: Path, companion_home: Path) -> None:
    from models.transformer_model import TransformerModel

    model = TransformerModel(str(tiny_model_dir), name="tiny")
    conv = Conversation.open("sam", model, ref="base/tiny")
    first = "".join(conv.send("hello", max_length=3, seed=1, temperature=0))
    more = "".join(conv.continue_reply(max_length=3, seed=1, temperature=0))
    both = "".join(model.stream_chat([{"role": "user", "content": "hello"}], 6, seed=1, temperature=0))
    assert conv.chat.messages[-1].text == first + more
    assert (first + more).strip() == both.strip()  # greedy: continuing = having generated longer


def test_privacy_export_and_erase_include_chats(companion_home: Path) -> None:
    from models.privacy.stores import DatabaseStore

    store = ChatStore("sam")
    chat = store.create("personality/luna")
    store.append(chat.id, "user", "My secret plot")
    ChatStore("ana").create("personality/luna")
    exported = DatabaseStore().export("sam")
    assert "My secret plot" in json.dumps(exported["chat_messages"]) and len(exported["chats"]) == 1
    removed = DatabaseStore().erase("sam")
    assert removed["chats"] == 1 and removed["chat_messages"] == 1
    assert ChatStore("sam").list() == [] and len(ChatStore("ana").list()) == 1


def test_chats_cli_lists_shows_renames_exports_imports_and_deletes(tmp_path: Path, companion_home: Path) -> None:
    from companion.cli import app

    chat = ChatStore("local").create("personality/luna", greeting="Hello.")
    ChatStore("local").append(chat.id, "user", "Plot twist?")
    r = runner.invoke(app, ["chats", "list"])
    assert r.exit_code == 0 and chat.id[:8] in r.output and "Plot twist?" in r.output, r.output
    r = runner.invoke(app, ["chats", "rename", chat.id[:6], "Twists"])
    assert r.exit_code == 0 and "Twists" in r.output
    r = runner.invoke(app, ["chats", "show", chat.id[:6], "--json"])
    assert json.loads(r.output)["title"] == "Twists"
    out = tmp_path / "luna.jsonl"
    r = runner.invoke(app, ["chats", "export", chat.id[:6], "--format", "sillytavern", "-o", str(out)])
    assert r.exit_code == 0 and json.loads(out.read_text().splitlines()[2])["mes"] == "Plot twist?"
    st = tmp_path / "st.jsonl"
    st.write_text(st_text())
    r = runner.invoke(app, ["chats", "import", str(st)])  # named after its character: Luna is built in
    assert r.exit_code == 0 and "4 messages" in r.output and "with personality/luna" in r.output, r.output
    r = runner.invoke(app, ["chats", "list", "--json"])
    assert len(json.loads(r.output)) == 2
    ours = tmp_path / "ours.json"  # our own export (indented JSON) imports back
    runner.invoke(app, ["chats", "export", chat.id[:6], "-o", str(ours)])
    r = runner.invoke(app, ["chats", "import", str(ours)])
    assert r.exit_code == 0 and "2 messages" in r.output, r.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"user_name": "a", "character_name": "b"}\n{oops\n')
    r = runner.invoke(app, ["chats", "import", str(bad), "-m", "luna"])
    assert r.exit_code == 1 and "line 2: not JSON" in r.output
    r = runner.invoke(app, ["chats", "delete", chat.id[:6]])
    assert r.exit_code == 0 and "deleted" in r.output
    r = runner.invoke(app, ["chats", "show", chat.id[:6]])
    assert r.exit_code == 1 and "no chat" in r.output


def test_chat_continue_resumes_the_latest_chat(user_config) -> None:
    from companion.cli import app

    user_config("models:\n  base:\n    tiny: {type: transformer, path: '{tiny}', parameters: {max_length: 4}}\n")
    r = runner.invoke(app, ["chat", "tiny", "--seed", "1"], input="first message\n/title Story one\n/quit\n")
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["chat", "tiny", "--continue"], input="/history\n/quit\n")
    assert r.exit_code == 0 and "resuming chat" in r.output and "Story one" in r.output, r.output
    assert r.output.count("first message") >= 2  # shown on resume and by /history
    r = runner.invoke(app, ["chat", "tiny", "--chat", "nope"], input="/quit\n")
    assert r.exit_code == 1 and "no chat 'nope'" in r.output
