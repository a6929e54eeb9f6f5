"""MLflow's errors recognised by their error code, never by their message text: for the daemon's
registry reads and `PromptRouter`, and for `daemon/jobs/outage.py` (`INTERNAL` and the request's URL).

Measured on MLflow 3.17, the same for a sqlite store and for the REST client against a tracking
server (`tests/integration/test_mlflow_errors.py` keeps it true):

- a prompt (or prompt version) that does not exist: `RESOURCE_DOES_NOT_EXIST`;
- `get_prompt_version_by_alias` for an alias the prompt does not have: `INVALID_PARAMETER_VALUE`;
- a tracking server that does not answer (after the client's own retries): `INTERNAL_ERROR`,
  raised while handling the `requests` error, whose request names the URL.
"""

from __future__ import annotations

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
