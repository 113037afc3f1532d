"""`companion voices add|list|say` and the speaker behind `companion chat --speak` (Piper)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["ChatSpeaker", "register"]

voices_app = typer.Typer(help="Voices for spoken replies (Piper): install, list, try.", no_args_is_help=True)
#: Players tried in order for `--speak` (override with $COMPANION_AUDIO_PLAYER; empty: save only).
PLAYERS = ("aplay", "paplay", "afplay", "ffplay")


def _player() -> list[str] | None:
    chosen = os.environ.get("COMPANION_AUDIO_PLAYER")
    if chosen is not None:
        return chosen.split() or None
    for name in PLAYERS:
        if shutil.which(name):
            return [name, "-nodisp", "-autoexit", "-loglevel", "quiet"] if name == "ffplay" else [name]
    return None


class ChatSpeaker:
    """Speaks each reply of a chat: saved as a WAV under `folder`, played where a player exists."""

    def __init__(self, model: Any, voice: str | None, folder: Path) -> None:
        from models.speech import find_voice

        self.model, self.voice, self.folder = model, voice, folder
        settings = getattr(getattr(model, "ext", None), "voice", None)
        find_voice(voice or (settings.model if settings else None))  # a missing voice fails now, not mid-chat
        self.player = _player()

    def say(self, text: str, emotion: str | None) -> Path:
        from models.speech import character_speech

        speech = character_speech(self.model, text, emotion, self.voice)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = speech.save(self.folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns() % 10**6}.wav")
        if self.player:
            subprocess.run([*self.player, str(path)], check=False, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
        return path


def voices_add(
    path: Annotated[Path, typer.Argument(help="A Piper voice: FILE.onnx, with FILE.onnx.json beside it.")],
    name: Annotated[str | None, typer.Option("--name", help="Install under this name (default: the file's).")] = None,
) -> None:
    """Install a Piper voice for spoken replies (cards and --voice name it)."""
    from companion.cli import out
    from models.speech import install_voice

    dest = install_voice(path, name)
    out.print(f"installed voice {dest.stem} ({dest})")


def voices_list(as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False) -> None:
    """The installed voices."""
    from companion.cli import out
    from models.speech import installed_voices, voices_dir

    voices = installed_voices()
    if as_json:
        out.print_json(data=voices)
        return
    if not voices:
        out.print(f"no voices in {voices_dir()}: companion voices add FILE.onnx (a Piper voice and its .onnx.json)")
        return
    for v in voices:
        out.print(f"{v['name']}  {v['language'] or '?'}  {v['sample_rate']} Hz  {v['quality'] or ''}")


def voices_say(
    text: Annotated[str, typer.Argument(help="What to say.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The WAV file to write.")] = Path("speech.wav"),
    character: Annotated[str | None, typer.Option("--character", "-c", help="A personality's voice.")] = None,
    voice: Annotated[str | None, typer.Option("--voice", help="An installed voice or an .onnx file.")] = None,
    emotion: Annotated[str | None, typer.Option("--emotion", help="Speak as in this emotion.")] = None,
    speed: Annotated[float, typer.Option("--speed", help="0.25 to 4; 1 is the voice's pace.")] = 1.0,
) -> None:
    """Write TEXT spoken as a WAV file (in a character's voice with -c)."""
    from companion.cli import out
    from models.speech import character_speech, speak

    if character:
        from models.model_manager import ModelManager

        model = ModelManager().load_model("personality", character)
        speech = character_speech(model, text, emotion, voice, speed)
    else:
        speech = speak(text, voice, speed=speed, emotion=emotion)
    speech.save(output)
    out.print(f"{output}: {speech.seconds:.1f} s, voice {speech.voice}, speed {speech.speed:g}")


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    """Add the `voices` group."""
    from companion.cli import handle_errors

    if not voices_app.registered_commands:
        voices_app.command("add")(handle_errors(voices_add))
        voices_app.command("list")(handle_errors(voices_list))
        voices_app.command("say")(handle_errors(voices_say))
    app.add_typer(voices_app, name="voices")
