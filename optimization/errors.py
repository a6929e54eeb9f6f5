"""Errors raised by the optimizer library."""

from __future__ import annotations

from schemas.errors import GepaStreamError


class OptimizationFailed(GepaStreamError, RuntimeError):
    """GEPA could not produce a candidate (reflection or model failures, timeout); never a silent success.

    `cause` holds the underlying error message (or exception) for the caller's report.
    """

    def __init__(self, message: str, cause: BaseException | str | None = None) -> None:
        super().__init__(message if cause is None else f"{message}: {cause}")
        self.cause = cause


class RoutingUnavailable(GepaStreamError, RuntimeError):
    """A `PromptRouter` has no routing table to serve: the registry could not be read (unreachable,
    or the prompt has no `production` version) and no earlier read succeeded; or an explicit
    `refresh()` failed (the last table keeps serving `choose`)."""
