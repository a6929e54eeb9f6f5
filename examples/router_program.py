"""A DSPy support-ticket router, for the daemon's `dspy` backend (`program: examples.router_program:make_program`).

With `task_model: offline/support-router` it runs on the built-in demo/test model, no
network needed; any litellm model string works the same way.
"""

from __future__ import annotations

import dspy


class RouteTicket(dspy.Signature):
    """Route this support ticket to one category: billing, shipping, technical or account. Answer with the category only."""

    ticket: str = dspy.InputField()
    category: str = dspy.OutputField()


class Router(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.route = dspy.Predict(RouteTicket)

    def forward(self, ticket: str) -> dspy.Prediction:
        return self.route(ticket=ticket)


def make_program() -> dspy.Module:
    """The program factory the daemon's policy file names."""
    return Router()
