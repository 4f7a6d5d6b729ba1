"""What every `irlhf` command prints: plain message lines and one-line errors (exit code 2)."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

console = Console()


def say(text: str) -> None:
    """A plain message line (no wrapping of long paths, no rich markup in them)."""
    console.print(text, soft_wrap=True, markup=False, highlight=False)


def fail(message: str, code: int = 2) -> NoReturn:
    """One line `error: MESSAGE` on stderr, then exit with `code`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
