"""`companion privacy anonymize|compliance|export|erase|sweep|consent`: thin over PrivacyManager."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from companion.cli import JsonOpt, err, handle_errors, out

privacy_app = typer.Typer(help="Anonymization, compliance checks and data-subject rights.", no_args_is_help=True)


def _pm() -> Any:
    from models.privacy.manager import PrivacyManager

    return PrivacyManager()


def anonymize(
    source: Annotated[Path | None, typer.Argument(help="A .txt, .json or .jsonl file (default: stdin text).")] = None,
    level: Annotated[str, typer.Option("--level", "-l", help="low | medium | high")] = "high",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")] = None,
    ner: Annotated[str | None, typer.Option("--spacy-model", help="auto | none | a spaCy package.")] = None,
) -> None:
    """Anonymize text, JSON records or JSONL conversations at LEVEL."""
    from models.errors import PrivacyError
    from models.privacy.anonymizer import NO_NER, find_spacy_model

    opts = {"spacy_model": ner} if ner else {}
    if level != "low" and ner != "none" and find_spacy_model(ner or "auto") is None:
        err.print(f"[bold yellow]warning:[/] {NO_NER}", highlight=False)
    raw = sys.stdin.read() if source is None else source.read_text(encoding="utf-8")
    suffix = source.suffix.lower() if source else ".txt"
    pm = _pm()
    if suffix == ".json":
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise PrivacyError(f"{source}: not valid JSON ({exc})") from None
        text = json.dumps(pm.anonymize_data(data, level, **opts), indent=2, ensure_ascii=False) + "\n"
    elif suffix == ".jsonl":
        rows = []
        for n, line in enumerate(raw.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise PrivacyError(f"{source}:{n}: not valid JSON ({exc})") from None
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pm.anonymize_data(rows, level, **opts))
    else:
        text = pm.anonymize_data(raw, level, **opts)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")


def compliance(
    model: Annotated[str, typer.Argument(help="Model name.")],
    standard: Annotated[list[str] | None, typer.Option("--standard", "-s", help="GDPR, CCPA (repeatable).")] = None,
    record: Annotated[bool, typer.Option("--record", help="Print the Art. 30 record of processing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check MODEL against GDPR and CCPA from the real state; exit 1 if any check fails."""
    pm = _pm()
    if record:
        out.print_json(data=pm.record_of_processing())
        return
    report = pm.check_compliance(model, standard or ["GDPR", "CCPA"])
    if as_json:
        out.print_json(data=report.to_json())
    else:
        from rich.table import Table

        table = Table(title=f"{report.model}: {report.status}")
        for col in ("standard", "check", "reference", "status", "evidence"):
            table.add_column(col, overflow="fold")
        for c in report.checks:
            status = "[green]pass[/]" if c.passed else "[red]fail[/]"
            table.add_row(c.standard, c.name, c.reference, status, json.dumps(c.evidence, default=str)[:300])
        out.print(table)
    if not report.compliant:
        raise typer.Exit(1)


def export(
    user: Annotated[str, typer.Argument(help="User id.")],
    dest: Annotated[Path | None, typer.Option("--to", help="File or folder for the zip.")] = None,
) -> None:
    """Write everything held about USER to one zip archive (export.json)."""
    path = _pm().export_user_data(user, dest)
    out.print(f"exported {user} to {path}", highlight=False)


def erase(
    user: Annotated[str, typer.Argument(help="User id.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Erase USER's data from every store; list the model versions trained on it (retrain them)."""
    if not yes and not typer.confirm(f"Erase every record of {user}? This cannot be undone"):
        raise typer.Exit(1)
    result = _pm().erase_user_data(user)
    if as_json:
        out.print_json(data=result.to_json())
        return
    removed = {k: v for k, v in result.removed.items() if v}
    if not removed:
        out.print(f"erased {user}: nothing was held", highlight=False)
    else:
        out.print(f"erased {user}:", highlight=False)
        for store, what in removed.items():
            if isinstance(what, dict):
                detail = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in what.items())
            else:
                detail = str(what)
            out.print(f"  {store}: {detail}", highlight=False)
    for m in result.models:
        out.print(f"  [yellow]retrain required[/]: {m}", highlight=False)


def sweep(as_json: JsonOpt = False) -> None:
    """Delete data past its retention period (privacy.retention in config.yaml)."""
    removed = _pm().sweep()
    if as_json:
        out.print_json(data=removed)
    else:
        out.print(f"swept: {removed or 'no retention configured (privacy.retention)'}", highlight=False)


def encrypt(as_json: JsonOpt = False) -> None:
    """Encrypt user data written in the clear before privacy.encrypt_at_rest was on."""
    from models.personalization.storage import seal_stored

    sealed = seal_stored()
    if as_json:
        out.print_json(data=sealed)
    else:
        out.print(f"sealed: {sealed} (companion privacy compliance checks the rest)", highlight=False)


def consent(
    user: Annotated[str, typer.Argument(help="User id.")],
    purpose: Annotated[str, typer.Argument(help="training | personalization | analytics | ccpa_opt_out")],
    withdraw: Annotated[bool, typer.Option("--withdraw", help="Withdraw instead of grant.")] = False,
) -> None:
    """Record (or withdraw) USER's consent for PURPOSE."""
    pm = _pm()
    if withdraw:
        out.print(f"withdrew {pm.withdraw_consent(user, purpose)} consent record(s)")
    else:
        pm.record_consent(user, purpose, source="cli")
        out.print(f"recorded consent of {user} for {purpose}", highlight=False)


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    for fn in (anonymize, compliance, export, erase, sweep, encrypt, consent):
        privacy_app.command(fn.__name__)(handle_errors(fn))
    app.add_typer(privacy_app, name="privacy")
