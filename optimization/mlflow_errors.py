"""MLflow's errors recognised by their error code (and, for an unreachable server, the `requests`
error the client raised it from), never by their message text.

Measured on MLflow 3.17, the same for a sqlite store and for the REST client against a tracking
server (`tests/integration/test_mlflow_errors.py` keeps it true):

- a prompt (or prompt version) that does not exist: `RESOURCE_DOES_NOT_EXIST`;
- `get_prompt_version_by_alias` for an alias the prompt does not have: `INVALID_PARAMETER_VALUE`;
- a tracking server that does not answer (after the client's own retries): `INTERNAL_ERROR`,
  raised while handling the `requests` error, whose request names the URL.
"""

from __future__ import annotations

import requests
from mlflow.exceptions import MlflowException

NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
INVALID_PARAMETER = "INVALID_PARAMETER_VALUE"
INTERNAL = "INTERNAL_ERROR"


def error_code(exc: BaseException) -> str | None:
    """The MLflow error code of `exc`; None if it is not an MlflowException."""
    return exc.error_code if isinstance(exc, MlflowException) else None


def not_found(exc: BaseException) -> bool:
    """The prompt or version asked for does not exist."""
    return error_code(exc) == NOT_FOUND


def no_alias(exc: BaseException) -> bool:
    """An alias lookup found nothing: the prompt does not exist, or it has no such alias."""
    return error_code(exc) in (NOT_FOUND, INVALID_PARAMETER)


def unanswered_request(exc: BaseException, tracking_uri: str) -> bool:
    """True if `exc` or an exception it chains is the MLflow client giving up on a request to
    `tracking_uri` (connection refused, timeouts, or 5xx answers after its retries)."""
    prefix = tracking_uri.rstrip("/") + "/"
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        underlying = current.__cause__ or current.__context__
        if error_code(current) == INTERNAL and isinstance(underlying, requests.RequestException):
            url = getattr(underlying.request, "url", None) or ""
            if url.startswith(prefix):
                return True
        current = underlying
    return False
