"""`companion cards import|export|show|validate` and `companion train emotion|emotion-control|chat`.

(The chat loop with a personality is `companion.commands.chat`.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

__all__ = ["register"]

cards_app = typer.Typer(help="Character cards: import, export, show, validate (V1/V2/V3; JSON, PNG, CHARX).")


# ----------------------------------------------------------------------------- cards


def _out() -> Console:
    from companion.cli import out

    return out


def _summary(card: Any) -> dict[str, Any]:
    ext = card.companion
    return {
        "name": card.name,
        "nickname": card.nickname or None,
        "spec": card.spec,
        "greetings": len(card.greetings()),
        "lorebook_entries": len(card.lorebook.entries),
        "tags": card.tags,
        "scenarios": sorted(ext.scenarios),
        "emotion_labels": ext.emotion.labels,
        "temperament": {k: round(v, 2) for k, v in ext.baseline().items() if v > 0},
        "behavior": ext.behavior.model_dump(),
        "description": card.description,
    }


def cards_import(
    file: Annotated[Path, typer.Argument(help="A card: .json, .png or .charx (V1, V2 or V3).")],
    name: Annotated[str | None, typer.Option(help="Model name (default: from the character's name).")] = None,
    base_model: Annotated[
        str, typer.Option(help="Base model path or CATEGORY/NAME (default: the embedded chat model).")
    ] = "builtin:companion-chat",
    force: Annotated[bool, typer.Option(help="Replace a config entry of the same name.")] = False,
) -> None:
    """Import a card as a personality model (store version + config entry)."""
    from models.personality.install import import_card

    info = import_card(file, name=name, base_model=base_model, force=force)
    _out().print(f"imported [bold]{info['name']}[/] {info['version']}: companion chat {info['name']}")


def cards_export(
    ref: Annotated[str, typer.Argument(help="A personality name (luna) or a card file.")],
    output: Annotated[Path, typer.Argument(help="Where to write: .json, .png or .charx.")],
    spec: Annotated[str | None, typer.Option(help="Convert first: v1, v2 or v3.")] = None,
) -> None:
    """Export a card (PNG: V3 writes `ccv3` plus a V2 `chara` backfill)."""
    from models.personality.install import find_card

    card = find_card(ref)
    if spec:
        card = card.convert(f"chara_card_{spec.lower().removeprefix('chara_card_')}")
    card.save(output)
    _out().print(f"wrote {output} ({card.spec})")


def cards_show(
    ref: Annotated[str, typer.Argument(help="A personality name or a card file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """What a card holds: spec, greetings, lorebook, scenarios, emotions, behaviour."""
    from models.personality.install import find_card

    data = _summary(find_card(ref))
    if as_json:
        _out().print_json(data=data)
        return
    from rich.table import Table

    table = Table(title=data["name"], show_header=False)
    for k, v in data.items():
        table.add_row(k, json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else str(v))
    _out().print(table)


def cards_validate(files: Annotated[list[Path], typer.Argument(help="Card files to check.")]) -> None:
    """Check cards; each problem names the field. Exit 1 if any card is invalid."""
    from models.errors import CompanionError
    from models.personality.card import load_card

    bad = 0
    for f in files:
        try:
            card = load_card(f)
            _out().print(f"[green]ok[/]    {f} ({card.spec}, {card.name})", highlight=False)
        except CompanionError as exc:
            bad += 1
            _out().print(f"[red]error[/] {exc}", highlight=False)
    if bad:
        raise typer.Exit(1)


def train_emotion(
    data: Annotated[Path, typer.Option(help="GoEmotions folder (train.tsv, dev.tsv).")] = Path(
        "../shared/data/goemotions"
    ),
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("runs/emotion"),
    epochs: Annotated[int, typer.Option(help="Passes over train (the shipped classifier: 6).")] = 6,
    threads: Annotated[int, typer.Option()] = 1,
    nb_power: Annotated[
        float, typer.Option(help="Naive-Bayes feature scaling (0 = off, as shipped; 0.5 detects better).")
    ] = 0.0,
    listener: Annotated[
        bool,
        typer.Option(
            "--listener",
            help="The listener's recipe (builtin/emotion-listener: hears the user's messages; liblinear, "
            "5-fold thresholds, negation, trigrams, shouting flags); --epochs and --nb-power do not apply.",
        ),
    ] = False,
) -> None:
    """Train the emotion classifier (text → the 10 companion emotions) on GoEmotions."""
    import dataclasses

    from models.personality.emotion_training import (
        LISTENER_SETTINGS,
        EmotionTrainSettings,
        train_emotion_classifier,
    )

    settings = (
        dataclasses.replace(LISTENER_SETTINGS, threads=threads)
        if listener
        else EmotionTrainSettings(epochs=epochs, threads=threads, nb_power=nb_power)
    )
    report = train_emotion_classifier(data, output, settings)
    dev = report.get("dev", {})
    _out().print(f"macro-F1 on dev: {dev.get('macro_f1')} (top label: {dev.get('macro_f1_top_label')}); {output}")


def train_control(
    base: Annotated[Path, typer.Option(help="Base model folder (with emotion tokens).")] = Path(
        "src/models/builtin/companion-base"
    ),
    output: Annotated[Path, typer.Option("--output", "-o", help="The new model folder.")] = Path(
        "runs/emotion-control/model"
    ),
    data: Annotated[Path, typer.Option(help="The shared data folder (dialogue/, goemotions/).")] = Path(
        "../shared/data"
    ),
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 300,
    minutes: Annotated[float, typer.Option(help="Stop cleanly after this much wall time.")] = 9.0,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-3,
    threads: Annotated[int, typer.Option()] = 1,
    character_lines: Annotated[
        bool, typer.Option(help="Also train on the built-in characters' own lines (off: their LoRAs hold them).")
    ] = False,
) -> None:
    """Fine-tune a base model with emotion control tokens on classifier-tagged dialogue."""
    from models.paths import builtin_dir
    from models.personality.card import load_card
    from models.training.control import train_emotion_control
    from models.training.loop import TrainSettings

    cards = {p.parent.name: load_card(p) for p in sorted(builtin_dir().glob("*/persona.json"))}
    settings = TrainSettings(
        max_steps=steps, batch_size=16, micro_batch_size=16, lr=lr, warmup_steps=min(20, steps),
        eval_every=max(1, steps // 2), checkpoint_every=max(1, steps // 4), max_minutes=minutes, seed=7,
    )  # fmt: skip
    persona = data / "dialogue" / "synthetic_persona_chat" / "Synthetic-Persona-Chat_valid.csv"
    report = train_emotion_control(
        base, output, output.parent, persona_chat=persona if persona.exists() else None, cards=cards,
        dialogue_dir=builtin_dir().parent / "training_data" / "writing_assistant" / "character_data",
        goemotions=data / "goemotions" / "train.tsv", settings=settings, threads=threads,
        character_lines=character_lines,
    )  # fmt: skip
    _out().print(f"{output}: {report['examples']} examples, {report['result']}")


def train_chat(
    base: Annotated[Path, typer.Option(help="Base model folder (with emotion tokens).")] = Path(
        "src/models/builtin/companion-base"
    ),
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Run folder (checkpoints; the model in model/).")
    ] = Path("runs/chat"),
    data: Annotated[Path, typer.Option(help="The shared data folder (dialogue/, goemotions/, books/).")] = Path(
        "../shared/data"
    ),
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 800,
    minutes: Annotated[float, typer.Option(help="Stop cleanly after this much wall time.")] = 80.0,
    extend_context: Annotated[
        bool, typer.Option(help="First continue the base on 512-token book windows (its full context).")
    ] = False,
    resume: Annotated[bool, typer.Option(help="Resume from the run folder's checkpoint.")] = False,
    threads: Annotated[int, typer.Option()] = 2,
) -> None:
    """Train the embedded chat model on whole conversations (Topical-Chat, Synthetic-Persona-Chat
    rendered as cards, GoEmotions for rare emotions, a share of books): models.training.chat."""
    from models.training.base import extend_context as extend
    from models.training.chat import train_chat as run_chat
    from models.training.loop import TrainSettings

    if extend_context:
        ctx = output / "context"
        if not (ctx / "model" / "model.safetensors").exists():
            extend(base, data, ctx, ctx / "model", resume=resume and (ctx / "checkpoint").exists(), threads=threads)
        base = ctx / "model"
    settings = TrainSettings(
        max_steps=steps, batch_size=16, micro_batch_size=16, lr=1e-3, warmup_steps=min(40, steps),
        eval_every=max(1, min(100, steps)), checkpoint_every=max(1, min(25, steps)), max_minutes=minutes, seed=7,
    )  # fmt: skip
    report = run_chat(base, output / "model", output, data, settings=settings, threads=threads, resume=resume)
    _out().print(f"{output / 'model'}: {report['examples']} windows, {report['result']}")


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    """Add the `cards` group and `train emotion|emotion-control` (chat delegates from `cli.chat`)."""
    from companion.cli import handle_errors, train_app

    if not cards_app.registered_commands:
        cards_app.command("import")(handle_errors(cards_import))
        cards_app.command("export")(handle_errors(cards_export))
        cards_app.command("show")(handle_errors(cards_show))
        cards_app.command("validate")(cards_validate)
        train_app.command("emotion")(handle_errors(train_emotion))
        train_app.command("emotion-control")(handle_errors(train_control))
        train_app.command("chat")(handle_errors(train_chat))
    app.add_typer(cards_app, name="cards")
