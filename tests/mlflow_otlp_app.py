"""An app traced with MLflow whose spans go to an OTLP/HTTP endpoint (MLflow's OTLP export):
`python -m tests.mlflow_otlp_app ENDPOINT TRACKING_URI N` registers the router prompt, answers N
tickets through the autologged `openai` client (fake provider at `OPENAI_BASE_URL`), loading the
prompt inside each traced call (so MLflow links it), and prints the calls as JSON lines; the
last spans leave when the process exits (the tracer provider's shutdown flushes them)."""

from __future__ import annotations

import json
import os
import sys


def main(endpoint: str, tracking_uri: str, n: int) -> None:
    os.environ.update(
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="http/protobuf",
        MLFLOW_TRACKING_URI=tracking_uri,
    )
    import mlflow
    import openai

    from optimization.offline.datasets import SEED_ROUTER_PROMPT, support_tickets

    mlflow.genai.register_prompt(name="support_router", template=SEED_ROUTER_PROMPT)
    mlflow.openai.autolog()
    client = openai.OpenAI()

    @mlflow.trace
    def route(ticket: str) -> str:
        prompt = mlflow.genai.load_prompt("prompts:/support_router/1")
        reply = client.chat.completions.create(
            model="support-router", messages=[{"role": "user", "content": prompt.format(ticket=ticket)}]
        )
        return reply.choices[0].message.content or ""

    for record in support_tickets(n):
        ticket = record["inputs"]["ticket"]
        print(json.dumps({"ticket": ticket, "answer": route(ticket=ticket)}), flush=True)
    # the spans still in MLflow's batch span processor are exported when the process exits


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
