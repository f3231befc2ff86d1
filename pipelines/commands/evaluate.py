"""`shadowcast evaluate --model FAMILY (--dataset NAME | --data FILE | --config FILE) [backtest options]`."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def evaluate(
        model: str | None = typer.Option(None, "--model", "-m", help="Model family: seasonal-naive, "
                                         "seasonal-bootstrap, gluonts-deepar or deepar."),
        dataset: str | None = typer.Option(None, help="Public dataset: m4_hourly, worldcup98, alibaba2018, "
                                           "google2019, etth1."),
        data: Path | None = typer.Option(None, help="Panel file (.csv/.parquet): cluster_id, timestamp, demand, …"),
        config: Path | None = typer.Option(None, "--config", "-c", help="Evaluation config (YAML), e.g. "
                                           "configs/evaluate-m4-seasonal-naive.yaml; options given here override it."),
        data_dir: Path | None = typer.Option(None, help="Folder of the public datasets (default SHADOWCAST_DATA_DIR, "
                                             "else ../shared/data)."),
        known_covariates: str = typer.Option("", help="--data: comma-separated known-future covariate columns."),
        past_covariates: str = typer.Option("", help="--data: comma-separated past-only covariate columns."),
        freq: str | None = typer.Option(None, help="--data: the series' frequency when it cannot be inferred."),
        horizon: int | None = typer.Option(None, min=1, help="Steps per window; default the dataset's own horizon."),
        windows: int | None = typer.Option(None, min=1, help="Rolling windows (origins); default 1."),
        stride: int | None = typer.Option(None, min=1, help="Steps between origins; default the horizon."),
        refit: bool | None = typer.Option(None, "--refit/--fit-once", help="Fit per window, or once before the "
                                          "earliest origin (default)."),
        num_samples: int | None = typer.Option(None, min=1, help="Sample paths per cluster; default 100."),
        option: list[str] = typer.Option([], "--option", "-o", help="Model option KEY=VALUE (YAML value), "
                                         "repeatable, e.g. -o max_epochs=5 -o hidden_size=40."),
        model_uri: str | None = typer.Option(None, help="deepar: evaluate a saved model (folder, runs:/…, "
                                             "models:/…) instead of training one."),
        experiment: str | None = typer.Option(None, help="MLflow experiment; default shadowcast-evaluate."),
        run_name: str | None = typer.Option(None, help="MLflow run name; default '<family> on <dataset>'."),
        output_dir: Path | None = typer.Option(None, help="Also keep the artifacts in this folder."),
        fan_chart_clusters: int | None = typer.Option(None, min=0, help="Clusters in the fan chart (0: none)."),
    ) -> None:
        """Backtest a model family on a dataset; record metrics, calibration and fan charts in MLflow."""
        from pipelines.errors import user_errors

        with user_errors():
            import yaml

            from pipelines.evaluate import FAMILIES, EvaluateConfig, run_evaluation
            from pipelines.settings import load_config, parse_config

            overrides: dict = {}
            if dataset and data:
                raise ValueError("give --dataset or --data, not both")
            if dataset:
                overrides["data"] = {"source": "dataset", "dataset": dataset}
            elif data:
                overrides["data"] = {"source": "file", "path": str(data), "freq": freq,
                                     "known_covariates": _names(known_covariates),
                                     "past_covariates": _names(past_covariates)}
            elif config is None:
                raise ValueError("say what to evaluate on: --dataset NAME, --data FILE or --config FILE")
            if data_dir:
                overrides.setdefault("data", {})["data_dir"] = str(data_dir)
            if model is None and config is None:
                raise ValueError(f"--model is required without --config (one of {sorted(FAMILIES)})")
            model_part: dict = {"options": {k: yaml.safe_load(v) for k, v in map(_key_value, option)}}
            if model:
                model_part["family"] = model
            if model_uri:
                model_part["model_uri"] = model_uri
            overrides["model"] = model_part
            chosen = {"horizon": horizon, "windows": windows, "stride": stride, "refit": refit,
                      "num_samples": num_samples}
            overrides["backtest"] = {k: v for k, v in chosen.items() if v is not None}
            if experiment:
                overrides["mlflow"] = {"experiment": experiment}
            if output_dir:
                overrides["output_dir"] = str(output_dir)
            if fan_chart_clusters is not None:
                overrides["fan_chart_clusters"] = fan_chart_clusters
            settings = (load_config(config, EvaluateConfig, overrides) if config
                        else parse_config(overrides, EvaluateConfig, source="command line"))
            if config and model and load_config(config, EvaluateConfig).model.family != model:
                # The file's model options belong to the file's family; another family gets only -o ones.
                settings = settings.model_copy(update={"model": settings.model.model_copy(
                    update={"options": model_part["options"]})})
            result = run_evaluation(settings, run_name=run_name, progress=typer.echo)
        typer.echo(f"{settings.model.family} on {result.dataset}: {len(result.backtest.windows)} window(s) × "
                   f"{result.horizon} steps, {int(result.metrics['num_items'])} cluster-windows")
        for name, value in result.metrics.items():
            if name != "num_items":
                typer.echo(f"  {name:24s} {value:.4f}")
        typer.echo(f"MLflow run {result.run_id} (experiment {settings.mlflow.experiment}); "
                   f"artifacts: {', '.join(result.artifacts)}")


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--option {text!r}: expected KEY=VALUE, e.g. max_epochs=5")
    return key.strip(), value
