"""Turning expected failures into one clear line on stderr and a non-zero exit, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError, PermissionError)


@contextmanager
def user_errors(extra: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Report bad input (config, data, arguments) as `error: …` with exit status 2."""
    try:
        yield
    except USER_ERRORS + extra as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        raise typer.Exit(code=2) from None

