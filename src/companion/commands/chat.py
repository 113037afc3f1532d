"""`companion chat MODEL` (the interactive loop, every chat saved) and `companion chats ...`.

Every chat is saved per user and model (`models.chats`): `companion chat luna --continue`
resumes the latest chat with Luna, `--chat ID` a given one (a unique start of the id is
enough), `companion chats list|show|rename|delete|export|import` manage them. The user is
`--user`, else `$COMPANION_USER`, else `local` (the same user the local server serves).

Slash commands in the loop, for every model: `/regen` (another answer; the earlier ones stay
as swipes), `/swipe [N|<|>]` (show answer N, or the previous/next one), `/edit TEXT` (replace
the last answer), `/continue` (more of the last answer), `/history`, `/title TEXT`, `/new`
(a fresh chat; `/reset` too), `/save [FILE]` (the chat as JSON), `/speak` (say the last answer:
needs `--speak`, which speaks every answer with Piper), `/quit`. With a personality:
`/emotion LABEL|off`, `/scenario [KEY]`, `/state`; with `--user` (personalized), `/good` and
`/bad` rate the last answer, and regenerating, swiping and editing are recorded as feedback.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

__all__ = ["ChatLoop", "chat_loop", "register"]

chats_app = typer.Typer(help="Saved chats: list, show, rename, delete, export and import (JSON, SillyTavern JSONL).")

HELP = "/regen, /swipe [N|<|>], /edit TEXT, /continue, /history, /speak, /title TEXT, /new, /save [FILE], /quit"
SHOWN_ON_RESUME = 6  # messages printed when a chat is resumed


class ChatLoop:
    """The terminal side of one `Conversation`."""

    def __init__(
        self, conv: Any, out: Console, err: Console, *, max_tokens: int | None, seed: int | None, speaker: Any = None
    ) -> None:
        self.conv, self.out, self.err = conv, out, err
        self.max_tokens, self.seed = max_tokens, seed
        self.voice = speaker
        self.emotion: str | None = None
        self.personality = hasattr(conv.model, "generate_response")

    # --- showing ------------------------------------------------------------------------------

    def speaker(self, role: str) -> str:
        if role == "user":
            return "[bold cyan]you>[/]"
        if role == "system":
            return "[dim]system>[/]"
        name = getattr(self.conv.model, "character", None)
        return f"[bold magenta]{name.lower() if name else 'bot'}>[/]"

    def show(self, msg: Any) -> None:
        swipes = f" [dim]({msg.swipe_id + 1}/{len(msg.swipes)})[/]" if len(msg.swipes) > 1 else ""
        self.out.print(f"{self.speaker(msg.role)} ", end="")
        self.out.print(msg.text, end="", highlight=False, markup=False)
        self.out.print(swipes)

    def history(self, last: int | None = None) -> None:
        msgs = self.conv.chat.messages
        for msg in msgs[-last:] if last else msgs:
            self.show(msg)

    # --- answering ----------------------------------------------------------------------------

    def opts(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.seed is not None:
            opts["seed"] = self.seed
        if self.max_tokens is not None:
            opts["max_length"] = self.max_tokens
        if self.emotion is not None:
            opts["emotional_state"] = self.emotion
        return opts

    def answer(self, pieces: Any, *, continued: bool = False) -> None:
        if continued:
            self.out.print(f"{self.speaker('assistant')} …", end="", highlight=False)
        else:
            self.out.print(f"{self.speaker('assistant')} ", end="")
        for piece in pieces:
            self.out.print(piece, end="", highlight=False, markup=False)
        last = self.conv.chat.messages[-1]
        swipes = f" [dim]({last.swipe_id + 1}/{len(last.swipes)})[/]" if len(last.swipes) > 1 else ""
        self.out.print(swipes)
        self.status()
        if self.voice is not None:
            self.speak()

    def speak(self) -> None:
        """Say the last answer aloud (saved as a WAV; played where a player is installed)."""
        from models.speech import VoiceNotFoundError

        last = next((m for m in reversed(self.conv.chat.messages) if m.role == "assistant"), None)
        if last is None:
            self.err.print("[dim]nothing to speak yet[/]")
            return
        if self.voice is None:
            self.err.print("[red]/speak needs a voice[/]: start the chat with --speak (and --voice NAME)")
            return
        try:
            path = self.voice.say(last.text, last.emotion)
        except VoiceNotFoundError as exc:
            self.err.print(f"[red]{exc}[/]")
            return
        self.err.print(f"[dim]spoken: {path}[/]")

    def status(self) -> None:
        r = self.conv.last_response
        if r is None or not self.personality:
            return
        user = self.conv.user
        p = self.conv.last_personalized
        extra = f"; predicted satisfaction {p.score:.2f}, best of {len(p.candidates)}" if p is not None else ""
        self.err.print(
            f"[dim]({r.emotion}; mood now: {self.conv.model.emotional_state(user).emotion}; "
            f"{r.usage.get('completion_tokens')} tokens, {r.timings.get('total_ms', 0):.0f} ms{extra})[/]"
        )

    # --- commands -----------------------------------------------------------------------------

    def command(self, line: str) -> bool:
        """Handle a slash command; False means quit."""
        from models.errors import CompanionError

        cmd, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        try:
            return self._command(cmd, arg)
        except CompanionError as exc:
            self.err.print(f"[red]{exc}[/]", highlight=False)
            return True

    def _command(self, cmd: str, arg: str) -> bool:
        conv = self.conv
        if cmd in ("quit", "exit"):
            return False
        if cmd in ("regen", "regenerate"):
            self.answer(conv.regenerate(**self.opts()))
        elif cmd == "swipe":
            self._swipe(arg)
        elif cmd == "continue":
            self.answer(conv.continue_reply(**self.opts()), continued=True)
        elif cmd == "edit":
            self._edit(arg)
        elif cmd == "history":
            self.history()
        elif cmd == "speak":
            self.speak()
        elif cmd == "title":
            if arg:
                conv.chat = conv.store.rename(conv.chat.id, arg)
            self.err.print(f"[dim]chat {conv.chat.id[:8]}: {conv.chat.title}[/]", highlight=False)
        elif cmd in ("new", "reset"):
            self._new()
        elif cmd == "save":
            self._save(arg)
        elif cmd in ("good", "bad"):
            self._rate(cmd)
        elif self.personality and cmd in ("emotion", "scenario", "state"):
            self._personality(cmd, arg)
        else:
            more = ", /emotion LABEL|off, /scenario [KEY], /state" if self.personality else ""
            rate = ", /good, /bad" if conv.hybrid is not None else ""
            self.err.print(f"[dim]commands: {HELP}{more}{rate}[/]")
        return True

    def _swipe(self, arg: str) -> None:
        conv = self.conv
        if arg in ("", ">", "right", "next"):
            msg = conv.swipe(step=1)
        elif arg in ("<", "left", "prev", "previous"):
            msg = conv.swipe(step=-1)
        elif arg.isdigit():
            msg = conv.swipe(index=int(arg) - 1)
        else:
            self.err.print("[dim]/swipe N (1, 2, ...), /swipe < or /swipe >[/]")
            return
        self.show(msg)

    def _edit(self, arg: str) -> None:
        conv = self.conv
        answers = [m for m in conv.chat.messages if m.role == "assistant"]
        if not answers:
            self.err.print("[dim]no answer to edit yet[/]")
            return
        if not arg:
            self.err.print("[dim]/edit NEW TEXT replaces the last answer:[/]")
            self.out.print(answers[-1].text, highlight=False, markup=False)
            return
        self.show(conv.edit(answers[-1].position, arg))
        self.err.print("[dim]edited[/]")

    def _new(self) -> None:
        from models.chats import Conversation

        conv = self.conv
        context = conv.model.session(conv.user).context if self.personality else None
        self.conv = Conversation.open(conv.user, conv.model, hybrid=conv.hybrid, context=context, ref=conv.chat.model,
                                      system=conv.chat.meta.get("system"))  # fmt: skip
        self.err.print(f"[dim]new chat {self.conv.chat.id[:8]} (the last one is saved: companion chats list)[/]")
        if self.personality:
            self.conv.model.reset(conv.user)
        self.history()

    def _save(self, arg: str) -> None:
        from models.chats import to_json

        conv = self.conv
        name = conv.chat.model.split("/")[-1]
        path = Path(arg or f"chat-{name}-{time.strftime('%Y%m%d-%H%M%S')}.json")
        path.write_text(json.dumps(to_json(conv.chat), indent=1, ensure_ascii=False))
        self.err.print(f"[dim]saved {path}[/]")

    def _rate(self, cmd: str) -> None:
        conv = self.conv
        if conv.hybrid is None:
            self.err.print(f"[dim]/{cmd} needs a user: companion chat {conv.chat.model.split('/')[-1]} --user NAME[/]")
            return
        answers = [m for m in conv.chat.messages if m.role == "assistant" and m.response_id]
        if not answers:
            self.err.print("[dim]no reply to rate yet[/]")
            return
        conv.hybrid.record_feedback(answers[-1].response_id, user=conv.user, rating=1.0 if cmd == "good" else -1.0)
        self.err.print(f"[dim]recorded: {cmd} (the learner for {conv.user} is updated)[/]")

    def _personality(self, cmd: str, arg: str) -> None:
        model, user = self.conv.model, self.conv.user
        if cmd == "emotion":
            if not arg or arg == "off":
                self.emotion = None
                self.err.print("[dim]emotion follows the conversation again[/]")
            elif arg in model.labels:
                self.emotion = arg
                self.err.print(f"[dim]emotion held at {arg}[/]")
            else:
                self.err.print(f"[red]unknown emotion {arg!r}[/]; labels: {', '.join(model.labels)}")
        elif cmd == "scenario":
            if not arg:
                for key in model.contexts():
                    self.err.print(f"  {key}: {model.ext.scenarios[key].description}", highlight=False)
            elif arg in model.ext.scenarios:
                model.session(user).context = arg
                self.err.print(f"[dim]scenario: {arg}[/]")
            else:
                self.err.print(f"[red]unknown scenario {arg!r}[/]; valid: {', '.join(model.contexts())}")
        else:
            state = model.emotional_state(user).to_dict()
            top = sorted(state.items(), key=lambda kv: -kv[1])[:4]
            self.err.print("  " + ", ".join(f"{k} {v:.2f}" for k, v in top))

    # --- the loop -----------------------------------------------------------------------------

    def run(self, resumed: bool) -> None:
        conv = self.conv
        if resumed:
            n = len(conv.chat.messages)
            self.err.print(f"[dim]resuming chat {conv.chat.id[:8]} \u201c{conv.chat.title}\u201d ({n} messages)[/]")
            self.history(SHOWN_ON_RESUME)
        else:
            self.history()
        while True:
            try:
                line = self.out.input("[bold cyan]you>[/] ")
            except EOFError:
                break
            if not line.strip():
                continue
            if line.startswith("/"):
                if not self.command(line.strip()):
                    break
                continue
            self.answer(self.conv.send(line, **self.opts()))


def chat_loop(
    model: Any,
    *,
    ref: str | None = None,
    user: str | None = None,
    hybrid: Any = None,
    chat_id: str | None = None,
    latest: bool = False,
    system: str | None = None,
    max_tokens: int | None = None,
    seed: int | None = None,
    speak: bool = False,
    voice: str | None = None,
) -> None:
    """Chat with `model` in the terminal, in a saved chat (resumed with `chat_id` or `latest`);
    with `speak`, each reply is also spoken (`companion.commands.voices.ChatSpeaker`)."""
    from companion.cli import err, out
    from models.chats import Conversation
    from models.security.identity import current_user

    who = current_user(user)
    conv = Conversation.open(who, model, chat_id, latest=latest, hybrid=hybrid, ref=ref, system=system)
    resumed = len(conv.chat.messages) > (
        1 if conv.chat.messages and conv.chat.messages[0].details.get("greeting") else 0
    )
    if hasattr(model, "generate_response"):
        mode = f"{model.control} emotion control" + (f", personalized for {user}" if hybrid is not None else "")
        err.print(f"[dim]chatting with {model.character} ({mode}); /help for commands[/]")
    else:
        err.print(
            f"[dim]chatting with {conv.chat.model} ({getattr(model, 'engine_name', 'model')}); /help for commands[/]"
        )
    speaker = None
    if speak:
        from companion.commands.voices import ChatSpeaker
        from models.home import companion_home

        speaker = ChatSpeaker(model, voice, companion_home() / "audio" / conv.chat.id)
    loop = ChatLoop(conv, out, err, max_tokens=max_tokens, seed=seed, speaker=speaker)
    loop.run(resumed and (chat_id is not None or latest))


# ----------------------------------------------------------------------------- companion chats


UserOpt = Annotated[str | None, typer.Option("--user", help="Whose chats [$COMPANION_USER, else local].")]


def _store(user: str | None) -> Any:
    from models.chats import ChatStore
    from models.security.identity import current_user

    return ChatStore(current_user(user))


def chats_list(
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Only chats with this model (CATEGORY/NAME).")
    ] = None,
    user: UserOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Saved chats, most recent first."""
    from companion.cli import out

    rows = _store(user).list(model)
    if as_json:
        out.print_json(data=[r.to_dict() for r in rows])
        return
    if not rows:
        out.print("no saved chats yet: companion chat luna starts one")
        return
    from rich.table import Table

    table = Table("id", "model", "title", "messages", "updated", "last")
    for r in rows:
        table.add_row(r.id[:8], r.model, r.title, str(r.messages), r.updated_at[:16].replace("T", " "), r.last)
    out.print(table)


def chats_show(
    chat_id: Annotated[str, typer.Argument(help="A chat id (a unique start is enough).")],
    user: UserOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """A chat's messages (with how many alternative answers each has)."""
    from companion.cli import out

    chat = _store(user).resolve(chat_id)
    if as_json:
        out.print_json(data=chat.to_dict())
        return
    out.print(f"[bold]{chat.title}[/] ({chat.model}, {chat.id})", highlight=False)
    for m in chat.messages:
        swipes = f" [dim]({m.swipe_id + 1}/{len(m.swipes)})[/]" if len(m.swipes) > 1 else ""
        out.print(f"[bold]{m.role}>[/] ", end="")
        out.print(m.text, end="", highlight=False, markup=False)
        out.print(swipes)


def chats_rename(
    chat_id: Annotated[str, typer.Argument(help="A chat id (a unique start is enough).")],
    title: Annotated[str, typer.Argument(help="The new title.")],
    user: UserOpt = None,
) -> None:
    """Give a chat a title."""
    from companion.cli import out

    store = _store(user)
    chat = store.rename(store.resolve(chat_id).id, title)
    out.print(f"{chat.id[:8]}: {chat.title}", highlight=False)


def chats_delete(
    chat_id: Annotated[str, typer.Argument(help="A chat id (a unique start is enough).")],
    user: UserOpt = None,
) -> None:
    """Delete a chat and all its messages."""
    from companion.cli import out

    store = _store(user)
    chat = store.resolve(chat_id)
    store.delete(chat.id)
    out.print(f"deleted {chat.id[:8]} ({chat.title})", highlight=False)


def chats_export(
    chat_id: Annotated[str, typer.Argument(help="A chat id (a unique start is enough).")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here (default: standard output).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="json or sillytavern (JSONL).")] = "json",
    user: UserOpt = None,
) -> None:
    """Export a chat as our JSON or as SillyTavern's JSONL (its chats/<character>/ folder reads it)."""
    from companion.cli import out
    from models.chats import to_json, to_sillytavern
    from models.fileio import atomic_write_bytes

    chat = _store(user).resolve(chat_id)
    if fmt == "json":
        text = json.dumps(to_json(chat), indent=1, ensure_ascii=False) + "\n"
    elif fmt in ("sillytavern", "jsonl"):
        text = to_sillytavern(chat, user_name=_store(user).user)
    else:
        raise typer.BadParameter(f"--format: json or sillytavern, not {fmt!r}")
    if output is None:
        print(text, end="")
        return
    atomic_write_bytes(output, text.encode("utf-8"))
    out.print(f"wrote {output}", highlight=False)


def chats_import(
    file: Annotated[Path, typer.Argument(help="A chat: our .json or SillyTavern's .jsonl.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="The model it continues with (CATEGORY/NAME or NAME).")
    ] = None,
    user: UserOpt = None,
) -> None:
    """Import a chat (SillyTavern's JSONL keeps its swipes and its own fields, to export back unchanged)."""
    from companion.cli import _manager, out
    from models.chats.formats import read_chat
    from models.errors import ChatError, ModelNotFoundError

    text = file.read_text(encoding="utf-8")
    draft = read_chat(text)
    ref = model or draft.model
    if ref is None:
        character = str(draft.meta.get("character") or "").lower()
        try:
            ref = "/".join(_manager().find(character)) if character else None
        except ModelNotFoundError:
            ref = None
        if ref is None:
            raise ChatError(f"{file}: no model named after its character {character or '?'!r}; add --model NAME")
    if "/" not in ref:
        ref = "/".join(_manager().find(ref))
    chat = _store(user).create(ref, **draft.kwargs())
    out.print(f"imported {chat.id[:8]} \u201c{chat.title}\u201d ({len(chat.messages)} messages) with {ref}: "
              f"companion chat {ref.split('/')[-1]} --chat {chat.id[:8]}", highlight=False)  # fmt: skip


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    """Add the `chats` group (the `chat` command itself is in `cli.py`, and delegates here)."""
    from companion.cli import handle_errors

    if not chats_app.registered_commands:
        chats_app.command("list")(handle_errors(chats_list))
        chats_app.command("show")(handle_errors(chats_show))
        chats_app.command("rename")(handle_errors(chats_rename))
        chats_app.command("delete")(handle_errors(chats_delete))
        chats_app.command("export")(handle_errors(chats_export))
        chats_app.command("import")(handle_errors(chats_import))
    app.add_typer(chats_app, name="chats")
