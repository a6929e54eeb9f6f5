"""A small "production app" for the bridge tests: an agent traced with `@mlflow.trace` that
loads its prompt from the registry (so MLflow links the prompt to each trace), and an SME
who reviews traces with `log_feedback` (HUMAN source) and `log_expectation`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from mlflow.entities import AssessmentSource
from mlflow.tracking import fluent

from optimization.offline.datasets import SEED_ROUTER_PROMPT, support_tickets
from optimization.template_agent import make_template_agent

PROMPT = "support_router"
RULED_ROUTER_PROMPT = (
    "Route this support ticket to one category: billing, shipping, technical or account. Answer with the category only.\n"
    'Rule: if the ticket mentions "refund", "invoice", "charge", "charged", "payment", "receipt" or "credit card", the category is billing.\n'
    'Rule: if the ticket mentions "delivery", "package", "tracking", "courier", "shipped", "parcel" or "arrive", the category is shipping.\n'
    'Rule: if the ticket mentions "error", "crash", "crashes", "bug", "app", "loading" or "website", the category is technical.\n'
    'Rule: if the ticket mentions "password", "login", "log in", "username", "profile", "two-factor" or "locked", the category is account.\n'
    "Ticket: {{ticket}}"
)
"""The seed prompt with every routing rule stated: the offline router gets every ticket right."""
SME = AssessmentSource(source_type="HUMAN", source_id="sme-ana")


@dataclass
class ProductionApp:
    """The app's experiment (in `workdir/mlflow.db`) and what it has logged (trace id -> the right category)."""

    workdir: Path
    experiment_id: str = ""
    truth: dict[str, str] = field(default_factory=dict)
    answers: dict[str, str] = field(default_factory=dict)
    logged: int = 0

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.workdir / 'mlflow.db'}"

    def __post_init__(self) -> None:
        mlflow.set_tracking_uri(self.tracking_uri)
        name = "support-app-production"
        found = mlflow.get_experiment_by_name(name)
        self.experiment_id = (
            found.experiment_id
            if found
            else mlflow.create_experiment(name, artifact_location=str(self.workdir / "artifacts"))
        )
        if not mlflow.genai.search_prompts(filter_string=f"name='{PROMPT}'"):
            version = mlflow.genai.register_prompt(name=PROMPT, template=SEED_ROUTER_PROMPT)
            mlflow.genai.set_prompt_alias(PROMPT, "production", version.version)

    @contextmanager
    def _active(self) -> Iterator[None]:
        """Point MLflow at this app's store and experiment for a block. `set_experiment` is process-wide
        (and exports MLFLOW_EXPERIMENT_ID to daemons started later), so the previous one is restored:
        other tests' fresh stores have no such experiment."""
        saved_env, saved_active = os.environ.get("MLFLOW_EXPERIMENT_ID"), fluent._active_experiment_id
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_experiment(experiment_id=self.experiment_id)
        try:
            yield
        finally:
            fluent._active_experiment_id = saved_active  # no public way to unset the active experiment
            if saved_env is None:
                os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
            else:
                os.environ["MLFLOW_EXPERIMENT_ID"] = saved_env

    def serve(self, n: int) -> list[str]:
        """Answer the next `n` demo tickets with the production prompt; the new trace ids, oldest first."""
        agent = make_template_agent(f"prompts:/{PROMPT}@production", "offline/support-router")

        @mlflow.trace(name="route_ticket")
        def route_ticket(ticket: str) -> str:
            return agent(ticket=ticket)

        new = []
        with self._active():
            for example in support_tickets(self.logged + n)[self.logged :]:
                answer = route_ticket(example["inputs"]["ticket"])
                trace_id = mlflow.get_last_active_trace_id()
                self.truth[trace_id] = example["expectations"]["expected_response"]
                self.answers[trace_id] = answer
                new.append(trace_id)
            mlflow.flush_trace_async_logging()
        self.logged += n
        return new

    def serve_unlinked(self) -> str:
        """One trace that used no registered prompt (the bridge cannot map it)."""
        with self._active(), mlflow.start_span(name="healthcheck") as span:
            span.set_inputs({"ping": "pong"})
            span.set_outputs("ok")
        mlflow.flush_trace_async_logging()
        return span.trace_id

    def review(self, trace_ids: list[str]) -> None:
        """The SME rates each answer (excellent/poor, with a comment) and logs the right category."""
        with self._active():
            for trace_id in trace_ids:
                right = self.answers[trace_id] == self.truth[trace_id]
                mlflow.log_feedback(
                    trace_id=trace_id,
                    name="routing_quality",
                    value="excellent" if right else "poor",
                    rationale="correct queue" if right else f"should go to {self.truth[trace_id]}",
                    source=SME,
                )
                mlflow.log_expectation(
                    trace_id=trace_id, name="expected_response", value=self.truth[trace_id], source=SME
                )
