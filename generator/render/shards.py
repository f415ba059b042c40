"""A render written to output/ on every core: the build order is dealt out to processes.

Rendering is Python (templates, YAML, JSON) and writing is tens of thousands of file system
calls; one process of 1000 specs spends about 1.2 s on the first and as much on the second. With
n cores, n - 1 forked children (generator.forked) each render and stage every n-th image into the
writer's staging tree while this process does its own share; each child answers with one JSON
document on a pipe (what it staged, or its errors; what it read goes to the memo's record), and
this process puts the staged folders in place (OutputWriter.finish). Every process checks and
plans every image, so a spec error is found by each and said once. Small projects render in one
process: a fork costs more than it saves there.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from generator.errors import Diagnostic, GenError, SpecError, UsageError
from generator.forked import Forked, deal_out, interleave, process_count
from generator.memo import note_reads, recording
from generator.render import OutputWriter, StagedShard, WriteReport, image_diff, refuse_links, stale_diff
from generator.render.project import ProjectRender, render_project
from generator.spec import Project

SHARD_MIN_IMAGES = 64  # below this a render stays in one process


@dataclass
class ShardedRender:
    result: ProjectRender  # this process's share of the images, and the whole project's warnings
    report: WriteReport


def render_to_output(project: Project, templates_dir: Path | None, output_dir: Path, prune: bool) -> ShardedRender:
    """Render the project into output/ (every changed folder replaced, or none on any error)."""
    names = project.order()
    processes = _process_count(len(names))
    with OutputWriter(output_dir, names, prune) as writer:
        children: list[Forked] = []
        try:
            for k in range(1, processes):
                share = set(names[k::processes])
                work = functools.partial(_child_share, project, templates_dir, output_dir, writer.staging, share)
                children.append(Forked.start(work))
            errors: list[Diagnostic] = []
            result = ProjectRender([], [])
            try:
                result = render_project(project, templates_dir, on_rendered=writer.add, share=set(names[0::processes]))
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
            note_reads(answer["files_read"], answer["dirs_listed"])
        sharded.report = writer.finish()
        return sharded


def _process_count(images: int) -> int:
    return process_count(images, SHARD_MIN_IMAGES)


def _raise_errors(errors: list[Diagnostic], answers: list[dict]) -> None:
    """Every process's spec errors as one SpecError (each process finds the same check errors,
    its own template errors); a child that failed otherwise is one GenError, bad input (exit 2)
    kept as a UsageError."""
    for answer in answers:
        if "failed" in answer:
            raise (UsageError if answer.get("exit_code") == UsageError.exit_code else GenError)(answer["failed"])
    found = dict.fromkeys([*errors, *(Diagnostic(**d) for answer in answers for d in answer.get("errors", []))])
    if not found:
        return
    ordered = sorted((d for d in found if d.severity == "error"), key=lambda d: (d.file, d.line, d.column))
    raise SpecError(ordered + [d for d in found if d.severity != "error"])


def _child_share(
    project: Project, templates_dir: Path | None, output_dir: Path, staging: Path, share: set[str]
) -> bytes:
    """A child's work: render and stage its share; the answer says what it staged, what it read
    (for the memo) and its errors."""
    from generator.render import Stager

    answer: dict = {}
    stager = Stager(output_dir, staging)
    with recording() as (files_read, dirs_listed):
        try:
            render_project(project, templates_dir, on_rendered=stager.add, share=share)
            answer["staged"] = stager.finish().to_json()
        except SpecError as exc:
            stager.abandon()
            answer["errors"] = [asdict(d) for d in exc.diagnostics]
        except GenError as exc:
            stager.abandon()
            answer["failed"], answer["exit_code"] = str(exc), exc.exit_code
        except OSError as exc:  # as the parent's OutputWriter says it
            stager.abandon()
            answer["failed"] = f"cannot write {output_dir}: {exc}; output/ is as it was"
    answer["files_read"], answer["dirs_listed"] = sorted(files_read), sorted(dirs_listed)
    return json.dumps(answer).encode()


def check_output(
    project: Project, templates_dir: Path | None, output_dir: Path, prune: bool
) -> tuple[list[Diagnostic], str]:
    """`gen render --check`: the warnings, and the diff from output/ to what a render would write
    ("" when up to date), every image rendered and compared by one process of one per core."""
    refuse_links(output_dir)
    names = project.order()
    answers = deal_out(names, SHARD_MIN_IMAGES, functools.partial(_check_share, project, templates_dir, output_dir))
    for answer in answers:
        note_reads(answer["files_read"], answer["dirs_listed"])
    _raise_errors([], answers)
    diff = "".join(interleave([answer["diffs"] for answer in answers]))
    if prune:
        diff += stale_diff(output_dir, set(names))
    return [Diagnostic(**d) for d in answers[0]["warnings"]], diff


def _check_share(project: Project, templates_dir: Path | None, output_dir: Path, share: Sequence[str]) -> dict:
    """One process's share of a check: each image's diff, in the share's order, or the errors."""
    answer: dict = {}
    with recording() as (files_read, dirs_listed):
        try:
            result = render_project(project, templates_dir, share=set(share))
            answer["diffs"] = [image_diff(output_dir, image) for image in result.images]
            answer["warnings"] = [asdict(d) for d in result.warnings]
        except SpecError as exc:
            answer["errors"] = [asdict(d) for d in exc.diagnostics]
        except GenError as exc:
            answer["failed"], answer["exit_code"] = str(exc), exc.exit_code
    answer["files_read"], answer["dirs_listed"] = files_read, dirs_listed
    return answer
