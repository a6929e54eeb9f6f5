"""`python -m daemon` == `gepa-stream`."""

from daemon.cli import app

app()
