"""Render scale: load, validate and render N generated specs in one process.

The specs form chains of depth 5 (a bootstrapped root, then four children each adding packages,
a user, env and a label), so merging and the child-delta logic are exercised. Time per spec
should stay flat as N grows (linear total); peak memory is traced with tracemalloc. Before the
time is reported, the render is checked: N images, each with a Dockerfile naming its parent.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from generator.render.project import render_project
from generator.spec import load_project

CHAIN_DEPTH = 5
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


def measure(counts: tuple[int, ...] = (10, 100, 1000), runs: int = 3) -> list[dict]:
    rows = []
    for count in counts:
        with tempfile.TemporaryDirectory(prefix="gen-bench-render-") as tmp:
            write_specs(Path(tmp), count)
            seconds = statistics.median(render_once(Path(tmp), count)[0] for _ in range(runs))
            peak = render_once(Path(tmp), count, trace_memory=True)[1]
        rows.append({"specs": count, "seconds": round(seconds, 3), "ms_per_spec": round(1000 * seconds / count, 2),
                     "peak_mb": round(peak / 1e6, 1)})
    return rows
