"""Running build tools as subprocesses: cancellable, logged line by line, never sharing gen's
terminal process group (so Ctrl-C reaches gen alone, and gen decides what to stop and when)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from generator.errors import GenError

TAIL_LINES = 30


class Interrupted(GenError):
    """gen was asked to stop (SIGINT/SIGTERM); what finished stays, nothing half-done is tagged."""

    exit_code = 130


class ToolError(GenError):
    """A build tool failed; carries its last output lines."""

    keeps_lines = True  # the tool's stderr, line by line

    def __init__(self, message: str, tail: list[str] | None = None, log: Path | None = None):
        super().__init__(message)
        self.tail = tail or []
        self.log = log


class Cancel:
    """A shared stop flag: set by the signal handler, polled by every running tool."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self.is_set:
            raise Interrupted("interrupted")


def run_logged(
    argv: list[str],
    env: dict[str, str],
    log: IO[str],
    cancel: Cancel,
    on_line: Callable[[str], None] | None = None,
    cwd: Path | None = None,
    timeout: float = 3600,
) -> tuple[int, list[str]]:
    """Run argv, copying its merged output to log and each line to on_line. Returns the exit
    code and the last lines. On cancel the tool's whole process group gets SIGTERM, then SIGKILL."""
    cancel.check()
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    with _starting(argv):
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    tail: deque[str] = deque(maxlen=TAIL_LINES)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()  # line by line: `tail -f` on the log follows a build as it runs
            tail.append(line.rstrip("\n"))
            if on_line:
                on_line(line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if cancel.is_set or time.monotonic() > deadline:
            _stop_group(proc)
            reader.join(timeout=10)
            if cancel.is_set:
                raise Interrupted(f"interrupted while running {argv[0]}")
            raise ToolError(f"{argv[0]} timed out after {timeout:.0f} s", list(tail))
        time.sleep(0.05)
    reader.join(timeout=10)
    return proc.returncode, list(tail)


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def _starting(argv: list[str]) -> Iterator[None]:
    """A tool that cannot start is one line saying so."""
    try:
        yield
    except FileNotFoundError:
        raise ToolError(f"{argv[0]} is not installed; run `gen doctor`") from None
    except OSError as exc:  # not executable, too many processes
        raise ToolError(f"{argv[0]} cannot run: {exc}") from None


def run_quiet(
    argv: list[str], env: dict[str, str], timeout: float = 300, check: bool = True, stdin_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a short query (inspect, tag, images); raises ToolError with stderr on failure.
    stdin_text: what the tool reads on stdin (a secret: never on its command line)."""
    try:
        with _starting(argv):
            proc = subprocess.run(
                argv,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                start_new_session=True,
                **({"stdin": subprocess.DEVNULL} if stdin_text is None else {"input": stdin_text}),
            )
    except subprocess.TimeoutExpired:
        raise ToolError(f"{' '.join(argv[:3])} timed out after {timeout:.0f} s; run `gen doctor`") from None
    if check and proc.returncode != 0:
        raise ToolError(
            f"{' '.join(argv)} failed (exit {proc.returncode}): {proc.stderr.strip()}",
            proc.stderr.strip().splitlines()[-TAIL_LINES:],
        )
    return proc


class BackgroundProcess:
    """A process `background` runs; its stderr collects in a file (a pipe nobody reads would fill
    and stall it)."""

    def __init__(self, proc: subprocess.Popen, stderr: IO[bytes]) -> None:
        self._proc = proc
        self._stderr = stderr

    @property
    def pid(self) -> int:
        return self._proc.pid

    def exited(self) -> bool:
        return self._proc.poll() is not None

    def stderr_tail(self, lines: int = 3) -> str:
        """Its last stderr lines, joined: why it stopped, in its own words."""
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace")
        return " / ".join([line.strip() for line in text.splitlines() if line.strip()][-lines:])


@contextlib.contextmanager
def background(argv: list[str], env: dict[str, str]) -> Iterator[BackgroundProcess]:
    """Run argv in the background, in a session of its own, for the duration of the with block.
    On leaving it, however (an error, Ctrl-C), the whole process group gets SIGTERM, then SIGKILL
    if it lingers (each wait bounded), and the process is reaped: no zombie, and nothing it started
    in its group left running."""
    with tempfile.TemporaryFile() as stderr:
        with _starting(argv):
            proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        try:
            yield BackgroundProcess(proc, stderr)
        finally:
            _stop_group(proc)
