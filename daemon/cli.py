"""`gepa-stream`: the command-line entry point (typer)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from schemas.config import ConfigError, leaves
from schemas.errors import GepaStreamError
from schemas.third_parties import quiet_third_parties

if TYPE_CHECKING:
    from daemon.settings import Settings
    from schemas.config import PolicyBook, PolicyFile

console = Console(stderr=True)

EXIT_FAILED = 1
"""A run-time failure: Kafka or MLflow unreachable, an A/B test that cannot run, bad lines in `send`."""
EXIT_CONFIG = 2
"""Bad configuration or usage: the policy file, a `GEPA_STREAM_*` setting, an option, the topic layout."""


def exit_code(error: GepaStreamError) -> int:
    """The exit status of a failed command: the one table of the CLI's exit codes."""
    from daemon.admin import TopicLayoutError

    return EXIT_CONFIG if isinstance(error, (ConfigError, TopicLayoutError)) else EXIT_FAILED


def print_error(message: str) -> None:
    """`error: <message>` on stderr, one line, taken literally (no rich markup)."""
    console.print(Text.assemble(("error: ", "bold red"), message), highlight=False, soft_wrap=True)


class Commands(TyperGroup):
    """The root command group: every command's GepaStreamError ends here, as `error: <message>`
    on stderr and its exit code, without a traceback."""

    def invoke(self, ctx: Any) -> Any:  # typer's own click Context
        try:
            return super().invoke(ctx)
        except GepaStreamError as error:
            print_error(str(error))
            raise typer.Exit(exit_code(error)) from None


app = typer.Typer(
    name="gepa-stream",
    cls=Commands,
    help="Event-driven GEPA prompt optimizer: Kafka traces and SME ratings in, better prompts in MLflow out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    quiet_third_parties()


@app.command()
def demo(
    keep_open: Annotated[
        bool,
        typer.Option(
            "--keep-open", help="keep the daemon and its ops page up after the summary, until Ctrl-C"
        ),
    ] = False,
) -> None:
    """The whole loop on embedded defaults: broker, sqlite MLflow in ./.gepa-stream/, offline models."""
    from daemon.demo import run_demo

    raise typer.Exit(run_demo(keep_open=keep_open))


@app.command()
def schemas(
    out: Annotated[Path, typer.Option("--out", help="directory for the *.schema.json files")] = Path(
        "schemas-json"
    ),
) -> None:
    """Write the JSON Schema of every event type (one file per type)."""
    from schemas.export import write_json_schemas

    for path in write_json_schemas(out):
        typer.echo(path)


@app.command()
def broker(
    port: Annotated[int, typer.Option("--port", help="port to listen on")] = 9092,
    listen: Annotated[
        str,
        typer.Option("--listen", help="address to listen on (0.0.0.0: every interface, e.g. in a container)"),
    ] = "127.0.0.1",
    advertise: Annotated[
        str | None,
        typer.Option(
            "--advertise",
            help="HOST:PORT clients are told to connect to (default: the listen address and port)",
        ),
    ] = None,
) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, memory-only) in the foreground."""
    from daemon.broker import EmbeddedBroker, broker_env_hint

    if advertise is not None and not re.fullmatch(r"[^\s:/]+:\d{1,5}", advertise):
        print_error(f"--advertise must be HOST:PORT, got {advertise!r}")
        raise typer.Exit(EXIT_CONFIG)
    embedded = EmbeddedBroker(port=port, host=listen, advertise=advertise)
    try:
        embedded.start()
    except (OSError, TimeoutError) as exc:
        print_error(f"broker failed to start: {exc}")  # OSError, not ours: the binary or the port
        raise typer.Exit(EXIT_FAILED) from None
    console.print(
        f"embedded broker listening on [bold]{embedded.bootstrap_servers}[/] (memory-only; Ctrl-C stops it)"
    )
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

    return load_settings()


def _config(config: Path | None) -> tuple[Settings, PolicyFile]:
    """Settings and the policy file (`config`, else the settings' one)."""
    from daemon.settings import load_config

    return load_config(config)


def _option(name: str, parse: Any, value: str) -> Any:
    """`parse(value)`, or a ConfigError naming the option (a bad option exits 2 like a bad setting)."""
    try:
        return parse(value)
    except ValueError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(name) else f"{name}: {message}") from None


def _topic(settings: Settings, name: str) -> str:
    return _option("TOPIC", settings.topics.resolve, name)


@app.command()
def send(
    topic: Annotated[
        str, typer.Argument(help="traces, ratings, commands, a full topic name, or auto (by type)")
    ],
    file: Annotated[
        Path, typer.Argument(help="one CloudEvents JSON object per line", exists=True, dir_okay=False)
    ],
) -> None:
    """Validate every line of FILE, then produce the events keyed by prompt (nothing is sent if a line is bad)."""
    from daemon.kafka_client import AUTO, send_events, validate_file

    settings = _settings()
    full = topic if topic == AUTO else _topic(settings, topic)
    events, bad = validate_file(file, full, settings)
    if bad:
        for line in bad[:50]:
            console.print(f"{file}:{line.number}: {line.error}", highlight=False, soft_wrap=True)
        if len(bad) > 50:
            console.print(f"... and {len(bad) - 50} more")
        print_error(f"{len(bad)} bad line(s); nothing sent")
        raise typer.Exit(EXIT_FAILED)
    sent = send_events(events, settings)
    console.print(f"sent {sent} event(s) to {', '.join(sorted({t for t, _ in events})) or full}")


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="any topic: traces, dlq, promotions, ... or a full name")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="start at the oldest record")
    ] = False,
    max_records: Annotated[int | None, typer.Option("--max", help="stop after N records")] = None,
    idle_timeout: Annotated[
        float | None, typer.Option("--idle-timeout", help="stop after N s without records")
    ] = None,
    raw: Annotated[bool, typer.Option("--raw", help="print one JSON record per line")] = False,
) -> None:
    """Follow a topic, pretty-printed."""
    from rich.console import Console as Out
    from rich.json import JSON

    from daemon.kafka_client import follow

    settings = _settings()
    out = Out()
    count = 0
    try:
        for partition, offset, key, value in follow(
            _topic(settings, topic), settings, from_beginning=from_beginning, idle_timeout_s=idle_timeout
        ):
            text = value.decode("utf-8", "replace") if value is not None else "null"  # a tombstone
            if raw:
                typer.echo(text)
            else:
                out.rule(f"p{partition}@{offset}  key={key.decode('utf-8', 'replace') if key else None}")
                try:
                    out.print(JSON(text) if value is not None else "(tombstone: no value)")
                except ValueError:
                    out.print(text, markup=False)
            count += 1
            if max_records is not None and count >= max_records:
                break
    except KeyboardInterrupt:
        pass


@app.command()
def run(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="per-prompt policy YAML (default: $GEPA_STREAM_CONFIG)"),
    ] = None,
    role: Annotated[str, typer.Option("--role", help="all | ingest | optimizer")] = "all",
) -> None:
    """Run the daemon against the configured broker and MLflow."""
    if role not in ("all", "ingest", "optimizer"):
        raise ConfigError(f"--role: use all, ingest or optimizer, not {role!r}")
    settings, policies = _config(config)
    from daemon.worker import run as run_worker

    console.print(
        f"gepa-stream {role}: {len(policies.prompts)} prompt(s) and {len(policies.patterns)} pattern(s) "
        f"from {settings.config}, "
        f"broker {settings.bootstrap_servers}, web :{settings.web_port}"
    )
    run_worker(settings, policies, role)  # type: ignore[arg-type]


policy_app = typer.Typer(help="Read the policy file as the daemon reads it.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command()
def explain(
    name: Annotated[str, typer.Argument(help="a prompt name (listed, or matched by a pattern)")],
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="per-prompt policy YAML (default: $GEPA_STREAM_CONFIG)"),
    ] = None,
) -> None:
    """Print the effective policy of one prompt and where each setting came from (the prompt's own
    entry, a pattern, `defaults`, or the built-in default)."""
    from rich.table import Table

    _, policies = _config(config)
    found = policies.explain(name)
    if found is None:
        raise ConfigError(
            f"{name!r} is neither listed in the policy file nor matched by one of its patterns "
            f"({', '.join(p.match for p in policies.patterns) or 'none'})"
        )
    policy, sources = found
    table = Table("setting", "value", "from", title=f"{name}: the effective policy")
    flat = leaves(policy.model_dump(mode="json"))
    for path, source in sources.items():
        table.add_row(path, str(flat[path]), source)
    Console().print(table)


bridge_app = typer.Typer(
    help="Feed the daemon from systems that already hold production data.", no_args_is_help=True
)
app.add_typer(bridge_app, name="bridge")


def _managed_prompts(settings: Settings, config: Path | None) -> PolicyBook | None:
    """The prompts of the policy file (given, or the settings' one if it exists), listed or matched
    by a pattern; None = publish every prompt."""
    from schemas.config import PolicyBook, load_policy_file

    path = config or settings.config
    if config is None and not path.exists():
        return None
    return PolicyBook(load_policy_file(path))


@bridge_app.command("mlflow")
def bridge_mlflow(
    experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment id (or name)")],
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="start here (ISO time or duration ago, e.g. 2h) instead of the saved position"
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="keep polling for new traces and assessments")
    ] = False,
    interval: Annotated[str, typer.Option("--interval", help="poll interval with --follow")] = "10s",
    lookback: Annotated[
        str, typer.Option("--lookback", help="how far back late traces and assessments are looked for")
    ] = "1d",
    prompt_key: Annotated[
        str,
        typer.Option(
            "--prompt-key", help="trace tag/metadata naming the prompt (name, name/3, prompts:/name/3)"
        ),
    ] = "gepa.prompt",
    rating_scale: Annotated[
        str,
        typer.Option(
            "--rating-scale", help="numeric feedback: auto (0-1 unit, 1-5 five-point), unit, five_point"
        ),
    ] = "auto",
    retry_for: Annotated[
        str, typer.Option("--retry-for", help="retry MLflow this long before giving up")
    ] = "60s",
    metrics_port: Annotated[
        int,
        typer.Option("--metrics-port", help="with --follow: serve Prometheus /metrics on this port (0: off)"),
    ] = 0,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="policy file: only its prompts are published")
    ] = None,
) -> None:
    """Publish an MLflow experiment's traces (gepa.trace.v1) and human assessments (gepa.rating.v1)."""
    import signal
    import threading

    from daemon.admin import ensure_topics
    from daemon.mlflow_bridge import BridgeConfig, MlflowBridge, describe_counts, parse_since
    from handlers.trace_mapping import Counts, MappingOptions
    from schemas.durations import parse_duration

    settings = _settings()
    if rating_scale not in ("auto", "unit", "five_point"):
        raise ConfigError(f"--rating-scale: use auto, unit or five_point, not {rating_scale!r}")
    since_ms = _option("--since", parse_since, since) if since else None
    interval_s, lookback_td, retry_s = (
        _option(name, parse_duration, value)
        for name, value in (("--interval", interval), ("--lookback", lookback), ("--retry-for", retry_for))
    )
    options = MappingOptions(
        source=f"gepa-stream/bridge/mlflow/{experiment}",
        prompt_key=prompt_key,
        managed=_managed_prompts(settings, config),
        numeric_scale=rating_scale,  # type: ignore[arg-type]
        max_event_bytes=settings.max_event_bytes,
    )
    ensure_topics(settings)
    bridge = MlflowBridge(
        settings,
        BridgeConfig(experiment, options, since_ms, lookback_td, retry_for_s=retry_s.total_seconds()),
    )
    if not follow:
        console.print(
            f"bridge mlflow experiment {bridge.reader.experiment_id}: {describe_counts(bridge.run_once())}",
            highlight=False,
            soft_wrap=True,
        )
        return
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=settings.web_host)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console.print(
        f"bridge mlflow experiment {bridge.reader.experiment_id}: following every {interval} (Ctrl-C stops)"
    )

    def report(counts: Counts) -> None:
        if counts.published or counts.traces_unmapped or counts.assessments_unmapped:
            console.print(describe_counts(counts), highlight=False, soft_wrap=True)

    try:
        bridge.follow(interval_s.total_seconds(), stop, report)
    except KeyboardInterrupt:
        pass
    console.print(
        f"bridge mlflow stopped; in all: {describe_counts(bridge.counts)}",
        highlight=False,
        soft_wrap=True,
    )


@bridge_app.command("otel")
def bridge_otel(
    topic: Annotated[
        str, typer.Option("--topic", help="the Collector's Kafka exporter topic ('' = OTLP/HTTP only)")
    ] = "otlp_spans",
    encoding: Annotated[str, typer.Option("--encoding", help="otlp_proto or otlp_json")] = "otlp_proto",
    http_port: Annotated[
        int | None,
        typer.Option(
            "--http-port", help="serve OTLP/HTTP POST /v1/traces and /metrics here (0: any free port)"
        ),
    ] = None,
    convention: Annotated[
        str, typer.Option("--convention", help="auto, openinference, openllmetry, genai or mlflow")
    ] = "auto",
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", help="largest OTLP/HTTP body, before and after gzip")
    ] = 4 * 1024 * 1024,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="policy file: only its prompts are published")
    ] = None,
) -> None:
    """Publish OpenTelemetry LLM spans (Collector Kafka exporter topic, OTLP/HTTP) as trace and rating events."""
    import asyncio
    import signal

    from aiokafka.errors import KafkaError

    from daemon.admin import KafkaUnavailable, ensure_topics
    from daemon.otel_bridge import BridgeOptions, OtelBridge
    from handlers import otlp
    from handlers.otel_mapping import CONVENTIONS, OtelOptions
    from schemas.config import load_policy_file

    settings = _settings()
    if encoding not in otlp.ENCODINGS:
        raise ConfigError(f"--encoding: use otlp_proto or otlp_json, not {encoding!r}")
    if convention not in CONVENTIONS:
        raise ConfigError(f"--convention: use one of {', '.join(CONVENTIONS)}, not {convention!r}")
    if not topic and http_port is None:
        raise ConfigError("--topic '' needs --http-port: the bridge would read nothing")
    if max_body_bytes < 1024:
        raise ConfigError("--max-body-bytes: must be at least 1024")
    path = config or settings.config
    policies = load_policy_file(path) if config is not None or path.exists() else None
    options = OtelOptions.from_policy(
        policies,
        "gepa-stream/bridge/otel",
        convention,
        settings.max_event_bytes,
    )
    ensure_topics(settings)
    bridge = OtelBridge(
        settings,
        options,
        BridgeOptions(topic or None, encoding, http_port, max_body_bytes),
    )

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(bridge.run(stop))
        while bridge.http_port is None and http_port is not None and not task.done():
            await asyncio.sleep(0.05)
        sources = [f"topic {topic} ({encoding})"] if topic else []
        sources += [f"OTLP/HTTP on {settings.web_host}:{bridge.http_port}"] if http_port is not None else []
        reader = "the C reader" if otlp.WIRE is not None else "protobuf (handlers._otlp_wire is not built)"
        console.print(
            f"bridge otel: reading {' and '.join(sources)}, OTLP protobuf by {reader} (Ctrl-C stops)",
            highlight=False,
        )
        await task

    try:
        asyncio.run(serve())
    except KafkaError as error:
        raise KafkaUnavailable(f"Kafka at {settings.bootstrap_servers}: {error}") from error
    except OSError as error:  # the HTTP port: taken, or not ours to bind
        print_error(
            f"--http-port {http_port}: cannot listen on {settings.web_host} ({error.strerror or error})"
        )
        raise typer.Exit(EXIT_FAILED) from None
    console.print(f"bridge otel stopped; in all: {bridge.counts.describe()}", highlight=False, soft_wrap=True)


@app.command()
def compare(
    prompt: Annotated[str, typer.Option("--prompt", help="prompt name (must be in the policy file)")],
    a: Annotated[int, typer.Option("--a", help="baseline version")],
    b: Annotated[int, typer.Option("--b", help="candidate version")],
    data: Annotated[
        Path | None,
        typer.Option("--data", help="JSONL of {inputs, expectations}", exists=True, dir_okay=False),
    ] = None,
    experiment: Annotated[
        str | None,
        typer.Option(
            "--experiment", help="MLflow experiment whose traces (with expectations) are the examples"
        ),
    ] = None,
    promote: Annotated[
        bool,
        typer.Option(
            "--promote", help="move `production` to B when the gate passes, and emit the promotion event"
        ),
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="bootstrap seed")] = 0,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="per-prompt policy YAML (default: $GEPA_STREAM_CONFIG)"),
    ] = None,
) -> None:
    """A/B test two versions of a prompt with its configured agent and scorers; print the promotion gate's result."""
    from daemon.compare import compare_examples, describe, run_compare

    if (data is None) == (experiment is None):
        raise ConfigError("give exactly one of --data FILE.jsonl or --experiment ID")
    settings, policies = _config(config)
    policy = policies.prompt(prompt)
    if policy is None:
        raise ConfigError(f"{settings.config}: prompt {prompt!r} is not configured")
    examples = compare_examples(settings, data, experiment, prompt)
    result, event = run_compare(settings, policy, a, b, examples, promote=promote, seed=seed)
    typer.echo(describe(result))
    if event is not None:
        typer.echo(
            f"promoted: production -> v{b} (was v{event.data.from_version}); event {event.id} sent to {settings.topics.promotions}"
        )
    elif promote:
        typer.echo(f"not promoted: production unchanged (gate decision {result.comparison.decision})")
