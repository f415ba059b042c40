"""A --templates directory and a `gen ci` target that lead out of the project through a symlink
are refused, nothing changed; an interrupt at any point of a forked render leaves no process
running, no traceback, and no staging tree the next render cannot remove."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import generator.render as render
from generator import forked
from generator.errors import GenError, SpecError, UsageError
from generator.naming import STAGING_PREFIX
from generator.rebuild.ci import write_pipeline
from generator.render.project import render_project
from generator.render.shards import check_output, render_to_output
from generator.spec import load_project

SPEC = (
    "name: x\ntags: [a]\nbase: {distro: debian, release: bookworm, bootstrap: {variant: minbase}}\n"
    "init: {kind: none}\ncmd: [sh]\n"
)
SECRET = "SECRET-OUTSIDE-THE-PROJECT"


def _gone(pid: int) -> bool:
    """The process ended (a zombie not yet reaped by its new parent counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except FileNotFoundError:
        return True


# --- 7: --templates gets the spec field's check ---------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "outside" / "tdir" / "family").mkdir(parents=True)
    (tmp_path / "outside" / "secret.j2").write_text(SECRET + "\n")
    (tmp_path / "outside" / "tdir" / "family" / "apt.j2").write_text(SECRET + "\n")
    root = tmp_path / "project"
    (root / "specs").mkdir(parents=True)
    (root / "specs" / "x.yaml").write_text(SPEC)
    return root


@pytest.mark.parametrize("layout", ["a link in it", "itself a link out", "outside the project"])
def test_a_templates_option_that_leads_out_is_refused_before_any_template_runs(project, layout):
    tpl = project / "tpl"
    if layout == "a link in it":
        (tpl / "family").mkdir(parents=True)
        (tpl / "family" / "apt.j2").symlink_to(project.parent / "outside" / "secret.j2")
    elif layout == "itself a link out":
        tpl.symlink_to("../outside/tdir")
    else:
        tpl = project.parent / "outside" / "tdir"
    loaded = load_project([project / "specs"], project)
    expected = "holds a symlink" if layout == "a link in it" else "outside the project"
    with pytest.raises(SpecError, match=expected) as caught:
        render_project(loaded, tpl)
    assert [d.file for d in caught.value.diagnostics] == ["--templates"]
    with pytest.raises(SpecError, match=expected):  # render --check
        check_output(loaded, tpl, project / "output", prune=True)
    with pytest.raises(SpecError, match=expected):
        render_to_output(loaded, tpl, project / "output", prune=True)
    assert not (project / "output").exists(), "nothing written"


def test_a_templates_option_inside_the_project_still_renders(project):
    (project / "tpl" / "family").mkdir(parents=True)
    (project / "tpl" / "family" / "apt.j2").write_text('{% extends "bundled/family/apt.j2" %}')
    images = render_project(load_project([project / "specs"], project), project / "tpl").images
    assert [image.name for image in images] == ["x"]


# --- 8: `gen ci` writes only through real directories of the project ---------------------------------


@pytest.mark.parametrize("link", [".github", ".github/workflows"])
def test_ci_refuses_to_write_through_a_directory_link(tmp_path, link):
    outside = tmp_path / "outside"
    outside.mkdir()
    project = tmp_path / "project"
    (project / link).parent.mkdir(parents=True, exist_ok=True)
    (project / link).symlink_to(outside)
    with pytest.raises(UsageError, match=f"{link} is a symlink"):
        write_pipeline(project, "github", "on: push\n")
    assert list(outside.iterdir()) == [], "nothing written outside"


def test_ci_writes_into_real_directories_and_says_a_blocked_path_in_one_line(tmp_path):
    assert write_pipeline(tmp_path, "github", "on: push\n").read_text() == "on: push\n"
    (tmp_path / "sub").write_text("a file where a directory should be\n")
    with pytest.raises(GenError, match="cannot write"):
        write_pipeline(tmp_path, "github", "x\n", tmp_path / "sub" / "ci.yml")


# --- 9: an interrupted forked run ends every child and says one line -----------------------------------


@contextlib.contextmanager
def _interrupted_after(seconds: float) -> Iterator[None]:
    """A KeyboardInterrupt `seconds` from now, wherever this process is then (as a Ctrl-C is);
    a forked child does not inherit the timer."""

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _recording_starts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    started: list[int] = []
    real = forked.Forked.start.__func__  # type: ignore[attr-defined]

    def recorded(cls, work):
        child = real(cls, work)
        started.append(child.pid)
        return child

    monkeypatch.setattr(forked.Forked, "start", classmethod(recorded))
    return started


def test_an_interrupt_while_a_child_answers_is_the_interrupt_and_the_child_is_killed(monkeypatch):
    """Was: the interrupt inside answer()'s read closed the pipe, reap() closed it again (EBADF,
    a traceback) before its SIGKILL, and the child ran on."""
    parent = os.getpid()

    def work(share):
        if os.getpid() != parent:
            time.sleep(30)
        return list(share)

    started = _recording_starts(monkeypatch)
    monkeypatch.setattr(forked, "process_count", lambda items, minimum: 2)  # one child, on any machine
    with _interrupted_after(0.3), pytest.raises(KeyboardInterrupt):
        forked.deal_out(list(range(4)), 2, work)
    assert started and all(_gone(pid) for pid in started), "every child killed"


def test_reap_is_safe_after_an_answer_and_twice():
    child = forked.Forked.start(lambda: b"done")
    assert child.answer() == b"done"
    child.reap()
    child.reap()
    slow = forked.Forked.start(lambda: time.sleep(30) or b"")
    slow.reap()
    slow.reap()
    assert _gone(slow.pid)


def test_a_ctrl_c_right_after_the_fork_never_runs_the_parents_code_in_the_child(monkeypatch):
    """SIGINT delivered to the child before it ignores SIGINT: without the signals held back
    across the fork, KeyboardInterrupt would unwind the parent's own code inside the child."""
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid == 0:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):  # the interpreter's next check for signals
                    pass
            except BaseException:  # noqa: BLE001 - in the child: never back into pytest
                os._exit(99)
        return pid

    monkeypatch.setattr(forked.os, "fork", fork)
    child = forked.Forked.start(lambda: b"answered")
    try:
        assert child.answer() == b"answered"
    finally:
        child.reap()


def test_a_child_dies_with_its_parent_even_when_the_parent_is_killed(tmp_path):
    script = (
        "import sys, time\n"
        "from generator import forked\n"
        "child = forked.Forked.start(lambda: time.sleep(30) or b'')\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(30)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 5
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _gone(pid), "the child outlived its killed parent"


def _leftover(tmp_path: Path) -> Path:
    staging = tmp_path / f"{STAGING_PREFIX}left"
    (staging / "img" / "sub").mkdir(parents=True)
    (staging / "img" / "sub" / "f").write_text("x")
    return staging


def test_a_leftover_still_being_written_is_removed_after_a_retry(tmp_path, monkeypatch):
    _leftover(tmp_path)
    real, calls = render.shutil.rmtree, []

    def busy_once(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:  # as when a writer adds a file between rmtree's listing and its rmdir
            raise OSError(errno.ENOTEMPTY, "Directory not empty", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(render.shutil, "rmtree", busy_once)
    render._remove_leftover_staging(tmp_path / "output")
    assert len(calls) == 2 and not list(tmp_path.glob(f"{STAGING_PREFIX}*"))


def test_a_leftover_that_cannot_be_removed_is_one_gen_error(tmp_path, monkeypatch):
    _leftover(tmp_path)

    def always_busy(path, *args, **kwargs):
        raise OSError(errno.ENOTEMPTY, "Directory not empty", str(path))

    monkeypatch.setattr(render.shutil, "rmtree", always_busy)
    monkeypatch.setattr(render, "LEFTOVER_REMOVAL_SECONDS", 0.05)
    with pytest.raises(GenError, match="cannot remove .*interrupted gen"):
        render._remove_leftover_staging(tmp_path / "output")


def test_a_writer_still_running_in_a_leftover_is_stopped_by_the_removal(tmp_path):
    """An orphaned child writes by path into the staging tree: renamed aside, its next write fails."""
    staging = _leftover(tmp_path)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the writer: never returns into pytest
        code = 0
        try:
            os.close(ready_r)
            deadline = time.monotonic() + 10
            for i in range(10**7):
                os.mkdir(f"{staging}/img/d{i}")
                with open(f"{staging}/img/d{i}/f", "x") as handle:
                    handle.write("x")
                if i == 50:
                    os.write(ready_w, b"1")
                if time.monotonic() > deadline:
                    code = 1  # never stopped
                    break
        except BaseException:  # noqa: BLE001 - the expected end: its directory is gone
            pass
        os._exit(code)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"1"
        render._remove_leftover_staging(tmp_path / "output")
    finally:
        os.close(ready_r)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the writer was stopped"
    assert not list(tmp_path.glob(f"{STAGING_PREFIX}*"))


def test_an_atomic_write_replaces_a_link_without_reading_or_writing_through_it(tmp_path):
    """A committed .gitlab-ci.yml that is a link out: gen's text replaces the link, and the file
    it pointed at is neither compared with (read) nor changed, even when it holds the same text."""
    from generator.files import write_text_atomic

    outside = tmp_path / "outside.yml"
    outside.write_text("same\n")
    link = tmp_path / "project" / ".gitlab-ci.yml"
    link.parent.mkdir()
    link.symlink_to(outside)
    assert write_text_atomic(link, "same\n") is True
    assert not link.is_symlink() and link.read_text() == "same\n"
    assert outside.read_text() == "same\n"
