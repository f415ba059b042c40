"""`gen ci github|gitlab`: a scheduled pipeline that runs the rebuild on CI runners.

Python decides the shape (DAG levels from the rendered images, which job needs which, the cron
line, how gen gets installed); the templates under templates/ci/ hold the YAML text. Each level is a
matrix of one job per image and platform; a job skips itself unless the plan job found its image
stale, takes its parent's image for that platform from the registry, builds, verifies (emulated
for a foreign platform) and pushes that platform's image, so the next level pulls it from there.
The last job joins each stale image's platforms into its index, then updates the lock.
"""

from __future__ import annotations

import re
from pathlib import Path

import jinja2

from generator.builder.outputs import OutputImage, ancestors, topological_order
from generator.errors import GenError, UsageError
from generator.files import refuse_links_below, write_text_atomic

PLATFORMS = {"github": "ci/github.yml.j2", "gitlab": "ci/gitlab.yml.j2"}
DEFAULT_PATHS = {"github": ".github/workflows/gen-rebuild.yml", "gitlab": ".gitlab-ci.yml"}
DEFAULT_CRON = "17 3 * * *"
# The matrix value of an image without `platforms`: built for the runner's own platform.
HOST_PLATFORM = "host"
_CRON = re.compile(r"^(\S+\s+){4}\S+$")


# What a runner installs to build a foreign platform's image (arch-test is only a Recommends of
# mmdebstrap, which needs it to tell that emulation works).
EMULATION_PACKAGES = "qemu-user-static binfmt-support arch-test"


def dag_levels(images: dict[str, OutputImage]) -> list[list[str]]:
    """Images grouped by depth: roots first; every image's parent is in an earlier level."""
    levels: dict[int, list[str]] = {}
    for name in topological_order(images):
        levels.setdefault(len(ancestors(images, name)), []).append(name)
    return [sorted(levels[d]) for d in sorted(levels)]


def render_pipeline(
    platform: str, images: dict[str, OutputImage], registry: str, cron: str = DEFAULT_CRON, install: str | None = None
) -> str:
    """install: the shell command that puts gen on a runner; None installs gen from the pipeline's own
    checkout (into a virtual environment), so a scheduled job with registry credentials runs exactly
    the commit it was started on and nothing fetched from a package index by name."""
    if platform not in PLATFORMS:
        raise UsageError(f"unknown CI platform {platform!r}; use {' or '.join(PLATFORMS)}")
    if not _CRON.match(cron.strip()):
        raise UsageError(f"--cron {cron!r}: give five cron fields, e.g. {DEFAULT_CRON!r}")
    if not images:
        raise UsageError("no rendered images in output/; run `gen render` first")
    if install is not None and not install.strip():
        raise UsageError("--install: give a shell command, or leave it out to install gen from the checkout")
    levels = []
    in_order: list[str] = []  # every image, roots first: what the plan job pulls
    for index, names in enumerate(dag_levels(images)):
        in_order += names
        needs = ["plan"] + ([f"level-{index - 1}"] if index else [])
        jobs = [{"image": n, "platforms": list(images[n].platforms or [HOST_PLATFORM])} for n in names]
        levels.append({"images": names, "jobs": jobs, "needs": needs, "gitlab_needs": _gitlab_needs(index)})
    last = len(levels) - 1
    from generator.render.templates import bundled_dir

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(bundled_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    return env.get_template(PLATFORMS[platform]).render(
        cron=cron.strip(),
        registry=registry,
        from_checkout=install is None,
        install=(install or "").strip(),
        levels=levels,
        images=in_order,
        last_needs=["plan", f"level-{last}"],
        last_gitlab_needs=[_gitlab_needs(0)[0], f"level-{last}"],
        emulation_packages=EMULATION_PACKAGES,
    )


def _gitlab_needs(index: int) -> list[str]:
    needs = ["{job: plan, artifacts: true}"]
    if index:
        needs.append(f"level-{index - 1}")
    return needs


def write_pipeline(project: Path, platform: str, text: str, path: Path | None = None) -> Path:
    """The pipeline file, written in one rename and only when its text changes. Every directory
    from the project down to it must be a real one: a repository may commit `.github` as a link
    out of the project (the file itself may be a link: the rename replaces it, never follows it)."""
    target = path or project / DEFAULT_PATHS[platform]
    refuse_links_below(project, target.parent)
    try:
        write_text_atomic(target, text)
    except OSError as exc:  # e.g. .github is a file, or the directory is read-only
        raise GenError(f"cannot write {target}: {exc}") from None
    return target
