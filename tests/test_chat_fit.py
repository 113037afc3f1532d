"""Fitting a client's chat to the context: whole messages go, oldest turns first, then examples;
the system prompt and the last message stay."""

from __future__ import annotations

from models.chat_fit import PER_MESSAGE, fit_messages


def words(text: str) -> int:
    return len(text.split())


def chat(turns: int) -> list[dict]:
    msgs = [
        {"role": "system", "content": "You are Luna, a moonlit muse. " * 4},
        {"role": "system", "name": "example_user", "content": "hello there friend"},
        {"role": "system", "name": "example_assistant", "content": "hello writer, shall we begin"},
    ]
    for i in range(turns):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "word " * 8})
    return msgs


def test_a_prompt_that_fits_is_left_alone() -> None:
    msgs = chat(2)
    kept, report = fit_messages(msgs, words, 10_000)
    assert kept == msgs and not report.changed and report.tokens_kept == report.tokens_sent


def test_oldest_turns_go_first_then_examples_and_the_system_prompt_stays() -> None:
    msgs = chat(20)
    kept, report = fit_messages(msgs, words, 80)
    assert kept[0] == msgs[0] and kept[-1] == msgs[-1]
    assert report.dropped_messages > 0 and report.dropped_examples == 0 and report.tokens_kept <= 80
    assert [m["content"] for m in kept[3:]] == [m["content"] for m in msgs[-len(kept) + 3 :]]  # the newest kept
    kept, report = fit_messages(msgs, words, 45)  # the system prompt (28) and the last message (14) fit
    assert report.dropped_examples == 2 and kept[0] == msgs[0] and len(kept) == 2 and not report.shortened_system


def test_the_system_prompt_is_shortened_only_as_a_last_resort() -> None:
    msgs = chat(1)
    kept, report = fit_messages(msgs, words, 20)
    assert report.shortened_system and kept[0]["content"] and msgs[0]["content"].startswith(kept[0]["content"])
    assert report.tokens_kept <= 20 + PER_MESSAGE and kept[-1] == msgs[-1]
