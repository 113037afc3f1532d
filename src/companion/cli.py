"""`companion`: the command line, a thin map from commands to library functions.

Errors the user can fix (bad config, unknown model, bad file) print one red line and exit 1;
usage errors exit 2. `--json` prints data for scripts instead of tables.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from models.errors import CompanionError


def _hide_flag_types() -> None:
    """typer 0.29 prints a `<bool>` type after every on/off flag in `--help` ("--yes <bool>"),
    which reads as if the flag took a value; show flags bare, as click and typer did before."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "hides_flags", False):  # older typer shows no types
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    display_type_rich.hides_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_hide_flag_types()

app = typer.Typer(
    name="companion",
    help="Companion Models: personalities, personalization and the models behind them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="List and inspect configured models.", no_args_is_help=True)
train_app = typer.Typer(help="Train models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(train_app, name="train")

#: Piped or captured output is not cut to 80 columns (Rich's default without a terminal): tables
#: keep whole names and paths for `grep` and `less`; a terminal keeps its own width.
_PIPE_WIDTH = 200
out = Console(width=None if sys.stdout.isatty() else _PIPE_WIDTH)
err = Console(stderr=True, width=None if sys.stderr.isatty() else _PIPE_WIDTH)
F = TypeVar("F", bound=Callable[..., Any])

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def handle_errors(fn: F) -> F:
    """Turn library errors into one clear line and a non-zero exit, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CompanionError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except OSError as exc:  # a file the user named: missing, a folder, unreadable
            if exc.filename is None:
                raise
            err.print(f"[bold red]error:[/] {exc.filename}: {exc.strerror}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def main_options(
    ctx: typer.Context,
    home: Annotated[
        Path | None, typer.Option("--home", help="Use this folder as COMPANION_HOME (store, config, database).")
    ] = None,
) -> None:
    """The edge: one `models.context.Context` for the command, active until it returns."""
    from models.context import Context, activated

    ctx.obj = Context(home) if home is not None else None
    if ctx.obj is not None:
        ctx.obj.ensure_home()
        ctx.with_resource(activated(ctx.obj))


def _manager() -> Any:
    from models.model_manager import ModelManager

    return ModelManager()


def _split(ref: str, manager: Any) -> tuple[str, str]:
    """`category/name` or a bare name searched in every category."""
    if "/" in ref:
        cat, name = ref.split("/", 1)
        return cat, name
    return manager.find(ref)


def _load_generator(ref: str, base_url: str | None = None, api_key_env: str | None = None) -> Any:
    """The model `ref` names, resolved as `companion run` resolves it (`models.runner`): a
    configured or stored NAME / CATEGORY/NAME, a folder, a `.gguf` file, or a model id on an
    OpenAI-compatible server (`--base-url`, else `$OPENAI_BASE_URL`; the key from `--api-key-env`,
    default `OPENAI_API_KEY`). A Hub id is not pulled here: `companion models pull` does that."""
    import os

    from models.runner import resolve_run_model

    if ref.startswith("openai:") and not (base_url or os.environ.get("OPENAI_BASE_URL")):
        raise typer.BadParameter(f"{ref} needs a server: add --base-url URL (or set OPENAI_BASE_URL)")
    remote = {"base_url": base_url, "api_key_env": api_key_env or "OPENAI_API_KEY"} if base_url else {}
    return resolve_run_model(ref, manager=_manager(), confirm=lambda question: False, **remote)


BaseUrlOpt = Annotated[
    str | None,
    typer.Option("--base-url", help="An OpenAI-compatible server (Ollama, vLLM, llama-server); MODEL is its model id."),
]
KeyEnvOpt = Annotated[
    str | None, typer.Option("--api-key-env", help="Environment variable with the server's API key [OPENAI_API_KEY].")
]


# ----------------------------------------------------------------------------- generate / chat


@app.command()
@handle_errors
def generate(
    prompt: Annotated[
        str | None, typer.Argument(help="Text to continue, or a message to a personality ('-' or none: stdin).")
    ] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Model: NAME or CATEGORY/NAME.")] = "base/companion-base",
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", help="Most new tokens.")] = 120,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (0 = greedy).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible sampling.")] = None,
    system: Annotated[
        str | None,
        typer.Option("--system", "-s", help="Plain models: answer PROMPT as a chat with this system message."),
    ] = None,
    base_url: BaseUrlOpt = None,
    api_key_env: KeyEnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Continue PROMPT with a model, streaming the text as it decodes; with a personality
    (`-m luna`), PROMPT is a message and the character's reply is streamed; with `--system`, a
    plain model answers PROMPT as a chat. Like `llm -m`, the prompt may come from a pipe:
    `echo "Hello" | companion generate -m luna`."""
    if prompt is None or prompt == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise typer.BadParameter("give a PROMPT, or pipe one in (echo 'Hello' | companion generate -m luna)")
        prompt = sys.stdin.read().strip()
        if not prompt:
            raise typer.BadParameter("the prompt read from stdin is empty")
    m = _load_generator(model, base_url, api_key_env)
    opts: dict[str, Any] = {}
    if temperature is not None:
        opts["temperature"] = temperature
    if seed is not None:
        opts["seed"] = seed
    if hasattr(m, "stream_response"):  # a personality answers the message in character
        if system is not None:
            raise typer.BadParameter("--system is for plain models: a personality's card is its system message")
        _reply(m, model, prompt, max_tokens, opts, as_json)
        return
    if system is not None:  # a chat: the system message, then PROMPT as the user's turn
        _system_chat(m, model, system, prompt, max_tokens, opts, as_json)
    else:
        _continue(m, model, prompt, max_tokens, opts, as_json)


def _system_chat(
    m: Any, model: str, system: str, prompt: str, max_tokens: int, opts: dict[str, Any], as_json: bool
) -> None:
    """A plain model's answer to PROMPT under a system message, streamed or as JSON."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    if as_json:
        text = m.chat(messages, max_length=max_tokens, **opts)
        out.print_json(data={"model": model, "system": system, "prompt": prompt, "text": text})
        return
    for piece in m.stream_chat(messages, max_length=max_tokens, **opts):
        out.print(piece, end="", highlight=False, markup=False)
    out.print()


def _continue(m: Any, model: str, prompt: str, max_tokens: int, opts: dict[str, Any], as_json: bool) -> None:
    """A plain model's continuation of PROMPT, streamed after it (speed on stderr) or as JSON."""
    if as_json:
        text = m.generate(prompt, max_length=max_tokens, **opts)
        stats = m.last_stats
        out.print_json(
            data={
                "model": model,
                "prompt": prompt,
                "text": text,
                "completion_tokens": stats.completion_tokens,
                "seconds": round(stats.total_s, 3),
                "tokens_per_s": stats.tokens_per_s,
            }
        )
        return
    out.print(prompt, end="", style="bold", highlight=False)
    for piece in m.stream(prompt, max_length=max_tokens, **opts):
        out.print(piece, end="", highlight=False, markup=False)
    out.print()
    s = m.last_stats
    err.print(f"[dim]{s.completion_tokens} tokens, {s.tokens_per_s or 0:.0f} tok/s, engine {m.engine_name}[/]")


def _reply(m: Any, model: str, message: str, max_tokens: int, opts: dict[str, Any], as_json: bool) -> None:
    """A personality's reply to one message (no history), streamed or as JSON."""
    kw = {"max_length": max_tokens, **opts}
    if as_json:
        r = m.generate_response(message=message, history=[], **kw)
        out.print_json(
            data={
                "model": model,
                "message": message,
                "text": r.text,
                "emotion": r.emotion,
                "completion_tokens": r.usage.get("completion_tokens"),
                "seconds": round(r.timings.get("total_ms", 0) / 1000, 3),
            }
        )
        return
    for piece in m.stream_response(message=message, history=[], **kw):
        out.print(piece, end="", highlight=False, markup=False)
    out.print()
    r = m.last_response
    if r is not None:
        err.print(f"[dim]{r.usage.get('completion_tokens')} tokens, emotion {r.emotion}[/]")


@app.command()
@handle_errors
def chat(
    model: Annotated[str, typer.Argument(help="Model: NAME or CATEGORY/NAME.")] = "base/companion-base",
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n")] = 120,
    system: Annotated[str | None, typer.Option(help="A system message to start with (plain models).")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    user: Annotated[
        str | None,
        typer.Option(help="Personalize for this user (preferences, memory, /good /bad); personalities only."),
    ] = None,
    personalization: Annotated[
        str, typer.Option(help="The personalization model used with --user.")
    ] = "personalization/user_prefs",
    resume: Annotated[bool, typer.Option("--continue", "-C", help="Resume the latest saved chat with MODEL.")] = False,
    chat_id: Annotated[
        str | None, typer.Option("--chat", help="Resume this saved chat (companion chats list).")
    ] = None,
    base_url: BaseUrlOpt = None,
    api_key_env: KeyEnvOpt = None,
    speak: Annotated[
        bool, typer.Option("--speak", help="Speak each reply (Piper; the card's voice or --voice); also /speak.")
    ] = False,
    voice: Annotated[str | None, typer.Option("--voice", help="A voice for --speak (companion voices list).")] = None,
) -> None:
    """Chat with a model in the terminal (streaming); every chat is saved (companion chats list).
    /regen, /swipe, /edit, /continue work on the last answer; /help lists the rest. MODEL may be
    a remote model: `companion chat llama3.1:8b --base-url http://localhost:11434/v1`."""
    from companion.commands.chat import chat_loop

    m = _load_generator(model, base_url, api_key_env)
    personality = hasattr(m, "generate_response")
    hybrid = None
    if user is not None:
        if not personality:
            err.print(f"[red]--user needs a personality[/]: {model} is a plain model (e.g. chat luna --user {user})")
            raise typer.Exit(2)
        from models.hybrid_model import HybridModel

        hybrid = HybridModel(m, f"models/{personalization.removeprefix('models/')}")
    if system is not None and personality:
        err.print("[red]--system is for plain models[/]: a personality's card is its system prompt")
        raise typer.Exit(2)
    ref = None if personality or base_url or ("/" not in model and not _is_configured(model)) else _ref(model)
    chat_loop(m, ref=ref, user=user, hybrid=hybrid, chat_id=chat_id, latest=resume, system=system,
              max_tokens=max_tokens, seed=seed, speak=speak, voice=voice)  # fmt: skip


def _is_configured(ref: str) -> bool:
    try:
        _split(ref, _manager())
    except CompanionError:
        return False
    return True


def _ref(ref: str) -> str:
    return "/".join(_split(ref, _manager()))


# ----------------------------------------------------------------------------- models


@models_app.command("list")
@handle_errors
def models_list(
    category: Annotated[str | None, typer.Option("--category", "-c")] = None, as_json: JsonOpt = False
) -> None:
    """Every configured model: built-in and yours."""
    infos = _manager().list_models(category)
    if as_json:
        out.print_json(data=[i.__dict__ for i in infos])
        return
    from rich.table import Table

    table = Table(title="models")
    for col in ("category", "name", "type", "path", "from"):
        table.add_column(col)
    for i in infos:
        src = "built-in" if "builtin" in i.source else i.source
        table.add_row(i.category, i.name, i.type, i.path, src)
    out.print(table)


@models_app.command("show")
@handle_errors
def models_show(ref: Annotated[str, typer.Argument(help="NAME or CATEGORY/NAME")], as_json: JsonOpt = False) -> None:
    """Details of one model: config, resolved files, engine, size."""
    from companion.inspect import describe_model

    manager = _manager()
    category, name = _split(ref, manager)
    data = describe_model(manager, category, name)
    if as_json:
        out.print_json(data=data)
        return
    from rich.table import Table

    table = Table(title=f"{category}/{name}", show_header=False)
    for k, v in data.items():
        table.add_row(k, json.dumps(v) if isinstance(v, dict | list) else str(v))
    out.print(table)


# ----------------------------------------------------------------------------- doctor


@app.command()
@handle_errors
def doctor(as_json: JsonOpt = False) -> None:
    """Check the installation: config, store, models, data, metrics, integration."""
    from companion.doctor import run_checks

    results = run_checks()
    if as_json:
        out.print_json(data=[r.__dict__ for r in results])
    else:
        from rich.table import Table

        table = Table(title="companion doctor")
        for col in ("check", "status", "detail", "how to fix"):
            table.add_column(col, overflow="fold")
        style = {"ok": "green", "warn": "yellow", "fail": "bold red"}
        for r in results:
            table.add_row(r.name, f"[{style[r.status]}]{r.status}[/]", r.detail, r.fix or "")
        out.print(table)
    if any(r.status == "fail" for r in results):
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- train


@train_app.command("base")
@handle_errors
def train_base_cmd(
    data: Annotated[Path, typer.Option(help="Folder with books/, tinyshakespeare/, dialogue/.")] = Path(
        "../shared/data"
    ),
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder.")] = Path("runs/base"),
    resume: Annotated[bool, typer.Option(help="Continue from the run folder's checkpoint.")] = False,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps (default: the shipped recipe's).")] = None,
    epochs: Annotated[
        float | None, typer.Option(help="Passes over the training tokens (instead of --max-steps).")
    ] = None,
    minutes: Annotated[float | None, typer.Option(help="Stop cleanly after this much wall time.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Train the embedded base model from scratch (tokenizer + Llama), as shipped."""
    from dataclasses import replace

    from models.training.base import EMBEDDED_SETTINGS, train_base

    settings = EMBEDDED_SETTINGS
    if max_steps is not None:
        settings = settings.capped(max_steps)
    if minutes is not None:
        settings = replace(settings, max_minutes=minutes)
    result = train_base(
        data, output, settings=settings, resume=resume, progress=not as_json, threads=threads, epochs=epochs
    )
    summary = {k: v for k, v in result.to_json().items() if k != "history"}
    if as_json:
        out.print_json(data=summary)
        return
    from rich.table import Table

    table = Table(title="base model trained", show_header=False)
    for k, v in summary.items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    out.print(table)
    out.print(f"model folder: {output / 'model'}  loss curve: {output / 'loss_curve.png'}")


# ----------------------------------------------------------------------------- command groups

#: Modules that add command groups; each defines `register(app, models_app)`.
COMMAND_MODULES: list[str] = [
    "companion.commands.versions",
    "companion.commands.updates",
    "companion.commands.personality",
    "companion.commands.data",
    "companion.commands.train",
    "companion.commands.monitor",
    "companion.commands.audit",
    "companion.commands.privacy",
    "companion.commands.personalization",
    "companion.commands.serve",
    "companion.commands.run",
    "companion.commands.export",
    "companion.commands.chat",
    "companion.commands.tune",
    "companion.commands.federate",
    "companion.commands.voices",
    "companion.commands.compress",
]


def _register_command_groups() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app, models_app)


_register_command_groups()


def _one_line_summaries(group: typer.Typer) -> None:
    """Each command's line in `--help` listings: its help's first sentence on one line. Click
    keeps a docstring's hard line breaks there (`companion --help` showed "with a
    personality" alone on a line); the command's own `--help` still shows the whole text."""
    import re

    for info in group.registered_commands:
        text = info.help or (info.callback.__doc__ if info.callback else None)
        if info.short_help is None and text:
            paragraph = " ".join(text.strip().split("\n\n")[0].split())
            info.short_help = re.split(r"(?<=\.)\s+(?=[A-Z`])", paragraph)[0]
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _one_line_summaries(sub.typer_instance)


_one_line_summaries(app)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit:
        raise
    except CompanionError as exc:  # pragma: no cover - handled per command
        err.print(f"[bold red]error:[/] {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
