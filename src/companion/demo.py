"""`make demo`: the main job on the embedded model, no input needed, well under a minute.

1. load the embedded model through the ModelManager (hash-verified, cached);
2. continue a story opening, streamed;
3. a short scripted conversation with Luna through the chat template, streamed.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.panel import Panel

STORY = "The old lighthouse keeper climbed the stairs and"
CONVERSATION = [
    "Hello Luna! I want to write a story about the sea.",
    "What should happen to the lighthouse keeper?",
    "That sounds lovely. How should it end?",
]


def main() -> None:
    from models.model_manager import ModelManager

    console = Console()
    console.print(Panel.fit("[bold]Companion Models[/] demo: the embedded model, offline, on this CPU"))
    manager = ModelManager()
    t0 = time.perf_counter()
    base = manager.load_model("base", "companion-base")
    console.print(
        f"[dim]embedded model loaded and verified in {(time.perf_counter() - t0) * 1000:.0f} ms "
        f"({base.info()['parameters'] / 1e6:.1f} M parameters, engine {base.engine_name})[/]\n"
    )

    console.print("[bold]1. Story continuation[/]")
    console.print(STORY, end="", style="bold", highlight=False)
    for piece in base.stream(STORY, max_length=80, seed=7, temperature=0.7):
        console.print(piece, end="", highlight=False, markup=False)
    s = base.last_stats
    console.print(f"\n[dim]({s.completion_tokens} tokens at {s.tokens_per_s or 0:.0f} tokens/s)[/]\n")

    console.print("[bold]2. A conversation with Luna[/]")
    luna = manager.load_model("personality", "luna")
    history: list[dict[str, str]] = [
        {"role": "system", "content": "You are Luna, a warm and romantic writing companion."}
    ]
    for i, line in enumerate(CONVERSATION):
        console.print(f"[bold cyan]you>[/] {line}")
        history.append({"role": "user", "content": line})
        console.print("[bold magenta]luna>[/] ", end="")
        reply = []
        for piece in luna.stream_chat(history, max_length=60, seed=11 + i, temperature=0.7):
            reply.append(piece)
            console.print(piece, end="", highlight=False, markup=False)
        console.print()
        history.append({"role": "assistant", "content": "".join(reply).strip()})
    console.print(
        f"\n[green]done[/] in {time.perf_counter() - t0:.1f} s. "
        "Next: `companion chat luna`, `companion models list`, `companion doctor`."
    )


if __name__ == "__main__":
    main()
