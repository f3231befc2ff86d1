"""`shadowcast version`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def version() -> None:
        """Print the installed shadowcast version."""
        from importlib.metadata import version as package_version

        typer.echo(package_version("shadowcast"))
