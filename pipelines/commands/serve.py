"""`shadowcast serve --config configs/serve.yaml`: the forecasting API under uvicorn."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        config: Path | None = typer.Option(None, "--config", "-c", help="Serve settings (YAML), e.g. configs/serve.yaml."),
        model: str | None = typer.Option(None, help="Override `model`: a folder or models:/name@alias."),
        host: str | None = typer.Option(None, help="Override `host` (default 127.0.0.1)."),
        port: int | None = typer.Option(None, min=0, max=65535, help="Override `port`."),
    ) -> None:
        """Serve forecasts over HTTP (FastAPI + uvicorn); see /docs for the API."""
        from pipelines.errors import user_errors

        with user_errors():
            from pipelines.api.settings import ServeSettings
            from pipelines.settings import load_config, parse_config

            overrides = {k: v for k, v in (("model", model), ("host", host), ("port", port)) if v is not None}
            settings = (load_config(config, ServeSettings, overrides) if config
                        else parse_config(overrides, ServeSettings, source="command line"))
            import uvicorn

            from pipelines.serve import create_app

            application = create_app(settings)
        # One process: the model's sampling already uses every core through torch's thread pool.
        uvicorn.run(application, host=settings.host, port=settings.port, log_level=settings.log_level,
                    proxy_headers=False, server_header=False)
