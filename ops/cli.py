"""`relkd`: the platform's command line.

Each area owns its sub-command module (a ``typer.Typer`` named ``app``); this file
only mounts them, so `relkd --help` lists the whole platform. Area modules import
their heavy dependencies (torch, kserve, tritonclient) inside their commands, which
keeps `relkd --help` fast and keeps kserve and tritonclient out of one process.
"""

from __future__ import annotations

import typer

from ops import certs, relabel, stack
from ops.demo.command import demo_command
from ops.jobs import cli as jobs_cli
from ops.jobs import validate_cli
from ops.loop import cli as loop_cli
from ops.rollout import cli as rollout_cli
from services import serve
from services.candidate_generation import cli as candidates_cli
from services.core import broker, dead_letters
from services.label_store import cli as labels_cli
from training import eval_cli
from training.data import cli as data_cli
from training.export import cli as export_cli
from training.student import cli as student_cli
from training.teacher import cli as teacher_cli

app = typer.Typer(
    name="relkd",
    help="LLM-to-student knowledge distillation for e-commerce search relevance.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command("broker")(broker.broker_command)
app.command("up")(stack.up_command)
app.command("serve")(serve.serve_command)
app.command("demo")(demo_command)
app.add_typer(data_cli.app, name="data")
app.command("eval")(eval_cli.eval_command)
# `relkd teacher promote` publishes to the relabel stream: operator tooling, one group.
teacher_cli.app.command("promote")(relabel.promote_command)
app.add_typer(teacher_cli.app, name="teacher")
app.add_typer(candidates_cli.app, name="candidates")
app.add_typer(labels_cli.app, name="labels")
# `relkd student train` and `relkd student export` live in two areas, one group.
student_cli.app.add_typer(export_cli.app)
app.add_typer(student_cli.app, name="student")
app.add_typer(jobs_cli.app, name="jobs")
app.add_typer(validate_cli.app, name="k8s")
app.add_typer(rollout_cli.app, name="rollout")
app.add_typer(certs.app, name="certs")
app.add_typer(loop_cli.app, name="loop")
app.command("controller")(loop_cli.controller_command)
app.add_typer(dead_letters.app, name="dlq")
app.add_typer(relabel.catalog_app, name="catalog")
app.add_typer(relabel.relabel_app, name="relabel")
