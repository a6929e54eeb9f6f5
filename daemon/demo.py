"""`gepa-stream demo`: the whole loop on embedded defaults, shown live.

Embedded broker, sqlite MLflow under `./.gepa-stream/`, the offline demo/test models:
1. register the sample prompt (a weak support-ticket router) as `production`;
2. run the daemon (`gepa-stream run`) as a subprocess;
3. stream production traces answered by that prompt, and an SME's ratings of them;
4. watch the window fill, the trigger fire, GEPA run, the candidate register and the gate
   decide: a passing candidate becomes the `canary` of a staged rollout (`ROLLOUT_STAGES`);
5. while the rollout runs, play the deployer: route each new ticket with `PromptRouter`, answer
   it with the version served, send the trace (its `prompt_version`) and the SME's rating, until
   the daemon promotes the canary or aborts it;
6. print a summary and exit 0 (1 if the loop did not complete).
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
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kafka import KafkaConsumer, TopicPartition
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from daemon.broker import EmbeddedBroker, die_with_parent, free_port
from daemon.kafka_client import send_events
from schemas import RatingData, RatingEvent, Topics, TraceData, TraceEvent
from schemas.events import CANARY_ALIAS, PRODUCTION_ALIAS, CloudEvent
from schemas.parse import InvalidEvent, parse_event

if TYPE_CHECKING:
    from optimization.routing import PromptRouter

PROMPT = "support_router"
N_TICKETS = 80
TIMEOUT_S = 600
# the staged rollout: small enough to run in seconds (each arm needs ROLLOUT_MIN_VOTES ratings of
# the stage per stage: ~50 tickets at 20 %, ~20 at 50 %); an undecided stage aborts after 2 min
ROLLOUT_STAGES = (0.2, 0.5)
ROLLOUT_MIN_VOTES = 10
ROLLOUT_MARGIN = 0.05
TICKETS_PER_TICK = 4  # tickets the deployer serves between two looks at the daemon
ROLLOUT_DECISIONS = ("canary_started", "canary_advanced", "promoted", "canary_aborted")
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
    promotion:
      mode: auto
      min_improvement: 0.05
      confidence: 0.95
      min_eval_examples: 10
      holdout_fraction: 0.35
      rollout: {{enabled: true, stages: [{", ".join(map(str, ROLLOUT_STAGES))}], min_live_examples: {ROLLOUT_MIN_VOTES}, margin: {ROLLOUT_MARGIN}, max_stage_duration: 2m}}
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
    def gate(self) -> CloudEvent | None:
        """The gate's decision on the job's candidate (the job's promotion event)."""
        return next((e for e in self.of("gepa.promotion.v1") if e.data.request_id is not None), None)

    @property
    def canary(self) -> int | None:
        """The canary's version once the gate started a staged rollout."""
        gate = self.gate
        return gate.data.to_version if gate is not None and gate.data.decision == "canary_started" else None

    def rollout_steps(self) -> list[CloudEvent]:
        """The rollout's promotion events after `canary_started` (advanced, then promoted or aborted)."""
        canary = self.canary
        return [
            e
            for e in self.of("gepa.promotion.v1")
            if canary is not None
            and e.data.request_id is None
            and e.data.decision in ROLLOUT_DECISIONS[1:]
            and canary in (e.data.from_version, e.data.to_version)
        ]

    @property
    def rollout_end(self) -> CloudEvent | None:
        """The rollout's last decision: `promoted` or `canary_aborted`."""
        return next((e for e in self.rollout_steps() if e.data.decision != "canary_advanced"), None)

    @property
    def rolling_out(self) -> bool:
        """A canary serves traffic: the deployer has tickets to route."""
        return self.canary is not None and self.rollout_end is None

    @property
    def done(self) -> bool:
        """The job failed, or it completed and its decision is in (the runner emits the
        promotion before `completed`: stopping at the promotion raced the summary), and a
        rollout the decision started has ended."""
        failed = self.optimization("failed") is not None
        decided = self.optimization("completed") is not None and self.gate is not None
        return failed or (decided and not self.rolling_out)


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
    client = mlflow.MlflowClient()
    try:  # a canary left by an interrupted run would be routed to: none at the start
        client.get_prompt_version_by_alias(prompt, CANARY_ALIAS)
    except mlflow.exceptions.MlflowException:
        pass
    else:
        client.delete_prompt_alias(prompt, CANARY_ALIAS)
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
        answer = complete_text("offline/support-router", SEED_ROUTER_PROMPT.replace("{{ticket}}", text))
        feed += rated_trace(prompt, version, f"demo-{time.time_ns()}-{i}", ticket, answer, topics)
    return feed


def rated_trace(
    prompt: str, version: int, trace_id: str, ticket: dict[str, Any], answer: str, topics: Topics
) -> list[tuple[str, CloudEvent]]:
    """The trace of one ticket answered by `version` of `prompt`, and the SME's rating of it."""
    text = ticket["inputs"]["ticket"]
    expected = ticket["expectations"]["expected_response"]
    trace = TraceData(
        prompt=prompt,
        prompt_version=version,
        trace_id=trace_id,
        inputs={"ticket": text},
        outputs=answer,
        model="offline/support-router",
    )
    right = answer == expected
    rating = RatingData(
        prompt=prompt,
        trace_id=trace_id,
        rating="excellent" if right else "poor",
        correction=None if right else expected,
        comment=None if right else f"wrong team: this is a {expected} ticket",
        rater="sme-demo",
    )
    return [(topics.traces, TraceEvent.build(trace)), (topics.ratings, RatingEvent.build(rating))]


@dataclass
class Deployer:
    """The demo's app while a canary runs (docs/deployers.md): each new ticket comes from a new
    customer, `router` picks the version by the customer's key, the offline task model answers
    with that version's template, and the trace names the version that served it. The SME rates
    every answer as in `sample_feed`, so the better template genuinely rates better."""

    router: PromptRouter
    prompt: str = PROMPT
    topics: Topics = field(default_factory=Topics)
    served: Counter[str] = field(default_factory=Counter)  # "canary v2" -> tickets
    right: Counter[str] = field(default_factory=Counter)  # "canary v2" -> tickets answered right
    decisions_seen: int = 0

    def serve(self, n: int, decisions: int) -> list[tuple[str, CloudEvent]]:
        """`n` tickets routed, answered, traced and rated; `decisions` (promotion events seen so
        far) re-reads the routing table when a new one came in, as docs/deployers.md suggests."""
        from optimization.models import complete_text
        from optimization.offline.datasets import support_tickets

        if decisions != self.decisions_seen:
            self.decisions_seen = decisions
            self.router.refresh()
        tickets = support_tickets(140)  # every distinct demo ticket; the feed used the first N_TICKETS
        events: list[tuple[str, CloudEvent]] = []
        for _ in range(n):
            i = sum(self.served.values())
            ticket = tickets[(N_TICKETS + i) % len(tickets)]
            route = self.router.choose(f"customer-{i}")
            answer = complete_text("offline/support-router", route.format(ticket=ticket["inputs"]["ticket"]))
            arm = f"{route.alias} v{route.version}"
            self.served[arm] += 1
            self.right[arm] += answer == ticket["expectations"]["expected_response"]
            trace_id = f"demo-{time.time_ns()}-served-{i}"
            events += rated_trace(self.prompt, route.version, trace_id, ticket, answer, self.topics)
        return events

    def describe(self) -> str:
        return ", ".join(f"{arm} {self.served[arm]} ({self.right[arm]} right)" for arm in sorted(self.served))


def _get(port: int, path: str) -> Any:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def _render(watch: Watch, filling: Progress, started: float, deployer: Deployer | None = None) -> Group:
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
        colour = "green" if d.decision in ("promoted", "canary_started", "canary_advanced") else "yellow"
        label = "gate" if d.request_id is not None else "rollout"
        lines.add_row(label, f"[{colour}]{d.decision}[/]: {d.reason}")
    rollout = (watch.status.get("prompts", {}).get(PROMPT) or {}).get("rollout")
    if watch.canary is not None and rollout and rollout.get("canary_version") == watch.canary:
        for label, text in _rollout_rows(rollout):
            lines.add_row(label, text)
    if deployer is not None:
        lines.add_row("deployer", f"tickets served: {deployer.describe()}")
    failed = watch.optimization("failed")
    if failed is not None:
        lines.add_row("job", f"[red]failed[/]: {failed.data.error}")
    title = f"gepa-stream demo — offline demo/test models — {time.monotonic() - started:.0f}s"
    return Group(Panel(Group(filling, lines), title=title))


def _arm(figures: dict[str, Any], needed: int | None = None) -> str:
    mean = "-" if figures["mean"] is None else f"{figures['mean']:.2f}"
    text = f"v{figures['version']}: {figures['n']} ratings, mean {mean}"
    if needed is not None:
        text += f"; {figures['n_stage']} this stage" + (f", {needed} more needed" if needed else "")
    return text


def _rollout_rows(rollout: dict[str, Any]) -> list[tuple[str, str]]:
    """The rollout's state from the daemon's /status: stage and share, each arm, the bounds."""
    stages = rollout["stages"]
    if rollout["state"] == "canary":
        where = f"[yellow]canary[/] at {rollout['traffic_share']:.0%} of traffic, stage {rollout['stage'] + 1}/{len(stages)}"
        where += f" ({', '.join(f'{s:.0%}' for s in stages)})"
    else:
        where = f"[green]{rollout['state']}[/] after stage {rollout['stage'] + 1}/{len(stages)}"
    live = rollout["state"] == "canary"
    if rollout["difference"] is None:
        bounds = "waiting for a rating of each arm"
    else:
        bounds = (
            f"{rollout['difference']:+.2f}, anytime {rollout['confidence']:.0%} bounds "
            f"[{rollout['lower']:+.2f}, {rollout['upper']:+.2f}]"
        )
        if live:
            bounds += (
                f" (advances once lower > -{ROLLOUT_MARGIN} and each arm has {ROLLOUT_MIN_VOTES} new ratings)"
            )
    return [
        ("rollout", where),
        ("  canary", _arm(rollout["canary"], rollout["needed_canary"] if live else None)),
        ("  production", _arm(rollout["production"], rollout["needed_production"] if live else None)),
        ("  canary - prod.", bounds),
    ]


def _poll(consumer: KafkaConsumer, watch: Watch) -> None:
    """New events into `watch`, each once (a record delivered twice is deduped on its id)."""
    seen = {e.id for e in watch.events}
    for records in consumer.poll(timeout_ms=200).values():
        for record in records:
            try:
                event = parse_event(record.value)
            except InvalidEvent:
                continue
            if event.id not in seen:
                seen.add(event.id)
                watch.events.append(event)


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
            code = _watch_loop(
                console, broker.bootstrap_servers, port, daemon, version, started, state_dir, tracking_uri
            )
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
    tracking_uri: str,
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
    deployer: Deployer | None = None
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
            if watch.rolling_out:  # play the deployer: serve new tickets with the routed versions
                if deployer is None:
                    from optimization.routing import PromptRouter

                    deployer = Deployer(PromptRouter(PROMPT, ttl_s=0.5, tracking_uri=tracking_uri))
                decisions = len(watch.of("gepa.promotion.v1"))
                send_events(deployer.serve(TICKETS_PER_TICK, decisions), settings)
            watch.status = _get(port, "/status") or watch.status
            filling.update(
                window_task, completed=watch.status.get("prompts", {}).get(PROMPT, {}).get("n_examples", 0)
            )
            _poll(consumer, watch)
            live.update(_render(watch, filling, started, deployer))
        # the rollout's final figures, once the ingest role has followed its last decision
        deadline = time.monotonic() + 10
        while True:
            watch.status = _get(port, "/status") or watch.status
            rollout = (watch.status.get("prompts", {}).get(PROMPT) or {}).get("rollout") or {}
            if watch.rollout_end is None or rollout.get("state") != "canary" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        live.update(_render(watch, filling, started, deployer))
    consumer.close()
    (state_dir / "promotions.jsonl").write_text(
        "".join(f"{e.to_json().decode()}\n" for e in watch.of("gepa.promotion.v1"))
    )
    return _summary(console, watch, started, state_dir, deployer)


def _summary(
    console: Console, watch: Watch, started: float, state_dir: Path, deployer: Deployer | None = None
) -> int:
    completed, gate = watch.optimization("completed"), watch.gate
    if completed is None or gate is None or watch.rolling_out:
        failed = watch.optimization("failed")
        why = failed.data.error if failed else "timed out"
        if completed is not None and gate is not None:
            why = f"the rollout of canary v{watch.canary} did not end ({why})"
        console.print(f"[red]the loop did not complete[/]: {why}; see {state_dir / 'daemon.log'}")
        return 1
    decision = gate.data
    table = Table(title="gepa-stream demo summary", show_header=False)
    table.add_row("prompt", PROMPT)
    table.add_row(
        "held-out score",
        f"{completed.data.baseline_score:.2f} (production v{decision.from_version}) -> {completed.data.candidate_score:.2f} (candidate v{decision.to_version})",
    )
    figures = (
        ""
        if decision.improvement is None or decision.ci_low is None or decision.ci_high is None
        else f": improvement {decision.improvement:+.0%}, CI [{decision.ci_low:+.2f}, {decision.ci_high:+.2f}], n={decision.n_eval}"
    )
    table.add_row("gate", f"{decision.decision}{figures}")
    table.add_row("metric calls", str(completed.data.metric_calls))
    live = decision.to_version if decision.decision == "promoted" else decision.from_version
    end = watch.rollout_end
    if end is not None:
        steps = [f"canary_started at {decision.traffic_share:.0%}"] + [
            f"{e.data.decision} at {e.data.traffic_share:.0%}"
            if e.data.decision == "canary_advanced"
            else e.data.decision
            for e in watch.rollout_steps()
        ]
        table.add_row("rollout", " -> ".join(steps))
        rollout = (watch.status.get("prompts", {}).get(PROMPT) or {}).get("rollout") or {}
        if rollout.get("canary_version") == watch.canary and rollout.get("difference") is not None:
            table.add_row(
                "live ratings",
                f"canary {_arm(rollout['canary'])}; production {_arm(rollout['production'])}; "
                f"difference {rollout['difference']:+.2f}, anytime {rollout['confidence']:.0%} bounds "
                f"[{rollout['lower']:+.2f}, {rollout['upper']:+.2f}]",
            )
        if deployer is not None:
            table.add_row("tickets served", deployer.describe())
        if end.data.decision == "promoted":
            live = watch.canary
    table.add_row("elapsed", f"{time.monotonic() - started:.0f}s")
    table.add_row("live prompt", f"prompts:/{PROMPT}@{PRODUCTION_ALIAS} -> v{live}")
    console.print(table)
    import mlflow

    template = mlflow.genai.load_prompt(f"prompts:/{PROMPT}@{PRODUCTION_ALIAS}", cache_ttl_seconds=0).template
    console.print(Panel(str(template), title=f"the template now live (v{live})"))
    return 0
