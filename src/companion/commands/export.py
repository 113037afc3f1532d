"""`companion models export NAME --format gguf [--quant f32|q8_0] [--ollama]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from companion.cli import JsonOpt, err, handle_errors, out


def _export_source(model: str) -> tuple[Path, Path | None, Any, str]:
    """(weights folder, LoRA adapter folder or None, the personality or None, store name)."""
    from models.errors import ExportTargetError
    from models.model_manager import ModelManager

    manager = ModelManager()
    category, name = model.split("/", 1) if "/" in model else manager.find(model)
    loaded = manager.load_model(category, name)
    if hasattr(loaded, "generate_response"):  # a personality: its base, with its own adapter merged
        base = loaded.base
        folder = getattr(base.ref, "folder", None)
        adapter = getattr(base, "adapter", None)
        if folder is None:
            raise ExportTargetError(f"{model}: its base {base.ref.raw} is not a local folder")
        return Path(folder), Path(adapter) if adapter else None, loaded, name
    folder = getattr(getattr(loaded, "ref", None), "folder", None)
    if folder is None or not Path(folder).is_dir():
        raise ExportTargetError(f"{model} is not a local model folder (nothing to export)")
    return Path(folder), getattr(loaded, "adapter", None), None, name


def export(
    model: Annotated[str, typer.Argument(help="NAME or CATEGORY/NAME: a base model or a personality.")],
    fmt: Annotated[str, typer.Option("--format", help="Only gguf for now.")] = "gguf",
    quant: Annotated[str, typer.Option(help="f32 | f16 | q8_0")] = "f32",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="The .gguf file (default: ./NAME.gguf, or NAME/ with --ollama)."),
    ] = None,
    ollama: Annotated[
        bool,
        typer.Option("--ollama", help="Also write an Ollama Modelfile (TEMPLATE, SYSTEM from the card, PARAMETERs)."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Export MODEL as one GGUF file for llama.cpp, LM Studio or Ollama (a personality's LoRA
    adapter merged in); `--ollama` adds a Modelfile: `ollama create NAME -f Modelfile`."""
    from models.errors import ExportTargetError
    from models.export import export_gguf, write_modelfile

    if fmt != "gguf":
        raise ExportTargetError(f"unknown export format {fmt!r}: only gguf")
    folder, adapter, personality, name = _export_source(model)
    if output is None:
        output = Path(name) / f"{name}.gguf" if ollama else Path(f"{name}.gguf")
    path = export_gguf(folder, output, quant=quant, adapter=adapter, name=name)
    modelfile = None
    if ollama:
        system = personality.system_prompt() if personality is not None else None
        params = personality.params.model_dump() if personality is not None else {}
        modelfile = write_modelfile(path, folder, system=system, parameters=params)
    if as_json:
        out.print_json(data={"gguf": str(path), "bytes": path.stat().st_size, "modelfile": str(modelfile or "")})
        return
    err.print(f"[green]wrote[/] {path} ({path.stat().st_size / 1e6:.1f} MB, {quant})")
    if modelfile is not None:
        err.print(f"[green]wrote[/] {modelfile}; then: cd {modelfile.parent} && ollama create {name} -f Modelfile")
    else:
        err.print(f"run it here: companion run {path}")


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    """Add `companion models export`."""
    models_app.command("export")(handle_errors(export))
