"""Command groups of the `companion` CLI, one module per group.

Each module listed in `companion.cli.COMMAND_MODULES` defines `register(app, models_app)` and
adds its Typer commands or sub-apps there; `cli.py` stays a thin table of contents.
"""
