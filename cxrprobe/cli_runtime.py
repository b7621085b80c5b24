"""What every command of the typer app shares: errors as one stderr line and an exit status,
notes on stderr, and a progress bar only on a terminal."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import traceback
from typing import Any, Callable, Iterator

import typer

from cxrprobe.errors import CxrprobeError, OptionError


def say(line: str) -> None:
    sys.stderr.write(line.rstrip("\n") + "\n")
    sys.stderr.flush()


def error_line(message: str) -> str:
    return "cxrprobe: error: " + " ".join(str(message).split())


def notes(prefix: str, quiet: bool) -> Callable[[str], None]:
    """Where a command's notes go: stderr, prefixed, or nowhere under --quiet."""
    return (lambda _line: None) if quiet else (lambda line: say(f"{prefix}: {line}"))


def guarded(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn cxrprobe's exceptions into one stderr line and an exit status."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except CxrprobeError as exc:
            say(error_line(exc.flag_message if isinstance(exc, OptionError) else str(exc)))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            say("cxrprobe: interrupted; what was written is kept (rerun with --resume to continue)")
            raise typer.Exit(130) from None
        except Exception as exc:  # a bug: say so in one line, the traceback on request
            if os.environ.get("CXRPROBE_DEBUG"):
                traceback.print_exc()
            say(error_line(f"internal error: {type(exc).__name__}: {exc} (set CXRPROBE_DEBUG=1 for the traceback)"))
            raise typer.Exit(1) from None

    return wrapper


@contextlib.contextmanager
def progress_bar(description: str, quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on stderr when stderr is a terminal; nothing in logs or pipes."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
