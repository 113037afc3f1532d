"""`companion data collect|preprocess|validate|show`: the training-data pipeline from the shell.

    companion data collect writing Book_Collection --genre fantasy -o data/writing
    companion data preprocess writing data/writing -o data/writing-512 --max-length 512
    companion data validate writing data/writing-512 -o data/writing-ok --threshold 0.8
    companion data show data/writing-ok
    companion data show                      # the configured data sources

Every step shows a progress bar and a summary table; `--json` prints the report instead. An
input may be a saved dataset folder or any source `collect` accepts (it is collected first).
Outputs are saved with `dataset.json` (lineage: the reports of every step) and `manifest.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["collect", "data_app", "preprocess", "register", "show", "validate"]

data_app = typer.Typer(help="Training data: collect, preprocess, validate, show (docs/data.md).", no_args_is_help=True)

KINDS = ("writing", "conversations", "characters")
KindArg = Annotated[str, typer.Argument(help="writing | conversations | characters")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Save the dataset to this folder.")]


def _kind(kind: str) -> str:
    from models.errors import DataError

    if kind not in KINDS:
        raise DataError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


class _Bar:
    """A Rich progress bar fed by the pipeline's (done, total) callbacks; silent with --json."""

    def __init__(self, label: str, quiet: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
            disable=quiet,
        )
        self.task = self.progress.add_task(label, total=None)

    def __enter__(self) -> _Bar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def update(self, done: int, total: int, *_: Any) -> None:
        self.progress.update(self.task, completed=done, total=total)


def _table(title: str, rows: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False)
    for key, value in rows.items():
        if isinstance(value, dict | list):
            value = json.dumps(value, ensure_ascii=False)
        elif isinstance(value, float):
            value = f"{value:.4g}"
        table.add_row(key, str(value))
    return table


def _collect(kind: str, source: str, bar: _Bar | None = None, **opts: Any) -> tuple[Any, dict[str, Any]]:
    from models.training_data import DataCollector

    collector = DataCollector(progress=bar.update if bar else None)
    if kind == "writing":
        ds = collector.collect_writing_samples(source, opts.get("genres") or None)
    elif kind == "conversations":
        ds = collector.collect_conversation_data(
            source, opts.get("time_period") or "all", include_bots=bool(opts.get("include_bots"))
        )
    else:
        ds = collector.collect_character_data(source, opts.get("characters") or None)
    report = collector.last_report.to_dict() if collector.last_report else {}
    return ds, report


def _load_input(kind: str, source: str, quiet: bool) -> tuple[Any, list[dict[str, Any]]]:
    """A saved dataset (with its lineage) or a freshly collected source."""
    from models.training_data.dataset_io import load_dataset, read_dataset_info

    path = Path(source)
    if (path / "dataset.json").is_file():
        info = read_dataset_info(path)
        earlier = info.get("lineage", {}).get("steps", []) if isinstance(info.get("lineage"), dict) else []
        lineage = [*earlier, {"step": "load", "path": str(path), "content_sha256": info.get("content_sha256")}]
        return load_dataset(path), lineage
    with _Bar(f"collecting {kind}", quiet) as bar:
        ds, report = _collect(kind, source, bar)
    return ds, [{"step": "collect", **report}]


def _save(ds: Any, output: Path | None, kind: str, lineage: list[dict[str, Any]], overwrite: bool) -> dict | None:
    if output is None:
        return None
    from models.training_data.dataset_io import save_dataset

    return save_dataset(ds, output, kind=kind, lineage={"steps": lineage}, overwrite=overwrite)


def _emit(out: Console, title: str, report: dict[str, Any], saved: dict | None, as_json: bool) -> None:
    if saved:
        report = report | {"saved_to": saved, "content_sha256": saved.get("content_sha256")}
    if as_json:
        out.print_json(data=report)
        return
    problems = report.pop("problems", None)
    shown = {k: v for k, v in report.items() if k not in ("rules", "saved_to") and v not in (None, [], {})}
    out.print(_table(title, shown))
    for p in problems or []:
        out.print(f"[yellow]problem:[/] {p}", highlight=False)
    if saved:
        out.print(f"saved {saved['rows']} rows: content sha256 {saved['content_sha256'][:16]}…")


def _out() -> Console:
    from companion.cli import out

    return out


def collect(
    kind: KindArg,
    source: Annotated[str, typer.Argument(help="A data source name, gutenberg:<id>, or a path.")],
    genre: Annotated[list[str] | None, typer.Option("--genre", "-g", help="Keep these genres.")] = None,
    time_period: Annotated[str, typer.Option(help="all, last_30_days, or START..END.")] = "all",
    include_bots: Annotated[bool, typer.Option(help="Keep messages by bots.")] = False,
    character: Annotated[list[str] | None, typer.Option("--character", "-c")] = None,
    output: OutputOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Collect KIND data from SOURCE (and save it with --output)."""
    with _Bar(f"collecting {_kind(kind)}", as_json) as bar:
        ds, report = _collect(
            kind, source, bar, genres=genre, time_period=time_period, include_bots=include_bots, characters=character
        )
    saved = _save(ds, output, kind, [{"step": "collect", **report}], overwrite)
    _emit(_out(), f"collected {kind}", report, saved, as_json)


def preprocess(
    kind: KindArg,
    source: Annotated[str, typer.Argument(help="A saved dataset folder or a source to collect.")],
    output: OutputOpt = None,
    tokenization: Annotated[str, typer.Option(help="gpt2 (the built-in BPE) or a tokenizer folder.")] = "gpt2",
    max_length: Annotated[int, typer.Option(help="Tokens per example.")] = 512,
    stride: Annotated[int, typer.Option(help="Tokens shared by consecutive writing windows.")] = 0,
    packing: Annotated[bool, typer.Option(help="Pack several documents per window.")] = False,
    context_window: Annotated[int, typer.Option(help="Turns per conversation window.")] = 10,
    speaker: Annotated[list[str] | None, typer.Option(help="Speakers to imitate (default: all).")] = None,
    overwrite: Annotated[bool, typer.Option()] = False,
    as_json: JsonOpt = False,
) -> None:
    """Tokenize and window KIND data (writing or conversations)."""
    from models.errors import DataError
    from models.training_data import DataPreprocessor

    if _kind(kind) == "characters":
        raise DataError("characters are not preprocessed on their own; a personality recipe renders them")
    ds, lineage = _load_input(kind, source, as_json)
    pre = DataPreprocessor()
    with _Bar(f"preprocessing {kind}", as_json):
        if kind == "writing":
            result = pre.preprocess_writing_data(ds, tokenization, max_length, stride=stride, packing=packing)
        else:
            result = pre.preprocess_conversation_data(
                ds, context_window, tokenization=tokenization, max_length=max_length, target_speakers=speaker
            )
    report = pre.last_report.to_dict() if pre.last_report else {}
    saved = _save(result, output, f"{kind}-tokenized", [*lineage, {"step": "preprocess", **report}], overwrite)
    _emit(_out(), f"preprocessed {kind}", report, saved, as_json)


def validate(
    kind: KindArg,
    source: Annotated[str, typer.Argument(help="A saved dataset folder or a source to collect.")],
    output: OutputOpt = None,
    threshold: Annotated[float | None, typer.Option(help="Quality threshold (0.8 writing, 0.7 chat).")] = None,
    rejected: Annotated[Path | None, typer.Option(help="Also save the rejected records here.")] = None,
    no_dedup: Annotated[bool, typer.Option("--no-dedup", help="Skip duplicate removal.")] = False,
    overwrite: Annotated[bool, typer.Option()] = False,
    as_json: JsonOpt = False,
) -> None:
    """Score, de-duplicate and filter KIND data; print the report."""
    from models.training_data import DataValidator

    ds, lineage = _load_input(_kind(kind), source, as_json)
    with _Bar(f"validating {kind}", as_json) as bar:
        validator = DataValidator(dedup=not no_dedup, progress=bar.update)
        if kind == "conversations":
            result = validator.validate_conversation_data(ds, 0.7 if threshold is None else threshold)
        else:
            result = validator.validate_writing_data(ds, 0.8 if threshold is None else threshold)
    report = result.report.to_dict()
    steps = [*lineage, {"step": "validate", **{k: v for k, v in report.items() if k != "rules"}}]
    saved = _save(result.data, output, f"{kind}-validated", steps, overwrite)
    _save(result.rejected, rejected, f"{kind}-rejected", steps, overwrite)
    _emit(_out(), f"validated {kind}", report, saved, as_json)


def show(
    target: Annotated[str | None, typer.Argument(help="A saved dataset folder or a data source name.")] = None,
    rows: Annotated[int, typer.Option(help="How many rows to print.")] = 3,
    as_json: JsonOpt = False,
) -> None:
    """A saved dataset (info and first rows), a data source, or the list of data sources."""
    _show(_out(), target, rows, as_json)


def _show(out: Console, target: str | None, rows: int, as_json: bool) -> None:
    from models.training_data import DataCollector
    from models.training_data.dataset_io import load_dataset, read_dataset_info
    from models.training_data.locations import resolve_location

    sources = DataCollector().data_sources()
    if target is None or target in sources:
        data = {
            name: {"type": s.type, "path": s.path, "resolved": str(resolve_location(s.path, s.base_dir))}
            | ({"fallback": s.fallback} if s.fallback else {})
            for name, s in sources.items()
            if target is None or name == target
        }
        if as_json:
            out.print_json(data=data)
            return
        table = Table(title="data sources")
        for col in ("name", "type", "path", "resolved", "fallback"):
            table.add_column(col, overflow="fold")
        for name, d in data.items():
            table.add_row(name, d["type"], d["path"], d["resolved"], d.get("fallback", ""))
        out.print(table)
        return
    info = read_dataset_info(target)
    ds = load_dataset(target)
    sample = [
        {k: v for k, v in r.items() if k not in ("input_ids", "assistant_mask")}
        for r in ds.select(range(min(rows, len(ds))))
    ]
    if as_json:
        out.print_json(data={"info": info, "rows": sample})
        return
    out.print(_table(f"dataset {target}", {k: v for k, v in info.items() if k != "lineage"}))
    for row in sample:
        text = str(row.get("text") or row.get("turns") or "")
        out.print(f"[dim]{row.get('file', '')} {row.get('position', '')}[/] {text[:300]}", highlight=False)


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    """Add the `data` command group."""
    from companion.cli import handle_errors

    if not data_app.registered_commands:
        for name, fn in (("collect", collect), ("preprocess", preprocess), ("validate", validate), ("show", show)):
            data_app.command(name)(handle_errors(fn))
    app.add_typer(data_app, name="data")
