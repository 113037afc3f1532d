"""`companion run` (any model as a companion, like `ollama run`) and `companion models pull`."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from companion.cli import JsonOpt, err, handle_errors, out


def pull(
    repo: Annotated[str, typer.Argument(help="ORG/NAME or ORG/NAME@REVISION on the Hugging Face Hub.")],
    name: Annotated[str | None, typer.Option(help="Store name (default: NAME, lower-cased).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Download a model's safetensors, config, tokenizer and chat template from the Hugging Face
    Hub (`HF_ENDPOINT`, `HF_TOKEN` as usual) at a pinned commit into the store, verified.
    Refuses repositories whose weights are only pickles. An interrupted pull resumes."""
    from models.hub import pull as hub_pull

    info = hub_pull(repo, name=name, progress=not as_json)
    if as_json:
        out.print_json(data=info.to_json())
        return
    err.print(f"[green]pulled[/] {repo} as {info.category}/{info.name} {info.version}; try: companion run {info.name}")


def run(
    model: Annotated[
        str,
        typer.Argument(
            help="A store or config NAME, a folder, a .gguf file, openai:ID, or ORG/NAME[@REV] to pull from the Hub."
        ),
    ],
    prompt: Annotated[str | None, typer.Argument(help="One message to answer, then exit ('-': stdin).")] = None,
    character: Annotated[
        str | None, typer.Option("--character", "-c", help="A personality's card (default: a plain assistant).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Pull from the Hub without asking.")] = False,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", "-n", help="Most new tokens per reply.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible sampling.")] = None,
    user: Annotated[
        str | None, typer.Option(help="Personalize for this user (preferences, memory, /good /bad /regen).")
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="An OpenAI-compatible server (Ollama, vLLM, llama-server); MODEL is its id."),
    ] = None,
    api_key_env: Annotated[
        str | None, typer.Option("--api-key-env", help="Environment variable with the server's API key.")
    ] = None,
    resume: Annotated[bool, typer.Option("--continue", "-C", help="Resume the latest saved chat of this run.")] = False,
    chat_id: Annotated[
        str | None, typer.Option("--chat", help="Resume this saved chat (companion chats list).")
    ] = None,
) -> None:
    """Chat with MODEL as a companion (card, emotions, memory), or answer PROMPT and exit.
    Chats are saved as `run/MODEL` (`run/MODEL+CHARACTER` with -c): see `companion chats list`."""
    from models.runner import companion_for

    def confirm(question: str) -> bool:
        if yes:
            return True
        if sys.stdin is None or not sys.stdin.isatty():
            raise typer.BadParameter(f"{model} needs a pull from the Hub: add --yes (or run `companion models pull`)")
        return typer.confirm(question, default=True)

    companion = companion_for(model, character, confirm=confirm, base_url=base_url, api_key_env=api_key_env)
    if prompt is not None:
        if prompt == "-":
            prompt = sys.stdin.read().strip()
        opts: dict[str, Any] = {"max_length": max_tokens} if max_tokens else {}
        if seed is not None:
            opts["seed"] = seed
        for piece in companion.stream_response(message=prompt, history=[], **opts):
            out.print(piece, end="", highlight=False, markup=False)
        out.print()
        return
    from companion.commands.chat import chat_loop

    hybrid = None
    if user is not None:
        from models.hybrid_model import HybridModel

        hybrid = HybridModel(companion, "models/personalization/user_prefs")
    ref = f"run/{model}" + (f"+{character}" if character else "")
    chat_loop(companion, ref=ref, user=user, hybrid=hybrid, chat_id=chat_id, latest=resume, max_tokens=max_tokens,
              seed=seed)  # fmt: skip


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    """Add `companion run` and `companion models pull`."""
    app.command("run")(handle_errors(run))
    models_app.command("pull")(handle_errors(pull))
