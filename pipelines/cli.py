"""The `shadowcast` command. Each sub-command lives in `pipelines/commands/<name>.py` and exposes
`register(app)`; modules there import only typer at load time and defer heavy libraries (torch,
Lightning, MLflow, GluonTS) into the command body, so `shadowcast --help` stays well under a second.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

from pipelines import commands

app = typer.Typer(
    name="shadowcast",
    help="Predictive resource shadowing: forecast demand as distributions, keep warm shadows, switch early.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Predictive resource shadowing: forecast demand as distributions, keep warm shadows, switch early."""


def _register_commands() -> None:
    for module in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{module.name}").register(app)


_register_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
