"""`shadowcast hash-key`: make a hash for the serve settings' `security.api_key_hashes`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("hash-key")
    def hash_key(
        scheme: str = typer.Option("sha256", help="sha256 (random keys) or scrypt (keys a person chose)."),
        generate: bool = typer.Option(False, "--generate", help="Make a new random key and print it too."),
    ) -> None:
        """Print the hash of an API key read from stdin (or of a new one with --generate).

        Put the hash in the serve settings; give the key to the client. The key is read from
        standard input, not an argument, so it stays out of shell history and process lists."""
        import sys

        from pipelines.errors import user_errors
        from pipelines.security import hash_key as make_hash
        from pipelines.security import new_key

        with user_errors():
            if generate:
                key = new_key()
                typer.echo(f"key:  {key}", err=True)  # stderr: the hash alone goes to stdout
            else:
                key = sys.stdin.readline().rstrip("\r\n")
                if not key:
                    raise ValueError("no key on standard input (or use --generate)")
            typer.echo(make_hash(key, scheme))
