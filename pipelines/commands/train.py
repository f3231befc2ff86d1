"""`shadowcast train --config configs/<name>.yaml`."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        config: Path = typer.Option(..., "--config", "-c", help="Training config (YAML), e.g. configs/demo.yaml."),
        max_epochs: int | None = typer.Option(None, help="Override trainer.max_epochs."),
        output_dir: Path | None = typer.Option(None, help="Override output_dir (model, checkpoints, plots)."),
    ) -> None:
        """Train the Demand Prediction Engine, log the run to MLflow and register the model."""
        from pipelines.errors import user_errors

        with user_errors():
            from pipelines.settings import TrainConfig, load_config
            from pipelines.sources import load_panel
            from pipelines.train import train as run_training

            overrides: dict = {}
            if max_epochs is not None:
                overrides["trainer"] = {"max_epochs": max_epochs}
            if output_dir is not None:
                overrides["output_dir"] = str(output_dir)
            settings = load_config(config, TrainConfig, overrides)
            panel = load_panel(settings.data)
            typer.echo(f"training on {panel.source}: {len(panel.cluster_ids)} clusters, "
                       f"{len(panel.history())} observations, freq {panel.freq}")
            result = run_training(settings, panel, run_name=config.stem)
        if result is None:  # a secondary DDP process: the primary one reports
            return
        summary = result.forecaster.summary
        typer.echo(f"epochs {summary.epochs}, {summary.train_seconds:.1f} s, "
                   f"{summary.samples_per_second:.0f} windows/s")
        for name, value in result.metrics.items():
            typer.echo(f"{name:28s} {value:.4f}")
        typer.echo(f"model folder     {result.model_dir}")
        typer.echo(f"MLflow run       {result.run_id}  model {result.model_uri}")
        if result.registered_version:
            typer.echo(f"registered       models:/{settings.mlflow.register_as}/{result.registered_version}")
