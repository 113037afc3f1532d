"""`companion users show|prefs|memory|forget|export|feedback|key`: thin over models.personalization
(and companion.server.keys for the server's API keys).

companion users prefs sam length=short tone=warm,playful emoji=true
companion users memory sam --add "Has a cat called Ink" --kind person
companion users feedback pr-1234... --rating 5
companion users forget sam --yes
companion users key create sam --name sillytavern   # prints the key once
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from companion.cli import JsonOpt, err, handle_errors, out

users_app = typer.Typer(help="Per-user personalization: preferences, memory, feedback, erasure.", no_args_is_help=True)

UserArg = Annotated[str, typer.Argument(help="The user's name (as passed to user=).")]


def _print(data: Any, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(data, default=str))
    else:
        for key, value in data.items():
            out.print(f"[bold]{key}[/]: {_plain(value)}", highlight=False)


def _plain(value: Any) -> str:
    """A value as a person reads it: lists joined with commas, mappings as `key value` pairs,
    nothing as a dash (not Python's repr)."""
    if value is None or value == {} or value == []:
        return "-"
    if isinstance(value, list | tuple | set):
        return ", ".join(_plain(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k} {_plain(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def show(user: UserArg, as_json: JsonOpt = False) -> None:
    """Preferences, learned profile, remembered facts and feedback counts of USER."""
    from models.personalization import UserMemory, load_preferences
    from models.personalization.storage import list_feedback

    prefs = load_preferences(user)
    facts = UserMemory(user).list()
    feedback = list_feedback(user=user)
    data = {
        "user": user,
        "preferences": prefs.explicit() if prefs else {},
        "learned": prefs.learned if prefs else {},
        "facts": [f.text for f in facts],
        "feedback": {k: sum(1 for r in feedback if r["kind"] == k) for k in sorted({r["kind"] for r in feedback})},
    }
    _print(data, as_json)


def prefs(
    user: UserArg,
    settings: Annotated[
        list[str] | None, typer.Argument(help="KEY=VALUE pairs, e.g. length=short tone=warm,dry")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Forget USER's stated preferences.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show or set USER's preferences (validated: a bad key or value changes nothing)."""
    from models.personalization import UserPreferences, load_preferences, update_preferences
    from models.personalization.preferences import delete_preferences

    if clear:
        delete_preferences(user)
        err.print(f"preferences of {user!r} cleared")
        return
    current = load_preferences(user) or UserPreferences()
    if settings:
        updates: dict[str, Any] = {}
        for item in settings:
            key, sep, value = item.partition("=")
            if not sep:
                raise typer.BadParameter(f"{item!r}: expected KEY=VALUE")
            lowered = value.strip().lower()
            updates[key.strip()] = {"true": True, "false": False, "none": None}.get(lowered, value.strip())
        current = update_preferences(user, lambda stored: stored.merged(updates))  # one transaction
    _print({"user": user, **current.explicit(), "learned": current.learned}, as_json)


def memory(
    user: UserArg,
    add: Annotated[str | None, typer.Option("--add", help="Remember this fact.")] = None,
    kind: Annotated[str, typer.Option("--kind", help="name | like | dislike | project | person | fact")] = "fact",
    edit: Annotated[tuple[int, str] | None, typer.Option("--edit", help="ID TEXT: change a fact.")] = None,
    remove: Annotated[int | None, typer.Option("--remove", help="Forget the fact with this id.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List (or add, edit, remove) what the companion remembers about USER."""
    from models.personalization import UserMemory

    mem = UserMemory(user)
    if add:
        err.print(f"remembered fact {mem.add(add, kind=kind)}")
    if edit:
        mem.edit(int(edit[0]), edit[1])
    if remove is not None:
        mem.remove(remove)
    facts = [f.to_dict() for f in mem.list()]
    if as_json:
        out.print_json(json.dumps(facts))
    else:
        for f in facts:
            out.print(f"{f['id']:>4}  [dim]{f['kind']:<8}[/] {f['text']}", highlight=False)


def export(
    user: UserArg,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")] = None,
) -> None:
    """Everything personalization keeps about USER, as JSON."""
    from models.personalization.storage import export_user

    text = json.dumps(export_user(user), indent=2, default=str, ensure_ascii=False) + "\n"
    if output is None:
        out.print(text, markup=False, highlight=False)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")


def forget(
    user: UserArg,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Erase USER's preferences, memory, logged answers, feedback and learner state."""
    from models.personalization.storage import erase_user

    if not yes:
        typer.confirm(f"Erase everything personalization keeps about {user!r}?", abort=True)
    removed = erase_user(user)
    err.print(", ".join(f"{k}: {v}" for k, v in removed.items()))


def feedback(
    response_id: Annotated[str, typer.Argument(help="The response_id of a personalized answer.")],
    rating: Annotated[float | None, typer.Option("--rating", help="+1/-1, or 1-5 with --stars.")] = None,
    stars: Annotated[bool, typer.Option("--stars", help="The rating is 1-5 stars.")] = False,
    choice: Annotated[int | None, typer.Option("--choice", help="Index of the preferred candidate.")] = None,
    regenerate: Annotated[bool, typer.Option("--regenerate", help="The user asked for another answer.")] = False,
    edit: Annotated[str | None, typer.Option("--edit", help="The user's edited version.")] = None,
) -> None:
    """Record feedback on a personalized answer (it trains that user's learner)."""
    from models.personalization import record_feedback

    event = record_feedback(
        response_id,
        rating=rating,
        scale="stars" if stars else None,
        choice=choice,
        regenerate=regenerate,
        edited_text=edit,
    )
    err.print(f"recorded {event.kind} for {event.user or 'no user'}")


key_app = typer.Typer(help="API keys of `companion serve`: each key names one user.", no_args_is_help=True)


def key_create(
    user: UserArg,
    name: Annotated[str | None, typer.Option("--name", help="A label, e.g. the client that uses it.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key for USER (admin on * only); the key is shown once, only its hash is kept."""
    from companion.server.keys import create_key
    from models.security import require

    require(None, "*", "admin", action="key:create")
    key, record = create_key(user, name)
    if as_json:
        out.print_json(json.dumps({"key": key, **record.to_json()}))
        return
    out.print(key, markup=False, highlight=False)
    err.print(f"key {record.id} ({record.prefix}...) for {user!r}: store it now, it is not shown again")


def key_list(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's keys.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The stored keys (prefix, user, label, created, last used, revoked); never the keys."""
    from companion.server.keys import list_keys
    from models.security import require

    require(None, "*", "admin", action="key:list")
    keys = [k.to_json() for k in list_keys(user)]
    if as_json:
        out.print_json(json.dumps(keys))
        return
    from rich.table import Table

    table = Table(title="API keys")
    for col in ("id", "prefix", "user", "name", "created_at", "last_used_at", "revoked_at"):
        table.add_column(col)
    for k in keys:
        table.add_row(
            *(str(k[c] or "") for c in ("id", "prefix", "user", "name", "created_at", "last_used_at", "revoked_at"))
        )
    out.print(table)


def key_revoke(key_id: Annotated[int, typer.Argument(help="The key's id (see `users key list`).")]) -> None:
    """Revoke a key: requests with it are refused from now on."""
    from companion.server.keys import revoke_key
    from models.security import require

    require(None, "*", "admin", action="key:revoke")
    record = revoke_key(key_id)
    err.print(f"key {record.id} ({record.prefix}...) of {record.user!r} revoked")


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    for fn in (show, prefs, memory, export, forget, feedback):
        users_app.command(fn.__name__)(handle_errors(fn))
    for name, fn in (("create", key_create), ("list", key_list), ("revoke", key_revoke)):
        key_app.command(name)(handle_errors(fn))
    users_app.add_typer(key_app, name="key")
    app.add_typer(users_app, name="users")
