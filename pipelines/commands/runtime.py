"""`shadowcast controller` and `shadowcast worker`: the runtime's own processes (local driver).

Arguments pass straight to `allocator.controller.main` / `allocator.worker.main` (argparse), so the
runtime keeps one definition of its options; `shadowcast controller --help` lists them.
"""

from __future__ import annotations

import typer

_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def register(app: typer.Typer) -> None:
    @app.command("controller", context_settings=_PASSTHROUGH, add_help_option=False)
    def controller(ctx: typer.Context) -> None:
        """Switch a route to a shadow or resume unfinished switchovers (see `controller --help`)."""
        from allocator.controller import main

        raise typer.Exit(main(ctx.args))

    @app.command("worker", context_settings=_PASSTHROUGH, add_help_option=False)
    def worker(ctx: typer.Context) -> None:
        """Run one local-driver worker process (the driver starts these itself)."""
        from allocator.worker import main

        main(ctx.args)
