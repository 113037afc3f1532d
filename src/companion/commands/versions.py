"""`companion models versions|snapshot|diff|verify|rollback|alias`: thin over ModelVersionControl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from companion.cli import JsonOpt, err, handle_errors, out

ModelArg = Annotated[str, typer.Argument(help="Model: NAME (luna, luna_personality) or CATEGORY/NAME.")]


def _vc() -> Any:
    from models.lifecycle.version_control import ModelVersionControl

    return ModelVersionControl()


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    out.print(table)


def versions(model: ModelArg, as_json: JsonOpt = False) -> None:
    """Every version of MODEL, oldest first, with its aliases, tags and notes."""
    infos = _vc().list_versions(model)
    if as_json:
        out.print_json(data=[i.to_json() for i in infos])
        return
    if not infos:
        err.print(f"[yellow]{model} has no versions yet[/]: create one with `companion models snapshot {model}`")
        return
    rows = [
        [
            i.version,
            i.created_at[:19].replace("T", " "),
            i.author or "",
            ", ".join(i.aliases),
            ", ".join(f"{k}={v}" if v else k for k, v in i.tags.items()),
            i.notes or "",
        ]
        for i in infos
    ]
    _table(f"{infos[0].model} versions", ["version", "created (UTC)", "author", "aliases", "tags", "notes"], rows)


def snapshot(
    model: ModelArg,
    notes: Annotated[str, typer.Option("--notes", "-m", help="What changed in this version.")] = "",
    bump: Annotated[str, typer.Option(help="major | minor | patch")] = "minor",
    source: Annotated[
        Path | None, typer.Option(help="Folder to snapshot (default: the model's working folder).")
    ] = None,
    no_activate: Annotated[bool, typer.Option("--no-activate", help="Do not move the current alias.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Snapshot MODEL's working folder as a new immutable version (and make it current)."""
    info = _vc().create_version(model, notes, bump=bump, source=source, activate=not no_activate)  # type: ignore[arg-type]
    if as_json:
        out.print_json(data=info.to_json())
        return
    out.print(f"created [bold]{info.model} {info.version}[/] at {info.path}", highlight=False)


def diff(model: ModelArg, a: str, b: str, as_json: JsonOpt = False) -> None:
    """What changed from version A to version B: files, sizes, config keys, metrics, notes."""
    d = _vc().diff(model, a, b)
    if as_json:
        out.print_json(data=d.to_json())
        return
    rows = [[f"+ {p}", "", str(s)] for p, s in d.added.items()]
    rows += [[f"- {p}", str(s), ""] for p, s in d.removed.items()]
    rows += [[f"~ {p}", str(sa), str(sb)] for p, (sa, sb) in d.changed.items()]
    _table(f"{d.model} {a} -> {b}: files ({d.unchanged} unchanged)", ["file", f"bytes {a}", f"bytes {b}"], rows)
    changes = [
        [f"{f}: {k}", json.dumps(va), json.dumps(vb)] for f, keys in d.config.items() for k, (va, vb) in keys.items()
    ]
    changes += [[f"metric: {k}", json.dumps(va), json.dumps(vb)] for k, (va, vb) in d.metrics.items()]
    if changes:
        _table("config and metrics", ["key", a, b], changes)
    out.print(f"notes {a}: {d.notes[0] or '-'}\nnotes {b}: {d.notes[1] or '-'}", highlight=False)


def verify(
    model: Annotated[str | None, typer.Argument(help="One model (default: all).")] = None,
    quick: Annotated[bool, typer.Option(help="Trust cached hashes of unchanged files.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-hash every file of every version and check every alias; exit 1 on any problem."""
    report = _vc().verify(model, full=not quick)
    if as_json:
        out.print_json(data=report.to_json())
    else:
        for problem in report.problems:
            err.print(f"[bold red]problem:[/] {problem}", highlight=False)
        for item in report.unregistered:
            err.print(f"[yellow]not registered yet[/] (a crash interrupted it; the next write adopts it): {item}")
        status = "[green]ok[/]" if report.ok else "[bold red]FAILED[/]"
        out.print(f"{status}: {len(report.checked)} versions checked, {len(report.problems)} problems")
    if not report.ok:
        raise typer.Exit(1)


def rollback(
    model: ModelArg,
    version: Annotated[str | None, typer.Argument(help="Target version (default: the alias's previous one).")] = None,
    alias: Annotated[str, typer.Option(help="The alias to move.")] = "current",
    reason: Annotated[str | None, typer.Option(help="Why (kept in the alias history).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Point MODEL's alias back at VERSION; the move is recorded in the alias history."""
    result = _vc().rollback_version(model, version, alias=alias, reason=reason)
    if as_json:
        out.print_json(data=result.to_json())
    elif result:
        out.print(f"[green]rolled back[/] {result}", highlight=False)
    else:
        err.print(f"[bold red]error:[/] {result.reason}", highlight=False)
    if not result:
        raise typer.Exit(1)


def alias(
    model: ModelArg,
    name: Annotated[str | None, typer.Argument(help="Alias to set (e.g. production).")] = None,
    version: Annotated[str | None, typer.Argument(help="Version the alias should point at.")] = None,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the alias history).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show MODEL's aliases and their history, or point alias NAME at VERSION."""
    vc = _vc()
    if name is not None:
        if version is None:
            raise typer.BadParameter("give both ALIAS and VERSION to move an alias", param_hint="VERSION")
        moved = vc.set_alias(model, name, version, reason)
        if as_json:
            out.print_json(data=moved.to_json())
        else:
            out.print(f"{moved}", highlight=False)
        return
    aliases, history = vc.aliases(model), vc.alias_history(model)
    if as_json:
        out.print_json(data={"aliases": aliases, "history": [m.__dict__ for m in history]})
        return
    _table("aliases", ["alias", "version"], [[a, v] for a, v in sorted(aliases.items())])
    rows = [
        [m.at[:19].replace("T", " "), m.alias, m.from_version or "-", m.to_version, m.actor, m.reason or ""]
        for m in history
    ]
    _table("alias history", ["when (UTC)", "alias", "from", "to", "who", "why"], rows)


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    """Add the version commands to `companion models`."""
    for fn in (versions, snapshot, diff, verify, rollback, alias):
        models_app.command(fn.__name__)(handle_errors(fn))
