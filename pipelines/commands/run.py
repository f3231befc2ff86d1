"""`shadowcast run [--config configs/run.yaml]`: the control loop and the API in one process."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

LOCK_HELD_EXIT = 3  # distinct from bad input (2): a supervisor may retry later instead of alerting


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        config: Path | None = typer.Option(None, "--config", "-c",
                                           help="Run settings (YAML), e.g. configs/run.yaml; default: the demo."),
        model: str | None = typer.Option(None, help="Override `model.location`: a folder or models:/name@alias."),
        port: int | None = typer.Option(None, min=1, max=65535, help="Override `api.port`."),
    ) -> None:
        """Forecast, plan and reconcile every interval, acting through the switchover controller;
        serves the API (and /metrics, /v1/run) from the same process. Stops on SIGTERM or Ctrl-C."""
        from allocator.drivers.base import DriverError  # e.g. haproxy missing for the local driver
        from pipelines.errors import user_errors

        with user_errors(extra=(DriverError,)):
            from pipelines.run_config import RunConfig
            from pipelines.settings import load_config, parse_config

            overrides: dict = {}
            if model is not None:
                overrides["model"] = {"location": model}
            if port is not None:
                overrides["api"] = {"port": port}
            settings = (load_config(config, RunConfig, overrides) if config
                        else parse_config(overrides, RunConfig, source="command line"))
            from pipelines.run_process import LoopLockHeld, run as run_loop

            try:
                run_loop(settings)
            except LoopLockHeld as exc:
                print(f"error: {exc}", file=sys.stderr)
                raise typer.Exit(code=LOCK_HELD_EXIT) from None
