"""Spoken replies over HTTP (Piper, `models.speech`).

    POST /v1/audio/speech                                OpenAI's text-to-speech request: WAV or PCM
    GET  /api/chats/{id}/messages/{position}/speech      a saved answer in its character's voice
    GET  /api/voices                                     the installed voices

`/v1/audio/speech` takes OpenAI's fields: `model` is a personality (its card's voice, and
`emotion` — our addition — sets the pace) or any other name with `voice` naming an installed
voice; `voice` may also name an installed voice to override a card's, and OpenAI's stock names
(`alloy`, ...) fall back to the card's. `response_format` is `wav` (the default here: we
encode no compressed formats) or `pcm` (16-bit little-endian mono at the voice's rate, in the
`X-Sample-Rate` header). Only installed voices are used: a request never names a file.
"""

from __future__ import annotations

import io
import wave
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from companion.server.app import caller
from companion.server.chats_api import ChatId, _check_model, _store
from companion.server.companion_api import _as
from companion.server.errors import APIError

__all__ = ["router"]

router = APIRouter(tags=["speech"])

#: Formats OpenAI offers that need an encoder we do not ship.
COMPRESSED = ("mp3", "opus", "aac", "flac")


class SpeechRequest(BaseModel):
    """OpenAI's `POST /v1/audio/speech` body (plus `emotion`)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(..., min_length=1, max_length=200)
    input: str = Field(..., min_length=1, max_length=4096)
    voice: str | None = Field(None, max_length=100)
    response_format: Literal["wav", "pcm", "mp3", "opus", "aac", "flac"] | None = None
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = Field(None, max_length=4096)
    emotion: str | None = Field(None, max_length=40, description="Ours: speak as in this emotion (sets the pace).")


def _installed(voice: str | None) -> str | None:
    """`voice` if it names an installed voice; None for no voice or a name we do not have."""
    from models.speech import installed_voices

    if not voice:
        return None
    names = {v["name"] for v in installed_voices()}
    return voice if voice in names else None


def _audio(speech: Any, fmt: str | None) -> Response:
    headers = {"X-Sample-Rate": str(speech.sample_rate), "X-Voice": speech.voice, "X-Speed": f"{speech.speed:g}"}
    if fmt == "pcm":
        with wave.open(io.BytesIO(speech.wav), "rb") as w:
            frames = w.readframes(w.getnframes())
        return Response(frames, media_type="audio/pcm", headers=headers)
    return Response(speech.wav, media_type="audio/wav", headers=headers)


@router.post("/v1/audio/speech", summary="Text to speech (OpenAI-compatible; WAV or PCM)")
async def create_speech(body: SpeechRequest, request: Request, user: str = Depends(caller)) -> Response:
    from models.speech import character_speech, installed_voices, speak

    if body.response_format in COMPRESSED:
        raise APIError(400, f"response_format {body.response_format!r} is not available here: use wav or pcm",
                       param="response_format")  # fmt: skip

    def run() -> Any:
        from models.errors import ModelNotFoundError

        chosen = _installed(body.voice)
        try:
            category, name = _check_model(request, user, body.model, "generate")
        except ModelNotFoundError:  # `tts-1`, `piper`: not a model of ours, the voice decides
            category, name = None, None
        if category == "personality":
            model = request.app.state.companion.runner.get_manager().load_model(category, name)
            if body.emotion is not None and body.emotion not in getattr(model, "labels", ()):
                raise APIError(400, f"emotion {body.emotion!r} is not one of {body.model}'s labels", param="emotion")
            return character_speech(model, body.input, body.emotion, chosen, body.speed)
        if chosen is None:
            have = ", ".join(v["name"] for v in installed_voices()) or "none installed"
            raise APIError(400, f"voice {body.voice!r} is not an installed voice ({have}); or give a personality "
                           "as model to use its card's voice", param="voice")  # fmt: skip
        return speak(body.input, chosen, speed=body.speed, emotion=body.emotion)

    return _audio(await _as(user, run), body.response_format)


@router.get("/api/chats/{chat_id}/messages/{position}/speech", summary="A saved answer, in its character voice")
async def message_speech(
    chat_id: ChatId, position: Annotated[int, Field(ge=0)], request: Request, user: str = Depends(caller)
) -> Response:
    from models.speech import character_speech

    def run() -> Any:
        chat = _store(user).get(chat_id)
        msg = next((m for m in chat.messages if m.position == position), None)
        if msg is None:
            raise APIError(404, f"chat {chat_id} has no message at position {position}", code="message_not_found")
        if msg.role != "assistant":
            raise APIError(400, "only the character's answers are spoken", param="position")
        category, name = _check_model(request, user, chat.model)
        model = request.app.state.companion.runner.get_manager().load_model(category, name)
        return character_speech(model, msg.text, msg.emotion)

    return _audio(await _as(user, run), "wav")


@router.get("/api/voices", summary="The installed voices (Piper)")
async def list_voices(user: str = Depends(caller)) -> dict[str, Any]:
    from models.speech import installed_voices, piper_version

    def read() -> dict[str, Any]:
        return {"voices": [{k: v for k, v in voice.items() if k != "path"} for voice in installed_voices()],
                "engine": "piper", "available": piper_version() is not None}  # fmt: skip

    return await _as(user, read)
