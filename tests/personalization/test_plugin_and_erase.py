"""The `personalization_engine` plugin and erasing a user's personalization data."""

from __future__ import annotations

from models.personalization import UserMemory, load_preferences, record_feedback, save_preferences
from models.personalization.storage import count_rows, erase_user, learner_dir


def test_the_plugin_adapts_generates_and_takes_feedback(tiny_personality: str) -> None:
    from framework.framework_tool import get_framework

    plugin = get_framework().get_plugin("personalization_engine")
    assert plugin is get_framework().get_plugin("personalization_engine")
    plugin.load_model("user_preferences")
    adapted = plugin.adapt_response("Hello, how can I help you today?", {"emoji": "some"}, user="sam")
    assert adapted.endswith("😊") and adapted.base == "Hello, how can I help you today?"
    r = plugin.generate_response(user_preferences={"length": "short"}, message="Hi Ada!", user="sam", personality="ada")
    assert r.response.character == "Ada" and r.response_id
    event = plugin.record_feedback(r.response_id, rating=1)
    assert event.kind == "rating" and event.user == "sam"
    assert learner_dir("sam", "user_preferences").exists()


def test_erase_user_reaches_every_store() -> None:
    from models.personalization import load_personalization_model

    save_preferences("sam", {"length": "short"})
    UserMemory("sam").add("Likes tea")
    r = load_personalization_model("user_prefs").adapt_response("Hello there, friend.", user="sam")
    record_feedback(r.response_id, rating=-1)
    save_preferences("robin", {"length": "long"})
    assert learner_dir("sam", "user_prefs").exists()
    removed = erase_user("sam")
    assert removed == {
        "user_preferences": 1,
        "user_memory": 1,
        "personalized_responses": 1,
        "feedback": 1,
        "learner_files": 2,
    }
    assert load_preferences("sam") is None and UserMemory("sam").list() == []
    assert not learner_dir("sam", "user_prefs").exists() and count_rows("feedback") == 0
    assert load_preferences("robin") is not None
