"""`companion updates check|apply|keygen|publish`: thin over ModelUpdateManager and the publisher."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from companion.cli import JsonOpt, err, handle_errors, out

updates_app = typer.Typer(
    help="Signed model updates: check, apply, and publish your own catalog.", no_args_is_help=True
)


def _manager() -> Any:
    from models.lifecycle.update_manager import ModelUpdateManager

    return ModelUpdateManager()


def _report_refused(refused: list[tuple[str, str]]) -> None:
    for source, reason in refused:
        err.print(f"[bold red]refused catalog[/] {source}: {reason}", highlight=False, soft_wrap=True)


@updates_app.command("check")
@handle_errors
def check(as_json: JsonOpt = False) -> None:
    """List updates offered by the configured catalogs (signature, expiry and freshness checked)."""
    manager = _manager()
    found = manager.check_updates()
    if as_json:
        out.print_json(data={"updates": [u.to_json() for u in found], "refused": found.refused})
    else:
        from rich.table import Table

        _report_refused(found.refused)
        if not found and not manager.config.catalogs:
            out.print(
                "no update catalogs are configured, so there is nothing to check: add one under "
                "`updates.catalogs` in config.yaml (docs/versions-and-updates.md)"
            )
        elif not found:
            out.print(f"no updates available from {len(manager.config.catalogs)} catalog(s)")
        else:
            table = Table(title="available updates")
            for col in ("model", "current", "new", "size", "source", "notes"):
                table.add_column(col, overflow="fold")
            for u in found:
                table.add_row(u.model, u.current or "-", u.version, f"{u.size:,}", u.source, u.notes)
            out.print(table)
    if found.refused:
        raise typer.Exit(1)


@updates_app.command("apply")
@handle_errors
def apply(
    no_backup: Annotated[
        bool, typer.Option("--no-backup", help="Delete the replaced version once the update is live.")
    ] = False,
    archive: Annotated[
        bool, typer.Option(help="Also write the replaced version as a .tar.gz in COMPANION_HOME/backups.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Download, verify, smoke-test and switch to every available update; roll back on any failure."""
    manager = _manager()
    found = manager.check_updates()
    if not as_json:
        _report_refused(found.refused)
    result = manager.apply_updates(found, backup_existing=not no_backup, archive=archive)
    if as_json:
        out.print_json(data={**result.to_json(), "refused": found.refused})
    else:
        style = {"applied": "green", "skipped": "yellow", "rolled_back": "bold red"}
        for o in result.outcomes:
            out.print(f"[{style[o.status]}]{o.status}[/] {o.model} {o.version}: {o.reason}", highlight=False)
        if not result.outcomes:
            out.print("no updates to apply")
    if not result or found.refused:
        raise typer.Exit(1)


@updates_app.command("keygen")
@handle_errors
def keygen(
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Private key file (default: COMPANION_HOME/keys/).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an Ed25519 signing key for your catalog and print its public key."""
    from models.home import companion_home
    from models.lifecycle.catalog import generate_key
    from models.lifecycle.update_publish import default_key_path

    path = out_path or default_key_path(companion_home())
    public = generate_key(path)
    if as_json:
        out.print_json(data={"private_key": str(path), "public_key": public})
        return
    out.print(f"private key: {path} (keep it secret; mode 0600)", highlight=False)
    out.print(f"public key:  {public}", highlight=False)
    out.print("add it to config.yaml on every machine that should trust your catalog:", highlight=False)
    out.print(f'  updates:\n    trusted_keys: ["{public}"]', highlight=False, markup=False)


@updates_app.command("publish")
@handle_errors
def publish(
    model: Annotated[str, typer.Argument(help="Model: NAME or CATEGORY/NAME.")],
    to: Annotated[Path, typer.Option("--to", help="Catalog folder to write (serve it with any static file server).")],
    version: Annotated[str | None, typer.Option(help="Version to publish (default: the current one).")] = None,
    key: Annotated[
        Path | None, typer.Option(help="Signing key (default: COMPANION_HOME/keys/catalog-signing.pem).")
    ] = None,
    expires_days: Annotated[float, typer.Option(help="Days until readers refuse the catalog as stale.")] = 30.0,
    as_json: JsonOpt = False,
) -> None:
    """Add a model version to a signed catalog folder (files + catalog.json)."""
    from models.home import companion_home
    from models.lifecycle.update_publish import default_key_path, publish_version
    from models.lifecycle.version_control import ModelVersionControl

    vc = ModelVersionControl()
    done = publish_version(vc, model, to, key or default_key_path(companion_home()), version, expires_days)
    if as_json:
        out.print_json(data={**done.__dict__, "catalog": str(done.catalog)})
        return
    out.print(
        f"published {done.model} {done.version} ({done.files} files, {done.size:,} bytes) in {done.catalog} "
        f"(catalog version {done.catalog_version}, expires {done.expires[:10]})",
        highlight=False,
    )


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    """Add `companion updates`."""
    app.add_typer(updates_app, name="updates")
