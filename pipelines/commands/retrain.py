"""`shadowcast retrain --config configs/retrain-demo.yaml`: challenger vs champion, promote if better."""

from __future__ import annotations

from pathlib import Path

import typer

LOCKED_EXIT = 3  # distinct from bad input (2): a scheduler can tell "busy" from "broken"


def register(app: typer.Typer) -> None:
    @app.command()
    def retrain(
        config: Path = typer.Option(..., "--config", "-c", help="Retrain config (YAML), e.g. configs/retrain-demo.yaml."),
    ) -> None:
        """Train a challenger on the latest data, backtest it against the champion, move the alias if it wins."""
        import sys

        from pipelines.errors import user_errors

        with user_errors():
            from pipelines.retrain import RetrainConfig, RetrainLocked, run_retrain
            from pipelines.settings import load_config

            settings = load_config(config, RetrainConfig)
            try:
                outcome = run_retrain(settings)
            except RetrainLocked as exc:
                print(f"busy: {exc}", file=sys.stderr)
                raise typer.Exit(code=LOCKED_EXIT) from None
        if outcome is not None:  # None: a DDP helper process; the primary one reports
            typer.echo(outcome.summary())
