"""`gepa-stream demo`: the whole loop on embedded defaults, shown live.

Embedded broker, sqlite MLflow under `./.gepa-stream/`, the offline demo/test models:
1. register the sample prompt (a weak support-ticket router) as `production`;
2. run the daemon (`gepa-stream run`) as a subprocess;
3. stream production traces answered by that prompt, and an SME's ratings of them;
4. watch the window fill, the trigger fire, GEPA run, the candidate register and the gate
   decide; 5. print a summary and exit 0 (1 if the loop did not complete).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from daemon.broker import EmbeddedBroker, die_with_parent, free_port
from daemon.kafka_client import send_events
from schemas import RatingData, RatingEvent, Topics, TraceData, TraceEvent
from schemas.events import PRODUCTION_ALIAS, CloudEvent
from schemas.parse import InvalidEvent, parse_event

PROMPT = "support_router"
N_TICKETS = 80
TIMEOUT_S = 600
POLICY = f"""# written by `gepa-stream demo` (offline demo/test models; no provider needed)
prompts:
  - name: {PROMPT}
    backend: mlflow
    task_model: offline/support-router?latency_ms=15
    reflection_model: offline/reflector
    input_keys: [ticket]
    scorers: [exact_match]
    window: {{max_examples: 500, max_age: 7d}}
    triggers: {{min_examples: 60, min_new_examples: 40, cooldown: 10m}}
    budget: {{max_metric_calls: 80, max_wall_time: 5m, num_threads: 4}}
    promotion: {{mode: auto, min_improvement: 0.05, confidence: 0.95, min_eval_examples: 10, holdout_fraction: 0.35}}
"""


@dataclass
class Watch:
    """What the demo has seen so far."""

    events: list[CloudEvent] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)

    def of(self, event_type: str) -> list[CloudEvent]:
        return [e for e in self.events if e.type == event_type]

    def optimization(self, status: str) -> CloudEvent | None:
        return next((e for e in self.of("gepa.optimization.v1") if e.data.status == status), None)

    @property
    def done(self) -> bool:
        """The job failed, or it completed and its decision is in (the runner emits the
        promotion before `completed`: stopping at the promotion raced the summary)."""
        failed = self.optimization("failed") is not None
        return failed or (self.optimization("completed") is not None and bool(self.of("gepa.promotion.v1")))


def register_sample_prompt(tracking_uri: str, prompt: str = PROMPT) -> int:
    """The weak seed router becomes a new version of `prompt` and `production` (so every run starts weak)."""
    import mlflow

    from optimization.offline.datasets import SEED_ROUTER_PROMPT

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri)
    version = mlflow.genai.register_prompt(
        name=prompt,
        template=SEED_ROUTER_PROMPT,
        commit_message="gepa-stream demo: weak seed (offline demo model)",
    )
    mlflow.genai.set_prompt_alias(prompt, PRODUCTION_ALIAS, version.version)
    return int(version.version)


def sample_feed(
    version: int, prompt: str = PROMPT, topics: Topics | None = None
) -> list[tuple[str, CloudEvent]]:
    """Traces of `prompt` answered by the seed prompt on the offline router, each rated by an
    SME: right answers 'excellent', wrong ones 'poor' with the category the SME wanted."""
    from optimization.models import complete_text
    from optimization.offline.datasets import SEED_ROUTER_PROMPT, support_tickets

    topics = topics or Topics()
    feed: list[tuple[str, CloudEvent]] = []
    for i, ticket in enumerate(support_tickets(N_TICKETS)):
        text = ticket["inputs"]["ticket"]
        expected = ticket["expectations"]["expected_response"]
        answer = complete_text("offline/support-router", SEED_ROUTER_PROMPT.replace("{{ticket}}", text))
        trace_id = f"demo-{time.time_ns()}-{i}"
        feed.append(
            (
                topics.traces,
                TraceEvent.build(
                    TraceData(
                        prompt=prompt,
                        prompt_version=version,
                        trace_id=trace_id,
                        inputs={"ticket": text},
                        outputs=answer,
                        model="offline/support-router",
                    )
                ),
            )
        )
        right = answer == expected
        feed.append(
            (
                topics.ratings,
                RatingEvent.build(
                    RatingData(
                        prompt=prompt,
                        trace_id=trace_id,
                        rating="excellent" if right else "poor",
                        correction=None if right else expected,
                        comment=None if right else f"wrong team: this is a {expected} ticket",
                        rater="sme-demo",
                    )
                ),
            )
        )
    return feed


def _get(port: int, path: str) -> Any:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def _render(watch: Watch, filling: Progress, started: float) -> Group:
    lines = Table.grid(padding=(0, 2))
    lines.add_column(style="bold")
    lines.add_column()
    requested = watch.optimization("requested")
    if requested is not None:
        trigger = requested.data.trigger
        lines.add_row(
            "trigger",
            f"[green]fired[/] ({trigger.rule}: {trigger.values}); window frozen: {requested.data.snapshot.n_examples} examples",
        )
    job = next(iter((watch.status.get("jobs") or {}).values()), None)
    if watch.optimization("started") is not None:
        stage = f"{job['stage']}: {job['detail']}" if job else "finishing"
        done = watch.optimization("completed") or watch.optimization("failed")
        lines.add_row(
            "GEPA",
            f"[green]{done.data.status}[/] after {done.data.metric_calls} metric calls"
            if done
            else f"[yellow]running[/] — {stage}",
        )
    for event in watch.of("gepa.prompt.registered.v1"):
        d = event.data
        lines.add_row(
            "registered",
            f"{d.uri} (parent v{d.parent_version}; held-out {d.baseline_score:.2f} -> {d.candidate_score:.2f}, n={d.n_val})",
        )
    for event in watch.of("gepa.promotion.v1"):
        d = event.data
        colour = "green" if d.decision == "promoted" else "yellow"
        lines.add_row("gate", f"[{colour}]{d.decision}[/]: {d.reason}")
    failed = watch.optimization("failed")
    if failed is not None:
        lines.add_row("job", f"[red]failed[/]: {failed.data.error}")
    title = f"gepa-stream demo — offline demo/test models — {time.monotonic() - started:.0f}s"
    return Group(Panel(Group(filling, lines), title=title))


def _poll(consumer: KafkaConsumer, watch: Watch) -> None:
    for records in consumer.poll(timeout_ms=200).values():
        for record in records:
            try:
                watch.events.append(parse_event(record.value))
            except InvalidEvent:
                continue


def run_demo(state_dir: Path = Path(".gepa-stream"), keep_open: bool = False) -> int:
    """Run the demo; returns the process exit code. With `keep_open` the daemon (and its ops
    page) stays up after the summary until Ctrl-C."""
    console = Console()
    started = time.monotonic()
    state_dir.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{state_dir / 'mlflow.db'}"
    config = state_dir / "demo.yaml"
    config.write_text(POLICY)
    console.print(
        f"[bold]gepa-stream demo[/]: state and MLflow store in {state_dir}/ (models are built-in offline demo/test models)"
    )
    with _stopped_by_signals(), EmbeddedBroker(log_file=state_dir / "broker.log") as broker:
        port = free_port()
        env = {
            **os.environ,
            "GEPA_STREAM_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "GEPA_STREAM_MLFLOW_TRACKING_URI": tracking_uri,
            "GEPA_STREAM_STATE_DIR": str(state_dir),
            "GEPA_STREAM_WEB_PORT": str(port),
            "GEPA_STREAM_LOG_LEVEL": "warn",
        }
        console.print(
            f"embedded broker on {broker.bootstrap_servers}; registering the sample prompt '{PROMPT}'"
        )
        console.print(
            f"[bold]ops page[/]: http://127.0.0.1:{port}/ui (window, trigger, GEPA progress, decisions, diff)"
        )
        version = register_sample_prompt(tracking_uri)
        with (state_dir / "daemon.log").open("ab") as log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "--config", str(config)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # noqa: PLW1509 (a SIGKILLed demo leaves no daemon)
            )
        try:
            code = _watch_loop(console, broker.bootstrap_servers, port, daemon, version, started, state_dir)
            if keep_open:
                _hold(console, port, daemon)
            return code
        finally:
            daemon.terminate()
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()


@contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP (a process manager, `timeout`, a closed terminal) end the demo the way
    Ctrl-C does, by unwinding, so the daemon and the broker are stopped on the way out; a second
    signal while they stop is ignored. The exit code is 128 + the signal's number."""
    stopping = (signal.SIGTERM, signal.SIGHUP)

    def stop(signum: int, frame: object) -> None:
        for each in stopping:
            signal.signal(each, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    previous = {each: signal.signal(each, stop) for each in stopping}
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)


def _hold(console: Console, port: int, daemon: subprocess.Popen[bytes]) -> None:
    """Keep the daemon up for the ops page until Ctrl-C (or the daemon exits)."""
    console.print(f"the daemon keeps running: ops page at http://127.0.0.1:{port}/ui — Ctrl-C to stop")
    try:
        while daemon.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass


def _watch_loop(
    console: Console,
    bootstrap: str,
    port: int,
    daemon: subprocess.Popen[bytes],
    version: int,
    started: float,
    state_dir: Path,
) -> int:
    from daemon.settings import Settings

    with console.status("starting the daemon (topic creation, consumer group join)..."):
        while not (_get(port, "/readyz") or {}).get("ready"):
            if daemon.poll() is not None:
                console.print(
                    f"[red]the daemon exited with {daemon.returncode}; see {state_dir / 'daemon.log'}[/]"
                )
                return 1
            time.sleep(0.3)
    topics = Topics()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    partitions = [
        TopicPartition(t, p)
        for t in (topics.optimizations, topics.prompts, topics.promotions)
        for p in consumer.partitions_for_topic(t) or []
    ]
    consumer.assign(partitions)
    feed = sample_feed(version)
    settings = Settings(bootstrap_servers=bootstrap)
    filling = Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f}")
    )
    sent_task = filling.add_task("events sent", total=len(feed))
    window_task = filling.add_task(f"window '{PROMPT}' (trigger at 60)", total=N_TICKETS)
    watch = Watch()
    with Live(_render(watch, filling, started), console=console, refresh_per_second=8) as live:
        for i in range(0, len(feed), 10):
            send_events(feed[i : i + 10], settings)
            filling.update(sent_task, completed=min(i + 10, len(feed)))
            watch.status = _get(port, "/status") or watch.status
            n = watch.status.get("prompts", {}).get(PROMPT, {}).get("n_examples", 0)
            filling.update(window_task, completed=n)
            _poll(consumer, watch)
            live.update(_render(watch, filling, started))
            time.sleep(0.15)
        while not watch.done and time.monotonic() - started < TIMEOUT_S and daemon.poll() is None:
            watch.status = _get(port, "/status") or watch.status
            filling.update(
                window_task, completed=watch.status.get("prompts", {}).get(PROMPT, {}).get("n_examples", 0)
            )
            _poll(consumer, watch)
            live.update(_render(watch, filling, started))
    consumer.close()
    return _summary(console, watch, started, state_dir)


def _summary(console: Console, watch: Watch, started: float, state_dir: Path) -> int:
    completed = watch.optimization("completed")
    promotions = watch.of("gepa.promotion.v1")
    if completed is None or not promotions:
        failed = watch.optimization("failed")
        console.print(
            f"[red]the loop did not complete[/]: {failed.data.error if failed else 'timed out'}; see {state_dir / 'daemon.log'}"
        )
        return 1
    promotion = promotions[-1].data
    table = Table(title="gepa-stream demo summary", show_header=False)
    table.add_row("prompt", PROMPT)
    table.add_row(
        "held-out score",
        f"{completed.data.baseline_score:.2f} (production v{promotion.from_version}) -> {completed.data.candidate_score:.2f} (candidate v{promotion.to_version})",
    )
    table.add_row(
        "gate",
        f"{promotion.decision}: improvement {promotion.improvement:+.0%}, CI [{promotion.ci_low:+.2f}, {promotion.ci_high:+.2f}], n={promotion.n_eval}",
    )
    table.add_row("metric calls", str(completed.data.metric_calls))
    table.add_row("elapsed", f"{time.monotonic() - started:.0f}s")
    live = promotion.to_version if promotion.decision == "promoted" else promotion.from_version
    table.add_row("live prompt", f"prompts:/{PROMPT}@{PRODUCTION_ALIAS} -> v{live}")
    console.print(table)
    import mlflow

    template = mlflow.genai.load_prompt(f"prompts:/{PROMPT}@{PRODUCTION_ALIAS}", cache_ttl_seconds=0).template
    console.print(Panel(str(template), title=f"the template now live (v{live})"))
    return 0
