"""`relkd`: the platform's command line.

Each area owns its sub-command module (a ``typer.Typer`` named ``app``); this file
only mounts them, so `relkd --help` lists the whole platform.
"""

from __future__ import annotations

import typer

from services import demo, stack
from services.core import broker
from training.data import cli as data_cli
from training.eval import cli as eval_cli

app = typer.Typer(
    name="relkd",
    help="LLM-to-student knowledge distillation for e-commerce search relevance.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command("broker")(broker.broker_command)
app.command("up")(stack.up_command)
app.command("serve")(stack.serve_command)
app.command("demo")(demo.demo_command)
app.add_typer(data_cli.app, name="data")
app.command("eval")(eval_cli.eval_command)
