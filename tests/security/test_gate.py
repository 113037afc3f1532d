"""Issue 15 item 1: every generating path of every model the manager returns goes through its gate.

The test does not list methods. It loads one model of each kind the manager can return, spies on
every engine class (any generation ends in one of their methods), and, as a user who may only
*read*, calls every public method and reads every public property with a few argument shapes.
Whatever is called, no engine may generate for that user; every method the class marks as
generating must be refused. A method added later is covered without editing this test: if it
reaches an engine without the gate, the spy sees it.

On the code before the gate (methods wrapped by name), `TransformerModel.chat_many`,
`generate_many`, `model.engine.stream` and a personality's `.base.generate` all generated.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models.engines.base import Engine
from models.errors import AccessDenied
from models.gate import generating_methods
from models.model_manager import ModelManager
from models.security import acting_as

MSGS = [{"role": "user", "content": "hi"}]
#: Argument shapes tried on each public method (the first that is not a TypeError counts).
SHAPES: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {}),
    (("hello",), {}),
    ((MSGS,), {}),
    (("hello", 2), {}),
    ((MSGS, 2), {}),
    (("hello", 2, 2), {}),
    ((MSGS, 2, 2), {}),
    ((), {"message": "hello"}),
    (("hello", {}), {}),
]
#: Not generating and harmful to call on a shared model mid-test.
SKIP = {"close", "reset", "unload", "save_learner", "record_feedback"}


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call into any engine class's generating methods, recorded."""
    import models.engines.hf
    import models.engines.llama
    import models.engines.openai  # noqa: F401

    calls: list[str] = []
    for cls in {Engine, *_subclasses(Engine)}:
        for name in ("stream", "stream_chat", "score", "sample_many", "stream_ids"):
            fn = cls.__dict__.get(name)
            if fn is None:
                continue

            def make(fn: Any, label: str) -> Any:
                @functools.wraps(fn)
                def wrapper(*a: Any, **k: Any) -> Any:
                    calls.append(label)
                    return fn(*a, **k)

                return wrapper

            monkeypatch.setattr(cls, name, make(fn, f"{cls.__name__}.{name}"))
    return calls


@pytest.fixture
def every_kind(tmp_path: Path, tiny_model_dir: Path, user_config, database) -> list[tuple[str, str]]:
    from models.personality.card import CharacterCard
    from models.personality.loader import write_personality_folder
    from tests.personality.conftest import v2_card

    folder = write_personality_folder(tmp_path / "ada", CharacterCard(v2_card()), base_model=str(tiny_model_dir))
    user_config(
        "models:\n"
        "  base:\n"
        "    tiny: {type: transformer, path: '{tiny}', parameters: {max_length: 3}}\n"
        "  personality:\n"
        f"    ada: {{type: personality, path: '{folder}', parameters: {{max_length: 3, emotion_steering: 0}}}}\n"
        "  personalization:\n"
        "    ada_for_you:\n"
        "      type: hybrid\n"
        "      path: models/personalization/user_prefs\n"
        "      parameters: {personality: ada, candidates: 2}\n"
        "security:\n"
        "  roles:\n    reader: [{models: '*', level: read}]\n"
        "  users:\n    rita: {roles: [reader]}\n"
    )
    return [
        ("base", "tiny"),
        ("personality", "ada"),
        ("personalization", "user_prefs"),
        ("personalization", "user_adaptive"),
        ("personalization", "ada_for_you"),
    ]


def _consume(value: Any) -> None:
    if isinstance(value, Iterator):
        for _ in value:
            pass


def _try_all(obj: Any, name: str) -> str:
    """Call or read `obj.name` as the acting user: 'denied', 'ok' or 'unusable'."""
    try:
        attr = getattr(obj, name)
    except AccessDenied:
        return "denied"
    except Exception:
        return "unusable"
    if not callable(attr) or inspect.isclass(attr):
        return "ok"
    for args, kwargs in SHAPES:
        try:
            _consume(attr(*args, **kwargs))
        except AccessDenied:
            return "denied"
        except TypeError:
            continue
        except Exception:
            continue
        return "ok"
    return "unusable"


def _public(obj: Any) -> list[str]:
    return sorted(n for n in dir(type(obj)) if not n.startswith("_") and n not in SKIP)


def test_a_read_only_user_cannot_generate_through_any_public_path(every_kind, spy: list[str]) -> None:
    manager = ModelManager()
    checked: dict[str, list[str]] = {}
    for category, name in every_kind:
        model = manager.load_model(category, name, user="rita")  # rita may read
        marked = generating_methods(type(model))
        assert marked, f"{type(model).__name__} marks no generating method"
        seen: dict[str, str] = {}
        with acting_as("rita"):
            for attr in _public(model):
                seen[attr] = _try_all(model, attr)
                assert spy == [], f"{category}/{name}: {type(model).__name__}.{attr} generated for a reader: {spy}"
        for m in marked:
            assert seen[m] == "denied", f"{type(model).__name__}.{m} was not refused ({seen[m]})"
        checked[type(model).__name__] = [a for a, v in seen.items() if v == "denied"]
    # What the old by-name wrapping let through is refused now.
    assert {"chat_many", "generate_many", "engine", "score"} <= set(checked["TransformerModel"])
    assert {"base", "generate_response", "stream_response"} <= set(checked["PersonalityModel"])
    assert {"generate_personalized_response"} <= set(checked["HybridModel"])


def test_the_owner_still_generates_through_the_same_paths(every_kind, spy: list[str]) -> None:
    manager = ModelManager()
    base = manager.load_model("base", "tiny")
    assert len(base.chat_many(MSGS, 2, max_length=2)) == 2
    assert isinstance(base.engine.score(["hello"])[0], float)
    ada = manager.load_model("personality", "ada")
    assert isinstance(ada.base.generate("The", max_length=2), str)
    assert isinstance(str(ada.generate_response(message="hello")), str)  # best of N on a small model
    assert isinstance("".join(ada.stream_response(message="hello")), str)  # the engine free: best of N
    ada.params = ada.params.model_copy(update={"emotion_rerank": 1})
    assert isinstance("".join(ada.stream_response(message="hello")), str)  # one streamed sample
    assert {"sample_many", "score", "stream", "stream_chat"} <= {call.split(".")[1] for call in spy}


def test_nested_generations_are_checked_once(every_kind) -> None:
    from models.security.manager import ModelSecurityManager

    ada = ModelManager().load_model("personality", "ada")
    with contextlib.suppress(Exception):
        ada.generate_response(message="hello")
    rows = ModelSecurityManager().audit.show(user="local")
    assert [r.action for r in rows if r.action not in ("load",)].count("generate_response") == 1
    assert not [r for r in rows if r.action in ("stream_chat", "chat", "stream")]
