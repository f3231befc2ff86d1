"""`shadowcast forecast --model … --data … --horizon H --samples S --out file`."""

from __future__ import annotations

from pathlib import Path

import typer

DEFAULT_LEVELS = "0.05,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.95,0.99"


def register(app: typer.Typer) -> None:
    @app.command()
    def forecast(
        model: str = typer.Option(..., help="Model folder, or an MLflow URI such as models:/shadowcast-dpe@champion."),
        data: Path = typer.Option(..., help="Panel file (.csv or .parquet): cluster_id, timestamp, demand, covariates."),
        out: Path = typer.Option(..., help="Output file (.csv or .parquet): per cluster and step, mean and quantiles."),
        horizon: int = typer.Option(48, min=1, help="Steps to forecast."),
        samples: int = typer.Option(100, min=1, help="Sample paths per cluster."),
        quantiles: str = typer.Option(DEFAULT_LEVELS, help="Comma-separated quantile levels in (0, 1)."),
        max_gap: int = typer.Option(3, min=0, help="Longest run of missing steps filled by interpolation."),
        seed: int = typer.Option(0, help="Seed of the sampler: same seed, same forecast."),
        samples_out: Path | None = typer.Option(None, help="Also save the raw sample paths (.npz)."),
    ) -> None:
        """Forecast every cluster in a data file; covariates are those the model was trained with."""
        from pipelines.errors import user_errors

        with user_errors():
            levels = parse_levels(quantiles)
            if out.suffix.lower() not in {".csv", ".parquet"}:
                raise ValueError(f"{out}: output must end in .csv or .parquet")
            from forecasting.data import read_panel
            from forecasting.files import write_table
            from forecasting.predictor import load_predictor

            predictor = load_predictor(model)
            meta = predictor.metadata
            panel = read_panel(data, known_covariates=meta.known.names, past_covariates=meta.past.names,
                               freq=meta.network.freq, max_gap=max_gap)
            result = predictor.predict(panel, horizon, samples, seed=seed)
            write_table(result.to_frame(levels), out)
            if samples_out is not None:
                result.save(samples_out)
        typer.echo(f"wrote {out}: {len(result.cluster_ids)} clusters × {horizon} steps, "
                   f"mean and {len(levels)} quantiles from {samples} sample paths")


def parse_levels(text: str) -> list[float]:
    try:
        levels = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--quantiles: {text!r} is not a comma-separated list of numbers") from None
    bad = [q for q in levels if not 0 < q < 1]
    if not levels or bad:
        raise ValueError(f"--quantiles: levels must lie strictly between 0 and 1, got {bad or 'none'}")
    return sorted(set(levels))
