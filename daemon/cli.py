"""`gepa-stream`: the command-line entry point (typer)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

from schemas.config import ConfigError

if TYPE_CHECKING:
    from daemon.settings import Settings

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


def _settings() -> Settings:
    from daemon.settings import load_settings

    try:
        return load_settings()
    except ConfigError as exc:
        fail_config(exc)
        raise  # unreachable: fail_config exits


def _topic(settings: Settings, name: str) -> str:
    try:
        return settings.topics.resolve(name)
    except ValueError as exc:
        console.print(f"[bold red]{exc}[/]")
        raise typer.Exit(EXIT_CONFIG) from None


@app.command()
def send(
    topic: Annotated[str, typer.Argument(help="traces, ratings, commands, a full topic name, or auto (by type)")],
    file: Annotated[Path, typer.Argument(help="one CloudEvents JSON object per line", exists=True, dir_okay=False)],
) -> None:
    """Validate every line of FILE, then produce the events keyed by prompt (nothing is sent if a line is bad)."""
    from daemon.tools import send_events, validate_file

    from daemon.tools import AUTO

    settings = _settings()
    full = topic if topic == AUTO else _topic(settings, topic)
    events, bad = validate_file(file, full, settings)
    if bad:
        for line in bad[:50]:
            console.print(f"{file}:{line.number}: {line.error}", highlight=False, soft_wrap=True)
        if len(bad) > 50:
            console.print(f"... and {len(bad) - 50} more")
        console.print(f"[bold red]{len(bad)} bad line(s); nothing sent[/]")
        raise typer.Exit(1)
    sent = send_events(events, settings)
    console.print(f"sent {sent} event(s) to {', '.join(sorted({t for t, _ in events})) or full}")


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="any topic: traces, dlq, promotions, ... or a full name")],
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="start at the oldest record")] = False,
    max_records: Annotated[Optional[int], typer.Option("--max", help="stop after N records")] = None,
    idle_timeout: Annotated[Optional[float], typer.Option("--idle-timeout", help="stop after N s without records")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="print one JSON record per line")] = False,
) -> None:
    """Follow a topic, pretty-printed."""
    from rich.console import Console as Out
    from rich.json import JSON

    from daemon.tools import follow

    settings = _settings()
    out = Out()
    count = 0
    try:
        for partition, offset, key, value in follow(
            _topic(settings, topic), settings, from_beginning=from_beginning, idle_timeout_s=idle_timeout
        ):
            text = value.decode("utf-8", "replace")
            if raw:
                typer.echo(text)
            else:
                out.rule(f"p{partition}@{offset}  key={key.decode('utf-8', 'replace') if key else None}")
                try:
                    out.print(JSON(text))
                except ValueError:
                    out.print(text, markup=False)
            count += 1
            if max_records is not None and count >= max_records:
                break
    except KeyboardInterrupt:
        pass
    except ValueError as exc:
        console.print(f"[bold red]{exc}[/]")
        raise typer.Exit(1) from None


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
    from daemon.admin import TopicLayoutError
    from daemon.worker import run as run_worker

    console.print(
        f"gepa-stream {role}: {len(policies.prompts)} prompt(s) from {settings.config}, "
        f"broker {settings.bootstrap_servers}, web :{settings.web_port}"
    )
    try:
        run_worker(settings, policies, role)  # type: ignore[arg-type]
    except TopicLayoutError as exc:
        console.print(f"[bold red]topic layout error:[/] {exc}")
        raise typer.Exit(EXIT_CONFIG) from None
