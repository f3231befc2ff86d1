"""One module per `shadowcast` sub-command; each defines `register(app: typer.Typer)`.

Keep module-level imports to typer and the standard library: everything heavy goes inside the
command function (the CLI's start-up time is a feature)."""
