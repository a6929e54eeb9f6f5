"""`gepa-stream`: the command-line entry point (typer)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from schemas.config import ConfigError

app = typer.Typer(
    name="gepa-stream",
    help="Event-driven GEPA prompt optimizer: Kafka traces and SME ratings in, better prompts in MLflow out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

EXIT_CONFIG = 2


def _quiet_third_parties() -> None:
    """No network on import: MLflow telemetry off, litellm's local cost map."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def fail_config(error: ConfigError) -> None:
    """Print a config problem without a traceback and exit 2."""
    console.print(f"[bold red]config error:[/] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_CONFIG)


@app.callback()
def main() -> None:
    _quiet_third_parties()


@app.command()
def schemas(
    out: Annotated[Path, typer.Option("--out", help="directory for the *.schema.json files")] = Path("schemas-json"),
) -> None:
    """Write the JSON Schema of every event type (one file per type)."""
    from schemas.export import write_json_schemas

    for path in write_json_schemas(out):
        typer.echo(path)


@app.command()
def broker(
    port: Annotated[int, typer.Option("--port", help="port on 127.0.0.1")] = 9092,
) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, memory-only) in the foreground."""
    from daemon.broker import EmbeddedBroker, broker_env_hint

    embedded = EmbeddedBroker(port=port)
    try:
        embedded.start()
    except (OSError, TimeoutError) as exc:
        console.print(f"[bold red]broker failed to start:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(f"embedded broker listening on [bold]{embedded.bootstrap_servers}[/] (memory-only; Ctrl-C stops it)")
    console.print(broker_env_hint(embedded), highlight=False)
    try:
        code = embedded.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        embedded.stop()
    raise typer.Exit(code)


@app.command()
def run(
    config: Annotated[
        Optional[Path], typer.Option("--config", "-c", help="per-prompt policy YAML (default: $GEPA_STREAM_CONFIG)")
    ] = None,
    role: Annotated[str, typer.Option("--role", help="all | ingest | optimizer")] = "all",
) -> None:
    """Run the daemon against the configured broker and MLflow."""
    from daemon.settings import load_config

    if role not in ("all", "ingest", "optimizer"):
        console.print(f"[bold red]bad --role {role!r}:[/] use all, ingest or optimizer")
        raise typer.Exit(EXIT_CONFIG)
    try:
        settings, policies = load_config(config)
    except ConfigError as exc:
        fail_config(exc)
        return
    console.print(f"config ok: {len(policies.prompts)} prompt(s) from {settings.config}")
    console.print("[yellow]the daemon runtime is not part of this build yet[/]")
    raise typer.Exit(1)
