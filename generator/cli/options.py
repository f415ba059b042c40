"""What every command shares: the two consoles (the only place gen prints) and the options that
mean the same in each command, defined once so their names, help and environment variables agree."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from generator.errors import GenError, printable
from generator.files import given_path_status

if TYPE_CHECKING:
    from generator.builder.proc import Cancel

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@contextmanager
def signals_cancel(cancel: Cancel) -> Iterator[None]:
    """SIGINT/SIGTERM set the cancel flag: a build stops its tools and keeps earlier tags."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        cancel.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def error_exit(exc: GenError) -> typer.Exit:
    """How a command ends on a failed operation: one `error:` line on stderr, the error's exit code.
    Control characters (a file name's newline, a key's escape sequence) are escaped; an error
    whose line breaks are its own (keeps_lines: a host's problems, a tool's stderr) keeps them."""
    lines = str(exc).split("\n") if exc.keeps_lines else [str(exc)]
    text = "\n".join(map(printable, lines))
    err.print(f"[bold red]error:[/] {escape(text)}", markup=True, highlight=False)
    return typer.Exit(exc.exit_code)


def looked_up(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """Callback of the path options: a path the file system cannot even look up (a name too
    long, a loop of links) is refused in one line before the command starts, not deep inside it."""
    if value is not None:
        given_path_status(value, param.opts[0] if param.opts else "path")
    return value


# --insecure-registry from the environment: a CI job that targets a loopback test registry sets it once.
INSECURE_ENV = "GEN_INSECURE_REGISTRY"
ProjectOption = Annotated[
    Path,
    typer.Option(
        "--project", "-C", help="Project root holding specs/ and output/.", envvar="GEN_PROJECT", callback=looked_up
    ),
]
StorageOption = Annotated[
    Path | None,
    typer.Option(
        "--storage-root",
        help="Isolated containers storage (and gen's logs and state) in DIR instead of your normal storage.",
        envvar="GEN_STORAGE_ROOT",
        show_default=False,
        callback=looked_up,
    ),
]
PrefixOption = Annotated[
    str,
    typer.Option(
        "--prefix",
        help="Registry/organization prefix of the images' names and tags, e.g. registry.example/org.",
        envvar="GEN_PREFIX",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as one JSON document.")]
ReportDirOption = Annotated[
    Path | None,
    typer.Option(
        "--report-dir",
        help="Where the reports go (default: .gen/ of the project).",
        show_default=False,
        callback=looked_up,
    ),
]
