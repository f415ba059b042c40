"""A render written to output/ on every core: the build order is dealt out to processes.

Rendering is Python (templates, YAML, JSON) and writing is tens of thousands of file system
calls; one process of 1000 specs spends about 1.2 s on the first and as much on the second. With
n cores, n - 1 forked children each render and stage every n-th image into the writer's staging
tree while this process does its own share; each child answers with one JSON document on a pipe
(what it staged, the files it read for the memo, or its errors), and this process puts the staged
folders in place (OutputWriter.finish). Every process checks and plans every image, so a spec
error is found by each and said once. Small projects render in one process: a fork costs more than it saves there.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path

from generator.errors import Diagnostic, GenError, SpecError
from generator.memo import recording
from generator.render import OutputWriter, StagedShard, WriteReport
from generator.render.project import ProjectRender, render_project
from generator.spec import Project

SHARD_MIN_IMAGES = 64  # below this a render stays in one process
MAX_PROCESSES = 4


@dataclass
class ShardedRender:
    result: ProjectRender  # this process's share of the images, and the whole project's warnings
    report: WriteReport
    files_read: set[str] = field(default_factory=set)  # by the children, for the memo
    dirs_listed: set[str] = field(default_factory=set)


def render_to_output(project: Project, templates_dir: Path | None, output_dir: Path, prune: bool) -> ShardedRender:
    """Render the project into output/ (every changed folder replaced, or none on any error)."""
    names = project.order()
    processes = _process_count(len(names))
    with OutputWriter(output_dir, names, prune) as writer:
        children: list[_Child] = []
        try:
            for k in range(1, processes):
                children.append(_Child.fork(project, templates_dir, output_dir, writer.staging, (k, processes)))
            errors: list[Diagnostic] = []
            result = ProjectRender([], [])
            try:
                result = render_project(project, templates_dir, on_rendered=writer.add, shard=(0, processes))
            except SpecError as exc:
                errors = exc.diagnostics
            answers = [child.answer() for child in children]
        finally:
            for child in children:
                child.reap()
        _raise_errors(errors, answers)
        sharded = ShardedRender(result, WriteReport((), (), ()))
        for answer in answers:
            writer.merge(StagedShard.from_json(answer["staged"]))
            sharded.files_read.update(answer["files_read"])
            sharded.dirs_listed.update(answer["dirs_listed"])
        sharded.report = writer.finish()
        return sharded


def _process_count(images: int) -> int:
    if images < SHARD_MIN_IMAGES or not hasattr(os, "fork"):
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), MAX_PROCESSES))


def _raise_errors(errors: list[Diagnostic], answers: list[dict]) -> None:
    """Every process's spec errors as one SpecError (each process finds the same check errors,
    its own template errors); a child that failed otherwise is one GenError."""
    for answer in answers:
        if "failed" in answer:
            raise GenError(answer["failed"])
    found = dict.fromkeys([*errors, *(Diagnostic(**d) for answer in answers for d in answer.get("errors", []))])
    if not found:
        return
    ordered = sorted((d for d in found if d.severity == "error"), key=lambda d: (d.file, d.line, d.column))
    raise SpecError(ordered + [d for d in found if d.severity != "error"])


class _Child:
    """One forked render process and the read end of its answer pipe."""

    def __init__(self, pid: int, answers: int) -> None:
        self.pid = pid
        self._answers = answers
        self._reaped = False
        self._status = "running"

    @classmethod
    def fork(
        cls, project: Project, templates_dir: Path | None, output_dir: Path, staging: Path, shard: tuple[int, int]
    ) -> _Child:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns, never prints
            os.close(read_end)
            _serve(write_end, project, templates_dir, output_dir, staging, shard)
        os.close(write_end)
        return cls(pid, read_end)

    def answer(self) -> dict:
        with os.fdopen(self._answers, "rb") as pipe:
            data = pipe.read()
        self._answers = -1
        self._reap(wait=True)
        try:
            return json.loads(data)
        except ValueError:
            raise GenError(f"a render process ended without an answer ({self._status})") from None

    def reap(self) -> None:
        """Make sure the child is gone (an interrupt or an error here ends its share)."""
        if self._answers >= 0:
            os.close(self._answers)
            self._answers = -1
        if not self._reaped:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._reap(wait=True)

    def _reap(self, wait: bool) -> None:
        if self._reaped:
            return
        _, status = os.waitpid(self.pid, 0 if wait else os.WNOHANG)
        self._reaped = True
        self._status = f"exit status {os.waitstatus_to_exitcode(status)}"


def _serve(
    answers: int, project: Project, templates_dir: Path | None, output_dir: Path, staging: Path, shard: tuple[int, int]
) -> None:
    """A child's whole life: render and stage its share, answer, exit without Python's shutdown
    (the parent's open files and atexit handlers are the parent's). Ctrl-C is the parent's to
    handle: it kills the children."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = 0
    try:
        answer: dict = {}
        from generator.render import Stager

        stager = Stager(output_dir, staging)
        with recording() as (files_read, dirs_listed):
            try:
                render_project(project, templates_dir, on_rendered=stager.add, shard=shard)
                answer["staged"] = stager.finish().to_json()
            except SpecError as exc:
                stager.abandon()
                answer["errors"] = [asdict(d) for d in exc.diagnostics]
            except GenError as exc:
                stager.abandon()
                answer["failed"] = str(exc)
            except OSError as exc:  # as the parent's OutputWriter says it
                stager.abandon()
                answer["failed"] = f"cannot write {output_dir}: {exc}; output/ is as it was"
        answer["files_read"], answer["dirs_listed"] = sorted(files_read), sorted(dirs_listed)
        data = json.dumps(answer).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(answers, view) :]
    except BaseException as exc:  # noqa: BLE001 - said by the parent as one line, never a traceback here
        code = 1
        try:
            os.write(answers, json.dumps({"failed": f"a render process failed: {type(exc).__name__}: {exc}"}).encode())
        except BaseException:  # noqa: BLE001, S110 - the parent sees no answer and says so
            pass
    finally:
        os._exit(code)
