"""`python -m ops ...` is `relkd ...` (the stack starts its children this way)."""

from ops.cli import app

app()
