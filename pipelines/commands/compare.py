"""`shadowcast compare --experiment X [--metric mean_wql]`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def compare(
        experiment: str = typer.Option("shadowcast-evaluate", "--experiment", "-e", help="MLflow experiment name."),
        metric: str = typer.Option("mean_wql", "--metric", "-m",
                                   help="Rank by this metric (losses: lowest first; coverage: closest to nominal)."),
        limit: int | None = typer.Option(None, min=1, help="Show only the best N runs."),
        tracking_uri: str | None = typer.Option(None, help="MLflow tracking URI; default MLFLOW_TRACKING_URI, "
                                                           "else sqlite:///./mlflow.db."),
    ) -> None:
        """Print the experiment's runs ranked by a metric, side by side."""
        from pipelines.errors import user_errors

        with user_errors():
            from pipelines.compare import compare_runs, format_table

            table = compare_runs(experiment, metric, tracking_uri=tracking_uri, limit=limit)
        typer.echo(format_table(table))
