"""`gen build --since REV`: the images whose inputs changed in (REV, HEAD], plus their dependents."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from generator.builder.outputs import OutputImage, dependents
from generator.builder.proc import ToolError, run_quiet
from generator.errors import UsageError

# Every image renders through templates/, so a change there touches them all.
SHARED_INPUTS = ("templates",)


def changed_paths(project_root: Path, rev: str) -> list[str]:
    """Paths changed between rev and HEAD, relative to the project root (git as a subprocess)."""
    argv = ["git", "-C", str(project_root), "diff", "--name-only", "--relative", f"{rev}..HEAD", "--"]
    try:
        proc = run_quiet(argv, dict(os.environ), timeout=60, check=False)
    except ToolError as exc:
        raise UsageError(f"--since needs git: {exc}") from None
    if proc.returncode != 0:
        raise UsageError(
            f"--since {rev}: git cannot diff it against HEAD: {proc.stderr.strip()}; "
            "give a commit, tag or branch of this repository"
        )
    return [line for line in proc.stdout.splitlines() if line]


def _inputs(image: OutputImage, output_dir: str) -> list[str]:
    """Project-relative paths whose change affects this image by itself."""
    paths = [f"{output_dir}/{image.directory.name}", *image.overlays]
    if image.spec:
        paths.append(image.spec)
    return [p.rstrip("/") for p in paths if p]


def _under(path: str, prefix: str) -> bool:
    return path == prefix or PurePosixPath(path).is_relative_to(prefix)


def affected_images(images: dict[str, OutputImage], changed: list[str], output_dir: str = "output") -> set[str]:
    """Images whose spec, overlays or rendered output changed (all of them when a shared template
    did), with every image built on one of them."""
    if any(_under(path, shared) for path in changed for shared in SHARED_INPUTS):
        return set(images)
    hit = {
        name
        for name, image in images.items()
        if any(_under(path, own) for path in changed for own in _inputs(image, output_dir))
    }
    return dependents(images, hit)
