"""The web page in a real browser (headless Chromium over the DevTools protocol): chat with
streaming, rate the answer, and the rating reaches the monitor. Saves a screenshot.

Skipped (with the reason) where no Chromium is installed, except in CI, where `.ci/chromium.sh`
installs Debian's `chromium` and sets COMPANION_REQUIRE_BROWSER=1 so a missing browser fails.
"""

from __future__ import annotations

import os
from pathlib import Path

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


@pytest.mark.slow
def test_chat_stream_rate_in_the_browser(chromium: str, server: RunningServer, tmp_path: Path) -> None:
    from models.monitoring.monitor import ModelPerformanceMonitor
    from models.personalization.storage import list_feedback

    with Browser.launch(chromium, tmp_path / "profile") as browser:
        page = browser.page()
        try:
            page.navigate(server.url + "/?model=ada")
            page.wait_for("document.body.dataset.ready === '1'")
            assert page.evaluate("document.querySelector('#model').value") == "ada"
            page.type("#input", "Hello Ada, tell me about the storm")
            page.click("#send")
            rid = page.wait_for("document.querySelector('.msg.assistant')?.dataset.responseId")
            assert rid.startswith("pr-")
            assert int(page.evaluate("document.querySelector('.msg.assistant').dataset.pieces || '0'")) >= 2
            assert page.evaluate("document.querySelector('#emotion').textContent") not in ("", "—")
            page.click(".msg.assistant .rate.up")
            page.wait_for("document.querySelector('.msg.assistant').dataset.rated === '1'")
            page.click(".tab[data-tab=monitor]")
            page.evaluate("document.querySelector('#period').value = 'all'; loadMonitor()")
            assert page.wait_for("document.querySelector('#figures').dataset.satisfaction") == "100"
            shot = page.screenshot(ARTIFACTS / "serving-monitor.png")
            page.click(".tab[data-tab=chat]")
            page.click(".msg.assistant .regenerate")  # another answer: recorded as `regenerate` on the first
            again = page.wait_for(
                f"(id => id && id !== {rid!r} && id)(document.querySelector('.msg.assistant').dataset.responseId)"
            )
            # the card's emotions and scenarios are offered; a chosen emotion reaches the answer
            assert page.evaluate("document.querySelector('#steer').hidden") is False
            options = "[...document.querySelectorAll('#context-choice option')].map(o => o.value).join(' ')"
            assert "storm_night" in page.evaluate(options)
            page.evaluate("document.querySelector('#emotion-choice').value = 'romantic'")
            page.type("#input", "And then?")
            page.click("#send")
            answers = "document.querySelectorAll('.msg.assistant')"
            page.wait_for(f"{answers}.length === 2 && {answers}[1].dataset.responseId")
            assert page.evaluate("document.querySelector('#emotion').textContent") == "romantic"
            chat_shot = page.screenshot(ARTIFACTS / "serving-chat.png")
            print(f"screenshots: {chat_shot} {shot}")
        finally:
            page.close()
    rows = list_feedback(user="local")
    assert sorted((r["kind"], r["value"], r["response_id"]) for r in rows) == [
        ("regenerate", None, rid),
        ("thumbs", 1.0, rid),
    ]
    assert again.startswith("pr-")
    metrics = ModelPerformanceMonitor().get_performance_metrics("ada", "all", category="personality")
    assert metrics["user_satisfaction"] == 50.0  # one thumbs-up, one regenerate
