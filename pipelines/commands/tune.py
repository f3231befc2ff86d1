"""`shadowcast tune --config … --trials N [--workers K]`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def tune(
        config: Path = typer.Option(..., "--config", "-c", help="Base training config (YAML)."),
        trials: int = typer.Option(20, min=1, help="Finished trials the study should reach (all workers together)."),
        workers: int = typer.Option(1, min=1, help="Worker processes sharing the study."),
        storage: str = typer.Option("sqlite:///optuna.db", help="Optuna RDB storage URL (SQLite or PostgreSQL)."),
        study: str | None = typer.Option(None, help="Study name; default shadowcast-<config name>."),
        timeout: float | None = typer.Option(None, min=1, help="Stop starting new trials after this many seconds."),
        out: Path | None = typer.Option(None, help="Where to write the best config; default configs/<name>-tuned.yaml."),
        seed: int | None = typer.Option(None, help="Sampler seed (reproducible suggestions in one worker)."),
        threads: int | None = typer.Option(None, min=1, help="CPU threads per worker; default CPUs ÷ workers."),
        write: bool = typer.Option(True, help="Write the best config when done (workers started by --workers do not)."),
    ) -> None:
        """Search the model's hyper-parameters with Optuna; pruned trials stop early."""
        import subprocess

        from pipelines.errors import user_errors

        with user_errors():
            from forecasting.estimator import available_cpus
            from pipelines.settings import TrainConfig, load_config
            from pipelines.sources import load_panel
            from pipelines.tune import TuneOptions, best_config, open_study, run_worker, write_config

            base = load_config(config, TrainConfig)
            options = TuneOptions(trials=trials, storage=storage, study_name=study or f"shadowcast-{config.stem}",
                                  timeout_s=timeout, seed=seed,
                                  threads=threads or max(1, available_cpus() // workers),
                                  prune_after=TuneOptions.prune_after_for(base))
            open_study(options)  # create it once, before workers race to
            panel = load_panel(base.data)
            helpers = []
            for _ in range(workers - 1):
                command = [sys.executable, "-m", "pipelines.cli", "tune", "--config", str(config),
                           "--trials", str(trials), "--storage", storage, "--study", options.study_name,
                           "--threads", str(options.threads), "--no-write"]
                if timeout:
                    command += ["--timeout", str(timeout)]
                helpers.append(subprocess.Popen(command))
            try:
                run_worker(base, panel, options)
            finally:
                failed = [p.args for p in helpers if p.wait() != 0]
            if failed:
                raise RuntimeError(f"{len(failed)} tuning worker(s) failed")
            if not write:
                return
            best, score, number = best_config(base, options)
            target = out or Path("configs") / f"{config.stem}-tuned.yaml"
            write_config(best, target, f"best of study {options.study_name!r} (trial {number}, "
                                       f"validation mean wQL {score:.4f}), from {config}")
        typer.echo(f"best trial {number}: validation mean wQL {score:.4f}; config written to {target}")
