"""`companion audit verify|show|checkpoint` and `companion access grant|revoke|check|list`.

Thin over `models.audit.AuditLog` and `models.security.ModelSecurityManager`. The acting user is
`$COMPANION_USER`, else the policy's local owner (docs/security.md).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from companion.cli import JsonOpt, err, handle_errors, out

audit_app = typer.Typer(help="Verify and read the tamper-evident audit log.", no_args_is_help=True)
access_app = typer.Typer(help="Grant, revoke and check access to models.", no_args_is_help=True)

UserArg = Annotated[str, typer.Argument(help="User id.")]
ModelsArg = Annotated[str, typer.Argument(help="Model name or glob: luna, personality/*, '*'.")]
LevelArg = Annotated[str, typer.Argument(help="read | generate | train | admin")]


def _security() -> Any:
    from models.security.manager import ModelSecurityManager

    return ModelSecurityManager()


def _audit() -> Any:
    return _security().audit


def verify(as_json: JsonOpt = False) -> None:
    """Check every audit row's position, hash and link and every signed checkpoint; exit 1 on damage."""
    report = _audit().verify()
    if as_json:
        out.print_json(data=report.to_json())
    elif report.ok:
        out.print(f"[green]audit chain intact[/]: {report.rows} rows, {report.checkpoints} signed checkpoints")
        for note in report.notes:
            out.print(f"  note: {note}", highlight=False)
    else:
        err.print(f"[bold red]audit chain broken at row {report.first_bad}[/]: {report.problem}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


def show(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's rows.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Only this model (category/name, or a * glob).")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO date/time, or 7d / 12h / 30m ago.")] = None,
    action: Annotated[str | None, typer.Option("--action", help="Only this action (load, generate, ...).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the newest N rows.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Audit rows, oldest first, filtered by user, model, time and action."""
    rows = _audit().show(user=user, model=model, since=since, action=action, limit=limit)
    if as_json:
        out.print_json(data=[r.to_json() for r in rows])
        return
    from rich.table import Table

    table = Table(title=f"audit log ({len(rows)} rows)")
    for col in ("seq", "at (UTC)", "user", "model", "action", "level", "outcome"):
        table.add_column(col, overflow="fold")
    for r in rows:
        outcome = "" if r.allowed is None else ("allowed" if r.allowed else "[red]denied[/]")
        table.add_row(
            str(r.seq),
            r.at[:19].replace("T", " "),
            r.user or f"({r.subject})",
            r.model,
            r.action,
            r.level or "",
            outcome,
        )
    out.print(table)


def checkpoint() -> None:
    """Sign the newest audit row now with the installation key (verify then detects a cut-off tail)."""
    seq = _audit().checkpoint()
    out.print("nothing to sign: the audit log is empty" if seq is None else f"signed checkpoint at row {seq}")


def grant(
    user: UserArg,
    models: ModelsArg,
    level: LevelArg,
    deny: Annotated[bool, typer.Option("--deny", help="Add a deny rule instead (denies win).")] = False,
) -> None:
    """Grant USER LEVEL (and every lower level) on MODELS; needs admin on MODELS."""
    _security().grant(user, models, level, deny=deny)
    out.print(f"{'denied' if deny else 'granted'} {user} {level} on {models}", highlight=False)


def revoke(
    user: UserArg,
    models: ModelsArg,
    level: Annotated[str | None, typer.Argument(help="Only this level (default: all).")] = None,
) -> None:
    """Remove USER's database rules on MODELS (config.yaml rules are edited in the file)."""
    n = _security().revoke(user, models, level)
    if n == 0:
        err.print(f"[yellow]no database rule for {user} on {models}[/]; rules in config.yaml are changed there")
    else:
        out.print(f"revoked {n} rule(s) of {user} on {models}", highlight=False)


def check(user: UserArg, model: Annotated[str, typer.Argument(help="Model name.")], level: LevelArg) -> None:
    """Would USER get LEVEL on MODEL? Prints the deciding rule; exit 1 when denied (audited)."""
    sm = _security()
    decision = sm.decide(user, model, level)
    sm.check_access(user, model, level, action=f"check:{level}")
    colour = "green" if decision.allowed else "red"
    out.print(f"[{colour}]{'allowed' if decision.allowed else 'denied'}[/]: {decision.reason}", highlight=False)
    if not decision.allowed:
        raise typer.Exit(1)


def list_rules(as_json: JsonOpt = False) -> None:
    """The effective policy: config roles and users, and the database rules."""
    sm = _security()
    data = {"config": sm.policy.model_dump(), "database": sm.rules()}
    if as_json:
        out.print_json(data=data)
        return
    import yaml

    out.print(yaml.safe_dump(data, sort_keys=False), highlight=False)


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    for fn in (verify, show, checkpoint):
        audit_app.command(fn.__name__)(handle_errors(fn))
    for fn in (grant, revoke, check):
        access_app.command(fn.__name__)(handle_errors(fn))
    access_app.command("list")(handle_errors(list_rules))
    app.add_typer(audit_app, name="audit")
    app.add_typer(access_app, name="access")
