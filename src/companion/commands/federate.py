"""`companion federate serve|join`: the population prior learned over Flower, data kept home."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]

federate_app = typer.Typer(
    help="Federated personalization (Flower): instances share learner updates, never their users' data.",
    no_args_is_help=True,
)


def _read(paths: list[Path] | None, count: int, option: str) -> tuple[bytes, ...] | None:
    if not paths:
        return None
    if len(paths) != count:
        raise typer.BadParameter(f"{option} takes {count} files")
    return tuple(p.read_bytes() for p in paths)


def serve(
    address: Annotated[str, typer.Option("--address", help="Where the Flower server listens.")] = "0.0.0.0:8080",
    rounds: Annotated[int, typer.Option("--rounds", help="Federated rounds.")] = 5,
    clients: Annotated[int, typer.Option("--clients", help="Instances to wait for each round.")] = 2,
    noise: Annotated[float, typer.Option("--noise", help="Noise multiplier (0: no differential privacy).")] = 2.0,
    clip: Annotated[float, typer.Option("--clip", help="Each instance's update is clipped to this norm.")] = 0.5,
    delta: Annotated[float, typer.Option("--delta", help="δ of the (ε, δ) privacy budget reported.")] = 1e-5,
    model: Annotated[str, typer.Option("--model", help="The personalization model to publish to.")] = "user_prefs",
    publish: Annotated[bool, typer.Option("--publish/--no-publish", help="Publish the prior as a version.")] = True,
    style: Annotated[
        bool, typer.Option("--style/--no-style", help="Also federate the users' LoRA style adapters.")
    ] = False,
    style_base: Annotated[
        str | None, typer.Option("--style-base", help="The base the style adapters are on (default: the model's).")
    ] = None,
    certificates: Annotated[
        list[Path] | None, typer.Option("--certificate", help="TLS: CA certificate, server certificate, key (3x).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Aggregate the instances' learner updates (FedAvg; clipped, with Gaussian noise unless
    --noise 0) into the population prior that new users start from, and publish it."""
    from companion.cli import out
    from models.training.federated import serve as run

    result = run(address, rounds=rounds, clients=clients, noise_multiplier=noise, clipping_norm=clip, delta=delta,
                 model=model, publish=publish, certificates=_read(certificates, 3, "--certificate"),
                 style=style, style_base=style_base)  # fmt: skip
    info = result.to_json()
    if as_json:
        out.print_json(data=info)
        return
    eps = "∞ (no noise)" if info["epsilon"] is None else f"{info['epsilon']:.2f} at δ={delta:g}"
    out.print(f"{result.rounds} rounds over {result.clients} instances in {info['seconds']} s; ε = {eps}")
    out.print("prior profile: " + ", ".join(f"{k} {v:.2f}" for k, v in info["profile"].items()))
    if info["style_adapter"] is not None:
        users = info["style_adapter"]["users"]
        took = "users' adapters: not counted (noise on)" if users is None else f"{users} users' adapters averaged"
        out.print(f"style adapter on {info['style_adapter']['base_model']}: {took}")
    if result.version:
        out.print(f"published {result.model} {result.version}: new users start from it")


def join(
    address: Annotated[str, typer.Argument(help="The federation's server, HOST:PORT.")],
    model: Annotated[str | None, typer.Option("--model", help="Only feedback on this model's replies.")] = None,
    min_events: Annotated[int, typer.Option("--min-events", help="Feedback a user needs to take part.")] = 3,
    root_certificate: Annotated[
        Path | None, typer.Option("--root-certificate", help="TLS: the CA certificate.")
    ] = None,
) -> None:
    """Take part with this instance's users' feedback (and, when the server federates style,
    their style adapters): each round trains their learners here and sends only the clipped
    average update."""
    from companion.cli import out
    from models.training.federated import instance_users
    from models.training.federated import join as run

    users = instance_users(model)
    taking = sum(len(events) >= min_events for events in users.values())
    out.print(f"{taking} of {len(users)} users here have at least {min_events} feedback events; joining {address}")
    rounds = run(address, model=model, min_events=min_events,
                 root_certificates=root_certificate.read_bytes() if root_certificate else None)  # fmt: skip
    out.print(f"took part in {rounds} rounds")


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    """Add the `federate` group."""
    from companion.cli import handle_errors

    if not federate_app.registered_commands:
        federate_app.command("serve")(handle_errors(serve))
        federate_app.command("join")(handle_errors(join))
    app.add_typer(federate_app, name="federate")
