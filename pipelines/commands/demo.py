"""`shadowcast demo`: the main job on embedded defaults (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        config: Path | None = typer.Option(None, "--config", "-c",
                                           help="Training config; default configs/demo.yaml, else built-in defaults."),
        out_dir: Path = typer.Option(Path("runs/demo"), help="Where data, forecast and plots go."),
    ) -> None:
        """Generate data, train, forecast a held-out window and compare with seasonal naive."""
        import time

        from pipelines.errors import user_errors

        started = time.perf_counter()
        with user_errors():
            from pipelines.demo import format_report, run_demo
            from pipelines.settings import PROJECT_ROOT, TrainConfig, load_config

            default = PROJECT_ROOT / "configs" / "demo.yaml"
            path = config or (default if default.exists() else None)
            overrides = {"output_dir": str(out_dir / "train")}
            settings = load_config(path, TrainConfig, overrides) if path else TrainConfig(output_dir=out_dir / "train")
            typer.echo(f"shadowcast demo — config {path or 'built-in defaults'}")
            result = run_demo(settings, out_dir)
        typer.echo("")
        typer.echo(format_report(result, settings))
        typer.echo(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
