"""Render scale: load, validate and render N generated specs in one process; then whole `gen`
processes on the largest project, files written, as users run them.

The specs form chains of depth 5 (a bootstrapped root, then four children each adding packages,
a user, env and a label), so merging and the child-delta logic are exercised. Time per spec
should stay flat as N grows (linear total); peak memory is traced with tracemalloc. Before the
time is reported, the render is checked: N images, each with a Dockerfile naming its parent.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

from common import Section, Size, median, run, size_from_argv, timed

from generator.render.project import render_project
from generator.spec import load_project

CHAIN_DEPTH = 5
TARGET_SPECS = 1000  # the target is stated for this many specs


@dataclass(frozen=True)
class Params:
    largest: int  # specs in the largest project; the projects grow tenfold from 10
    runs: int  # timed renders per project, median taken

    @property
    def counts(self) -> tuple[int, ...]:
        counts = [10]
        while counts[-1] < self.largest:
            counts.append(counts[-1] * 10)
        return tuple(counts)


PARAMS = {Size.SMOKE: Params(100, 1), Size.QUICK: Params(1000, 2), Size.FULL: Params(1000, 5)}
ROOT_SPEC = """name: {name}
tags: ["1"]
base: {{distro: debian, release: bookworm, bootstrap: {{include: [execline, s6]}}}}
packages: [ca-certificates]
"""
CHILD_SPEC = """name: {name}
tags: ["1"]
extends: {parent}
packages: [pkg{index}]
users: [{{name: u{index}, uid: {uid}}}]
env: {{VAR{index}: "{index}"}}
labels: {{com.example.n: "{index}"}}
"""


def write_specs(directory: Path, count: int) -> None:
    specs = directory / "specs"
    specs.mkdir(parents=True)
    for i in range(count):
        depth = i % CHAIN_DEPTH
        name = f"img{i:05d}"
        if depth == 0:
            text = ROOT_SPEC.format(name=name)
        else:
            text = CHILD_SPEC.format(name=name, parent=f"img{i - 1:05d}", index=i, uid=2000 + depth)
        (specs / f"{name}.yaml").write_text(text)


def render_once(directory: Path, count: int, trace_memory: bool = False) -> tuple[float, int]:
    """(seconds, peak bytes) of loading and rendering the project in memory. Memory is traced in
    a run of its own: tracemalloc slows Python several times over."""
    if trace_memory:
        tracemalloc.start()
    start = time.perf_counter()
    project = load_project([directory / "specs"], directory)
    images = render_project(project).images
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] if trace_memory else 0
    tracemalloc.stop()
    if len(images) != count:
        raise AssertionError(f"rendered {len(images)} images, expected {count}")
    child = next(i for i in images if i.name == "img00001")
    if "ARG BASE_IMAGE=localhost/gen/img00000:1" not in child.file("Dockerfile").data.decode():
        raise AssertionError("a child's Dockerfile does not build FROM its parent")
    return elapsed, peak


def measure(size: Size) -> Section:
    params = PARAMS[size]
    runs = params.runs
    section = Section(
        f"Render scale: load, validate and render N specs in one process (median of {runs})",
        ["specs", "seconds", "ms per spec", "peak MB"],
    )
    for count in params.counts:
        with tempfile.TemporaryDirectory(prefix="gen-bench-render-") as tmp:
            write_specs(Path(tmp), count)
            seconds = median([render_once(Path(tmp), count)[0] for _ in range(runs)])
            peak = render_once(Path(tmp), count, trace_memory=True)[1]
        section.rows.append([count, round(seconds, 3), round(1000 * seconds / count, 2), round(peak / 1e6, 1)])
    section.notes.append(scale_note(section.rows))
    # whole processes write 41,000 files: this VM's file system time varies 2-4x from run to run,
    # so even a quick run takes the median of three (a median of two is their mean)
    return [section, whole_processes(params.largest, max(runs, 3) if size is not Size.SMOKE else runs)]


def _gen(project: Path, *args: str) -> None:
    run([sys.executable, "-m", "generator", *args, "-C", str(project)], timeout=600, stdout=subprocess.DEVNULL)


TARGETS = {  # issue 21's targets for 1000 specs, whole processes
    "gen render, empty output/, no memo": 3.0,
    "gen render, nothing changed": 1.0,
    "gen validate, nothing changed": 1.0,
}


def whole_processes(count: int, runs: int) -> Section:
    """Each command as a process of its own, as users run them. "no memo" runs start without
    .gen/ (a fresh clone, or the first run after gen itself changed): they parse, check and
    render every spec; the others find .gen/render-memo.json of the run before and, when nothing
    it read or wrote changed, answer from it. A change of one spec re-renders into a staging tree
    (unchanged files hard-linked) swapped in for output/ at once."""
    section = Section(
        f"Whole gen processes on {count} specs, files written (median of {runs})",
        ["command", "seconds", "target", "met"],
    )
    with tempfile.TemporaryDirectory(prefix="gen-bench-process-") as tmp:
        project = Path(tmp)
        write_specs(project, count)

        def cold(*args: str) -> float:
            shutil.rmtree(project / ".gen", ignore_errors=True)
            return timed(lambda: _gen(project, *args))[0]

        def warm(*args: str) -> float:
            return timed(lambda: _gen(project, *args))[0]

        changed_spec = project / "specs" / "img00001.yaml"
        original = changed_spec.read_text()

        def change_one(index: int) -> float:
            changed_spec.write_text(original + f"description: run {index}\n")
            return warm("render")

        def first_render(index: int) -> float:
            """A project of its own each time: deleting the last run's 41,000 entries first would
            time this file system's cleanup of them too (it varied 4.5 to 15 s here)."""
            fresh = Path(tmp) / f"first-{index}"
            shutil.copytree(project / "specs", fresh / "specs")
            return timed(lambda: _gen(fresh, "render"))[0]

        timings = {"gen validate, no memo": median([cold("validate") for _ in range(runs)])}
        timings["gen validate, nothing changed"] = median([warm("validate") for _ in range(runs)])
        timings["gen render, empty output/, no memo"] = median([first_render(i) for i in range(runs)])
        cold("render")  # the project's own output/, for the runs below
        timings["gen render, nothing changed"] = median([warm("render") for _ in range(runs)])
        timings["gen render, one spec changed"] = median([change_one(i) for i in range(runs)])
        timings["gen render --check, nothing changed"] = median([warm("render", "--check") for _ in range(runs)])
        timings["gen render --check, no memo"] = median([cold("render", "--check") for _ in range(runs)])
        if not (project / "output" / "img00001" / "Dockerfile").is_file():
            raise AssertionError("gen render wrote no output")
    for name, seconds in timings.items():
        target = TARGETS.get(name)
        met = "" if target is None else ("yes" if seconds < target else "no")
        section.rows.append([name, round(seconds, 2), f"< {target:g} s" if target else "", met])
    section.notes.append(
        "A render that changes one spec of "
        f"{count} takes {timings['gen render, one spec changed']:.2f} s: it parses, checks and renders "
        "every spec and compares every file (the memo answers only when nothing changed)."
    )
    return section


def scale_note(rows: list[list]) -> str:
    per_spec, largest, seconds = [row[2] for row in rows], rows[-1][0], rows[-1][1]
    target = (
        f"{seconds} s ({'met' if seconds < 2 else 'missed'})"
        if largest == TARGET_SPECS
        else f"not measured at {largest} specs"
    )
    return (
        f"Time per spec from {rows[0][0]} to {largest} specs: {per_spec[0]} -> {per_spec[-1]} ms (linear "
        f"growth keeps it flat). Target: {TARGET_SPECS} specs under 2 s: {target}."
    )


if __name__ == "__main__":
    print(measure(size_from_argv(sys.argv)).markdown())
