"""`python -m services ...` is `relkd ...` (the stack starts its children this way)."""

from services.cli import app

app()
