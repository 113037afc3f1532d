"""`make demo`: the embedded model and Luna, offline, no input needed, well under a minute.

1. load the embedded model through the ModelManager (hash-verified, cached) and continue a
   story opening, streamed;
2. a short scripted conversation with Luna (`personality/luna`: card, emotional model,
   behaviour): each message is classified, her emotional state moves with it (and decays back
   toward her temperament), and she answers in that emotion (control tokens, best of 6 by the
   emotion classifier);
3. personalization (`models.hybrid_model.HybridModel`, `personalization/user_prefs`): two users
   with different preferences ask Luna the same thing and each gets it their way; then one of
   them keeps choosing longer answers, and her next answers change.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.panel import Panel

STORY = "The old lighthouse keeper climbed the stairs and"
#: Chosen so Luna's mood visibly moves: joy → caring (for sadness) → playful → romantic.
CONVERSATION = [
    "Luna, I finished the first chapter of my novel today! I'm so happy!",
    "But my editor said it was boring and now I feel sad, like giving up.",
    "Haha lol, you are so silly! Tell me a funny joke about ink?",
    "I love you, Luna. Will you write me a love letter under the moon?",
]
_COLOURS = {
    "joy": "yellow",
    "romantic": "magenta",
    "caring": "green",
    "playful": "cyan",
    "sadness": "blue",
    "curious": "bright_white",
    "anger": "red",
    "fear": "bright_black",
}


def _story(console: Console, manager: object) -> float:
    t0 = time.perf_counter()
    base = manager.load_model("base", "companion-base")  # type: ignore[attr-defined]
    console.print(
        f"[dim]embedded model loaded and verified in {(time.perf_counter() - t0) * 1000:.0f} ms "
        f"({base.info()['parameters'] / 1e6:.1f} M parameters, engine {base.engine_name})[/]\n"
    )
    console.print("[bold]1. Story continuation[/]")
    console.print(STORY, end="", style="bold", highlight=False)
    for piece in base.stream(STORY, max_length=60, seed=3, temperature=0.7):
        console.print(piece, end="", highlight=False, markup=False)
    s = base.last_stats
    console.print(f"\n[dim]({s.completion_tokens} tokens at {s.tokens_per_s or 0:.0f} tokens/s)[/]\n")
    return time.perf_counter() - t0


def _conversation(console: Console, manager: object) -> None:
    from models.personality import load_personality_model

    luna = load_personality_model("luna", manager)
    # As `companion chat` gives it: control tokens, emotion steering and, with the engine free,
    # the best of 8 samples shown as one piece (`models.personality.choice.claim_engine`).
    console.print(f"[bold]2. A conversation with Luna[/] [dim](emotion control: {luna.control})[/]")
    greeting = luna.start()
    console.print(f"[bold magenta]luna>[/] {greeting}", highlight=False)
    clf = luna.feeling.listener
    for i, line in enumerate(CONVERSATION):
        heard = clf.detect(line).label if clf is not None else "?"
        console.print(f"\n[bold cyan]you>[/] {line}  [dim](you sound: {heard})[/]", highlight=False)
        stream = luna.stream_response(message=line, seed=71 + i, temperature=0.7)
        first = next(stream, "")
        r_emotion = luna.emotional_state().emotion
        colour = _COLOURS.get(r_emotion, "white")
        console.print(f"[bold magenta]luna[/] [{colour}]({r_emotion})[/][bold magenta]>[/] ", end="")
        console.print(first, end="", highlight=False, markup=False)
        for piece in stream:
            console.print(piece, end="", highlight=False, markup=False)
        top = sorted(luna.emotional_state().to_dict().items(), key=lambda kv: -kv[1])[:3]
        console.print(f"\n[dim]   mood: {', '.join(f'{k} {v:.2f}' for k, v in top)}[/]")


#: Two users who want different things from the same companion.
USERS = {
    "ana": {"length": "short", "formality": "casual", "emoji": "some", "tone": "playful"},
    "ben": {"length": "long", "formality": "formal", "emoji": "none", "questions": "often"},
}
ASK = "My name is Ana. I finished chapter 2 tonight, all 3000 words of it!"


def _personalization(console: Console, manager: object) -> None:
    from models.hybrid_model import HybridModel
    from models.personalization import record_feedback
    from models.security.manager import get_security_manager

    console.print(
        "\n[bold]3. Personalization[/] [dim](two users, the same message: 2 replies each, plus their rewrites "
        "toward the user's preferences, ranked by the user's learned taste)[/]"
    )
    security = get_security_manager()
    for user in USERS:  # end users need a grant: deny by default (docs/security.md)
        security.grant(user, "personality/luna", "generate")
    luna = manager.load_model("personality", "luna")  # type: ignore[attr-defined]
    hybrid = HybridModel(luna, "models/personalization/user_prefs", candidates=2, manager=manager)
    first = {}
    for user, prefs in USERS.items():
        luna.reset(user)
        message = ASK.replace("Ana", user.title())
        r = hybrid.generate_personalized_response(user_preferences=prefs, message=message, user=user, seed=11)
        first[user] = r
        wanted = ", ".join(f"{k} {v if isinstance(v, str) else '/'.join(v)}" for k, v in prefs.items())
        console.print(f"[bold cyan]{user}>[/] {message}  [dim]({wanted})[/]", highlight=False)
        console.print("[bold magenta]luna>[/] ", end="")
        console.print(str(r), highlight=False, markup=False)
        console.print(
            f"[dim]   chosen from {len(r.candidates)} candidates (2 replies and their rewrites), "
            f"predicted satisfaction {r.score:.2f}[/]"
        )
    console.print("\n[dim]ana keeps picking the longest of the candidates she is shown ...[/]")
    message = ASK
    for round_ in range(4):
        luna.reset("ana")
        r = hybrid.generate_personalized_response(
            user_preferences=USERS["ana"], message=message, user="ana", seed=20 + round_
        )
        longest = max(range(len(r.candidates)), key=lambda i: len(r.candidates[i]))
        record_feedback(r.response_id, choice=longest)
    luna.reset("ana")
    after = hybrid.generate_personalized_response(user_preferences=USERS["ana"], message=message, user="ana", seed=11)
    for label, reply in (("before", first["ana"]), ("after", after)):
        console.print(f"[bold magenta]luna to ana ({label})>[/] ", end="")
        console.print(str(reply), highlight=False, markup=False)
    learner = hybrid.personalization.learner_for("ana")
    console.print(
        f"[dim]   ana's learned ideal length: {learner.profile()['length']:.2f} (she said short: 0.12); "
        f"{learner.updates} feedback events. Her facts: {'; '.join(after.memory.splitlines()[1:]) or '-'}[/]"
    )


def main() -> None:
    """The demo in a fresh temporary home, so every run starts from the same state; set
    `COMPANION_DEMO_HOME` to run it in (and keep) a home of your own."""
    import os
    import tempfile

    from models.context import Context, activated

    home = os.environ.get("COMPANION_DEMO_HOME")
    if home:
        with activated(Context(home)):
            _run()
        return
    with tempfile.TemporaryDirectory(prefix="companion-demo-") as tmp, activated(Context(tmp)):
        _run()


def _run() -> None:
    from models.model_manager import ModelManager

    console = Console()
    console.print(Panel.fit("[bold]Companion Models[/] demo: the embedded model and Luna, offline, on this CPU"))
    t0 = time.perf_counter()
    manager = ModelManager()
    _story(console, manager)
    _conversation(console, manager)
    _personalization(console, manager)
    console.print(
        f"\n[green]done[/] in {time.perf_counter() - t0:.1f} s. "
        "Next: `companion chat luna`, `companion cards show luna`, `companion models list`, docs/personalization.md."
    )
    console.print(
        "[yellow]Note:[/] the embedded model is a small offline default (about 5 M parameters, trained on 2 CPU "
        "cores) for trying things out and for tests; it will not write like a large model. To give Luna a real "
        "model, add to $COMPANION_HOME/config.yaml: [bold]models: {personality: {luna: {type: personality, path: "
        '"builtin:luna", parameters: {base_model: "openai:llama3.1:8b", base_url: "http://localhost:11434/v1"}}}}'
        "[/] (Ollama; any OpenAI-compatible server works)."
    )


if __name__ == "__main__":
    main()
