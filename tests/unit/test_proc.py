"""The background-process helper: whatever ends the with block, its process group is stopped and
its process reaped."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from generator.builder.proc import ToolError, background


def _gone(pid: int) -> bool:
    """No such process, or only a zombie left for init to reap (it is not ours to wait for)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def _wait_for(path: Path) -> str:
    deadline = time.monotonic() + 10
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} was never written"
        time.sleep(0.01)
    return path.read_text().strip()


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_error_in_the_block_stops_the_process_group_and_reaps_the_child(tmp_path, error):
    grandchild_pid = tmp_path / "grandchild"
    script = f"sleep 60 & echo $! > {grandchild_pid}; wait"
    with pytest.raises(error):
        with background(["sh", "-c", script], dict(os.environ)) as process:
            child = process.pid
            grandchild = int(_wait_for(grandchild_pid))
            raise error("stop")
    with pytest.raises(ChildProcessError):  # reaped: no zombie of ours is left to wait for
        os.waitpid(child, os.WNOHANG)
    assert _gone(child)
    deadline = time.monotonic() + 10
    while not _gone(grandchild):  # the group's SIGTERM reached the program the child started
        assert time.monotonic() < deadline, "the grandchild outlived the block"
        time.sleep(0.01)


def test_a_process_that_exits_early_says_why_in_its_own_words():
    with background(["sh", "-c", "echo starting >&2; echo 'no socket: denied' >&2; exit 3"], dict(os.environ)) as p:
        deadline = time.monotonic() + 10
        while not p.exited():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert p.stderr_tail() == "starting / no socket: denied"
        assert p.stderr_tail(lines=1) == "no socket: denied"


@pytest.mark.parametrize("how", ["background", "run_quiet", "run_logged"])
def test_a_missing_program_is_one_tool_error_line(how, tmp_path):
    """Every way gen runs a tool says a missing one the same way (run_logged let it through)."""
    from generator.builder.proc import Cancel, run_logged, run_quiet

    argv, env = ["gen-no-such-tool"], dict(os.environ)
    with pytest.raises(ToolError, match="^gen-no-such-tool is not installed; run `gen doctor`$"):
        if how == "background":
            with background(argv, env):
                pass
        elif how == "run_quiet":
            run_quiet(argv, env)
        else:
            with (tmp_path / "log").open("w") as log:
                run_logged(argv, env, log, Cancel())


def test_run_logged_writes_each_line_as_it_comes_and_stops_on_cancel(tmp_path):
    """A build's log follows it live (the interrupted-build tests wait for a step in it; they once
    found it only when the 8 KiB buffer was flushed at the end), and cancel stops the tool."""
    import threading

    from generator.builder.proc import Cancel, Interrupted, run_logged

    cancel, path, seen = Cancel(), tmp_path / "build.log", []

    def watch() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "STEP 1" not in (path.read_text() if path.exists() else ""):
            time.sleep(0.05)
        seen.append(time.monotonic())
        cancel.set()

    watcher = threading.Thread(target=watch)
    started = time.monotonic()
    with path.open("w") as log:
        watcher.start()
        with pytest.raises(Interrupted):
            # "ST""EP": the log's first line is the command, which must not hold the marker itself.
            run_logged(["sh", "-c", 'printf "ST""EP 1: RUN sleep 30\\n"; sleep 30'], dict(os.environ), log, cancel)
    watcher.join()
    assert seen[0] - started < 5 and time.monotonic() - started < 15
