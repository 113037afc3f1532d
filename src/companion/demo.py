"""`make demo`: the embedded model and Luna, offline, no input needed, well under a minute.

1. load the embedded model through the ModelManager (hash-verified, cached) and continue a
   story opening, streamed;
2. a short scripted conversation with Luna (`personality/luna`: card, emotional model,
   behaviour): each message is classified, her emotional state moves with it (and decays back
   toward her temperament), and she answers in that emotion (control tokens, best of 6 by the
   emotion classifier).
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
    # Best of 6 samples by the emotion classifier: the small model's control tokens plus a rerank.
    luna.params = luna.params.model_copy(update={"emotion_rerank": 6})
    console.print(f"[bold]2. A conversation with Luna[/] [dim](emotion control: {luna.control})[/]")
    greeting = luna.start()
    console.print(f"[bold magenta]luna>[/] {greeting}", highlight=False)
    clf = luna.classifier
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


def main() -> None:
    from models.model_manager import ModelManager

    console = Console()
    console.print(Panel.fit("[bold]Companion Models[/] demo: the embedded model and Luna, offline, on this CPU"))
    t0 = time.perf_counter()
    manager = ModelManager()
    _story(console, manager)
    _conversation(console, manager)
    console.print(
        f"\n[green]done[/] in {time.perf_counter() - t0:.1f} s. "
        "Next: `companion chat luna`, `companion cards show luna`, `companion models list`."
    )


if __name__ == "__main__":
    main()
