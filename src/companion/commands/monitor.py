"""`companion monitor [MODEL]`, `companion eval MODEL`, `companion optimize MODEL`: thin over
`models.monitoring`, `models.evaluation` and `models.optimization`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from companion.cli import JsonOpt, err, handle_errors, out

PeriodOpt = Annotated[
    str, typer.Option("--period", "-p", help="last_24_hours, last_7_days, 2024-05-01..2024-06-01, all ...")
]


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.2f}{unit}"
    return f"{value}{unit}"


def monitor(
    model: Annotated[
        str | None, typer.Argument(help="Model (luna, personality/luna); all active ones if omitted.")
    ] = None,
    period: PeriodOpt = "last_24_hours",
    chart: Annotated[
        Path | None, typer.Option(help="Where to write the PNG chart (default: COMPANION_HOME/reports/).")
    ] = None,
    no_chart: Annotated[bool, typer.Option("--no-chart", help="Do not write a chart.")] = False,
    buckets: Annotated[int, typer.Option(help="Time buckets in the chart.")] = 24,
    as_json: JsonOpt = False,
) -> None:
    """Response time, throughput, accuracy and satisfaction of a model (or every active one)."""
    from models.monitoring import ModelPerformanceMonitor

    mon = ModelPerformanceMonitor()
    if model is None:
        names = [f"{c}/{n}" for c, n, _ in mon.active_models(period)]
        if not names:
            err.print(f"[yellow]no generations recorded in {period}[/]")
            if as_json:
                out.print_json(data=[])
            return
    else:
        names = [model]
    metrics = [mon.get_performance_metrics(n, time_period=period) for n in names]
    charts = [] if no_chart else _charts(mon, metrics, period, chart, buckets)
    if as_json:
        out.print_json(
            data={"metrics": metrics, "charts": charts}
            if model is None
            else {**metrics[0], "chart": charts[0] if charts else None}
        )
        return
    table = _table(metrics, period)
    out.print(table)
    for m in metrics:
        for key, why in m["reasons"].items():
            err.print(f"[dim]{m['model']} {key}: {why}[/]", highlight=False)
    for c in charts:
        out.print(f"chart: {c}")


_COLUMNS = (
    ("model", "model", None),
    ("requests", "requests", None),
    ("avg ms", "avg_response_time", ""),
    ("p50 ms", "p50_response_time", ""),
    ("p95 ms", "p95_response_time", ""),
    ("TTFT ms", "avg_time_to_first_token", ""),
    ("tok/s", "tokens_per_second", ""),
    ("accuracy", "accuracy", "%"),
    ("perplexity", "perplexity", ""),
    ("satisfaction", "user_satisfaction", "%"),
)  # (header, metric, unit; None: shown as it is)


def _charts(mon: Any, metrics: list[dict[str, Any]], period: str, chart: Path | None, buckets: int) -> list[str]:
    """One PNG per model: at `chart` for a single model, else under COMPANION_HOME/reports/."""
    from models.home import companion_home
    from models.monitoring.chart import write_chart

    charts = []
    for m in metrics:
        if chart is not None and len(metrics) == 1:
            target = chart
        else:
            target = companion_home() / "reports" / f"monitor-{m['model'].replace('/', '-')}-{period}.png"
        series = mon.series(m["model"], period, buckets=buckets)
        charts.append(str(write_chart(series, target, f"{m['model']} — {period}")))
    return charts


def _table(metrics: list[dict[str, Any]], period: str) -> Any:
    """The metrics as a rich table, one row per model."""
    from rich.table import Table

    table = Table(title=f"model performance, {period}")
    for header, _, _ in _COLUMNS:
        table.add_column(header, justify="left" if header == "model" else "right")
    for m in metrics:
        table.add_row(*(str(m[key]) if unit is None else _fmt(m[key], unit) for _, key, unit in _COLUMNS))
    return table


def evaluate(
    model: Annotated[str, typer.Argument(help="Model: NAME (luna) or CATEGORY/NAME.")],
    data: Annotated[
        Path | None, typer.Option(help="Held-out .txt/.md/.jsonl file or folder (default: shipped stories).")
    ] = None,
    emotion_samples: Annotated[
        int, typer.Option(help="Replies for emotion agreement (personality models; 0 = skip).")
    ] = 20,
    max_tokens: Annotated[int, typer.Option(help="Stop after this many held-out target tokens.")] = 50_000,
    as_json: JsonOpt = False,
) -> None:
    """Held-out next-token accuracy and perplexity (+ emotion agreement), recorded for `monitor`."""
    from models.evaluation import evaluate_model

    r = evaluate_model(model, data=data, emotion_samples=emotion_samples, max_tokens=max_tokens)
    if as_json:
        out.print_json(data=r.to_json())
        return
    out.print(f"[bold]{r.category}/{r.name}[/] {r.version or 'unversioned'} on {r.dataset} ({r.tokens:,} tokens)")
    out.print(f"  next-token accuracy  {100 * r.next_token_accuracy:.2f}%")
    out.print(f"  perplexity           {r.perplexity:.3f}  (loss {r.loss:.4f} nats/token)")
    if r.emotion_agreement is not None:
        out.print(f"  emotion agreement    {100 * r.emotion_agreement:.1f}% of {r.emotion_samples} replies")
    out.print(f"  recorded as evaluation run {r.id} ({r.seconds:.1f} s)")


def optimize(
    model: Annotated[str, typer.Argument(help="Model: NAME (luna) or CATEGORY/NAME.")],
    objective: Annotated[
        str, typer.Option(help="speed_accuracy_balance | speed | size | accuracy")
    ] = "speed_accuracy_balance",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Measure and report; publish nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Try real transforms, measure them, and publish the best as a new version."""
    from rich.table import Table

    from models.optimization import ModelOptimizer

    r = ModelOptimizer().optimize_model(model, optimization_type=objective, publish=not dry_run)
    if as_json:
        out.print_json(json.dumps(r, default=str))
        return
    table = Table(title=f"{r['model']}: candidates ({objective})")
    for col in ("candidate", "ms/token", "tok/s", "first token ms", "weights MB", "perplexity", "score", "note"):
        table.add_column(col, justify="left" if col in ("candidate", "note") else "right")
    for c in r["candidates"]:
        table.add_row(
            ("→ " if c["name"] == r["chosen"] else "  ") + c["name"],
            _fmt(c.get("ms_per_token")),
            _fmt(c.get("tokens_per_second")),
            _fmt(c.get("prefill_ms")),
            _fmt(c.get("weight_mb")),
            _fmt(c.get("perplexity")),
            _fmt(c.get("score")),
            c.get("note") or "",
        )
    out.print(table)
    out.print(r["summary"])


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    """Add `companion monitor`, `companion eval` and `companion optimize`."""
    app.command("monitor")(handle_errors(monitor))
    app.command("eval")(handle_errors(evaluate))
    app.command("optimize")(handle_errors(optimize))
