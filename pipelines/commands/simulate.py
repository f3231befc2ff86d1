"""`shadowcast simulate --config configs/simulate-<trace>.yaml`."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def simulate(
        config: Path = typer.Option(..., "--config", "-c", help="Simulation config (YAML), e.g. configs/simulate-worldcup98.yaml."),
        output_dir: Path | None = typer.Option(None, help="Override output_dir (report, figures, tables)."),
        data_dir: Path | None = typer.Option(None, help="Override trace.data_dir (folder of the public datasets)."),
        no_mlflow: bool = typer.Option(False, "--no-mlflow", help="Do not log the run to MLflow."),
    ) -> None:
        """Replay a demand trace through every policy and the oracle; report cost and unserved demand."""
        import json
        import time

        from pipelines.errors import user_errors

        started = time.perf_counter()
        with user_errors():
            from pipelines.report_simulate import markdown_table
            from pipelines.settings import load_config
            from pipelines.simulate import run_simulation
            from pipelines.simulate_config import SimulateConfig

            overrides: dict = {}
            if output_dir is not None:
                overrides["output_dir"] = str(output_dir)
            if data_dir is not None:
                overrides["trace"] = {"data_dir": str(data_dir)}
            if no_mlflow:
                overrides["log_mlflow"] = False
            settings = load_config(config, SimulateConfig, overrides)
            result = run_simulation(settings)
        columns = ["policy", "setting", "cost", "cost_vs_oracle", "unserved_frac", "unserved_minutes",
                   "switchovers", "reverts"]
        typer.echo(markdown_table(result.table, columns))
        typer.echo(json.dumps({k: v for k, v in result.headline.items() if k != "policies"}, default=str))
        typer.echo(f"report           {result.report}")
        if result.mlflow_run_id:
            typer.echo(f"MLflow run       {result.mlflow_run_id}")
        typer.echo(f"simulate finished in {time.perf_counter() - started:.0f} s")
