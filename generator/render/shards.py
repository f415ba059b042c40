"""A render written to output/ on every core: the build order is dealt out to processes.

Rendering is Python (templates, YAML, JSON) and writing is tens of thousands of file system
calls; one process of 1000 specs spends about 1.2 s on the first and as much on the second. With
n cores, n - 1 forked children (generator.forked) each render and stage every n-th image into the writer's staging
tree while this process does its own share; each child answers with one JSON document on a pipe
(what it staged, the files it read for the memo, or its errors), and this process puts the staged
folders in place (OutputWriter.finish). Every process checks and plans every image, so a spec
error is found by each and said once. Small projects render in one process: a fork costs more than it saves there.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from generator.errors import Diagnostic, GenError, SpecError
from generator.forked import Forked, process_count
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
        children: list[Forked] = []
        try:
            for k in range(1, processes):
                share = functools.partial(
                    _child_share, project, templates_dir, output_dir, writer.staging, (k, processes)
                )
                children.append(Forked.start(share))
            errors: list[Diagnostic] = []
            result = ProjectRender([], [])
            try:
                result = render_project(project, templates_dir, on_rendered=writer.add, shard=(0, processes))
            except SpecError as exc:
                errors = exc.diagnostics
            answers = [json.loads(child.answer()) for child in children]
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
    return process_count(images, SHARD_MIN_IMAGES, MAX_PROCESSES)


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


def _child_share(
    project: Project, templates_dir: Path | None, output_dir: Path, staging: Path, shard: tuple[int, int]
) -> bytes:
    """A child's work: render and stage its share; the answer says what it staged, what it read
    (for the memo) and its errors."""
    from generator.render import Stager

    answer: dict = {}
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
    return json.dumps(answer).encode()
